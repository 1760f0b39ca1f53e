"""The Dockerfile builder for real: RUN steps in composer containers, COPY into layers, the cache.

Most builds start `FROM scratch` with a busybox root filesystem copied in from the test's context (Debian's
busybox-static), so they take milliseconds; one builds on debian:bookworm (bootstrapped once per session)
and installs nginx with apt-get from the host's mirror.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio

from composer.engine.builds import RuntimeStepRunner
from composer.image.base import ensure_base_image
from composer.image.build import BuildError, BuildRequest, build_image
from composer.image.store import Image, ImageStore
from composer.runtime.forkserver import ForkServer
from composer.runtime.launch import Runtime
from composer.runtime.spec import ContainerSpec, Stdio
from composer.storage.layout import Layout
from tests.privileged.conftest import make_busybox_rootfs


@pytest.fixture(scope="module")
def forkserver() -> Iterator[ForkServer]:
    server = ForkServer.start()
    yield server
    server.close()


class Builder:
    def __init__(self, layout: Layout, forkserver: ForkServer, context: Path) -> None:
        self.layout = layout
        self.store = ImageStore(layout)
        self.runtime = Runtime(layout, forkserver)
        self.context = context
        self.lines: list[str] = []

    def build(self, dockerfile: str | None = None, **changes: Any) -> Image:
        if dockerfile is not None:
            (self.context / "Dockerfile").write_text(dockerfile)
        request = replace(
            BuildRequest(context=self.context, service="svc", tags=("test/img:latest",)), **changes
        )
        self.lines = []
        return trio.run(
            lambda: build_image(
                request,
                store=self.store,
                runtime=RuntimeStepRunner(self.runtime, self.layout),
                layout=self.layout,
                progress=self.lines.append,
            )
        )

    def run(self, image: Image, *argv: str) -> tuple[int, str]:
        spec = ContainerSpec(
            id="check",
            lower_dirs=tuple(self.store.layer_dirs(image)),
            argv=image.config.argv(command=list(argv) if argv else None),
            env=image.config.env,
            cwd=image.config.working_dir or "/",
            user=image.config.user,
        )

        async def main() -> tuple[int, str]:
            read_end, write_end = os.pipe()
            try:
                container = await self.runtime.start(
                    replace(spec, stdio=Stdio(stdout=write_end, stderr=write_end))
                )
            finally:
                os.close(write_end)
            chunks: list[bytes] = []
            try:
                async with trio.lowlevel.FdStream(read_end) as stream:
                    while chunk := await stream.receive_some(65536):
                        chunks.append(chunk)
                status = await container.wait()
            finally:
                await container.kill_and_reap()
                self.runtime.remove(spec.id)
            return status.code, b"".join(chunks).decode()

        return trio.run(main)

    def sh(self, image: Image, script: str) -> str:
        code, out = self.run(image, "/bin/sh", "-c", script)
        assert code == 0, out
        return out


@pytest.fixture
def builder(layout: Layout, forkserver: ForkServer, tmp_path: Path) -> Builder:
    context = tmp_path / "context"
    make_busybox_rootfs(context / "rootfs")
    return Builder(layout, forkserver, context)


BUSYBOX = "FROM scratch\nCOPY rootfs/ /\n"


def _leftovers(layout: Layout) -> list[str]:
    return sorted(os.listdir(layout.tmp)) + sorted(os.listdir(layout.containers))


def test_scratch_busybox_image_runs(builder: Builder) -> None:
    image = builder.build(
        BUSYBOX
        + "ENV GREETING=hello WHO=world\n"
        + "WORKDIR /srv/app\n"
        + 'RUN echo "$GREETING $WHO" > greeting && mkdir -p /data && echo built-by-$(id -u) > /data/who\n'
        + "USER app\n"
        + 'RUN echo "i am $(id -un) in $(pwd)" > /tmp/me\n'
        + 'CMD ["cat", "/srv/app/greeting"]\n'
    )
    assert "test/img:latest" in image.tags
    assert image.config.working_dir == "/srv/app" and image.config.user == "app"
    assert image.config.cmd == ("cat", "/srv/app/greeting")
    assert "GREETING=hello" in image.config.env
    assert builder.run(image) == (0, "hello world\n")
    assert builder.sh(image, "cat /data/who /tmp/me") == "built-by-0\ni am app in /srv/app\n"
    assert any(line.startswith("[svc 1/8] FROM scratch") for line in builder.lines), builder.lines
    assert any(line.startswith("[svc 5/8] RUN echo") for line in builder.lines), builder.lines
    # no mount stubs in the layers: the image had no /etc/resolv.conf, /proc or /dev of its own
    top = builder.store.layer_dirs(image)[0]
    assert not (top / "proc").exists() and not (top / "etc/resolv.conf").exists()
    assert _leftovers(builder.layout) == []


def test_second_build_hits_every_layer_and_a_change_invalidates_from_its_copy(builder: Builder) -> None:
    (builder.context / "a.txt").write_text("one\n")
    (builder.context / "b.txt").write_text("two\n")
    dockerfile = (
        BUSYBOX
        + "RUN echo first > /first\n"
        + "COPY a.txt /a.txt\n"
        + "RUN cat /a.txt > /a-copy\n"
        + "COPY b.txt /b.txt\n"
    )
    first = builder.build(dockerfile)
    assert not any(" CACHED " in line for line in builder.lines)
    again = builder.build()
    assert again.id == first.id
    cached = [line for line in builder.lines if " CACHED " in line]
    assert len(cached) == 5, builder.lines  # COPY rootfs, RUN, COPY a, RUN, COPY b
    (builder.context / "a.txt").write_text("changed\n")
    third = builder.build()
    assert third.id != first.id
    cached = [line.split("] ", 1)[1] for line in builder.lines if " CACHED " in line]
    assert cached == ["CACHED COPY rootfs/ /", "CACHED RUN echo first > /first"], builder.lines
    assert third.diff_ids[:2] == first.diff_ids[:2] and third.diff_ids[2] != first.diff_ids[2]
    assert builder.sh(third, "cat /a-copy") == "changed\n"
    # no_cache: every step runs again
    builder.build(no_cache=True)
    assert not any(" CACHED " in line for line in builder.lines)


def test_cache_survives_a_new_store_object_and_prune_empties_it(builder: Builder) -> None:
    builder.build(BUSYBOX + "RUN echo x > /x\n")
    builder.store = ImageStore(builder.layout)
    builder.build()
    assert sum(" CACHED " in line for line in builder.lines) == 2
    builder.store.prune()  # intermediate images are untagged: prune takes them, and so the cache
    builder.build()
    assert not any(" CACHED " in line for line in builder.lines)


def test_whiteouts_a_file_deleted_in_a_later_run_is_gone(builder: Builder) -> None:
    image = builder.build(
        BUSYBOX
        + "RUN mkdir -p /opt/d && echo a > /opt/d/a && echo b > /opt/d/b && echo keep > /opt/keep\n"
        + "RUN rm /opt/d/a && rm -r /opt/keep && echo c > /opt/d/c\n"
        + "RUN rm -rf /opt/d && mkdir /opt/d && echo fresh > /opt/d/new\n"
    )
    assert builder.sh(image, "ls /opt; ls /opt/d; cat /opt/d/new") == "d\nnew\nfresh\n"
    assert builder.sh(image, "rm -rf /bin/vi; ls /bin/vi 2>&1 || echo gone") == (
        "ls: /bin/vi: No such file or directory\ngone\n"
    )


def test_multi_stage_with_copy_from(builder: Builder) -> None:
    image = builder.build(
        "FROM scratch AS base\nCOPY rootfs/ /\n"
        "FROM base AS builder\nARG FLAVOUR=plain\n"
        'RUN mkdir -p /out && echo "made $FLAVOUR" > /out/artifact && chmod 750 /out/artifact\n'
        "FROM scratch AS unused\nCOPY nothing-here /\n"
        "FROM base\nCOPY --from=builder --chown=app:extra /out/artifact /usr/local/share/\n"
        "COPY --from=0 /etc/group /copied-group\n",
        args=(("FLAVOUR", "special"),),
    )
    out = builder.sh(image, "cat /usr/local/share/artifact; stat -c '%U %G %a' /usr/local/share/artifact")
    assert out == "made special\napp extra 750\n"
    assert builder.sh(image, "head -1 /copied-group") == "root:x:0:\n"
    assert not any("nothing-here" in line for line in builder.lines), "an unneeded stage is not built"


def test_arg_and_env_substitution(builder: Builder) -> None:
    image = builder.build(
        "ARG BASE=scratch\nARG VERSION=1.0\n"
        "FROM ${BASE}\nCOPY rootfs/ /\n"
        "ARG VERSION\nARG UNSET\nARG WITH_DEFAULT=dflt\n"
        "ENV V=$VERSION DIR=/opt/${VERSION:-none} U=${UNSET:-fallback}\n"
        "ENV LATER=$V-x\n"
        "ARG VERSION=from-stage\n"
        "WORKDIR $DIR\n"
        'LABEL version="$VERSION" dflt=${WITH_DEFAULT}\n'
        'RUN echo "run:$VERSION:$WITH_DEFAULT:$V" > out\n',
        args=(("VERSION", "2.5"), ("NOT_USED", "x")),
    )
    env = image.config.env_dict()
    assert (
        env["V"] == "2.5" and env["DIR"] == "/opt/2.5" and env["U"] == "fallback" and env["LATER"] == "2.5-x"
    )
    assert image.config.working_dir == "/opt/2.5"
    # the build arg wins over both the meta default and the stage default
    assert dict(image.config.labels) == {"version": "2.5", "dflt": "dflt"}
    assert builder.sh(image, "cat /opt/2.5/out") == "run:2.5:dflt:2.5\n"
    assert "VERSION" not in env and "WITH_DEFAULT" not in env, "ARGs do not stay in the image"
    assert any("NOT_USED" in line and "not used" in line for line in builder.lines)


def test_metadata_instructions(builder: Builder) -> None:
    image = builder.build(
        BUSYBOX
        + "EXPOSE 80 443/tcp 53/udp 8000-8001\n"
        + 'VOLUME /data ["/ignored-not-json"]\n'
        + 'VOLUME ["/cache"]\n'
        + "STOPSIGNAL SIGQUIT\n"
        + "HEALTHCHECK --interval=5s --retries=3 CMD wget -q localhost || exit 1\n"
        + 'SHELL ["/bin/sh", "-ec"]\n'
        + "ENTRYPOINT echo entry\n"
        + "ONBUILD RUN echo child\n"
        + "LABEL a=b\n",
        labels=(("from.compose", "yes"),),
    )
    config = image.config
    assert config.exposed_ports == ("443/tcp", "53/udp", "80/tcp", "8000/tcp", "8001/tcp")
    assert "/data" in config.volumes and "/cache" in config.volumes
    assert config.stop_signal == "SIGQUIT"
    assert config.healthcheck is not None
    assert config.healthcheck.test == ("CMD-SHELL", "wget -q localhost || exit 1")
    assert config.healthcheck.interval_ns == 5 * 10**9 and config.healthcheck.retries == 3
    assert config.shell == ("/bin/sh", "-ec")
    assert config.entrypoint == ("/bin/sh", "-ec", "echo entry") and config.cmd is None
    assert config.on_build == ("RUN echo child",)
    assert dict(config.labels) == {"a": "b", "from.compose": "yes"}
    assert len(image.diff_ids) == 1, "metadata instructions make no layer"


def test_copy_rules_globs_dirs_chmod_dockerignore_and_add_tar(builder: Builder) -> None:
    ctx = builder.context
    (ctx / "src/sub").mkdir(parents=True)
    (ctx / "src/one.py").write_text("1")
    (ctx / "src/two.py").write_text("2")
    (ctx / "src/notes.txt").write_text("n")
    (ctx / "src/sub/deep.py").write_text("d")
    (ctx / "src/secret.key").write_text("s")
    (ctx / ".dockerignore").write_text("src/*.key\n")
    payload = ctx / "payload"
    (payload / "inner").mkdir(parents=True)
    (payload / "inner/file").write_text("from tar")
    with tarfile.open(ctx / "bundle.tar.gz", "w:gz") as tar:
        tar.add(payload / "inner", arcname="inner")
    image = builder.build(
        BUSYBOX
        + "WORKDIR /app\n"
        + "COPY src/*.py ./py/\n"
        + "COPY src /tree\n"
        + "COPY --chmod=600 src/notes.txt notes\n"
        + "ADD bundle.tar.gz /unpacked/\n"
        + "COPY <<EOF /etc/motd\nhello $HOSTNAME_UNSET.\nEOF\n"
    )
    out = builder.sh(
        image, "ls /app/py; ls /tree; ls /tree/sub; stat -c '%a' /app/notes; cat /unpacked/inner/file"
    )
    assert out == "one.py\ntwo.py\nnotes.txt\none.py\nsub\ntwo.py\ndeep.py\n600\nfrom tar"
    assert builder.sh(image, "cat /etc/motd") == "hello .\n"


def test_bad_input_is_one_clear_error(builder: Builder) -> None:
    with pytest.raises(BuildError) as info:
        builder.build(BUSYBOX + "COPY ../outside /x\n")
    assert "service svc:" in str(info.value) and "Dockerfile:3:" in str(info.value)
    assert "outside the build context" in str(info.value)
    with pytest.raises(BuildError) as info:
        builder.build(BUSYBOX + "COPY missing.txt /x\n")
    assert "Dockerfile:3:" in str(info.value) and "missing.txt" in str(info.value)
    with pytest.raises(BuildError) as info:
        builder.build(BUSYBOX + "FROBNICATE x\n")
    assert "Dockerfile:3:" in str(info.value)
    with pytest.raises(BuildError) as info:
        builder.build(BUSYBOX + "ADD https://example.com/x.tar /x\n")
    assert "remote sources are not supported" in str(info.value)
    with pytest.raises(BuildError) as info:
        builder.build("FROM nosuchimage:1\n")
    assert "no registry" in str(info.value)
    assert _leftovers(builder.layout) == []


def test_failing_run_names_the_step_and_keeps_nothing(builder: Builder) -> None:
    before = set(os.listdir(builder.layout.layers))
    first = builder.build(BUSYBOX)
    layers = set(os.listdir(builder.layout.layers)) - before
    with pytest.raises(BuildError) as info:
        builder.build(BUSYBOX + "RUN echo starting; sleep 1000 & echo doomed > /f; echo bad >&2; exit 3\n")
    text = str(info.value)
    assert text.startswith("service svc: ") and "Dockerfile:3: RUN echo starting;" in text, text
    assert "exit code 3" in text and "  | bad" in text and "  | starting" in text
    assert set(os.listdir(builder.layout.layers)) - before == layers, "no half layer"
    assert _leftovers(builder.layout) == []
    assert builder.store.get("test/img:latest").id == first.id


def test_run_heredoc_and_exec_form(builder: Builder) -> None:
    image = builder.build(
        BUSYBOX
        + "RUN <<EOF\nset -e\necho line1 > /h\necho line2 >> /h\nEOF\n"
        + 'RUN ["/bin/sh", "-c", "echo exec > /e"]\n'
        + "RUN cat > /c <<END\ncat-heredoc\nEND\n"
    )
    assert builder.sh(image, "cat /h /e /c") == "line1\nline2\nexec\ncat-heredoc\n"


# --- debian:bookworm and apt-get ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def bookworm_layout(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    layout = Layout(tmp_path_factory.mktemp("build-bookworm") / "root").ensure()
    ensure_base_image(ImageStore(layout), "debian:bookworm", layout=layout, progress=lambda _: None)
    return layout


@pytest.mark.slow
def test_debian_nginx_build_runs_nginx(
    bookworm_layout: Layout, forkserver: ForkServer, tmp_path: Path
) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    builder = Builder(bookworm_layout, forkserver, context)
    image = builder.build(
        "FROM debian:bookworm\n"
        "RUN apt-get update && apt-get install -y --no-install-recommends nginx-light "
        "&& rm -rf /var/lib/apt/lists/*\n"
        'CMD ["nginx", "-g", "daemon off;"]\n'
    )
    assert any("Setting up nginx" in line for line in builder.lines), builder.lines[-20:]
    code, out = builder.run(image, "nginx", "-v")
    assert code == 0 and "nginx version: nginx/1.22" in out, out
    top = builder.store.layer_dirs(image)[0]
    assert (top / "usr/sbin/nginx").exists()
    assert (top / "etc/resolv.conf").exists() is False or (top / "etc/resolv.conf").stat().st_size == 0
    builder.build()
    assert sum(" CACHED " in line for line in builder.lines) == 1
