"""ImageConfig: Docker's entrypoint/command rules and the OCI JSON round trip."""

from __future__ import annotations

from composer.image.config import Healthcheck, ImageConfig

IMAGE = ImageConfig(entrypoint=("/entry.sh",), cmd=("nginx", "-g", "daemon off;"))


def test_image_defaults_when_nothing_is_given() -> None:
    assert IMAGE.argv() == ("/entry.sh", "nginx", "-g", "daemon off;")


def test_command_replaces_cmd_only() -> None:
    assert IMAGE.argv(command=["sh", "-c", "id"]) == ("/entry.sh", "sh", "-c", "id")


def test_entrypoint_replaces_entrypoint_and_drops_the_image_cmd() -> None:
    assert IMAGE.argv(entrypoint=["/bin/sh"]) == ("/bin/sh",)
    assert IMAGE.argv(entrypoint=["/bin/sh"], command=["-c", "true"]) == ("/bin/sh", "-c", "true")


def test_empty_lists_clear() -> None:
    assert IMAGE.argv(entrypoint=[]) == ()
    assert IMAGE.argv(entrypoint=[], command=["run"]) == ("run",)
    assert IMAGE.argv(command=[]) == ("/entry.sh",)


def test_an_image_with_only_cmd() -> None:
    assert ImageConfig(cmd=("bash",)).argv() == ("bash",)
    assert ImageConfig(cmd=("bash",)).argv(command=["ls"]) == ("ls",)


def test_oci_round_trip_keeps_every_field_and_unknown_keys() -> None:
    config = ImageConfig(
        env=("PATH=/usr/bin", "A=1"),
        cmd=("bash",),
        entrypoint=("/e",),
        working_dir="/app",
        user="www-data",
        exposed_ports=("443/tcp", "80/tcp"),
        volumes=("/data",),
        healthcheck=Healthcheck(test=("CMD", "true"), interval_ns=5_000_000_000, retries=3),
        labels=(("a", "1"), ("b", "2")),
        stop_signal="SIGQUIT",
        shell=("/bin/bash", "-c"),
        on_build=("RUN true",),
        extra=(("ArgsEscaped", True),),
    )
    data = config.to_oci()
    assert data["ExposedPorts"] == {"443/tcp": {}, "80/tcp": {}}
    assert data["Healthcheck"] == {"Test": ["CMD", "true"], "Interval": 5_000_000_000, "Retries": 3}
    assert ImageConfig.from_oci(data) == config
    assert config.env_dict() == {"PATH": "/usr/bin", "A": "1"}
    assert config.with_env("A", "2").env == ("PATH=/usr/bin", "A=2")
