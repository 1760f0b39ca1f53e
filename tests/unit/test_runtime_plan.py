"""The launch plan, secure_join, overlay options and the failure wire format (no root needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from composer.runtime import libc
from composer.runtime.init import INIT_PATH, decode_failure, encode_failure
from composer.runtime.launch import ContainerSpecError, ContainerStartError, ExitStatus, build_plan
from composer.runtime.mounts import DEFAULT_MASKED_PATHS, secure_join
from composer.runtime.rootfs import fits_mount_data, overlay_options
from composer.runtime.spec import BindMount, ContainerSpec, Namespace, Network, Rlimit, Stdio, TmpfsMount
from composer.storage.layout import Layout


@pytest.fixture
def image(tmp_path: Path) -> Path:
    root = tmp_path / "layer"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nweb:x:33:33:web:/var/www:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\nweb:x:33:\n")
    return root


def spec_for(image: Path, **changes: object) -> ContainerSpec:
    return ContainerSpec(id="0123456789abcdef", lower_dirs=(image,), argv=("sh",), **changes)  # type: ignore[arg-type]


def test_plan_defaults(image: Path, tmp_path: Path) -> None:
    layout = Layout(tmp_path / "root")
    plan = build_plan(spec_for(image, user="web"), layout, last_cap=40)
    assert plan.unshare_flags == (libc.CLONE_NEWNS | libc.CLONE_NEWUTS | libc.CLONE_NEWIPC | libc.CLONE_NEWPID
                                  | libc.CLONE_NEWNET)  # fmt: skip
    assert plan.hostname == "0123456789ab"
    path = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert plan.env == (path, "HOSTNAME=0123456789ab", "HOME=/var/www")
    assert (plan.uid, plan.gid) == (33, 33)
    assert plan.rootfs == str(layout.container_dir("0123456789abcdef") / "rootfs")
    assert plan.masked_paths == DEFAULT_MASKED_PATHS and plan.sys_read_only
    assert plan.caps == 0xA80425FB


def test_plan_network_modes_init_and_privileged(image: Path, tmp_path: Path) -> None:
    layout = Layout(tmp_path / "root")
    host = build_plan(spec_for(image, network=Network(mode="host")), layout, last_cap=40)
    assert not host.unshare_flags & libc.CLONE_NEWNET and not host.netns_path
    joined = build_plan(
        spec_for(image, network=Network(mode="join", path="/run/netns/x")), layout, last_cap=40
    )
    assert joined.netns_path == "/run/netns/x" and not joined.unshare_flags & libc.CLONE_NEWNET
    with pytest.raises(ContainerSpecError, match="needs a netns path"):
        build_plan(spec_for(image, network=Network(mode="join")), layout, last_cap=40)
    init = build_plan(spec_for(image, init=True, privileged=True), layout, last_cap=40)
    assert init.argv == (INIT_PATH, "--", "sh") and init.mounts[-1].target == INIT_PATH
    assert init.masked_paths == () and not init.sys_read_only and init.caps == (1 << 41) - 1


def test_plan_pid_and_ipc_namespaces(image: Path, tmp_path: Path) -> None:
    layout = Layout(tmp_path / "root")
    host = build_plan(spec_for(image, pid_ns=Namespace(mode="host"), ipc_ns=Namespace(mode="host")), layout,
                      last_cap=40)  # fmt: skip
    assert not host.unshare_flags & (libc.CLONE_NEWPID | libc.CLONE_NEWIPC) and not host.join_namespaces
    assert host.mounts[0].source == host.mounts[0].target == "/dev/shm"  # the host's, as Docker binds it
    with pytest.raises(ContainerSpecError, match=r"kernel\.shmmax cannot be set with the host IPC namespace"):
        build_plan(spec_for(image, ipc_ns=Namespace(mode="host"), sysctls=(("kernel.shmmax", "1"),)), layout,
                   last_cap=40)  # fmt: skip
    pid_ns, ipc_ns = Namespace(mode="join", pid=41), Namespace(mode="join", pid=42)
    joined = build_plan(spec_for(image, pid_ns=pid_ns, ipc_ns=ipc_ns), layout, last_cap=40)
    assert not joined.unshare_flags & (libc.CLONE_NEWPID | libc.CLONE_NEWIPC)
    assert joined.unshare_flags & libc.CLONE_NEWNS
    assert joined.join_namespaces == (
        ("/proc/41/ns/pid", libc.CLONE_NEWPID),
        ("/proc/42/ns/ipc", libc.CLONE_NEWIPC),
    )
    assert joined.shm_from == "/proc/42/ns/mnt"  # that container's /dev/shm
    with pytest.raises(ContainerSpecError, match="joining a pid namespace needs a pid"):
        build_plan(spec_for(image, pid_ns=Namespace(mode="join")), layout, last_cap=40)
    none = build_plan(spec_for(image, ipc_ns=Namespace(mode="none")), layout, last_cap=40)
    assert none.unshare_flags & libc.CLONE_NEWIPC and not none.dev_shm and not none.shm_from
    assert build_plan(spec_for(image), layout, last_cap=40).dev_shm


def test_plan_uts_namespace(image: Path, tmp_path: Path) -> None:
    layout = Layout(tmp_path / "root")
    own = build_plan(spec_for(image), layout, last_cap=40)
    assert own.unshare_flags & libc.CLONE_NEWUTS and own.hostname
    host = build_plan(spec_for(image, uts_ns=Namespace(mode="host")), layout, last_cap=40)
    assert not host.unshare_flags & libc.CLONE_NEWUTS
    assert host.hostname == "" and host.domainname == ""  # never set: it would be the host's
    assert f"HOSTNAME={os.uname().nodename}" in host.env
    with pytest.raises(ContainerSpecError, match="a domainname needs the container's own UTS namespace"):
        build_plan(spec_for(image, uts_ns=Namespace(mode="host"), domainname="x.org"), layout, last_cap=40)


def test_plan_mounts_parents_first_and_etc_files(image: Path, tmp_path: Path) -> None:
    plan = build_plan(
        spec_for(
            image,
            etc_hosts=tmp_path / "hosts",
            mounts=(
                BindMount(
                    source=tmp_path / "a", target="/srv/data/deep", read_only=True, propagation="rslave"
                ),
                TmpfsMount(target="/srv", size=1024, mode=0o755, noexec=True),
            ),
        ),
        Layout(tmp_path / "root"),
        last_cap=40,
    )
    assert [m.target for m in plan.mounts] == ["/etc/hosts", "/srv", "/srv/data/deep"]
    tmpfs, bind = plan.mounts[1], plan.mounts[2]
    assert tmpfs.data == "mode=755,size=1024" and tmpfs.flags & libc.MS_NOEXEC
    assert bind.read_only and bind.propagation == libc.MS_SLAVE | libc.MS_REC


def test_plan_rejects(image: Path, tmp_path: Path) -> None:
    layout = Layout(tmp_path / "root")
    with pytest.raises(ContainerSpecError, match=r"kernel\.hostname is not namespaced"):
        build_plan(spec_for(image, sysctls=(("kernel.hostname", "x"),)), layout, last_cap=40)
    with pytest.raises(ContainerSpecError, match="host network"):
        host = spec_for(image, sysctls=(("net.core.somaxconn", "1"),), network=Network(mode="host"))
        build_plan(host, layout, last_cap=40)
    with pytest.raises(ContainerSpecError, match="unknown limit 'bogus'"):
        build_plan(spec_for(image, rlimits=(Rlimit(name="bogus", soft=1, hard=1),)), layout, last_cap=40)
    with pytest.raises(ContainerSpecError, match="not an absolute path"):
        build_plan(spec_for(image, cwd="srv"), layout, last_cap=40)
    ok = build_plan(spec_for(image, sysctls=(("kernel.shmmax", "1"), ("net.core.somaxconn", "1"))), layout,
                    last_cap=40)  # fmt: skip
    assert len(ok.sysctls) == 2


def test_secure_join_keeps_symlinks_inside(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    os.symlink("/bin", root / "sbin")
    os.symlink("../../../../etc", root / "escape")
    os.symlink("loop", root / "loop")
    r = str(root)
    assert secure_join(r, "/sbin/x") == f"{r}/bin/x"
    assert secure_join(r, "/escape/passwd") == f"{r}/etc/passwd"
    assert secure_join(r, "/../../etc") == f"{r}/etc"
    assert secure_join(r, "/") == r
    with pytest.raises(OSError):
        secure_join(r, "/loop/x")


def test_overlay_options_escape_separators() -> None:
    assert (
        overlay_options(("/l/a:b", "/l/c"), "/u,1", "/w")
        == "lowerdir=/l/a\\:b:/l/c,upperdir=/u\\,1,workdir=/w"
    )


def test_overlay_options_fit_in_one_page_or_not() -> None:
    def layers(count: int) -> tuple[str, ...]:
        return tuple(f"/var/lib/composer/images/layers/{i:064x}" for i in range(count))  # the store's shape

    assert fits_mount_data(layers(1), "/u", "/w")
    assert fits_mount_data(layers(41), "/u", "/w")  # 97 bytes a layer
    assert not fits_mount_data(layers(42), "/u", "/w")
    page = os.sysconf("SC_PAGE_SIZE")
    room = page - 1 - len("lowerdir=,upperdir=/u,workdir=/w")
    assert fits_mount_data(("/" + "x" * (room - 1),), "/u", "/w")  # the NUL takes the last byte
    assert not fits_mount_data(("/" + "x" * room,), "/u", "/w")


def test_tty_in_the_plan(image: Path, tmp_path: Path) -> None:
    layout = Layout(tmp_path / "root")
    plan = build_plan(spec_for(image), layout, last_cap=40)
    assert (plan.tty, plan.tty_size) == (False, (24, 80))
    plan = build_plan(spec_for(image, tty=True, tty_size=(50, 132)), layout, last_cap=40)
    assert (plan.tty, plan.tty_size) == (True, (50, 132))
    with pytest.raises(ContainerSpecError, match="tty and stdio descriptors exclude each other"):
        build_plan(spec_for(image, tty=True, stdio=Stdio(stdin=0)), layout, last_cap=40)
    with pytest.raises(ContainerSpecError, match="bad tty size 0x80 "):
        build_plan(spec_for(image, tty=True, tty_size=(0, 80)), layout, last_cap=40)


def test_failure_wire_format_and_messages() -> None:
    assert decode_failure(encode_failure("pivot_root", 22, "")) == ("pivot_root", 22, "")
    assert decode_failure(b"garbage") == ("garbage", 0, "")
    assert str(ContainerStartError("web", "pivot_root", 22, "")) == "container web: pivot_root: EINVAL"
    assert (
        str(ContainerStartError("web", "mount /data", 2, "stat x"))
        == "container web: mount /data: ENOENT (stat x)"
    )
    assert str(libc.SyscallError("mount", 1, "/x")) == "mount: EPERM (/x)"


def test_exit_status_from_waitid() -> None:
    # fields: si_pid, si_uid, si_signo, si_status, si_code
    exited = os.waitid_result((1, 0, 17, 3, os.CLD_EXITED))
    killed = os.waitid_result((1, 0, 17, 9, os.CLD_KILLED))
    assert ExitStatus.from_waitid(exited) == ExitStatus(3)
    assert ExitStatus.from_waitid(killed) == ExitStatus(137, 9)


def test_the_fork_server_loads_with_the_stdlib_only() -> None:
    """It is forked before the heavy imports; importing it must not pull them in (DESIGN.md rule 5)."""
    import subprocess
    import sys

    code = "import sys, composer.runtime.forkserver; print(' '.join(sorted(sys.modules)))"
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.split()
    )
    assert not {m.split(".")[0] for m in loaded} & {"trio", "structlog", "pyroute2", "yaml", "jsonschema"}
    assert {m for m in loaded if m.startswith("composer.")} <= {
        "composer.runtime", "composer.runtime.libc", "composer.runtime.plan", "composer.runtime.mounts",
        "composer.runtime.rootfs", "composer.runtime.init", "composer.runtime.forkserver",
        "composer.runtime.console", "composer.dataclass_cache",
    }  # fmt: skip
