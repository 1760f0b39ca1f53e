"""Service + image config -> ContainerSpec, one attribute at a time."""

from __future__ import annotations

import signal
from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest

import composer
from composer.engine.translate import (
    FileTarget,
    Translated,
    TranslateError,
    VolumeUse,
    anonymous_volumes,
    container_spec,
    parse_signal,
    parse_tmpfs,
)
from composer.image.config import ImageConfig
from composer.runtime.cgroups import Resources
from composer.runtime.spec import BindMount, Namespace, Network, Rlimit, TmpfsMount
from composer.spec.hashing import config_hash
from composer.spec.loader import LoadOptions, load_project
from composer.spec.model import Project

CID = "c0ffee" + "0" * 58
IMG = "sha256:" + "a" * 64
LAYERS = (Path("/layers/2"), Path("/layers/1"))
BUSYBOX = ImageConfig(cmd=("sh",), env=("PATH=/usr/local/bin:/usr/bin:/bin",))


def project(services_yaml: str, tail: str = "") -> Project:
    text = "services:\n" + dedent(services_yaml).strip("\n").replace("\n", "\n  ").join(["  ", "\n"]) + tail
    options = LoadOptions(
        cwd="/w", environ={"HOME": "/root"}, files=("-",), stdin_text=text, project_name="p"
    )
    return load_project(options, lambda _: None).project


def translate(
    services_yaml: str, image: ImageConfig = BUSYBOX, tail: str = "", service: str = "s", **kwargs: Any
) -> Translated:
    p = project(services_yaml, tail)
    return container_spec(
        p,
        p.service(service),
        container_id=CID,
        number=1,
        image=image,
        image_id=IMG,
        lower_dirs=LAYERS,
        **kwargs,
    )


# --- process -------------------------------------------------------------------------------------------


def test_defaults_from_the_image() -> None:
    image = ImageConfig(entrypoint=("/init",), cmd=("serve",), working_dir="/app", user="app", env=("A=1",))
    t = translate("s: {image: x}", image)
    assert t.spec.argv == ("/init", "serve")
    assert (t.spec.cwd, t.spec.user, t.spec.env) == ("/app", "app", ("A=1",))
    assert (t.spec.id, t.spec.lower_dirs, t.spec.hostname) == (CID, LAYERS, "")  # "" = the id's 12 chars
    assert t.spec.network == Network() and not t.spec.init and not t.spec.tty


def test_command_replaces_cmd_and_entrypoint_drops_it() -> None:
    image = ImageConfig(entrypoint=("/init",), cmd=("serve",))
    assert translate("s: {image: x, command: [run, fast]}", image).spec.argv == ("/init", "run", "fast")
    assert translate("s: {image: x, entrypoint: [/bin/sh, -c]}", image).spec.argv == ("/bin/sh", "-c")
    assert translate("s: {image: x, entrypoint: [], command: [ls]}", image).spec.argv == ("ls",)
    assert translate("s: {image: x, command: echo hi there}", image).spec.argv == (
        "/init",
        "echo",
        "hi",
        "there",
    )


def test_nothing_to_run_is_an_error_naming_service_and_field() -> None:
    with pytest.raises(TranslateError, match="service s: command: nothing to run"):
        translate("s: {image: x}", ImageConfig())


def test_environment_overrides_the_image_and_null_unsets() -> None:
    image = ImageConfig(cmd=("sh",), env=("PATH=/bin", "A=image", "GONE=x"))
    t = translate("s: {image: x, environment: {A: service, B: '2', GONE: null}}", image)
    assert t.spec.env == ("PATH=/bin", "A=service", "B=2")


def test_environment_from_the_shell_and_env_file_is_already_resolved() -> None:
    t = translate("s: {image: x, environment: [HOME, NOPE]}")
    assert t.spec.env == ("PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/root")


def test_working_dir_user_group_add_hostname_domainname() -> None:
    t = translate(
        "s: {image: x, working_dir: /srv, user: '1000:1000', group_add: [wheel],"
        " hostname: web, domainname: lan}"
    )
    assert (t.spec.cwd, t.spec.user, t.spec.group_add) == ("/srv", "1000:1000", ("wheel",))
    assert (t.spec.hostname, t.spec.domainname) == ("web", "lan")


def test_relative_working_dir_is_refused() -> None:
    with pytest.raises(TranslateError, match="service s: working_dir: 'srv' is not an absolute path"):
        translate("s: {image: x}", ImageConfig(cmd=("sh",), working_dir="srv"))


def test_tty_stdin_open_read_only_init_privileged_caps() -> None:
    t = translate(
        "s: {image: x, tty: true, stdin_open: true, read_only: true, init: true, privileged: true,"
        " cap_add: [NET_ADMIN], cap_drop: [MKNOD]}"
    )
    spec = t.spec
    assert (spec.tty, t.stdin_open, spec.read_only, spec.init, spec.privileged) == (True,) * 5
    assert (spec.cap_add, spec.cap_drop) == (("NET_ADMIN",), ("MKNOD",))


def test_ulimits_become_rlimits() -> None:
    t = translate("s: {image: x, ulimits: {nproc: 65535, nofile: {soft: 1024, hard: 4096}}}")
    assert t.spec.rlimits == (
        Rlimit(name="nofile", soft=1024, hard=4096),
        Rlimit(name="nproc", soft=65535, hard=65535),
    )


def test_sysctls_and_no_new_privileges() -> None:
    t = translate(
        "s: {image: x, sysctls: {net.core.somaxconn: 1024}, security_opt: [no-new-privileges:true]}"
    )
    assert t.spec.sysctls == (("net.core.somaxconn", "1024"),)
    assert t.spec.no_new_privs


def test_network_and_etc_files_are_passed_through() -> None:
    net = Network(mode="join", path="/proc/42/ns/net")
    files = (Path("/c/hostname"), Path("/c/hosts"), Path("/c/resolv.conf"))
    t = translate(
        "s: {image: x}", network=net, etc_hostname=files[0], etc_hosts=files[1], etc_resolv_conf=files[2]
    )
    assert t.spec.network == net
    assert (t.spec.etc_hostname, t.spec.etc_hosts, t.spec.etc_resolv_conf) == files


# --- stop ----------------------------------------------------------------------------------------------


def test_stop_signal_service_over_image_over_sigterm() -> None:
    assert translate("s: {image: x}").stop_signal == signal.SIGTERM
    image = ImageConfig(cmd=("sh",), stop_signal="SIGQUIT")
    assert translate("s: {image: x}", image).stop_signal == signal.SIGQUIT
    assert translate("s: {image: x, stop_signal: SIGINT}", image).stop_signal == signal.SIGINT


def test_signal_names_and_numbers() -> None:
    assert parse_signal("TERM") == parse_signal("SIGTERM") == parse_signal("15") == 15
    assert parse_signal("SIGRTMIN+3") == signal.SIGRTMIN + 3
    with pytest.raises(TranslateError, match="service s: stop_signal: unknown signal 'SIGNOPE'"):
        translate("s: {image: x, stop_signal: SIGNOPE}")


def test_stop_grace_period_defaults_to_ten_seconds() -> None:
    assert translate("s: {image: x}").stop_grace == 10.0
    assert translate("s: {image: x, stop_grace_period: 1m30s}").stop_grace == 90.0


# --- resources -----------------------------------------------------------------------------------------


def test_resources_from_service_attributes() -> None:
    t = translate(
        "s: {image: x, mem_limit: 64m, memswap_limit: 128m, cpus: 1.5, cpu_shares: 512, pids_limit: 50}"
    )
    assert t.resources == Resources(
        memory=64 << 20, memory_swap=128 << 20, cpu_quota=150_000, cpu_shares=512, pids_limit=50
    )


def test_resources_from_deploy_limits() -> None:
    t = translate(
        "s: {image: x, deploy: {resources: {limits: {cpus: '0.5', memory: 32m, pids: 7},"
        " reservations: {memory: 16m}}}}"
    )
    assert t.resources == Resources(
        memory=32 << 20, memory_swap=64 << 20, memory_reservation=16 << 20, cpu_quota=50_000, pids_limit=7
    )
    assert translate("s: {image: x}").resources == Resources()


def test_bad_resources_name_the_service() -> None:
    with pytest.raises(TranslateError, match="service s: resources: mem_limit 1024: the minimum is 6 MiB"):
        translate("s: {image: x, mem_limit: 1k}")


# --- labels --------------------------------------------------------------------------------------------


def test_labels_image_then_service_then_compose() -> None:
    image = ImageConfig(cmd=("sh",), labels=(("maintainer", "me"), ("tier", "image")))
    yaml_text = """
    s: {image: x, labels: {tier: service}, depends_on: {d: {condition: service_healthy, restart: true}}}
    d: {image: y}
    """
    p = project(yaml_text)
    t = translate(yaml_text, image, compose_files=("/w/compose.yaml",))
    assert dict(t.labels) == {
        "maintainer": "me",
        "tier": "service",
        "com.docker.compose.project": "p",
        "com.docker.compose.service": "s",
        "com.docker.compose.container-number": "1",
        "com.docker.compose.config-hash": config_hash(p.service("s")),
        "com.docker.compose.oneoff": "False",
        "com.docker.compose.version": composer.__version__,
        "com.docker.compose.image": IMG,
        "com.docker.compose.project.working_dir": "/w",
        "com.docker.compose.project.config_files": "/w/compose.yaml",
        "com.docker.compose.depends_on": "d:service_healthy:true",
    }
    assert [k for k, _ in t.labels] == sorted(k for k, _ in t.labels)


def test_one_off_label() -> None:
    assert dict(translate("s: {image: x}", one_off=True).labels)["com.docker.compose.oneoff"] == "True"


# --- mounts --------------------------------------------------------------------------------------------


def test_binds_create_a_missing_host_path_unless_create_host_path_is_false() -> None:
    t = translate(
        """
        s:
          image: x
          volumes:
            - ./conf:/etc/app:ro
            - type: bind
              source: /srv/data
              target: /data
              bind: {propagation: rshared, create_host_path: false}
            - {type: bind, source: /srv/flat, target: /flat, bind: {recursive: disabled}}
        """
    )
    assert t.spec.mounts == (
        BindMount(source=Path("/w/conf"), target="/etc/app", read_only=True, create_source=True),
        BindMount(source=Path("/srv/data"), target="/data", propagation="rshared"),
        BindMount(source=Path("/srv/flat"), target="/flat", recursive=False, create_source=True),
    )
    assert t.volumes == ()


def test_named_and_anonymous_volumes_use_the_folders_given() -> None:
    sources = {"data": Path("/v/p_data/_data"), "/cache": Path("/v/anon1/_data")}
    t = translate(
        """
        s:
          image: x
          volumes:
            - data:/data
            - type: volume
              source: data
              target: /sub
              read_only: true
              volume: {subpath: a/b, nocopy: true}
            - /cache
        """,
        tail="volumes: {data: {}}\n",
        volume_sources=sources,
    )
    assert t.spec.mounts == (
        BindMount(source=Path("/v/p_data/_data"), target="/data"),
        BindMount(source=Path("/v/p_data/_data/a/b"), target="/sub", read_only=True),
        BindMount(source=Path("/v/anon1/_data"), target="/cache"),
    )
    assert t.volumes == (
        VolumeUse(kind="named", key="data", target="/data", source=Path("/v/p_data/_data")),
        VolumeUse(kind="named", key="data", target="/sub", source=Path("/v/p_data/_data"), nocopy=True),
        VolumeUse(kind="anonymous", key="/cache", target="/cache", source=Path("/v/anon1/_data")),
    )


def test_a_volume_without_a_folder_is_an_error() -> None:
    with pytest.raises(
        TranslateError, match="service s: volumes /data: no host folder was given for the volume"
    ):
        translate("s: {image: x, volumes: ['data:/data']}", tail="volumes: {data: {}}\n")


def test_image_volumes_get_anonymous_volumes_unless_a_mount_covers_them() -> None:
    image = ImageConfig(cmd=("sh",), volumes=("/var/lib/db", "/var/log", "/scratch"))
    yaml_text = "s: {image: x, volumes: ['/srv/logs:/var/log/'], tmpfs: [/scratch]}"
    p = project(yaml_text)
    assert anonymous_volumes(p.service("s"), image) == ("/var/lib/db",)
    t = translate(yaml_text, image, volume_sources={"/var/lib/db": Path("/v/anon/_data")})
    assert BindMount(source=Path("/v/anon/_data"), target="/var/lib/db") in t.spec.mounts
    assert t.volumes == (VolumeUse(kind="anonymous", key="/var/lib/db", target="/var/lib/db",
                                   source=Path("/v/anon/_data")),)  # fmt: skip


def test_tmpfs_short_and_long_forms() -> None:
    t = translate(
        """
        s:
          image: x
          tmpfs: ["/run:size=64m,mode=1770", "/exec:exec,ro"]
          volumes: [{type: tmpfs, target: /t, tmpfs: {size: 1m, mode: 0700}}]
          shm_size: 256m
        """
    )
    assert t.spec.mounts == (
        TmpfsMount(target="/t", size=1 << 20, mode=0o700, noexec=True),
        TmpfsMount(target="/run", size=64 << 20, mode=0o1770, noexec=True),
        TmpfsMount(target="/exec", mode=0o1777, read_only=True, noexec=False),
        TmpfsMount(target="/dev/shm", size=256 << 20, mode=0o1777, noexec=True),
    )


def test_tmpfs_options_composer_cannot_pass_are_refused() -> None:
    with pytest.raises(
        TranslateError, match="service s: tmpfs '/run:uid=1000': option 'uid=1000' is not supported"
    ):
        parse_tmpfs("/run:uid=1000", "s")
    with pytest.raises(TranslateError, match="the target must be an absolute path"):
        parse_tmpfs("run", "s")


SECRETS = """
secrets: {token: {file: ./token}, key: {environment: HOME}}
configs: {nginx: {content: "server {}"}}
"""


def test_secrets_and_configs_are_read_only_file_binds() -> None:
    t = translate(
        """
        s:
          image: x
          secrets: [token, {source: key, target: api.key, mode: 0400, uid: '33'}]
          configs: [nginx, {source: nginx, target: /etc/nginx/nginx.conf}]
        """,
        tail=SECRETS,
        secret_files={"token": Path("/w/token"), "key": Path("/state/s/key")},
        config_files={"nginx": Path("/state/c/nginx")},
    )
    assert t.spec.mounts == (
        BindMount(source=Path("/w/token"), target="/run/secrets/token", read_only=True, recursive=False),
        BindMount(
            source=Path("/state/s/key"), target="/run/secrets/api.key", read_only=True, recursive=False
        ),
        BindMount(source=Path("/state/c/nginx"), target="/nginx", read_only=True, recursive=False),
        BindMount(
            source=Path("/state/c/nginx"), target="/etc/nginx/nginx.conf", read_only=True, recursive=False
        ),
    )


def test_secret_targets_carry_owner_and_mode() -> None:
    from composer.engine.translate import secret_targets

    p = project("s: {image: x, secrets: [{source: key, target: api.key, mode: 0400, uid: '33'}]}", SECRETS)
    assert secret_targets(p.service("s")) == (
        FileTarget(kind="secret", source="key", target="/run/secrets/api.key", uid="33", mode=0o400),
    )


def test_a_secret_without_a_file_is_an_error() -> None:
    with pytest.raises(TranslateError, match=r"service s: secrets\.token: no file was given for it"):
        translate("s: {image: x, secrets: [token]}", tail=SECRETS)


def test_volumes_from_copies_the_parent_binds_with_the_mode() -> None:
    parent = (
        BindMount(source=Path("/v/data"), target="/data"),
        TmpfsMount(target="/tmp"),
        BindMount(source=Path("/v/ro"), target="/ro", read_only=True),
    )
    yaml_text = """
    s: {image: x, volumes_from: ["p:ro"]}
    p: {image: y}
    """
    t = translate(yaml_text, volumes_from={"p": parent})
    assert t.spec.mounts == (
        BindMount(source=Path("/v/data"), target="/data", read_only=True),
        BindMount(source=Path("/v/ro"), target="/ro", read_only=True),
    )
    kept = translate(yaml_text.replace("p:ro", "p"), volumes_from={"p": parent})
    assert [m.read_only for m in kept.spec.mounts] == [False, True]
    with pytest.raises(TranslateError, match="service s: volumes_from: the mounts of 'p' were not given"):
        translate(yaml_text)


def test_two_mounts_on_one_target_are_refused() -> None:
    with pytest.raises(TranslateError, match="service s: volumes: two mounts have the target /x"):
        translate("s: {image: x, volumes: ['/a:/x'], tmpfs: ['/x']}")


# --- what composer refuses or ignores ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attribute", "message"),
    [
        ("devices: ['/dev/fuse']", "service s: devices: passing host devices"),
        (
            "pid: shareable",
            "service s: pid: 'shareable': expected private, host, service:NAME or container:NAME",
        ),
        (
            "ipc: 'nothing'",
            "service s: ipc: 'nothing': expected private, shareable, host, none, service:NAME",
        ),
        ("ipc: 'container:'", "service s: ipc: 'container:': expected"),
        ("uts: 'container:x'", "service s: uts: 'container:x': expected host"),
        ("uts: host, hostname: web", "service s: hostname: conflicts with uts: host"),
        ("uts: host, domainname: example.org", "service s: domainname: conflicts with uts: host"),
        ("userns_mode: 'keep-id'", "service s: userns_mode"),
        ("runtime: nvidia", "service s: runtime: 'nvidia'"),
        ("security_opt: ['seccomp:/my/profile.json']", "service s: security_opt: 'seccomp:/my/profile.json'"),
    ],
)
def test_attributes_that_cannot_be_honoured(attribute: str, message: str) -> None:
    with pytest.raises(TranslateError, match=message.replace("(", r"\(")):
        translate("s: {image: x, " + attribute + "}")


def test_pid_and_ipc_namespaces() -> None:
    own = translate("s: {image: x, shm_size: 1m}").spec
    assert (own.pid_ns, own.ipc_ns) == (Namespace(), Namespace())
    assert any(m.target == "/dev/shm" for m in own.mounts)
    host = translate("s: {image: x, pid: host, ipc: host, shm_size: 1m}").spec
    assert (host.pid_ns, host.ipc_ns) == (Namespace(mode="host"), Namespace(mode="host"))
    assert not any(m.target == "/dev/shm" for m in host.mounts), (
        "shm_size applies to an own IPC namespace only"
    )
    shareable = translate("s: {image: x, ipc: shareable}").spec
    assert shareable.ipc_ns == Namespace()
    joined = translate(
        "s: {image: x, pid: 'service:t', ipc: 'container:p-t-1'}\nt: {image: x, ipc: shareable}"
    ).spec
    # the process to join is found by the supervisor at each start
    assert (joined.pid_ns, joined.ipc_ns) == (Namespace(mode="join"), Namespace(mode="join"))
    none = translate("s: {image: x, ipc: none, shm_size: 1m}").spec
    assert none.ipc_ns == Namespace(mode="none") and not any(m.target == "/dev/shm" for m in none.mounts)


def test_uts_namespace() -> None:
    assert translate("s: {image: x}").spec.uts_ns == Namespace()
    assert translate("s: {image: x, uts: host}").spec.uts_ns == Namespace(mode="host")


def test_attributes_accepted_but_not_applied_are_warned_about() -> None:
    t = translate("s: {image: x, oom_score_adj: 500, security_opt: ['label:type:x', 'seccomp:unconfined']}")
    assert t.warnings == (
        "service s: security_opt 'label:type:x' is not applied (no LSM support)",
        "service s: oom_score_adj is accepted but not applied",
    )
