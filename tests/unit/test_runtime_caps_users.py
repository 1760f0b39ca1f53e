"""Pure parts of the runtime: capability rules and user resolution (no root needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from composer.runtime.caps import DEFAULT_CAPS, CapabilityError, cap_mask, cap_names, resolve_caps
from composer.runtime.users import UserError, find_in_layers, resolve_user

PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n# comment\nbroken:line\n"
GROUP = "root:x:0:\napp:x:1000:\nextra:x:2000:app,other\nwheel:x:10:root\n"


def names(caps: frozenset[int]) -> set[str]:
    return set(cap_names(cap_mask(caps)))


def test_default_set_is_dockers_14() -> None:
    assert names(resolve_caps(last_cap=40)) == set(DEFAULT_CAPS)
    assert len(DEFAULT_CAPS) == 14
    assert cap_mask(resolve_caps(last_cap=40)) == 0xA80425FB  # CapEff of `docker run busybox`


def test_add_and_drop_accept_any_case_and_prefix() -> None:
    caps = names(resolve_caps(cap_add=["net_admin", "CAP_SYS_TIME"], cap_drop=["chown"], last_cap=40))
    assert caps == (set(DEFAULT_CAPS) - {"CAP_CHOWN"}) | {"CAP_NET_ADMIN", "CAP_SYS_TIME"}


def test_all_rules() -> None:
    assert names(resolve_caps(cap_drop=["ALL"], cap_add=["KILL"], last_cap=40)) == {"CAP_KILL"}
    every = resolve_caps(cap_add=["ALL"], cap_drop=["SYS_ADMIN"], last_cap=40)
    assert len(every) == 40 and 21 not in every
    assert resolve_caps(privileged=True, cap_drop=["ALL"], last_cap=40) == frozenset(range(41))
    assert max(resolve_caps(privileged=True, last_cap=37)) == 37  # an older kernel's cap_last_cap


def test_unknown_capability() -> None:
    with pytest.raises(CapabilityError, match="capabilities: unknown capability 'CAP_FLY'"):
        resolve_caps(cap_add=["CAP_FLY"], last_cap=40)


def test_user_by_name_number_and_group() -> None:
    app = resolve_user("app", PASSWD, GROUP)
    assert (app.uid, app.gid, app.groups, app.home) == (1000, 1000, (2000,), "/home/app")
    assert resolve_user("", PASSWD, GROUP).groups == (10,)  # root is listed in wheel
    assert resolve_user("1000", PASSWD, GROUP).uid == 1000
    odd = resolve_user("4321", PASSWD, GROUP)
    assert (odd.uid, odd.gid, odd.groups, odd.home) == (4321, 0, (), "/")
    explicit = resolve_user("app:extra", PASSWD, GROUP)
    assert (explicit.gid, explicit.groups) == (2000, ())  # supplementary groups only in the implicit form
    assert resolve_user("app", PASSWD, GROUP, group_add=["wheel", "77"]).groups == (10, 77, 2000)
    assert resolve_user("0:0", None, None).uid == 0


def test_unknown_user_and_group() -> None:
    with pytest.raises(UserError, match="unable to find user nobody"):
        resolve_user("nobody", PASSWD, GROUP)
    with pytest.raises(UserError, match="unable to find group nogroup"):
        resolve_user("app:nogroup", PASSWD, GROUP)


def test_find_in_layers_top_first_and_whiteouts(tmp_path: Path) -> None:
    top, bottom = tmp_path / "top", tmp_path / "bottom"
    for layer in (top, bottom):
        (layer / "etc").mkdir(parents=True)
    (bottom / "etc/passwd").write_text("bottom")
    (bottom / "etc/group").write_text("bottom-group")
    assert find_in_layers([top, bottom], "etc/passwd") == "bottom"
    (top / "etc/passwd").write_text("top")
    assert find_in_layers([top, bottom], "etc/passwd") == "top"
    assert find_in_layers([top, bottom], "etc/shadow") is None
    if os.geteuid() == 0:
        os.mknod(top / "etc/group", 0o600 | 0o020000, os.makedev(0, 0))  # an overlayfs whiteout
        assert find_in_layers([top, bottom], "etc/group") is None
