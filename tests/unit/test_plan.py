"""The reconcile step: observed state + project + options -> a plan, compared as golden text."""

from __future__ import annotations

import dataclasses
from textwrap import dedent

import pytest

from composer.engine.plan import (
    CreateContainer,
    KeepContainer,
    Plan,
    PlanError,
    RecreateContainer,
    StartContainer,
    UpOptions,
    plan_down,
    plan_up,
)
from composer.engine.state import (
    ContainerState,
    ObservedContainer,
    ObservedNetwork,
    ObservedProject,
    ObservedVolume,
)
from composer.spec.hashing import config_hash
from composer.spec.loader import LoadOptions, load_project
from composer.spec.model import Project

IMG = "sha256:" + "1" * 64
NEW_IMG = "sha256:" + "2" * 64


def project(yaml_text: str) -> Project:
    options = LoadOptions(cwd="/w", environ={}, files=("-",), stdin_text=dedent(yaml_text), project_name="p")
    return load_project(options, lambda _: None).project


def running(
    p: Project,
    service: str,
    number: int = 1,
    *,
    state: ContainerState = "running",
    image: str = IMG,
    hash_of: Project | None = None,
    exit_code: int | None = None,
    one_off: bool = False,
) -> ObservedContainer:
    """A container as `up` would have left it for `service` of `hash_of` (default: of `p`)."""
    source = hash_of or p
    names = {s.name: s for s in (*source.services, *source.disabled_services)}
    h = config_hash(names[service]) if service in names else "f" * 64
    return ObservedContainer(
        id=f"{service}{number}".ljust(64, "0"),
        name=f"p-{service}-{number}" if not one_off else f"p-{service}-run-{number:012x}",
        service=service,
        number=number,
        config_hash=h,
        image_id=image,
        state=state,
        exit_code=exit_code,
        one_off=one_off,
    )


def observed(
    *containers: ObservedContainer, networks: tuple[str, ...] = (), volumes: tuple[str, ...] = ()
) -> ObservedProject:
    return ObservedProject(
        name="p",
        containers=containers,
        networks=tuple(ObservedNetwork(name=n) for n in networks),
        volumes=tuple(ObservedVolume(name=v) for v in volumes),
    )


def text(plan: Plan) -> str:
    return plan.text()


def golden(expected: str) -> str:
    return dedent(expected).lstrip("\n")


STACK = """
services:
  db:
    image: postgres
    volumes: [data:/var/lib/postgresql/data]
  cache: {image: redis}
  web:
    image: nginx
    depends_on: [db, cache]
volumes: {data: {}}
"""

ALL = {"db": IMG, "cache": IMG, "web": IMG}


def test_first_up_creates_everything_level_by_level() -> None:
    p = project(STACK)
    plan = plan_up(p, observed(), images=ALL)
    assert text(plan) == golden("""
        [0] create network p_default: not found
        [0] create volume p_data: not found
        [1] create container p-cache-1: new service
        [1] start container p-cache-1: created
        [1] create container p-db-1: new service
        [1] start container p-db-1: created
        [2] create container p-web-1: new service
        [2] start container p-web-1: created
    """)
    assert [len(level) for level in plan.levels()] == [2, 4, 2]


def test_second_up_keeps_everything() -> None:
    p = project(STACK)
    obs = observed(
        running(p, "db"), running(p, "cache"), running(p, "web"), networks=("p_default",), volumes=("p_data",)
    )
    plan = plan_up(p, obs, images=ALL)
    assert text(plan) == golden("""
        [1] keep container p-cache-1: up to date, running
        [1] keep container p-db-1: up to date, running
        [2] keep container p-web-1: up to date, running
    """)
    assert plan.actions() == ()


def test_a_changed_service_is_recreated_with_both_hashes_in_the_cause() -> None:
    old = project(STACK)
    new = project(STACK.replace("image: nginx", "image: nginx\n    environment: {A: '1'}"))
    obs = observed(
        running(old, "db"),
        running(old, "cache"),
        running(old, "web"),
        networks=("p_default",),
        volumes=("p_data",),
    )
    plan = plan_up(new, obs, images=ALL)
    before, after = config_hash(old.service("web"))[:12], config_hash(new.service("web"))[:12]
    assert text(plan) == golden(f"""
        [1] keep container p-cache-1: up to date, running
        [1] keep container p-db-1: up to date, running
        [2] recreate container p-web-1: config hash changed ({before} -> {after})
        [2] start container p-web-1: recreated
    """)
    recreate = plan.operations[2]
    assert isinstance(recreate, RecreateContainer) and recreate.replaces == obs.containers[2].id


def test_a_new_image_id_recreates() -> None:
    p = project(STACK)
    obs = observed(
        running(p, "db"), running(p, "cache"), running(p, "web"), networks=("p_default",), volumes=("p_data",)
    )
    plan = plan_up(p, obs, images={**ALL, "cache": NEW_IMG})
    assert "[1] recreate container p-cache-1: image changed (111111111111 -> 222222222222)\n" in text(plan)


def test_force_recreate_and_no_recreate() -> None:
    old = project(STACK)
    new = project(STACK.replace("{image: redis}", "{image: redis, init: true}"))
    obs = observed(
        running(old, "db"),
        running(old, "cache"),
        running(old, "web", state="exited", exit_code=2),
        networks=("p_default",),
        volumes=("p_data",),
    )
    forced = plan_up(new, obs, images=ALL, options=UpOptions(force_recreate=True))
    causes = [op.cause for op in forced.operations if isinstance(op, RecreateContainer)]
    assert causes == ["--force-recreate"] * 3
    h = config_hash(old.service("cache"))[:12], config_hash(new.service("cache"))[:12]
    kept = plan_up(new, obs, images=ALL, options=UpOptions(no_recreate=True))
    assert text(kept) == golden(f"""
        [1] keep container p-cache-1: --no-recreate (config hash changed ({h[0]} -> {h[1]}))
        [1] keep container p-db-1: up to date, running
        [2] start container p-web-1: exited (2)
    """)


def test_stopped_and_created_containers_are_started() -> None:
    p = project(STACK)
    obs = observed(
        running(p, "db", state="created"),
        running(p, "cache", state="exited", exit_code=0),
        running(p, "web", state="paused"),
        networks=("p_default",),
        volumes=("p_data",),
    )
    assert text(plan_up(p, obs, images=ALL)) == golden("""
        [1] start container p-cache-1: exited (0)
        [1] start container p-db-1: created, never started
        [2] keep container p-web-1: up to date, paused
    """)


def test_create_only_starts_nothing() -> None:
    p = project(STACK)
    plan = plan_up(p, observed(running(p, "db", state="exited")), images=ALL, options=UpOptions(start=False))
    assert not any(isinstance(op, StartContainer) for op in plan.operations)
    assert "[1] keep container p-db-1: up to date, exited\n" in text(plan)


SCALED = """
services:
  worker: {image: busybox, command: [sleep, inf], scale: 3}
"""


def test_scale_up_numbers_after_the_highest_existing() -> None:
    p = project(SCALED)
    obs = observed(running(p, "worker", 1), running(p, "worker", 4), networks=("p_default",))
    assert text(plan_up(p, obs, images={"worker": IMG})) == golden("""
        [1] keep container p-worker-1: up to date, running
        [1] keep container p-worker-4: up to date, running
        [1] create container p-worker-5: scale 2 -> 3
        [1] start container p-worker-5: created
    """)


def test_scale_down_removes_the_highest_numbers() -> None:
    p = project(SCALED)
    obs = observed(*(running(p, "worker", n) for n in (1, 2, 3)), networks=("p_default",))
    plan = plan_up(p, obs, images={"worker": IMG}, options=UpOptions(scale={"worker": 1}))
    assert text(plan) == golden("""
        [1] remove container p-worker-2: scale 3 -> 1
        [1] remove container p-worker-3: scale 3 -> 1
        [1] keep container p-worker-1: up to date, running
    """)


def test_scale_down_removes_diverged_containers_first() -> None:
    p = project(SCALED)
    stale = dataclasses.replace(running(p, "worker", 1), config_hash="0" * 64)
    obs = observed(stale, running(p, "worker", 2), running(p, "worker", 3), networks=("p_default",))
    plan = plan_up(p, obs, images={"worker": IMG}, options=UpOptions(scale={"worker": 2}))
    assert text(plan) == golden("""
        [1] remove container p-worker-1: scale 3 -> 2
        [1] keep container p-worker-2: up to date, running
        [1] keep container p-worker-3: up to date, running
    """)


def test_scale_zero_removes_all_and_negative_or_unknown_scales_are_refused() -> None:
    p = project(SCALED)
    obs = observed(running(p, "worker", 1), networks=("p_default",))
    plan = plan_up(p, obs, images={"worker": IMG}, options=UpOptions(scale={"worker": 0}))
    assert text(plan) == "[1] remove container p-worker-1: scale 1 -> 0\n"
    with pytest.raises(PlanError, match="no such service: nope"):
        plan_up(p, obs, images={}, options=UpOptions(scale={"nope": 2}))
    with pytest.raises(PlanError, match="must not be negative"):
        plan_up(p, obs, images={}, options=UpOptions(scale={"worker": -1}))


def test_container_name_is_used_and_forbids_scaling() -> None:
    p = project("services:\n  db: {image: postgres, container_name: the-db}\n")
    plan = plan_up(p, observed(networks=("p_default",)), images={"db": IMG})
    assert text(plan) == "[1] create container the-db: new service\n[1] start container the-db: created\n"
    with pytest.raises(PlanError, match='service db: container_name "the-db" allows one container, not 2'):
        plan_up(p, observed(), images={"db": IMG}, options=UpOptions(scale={"db": 2}))


NAMESPACES = """
services:
  vpn: {image: vpn}
  app: {image: app, network_mode: "service:vpn"}
  side: {image: side, volumes_from: [app]}
  other: {image: other, depends_on: [vpn]}
"""


def test_recreating_a_namespace_parent_recreates_its_children() -> None:
    old = project(NAMESPACES)
    new = project(NAMESPACES.replace("image: vpn", "image: vpn2"))
    imgs = {"vpn": IMG, "app": IMG, "side": IMG, "other": IMG}
    obs = observed(*(running(old, s) for s in ("vpn", "app", "side", "other")), networks=("p_default",))
    h = config_hash(old.service("vpn"))[:12], config_hash(new.service("vpn"))[:12]
    assert text(plan_up(new, obs, images=imgs)) == golden(f"""
        [1] recreate container p-vpn-1: config hash changed ({h[0]} -> {h[1]})
        [1] start container p-vpn-1: recreated
        [2] recreate container p-app-1: network_mode parent service vpn recreated
        [2] start container p-app-1: recreated
        [2] keep container p-other-1: up to date, running
        [3] recreate container p-side-1: volumes_from parent service app recreated
        [3] start container p-side-1: recreated
    """)


def test_depends_on_restart_true_restarts_a_kept_dependent() -> None:
    yaml_text = """
    services:
      db: {image: postgres}
      web: {image: nginx, depends_on: {db: {condition: service_started, restart: true}}}
    """
    p = project(yaml_text)
    obs = observed(running(p, "db"), running(p, "web"), networks=("p_default",))
    plan = plan_up(p, obs, images={"db": NEW_IMG, "web": IMG})
    assert text(plan) == golden("""
        [1] recreate container p-db-1: image changed (111111111111 -> 222222222222)
        [1] start container p-db-1: recreated
        [2] restart container p-web-1: dependency db recreated or restarted (depends_on restart: true)
    """)


def test_selected_services_bring_their_dependencies_unless_no_deps() -> None:
    p = project(STACK)
    plan = plan_up(p, observed(), images=ALL, options=UpOptions(services=("web",), no_deps=True))
    assert text(plan) == golden("""
        [0] create network p_default: not found
        [1] create container p-web-1: new service
        [1] start container p-web-1: created
    """)
    with_deps = plan_up(p, observed(), images=ALL, options=UpOptions(services=("web",)))
    assert {op.name for op in with_deps.operations if isinstance(op, CreateContainer)} == {
        "p-web-1",
        "p-db-1",
        "p-cache-1",
    }
    with pytest.raises(PlanError, match="no such service: nope"):
        plan_up(p, observed(), images=ALL, options=UpOptions(services=("nope",)))


def test_force_recreate_targets_the_selection_and_always_recreate_deps_the_rest() -> None:
    p = project(STACK)
    obs = observed(
        running(p, "db"), running(p, "cache"), running(p, "web"), networks=("p_default",), volumes=("p_data",)
    )
    only_web = plan_up(p, obs, images=ALL, options=UpOptions(services=("web",), force_recreate=True))
    assert [op.name for op in only_web.operations if isinstance(op, RecreateContainer)] == ["p-web-1"]
    both = UpOptions(services=("web",), force_recreate=True, always_recreate_deps=True)
    deps_too = plan_up(p, obs, images=ALL, options=both)
    causes = {op.name: op.cause for op in deps_too.operations if isinstance(op, RecreateContainer)}
    assert causes == {
        "p-cache-1": "--always-recreate-deps",
        "p-db-1": "--always-recreate-deps",
        "p-web-1": "--force-recreate",
    }


def test_orphans_are_reported_or_removed() -> None:
    p = project(STACK)
    ghost = running(p, "gone")
    run_done = running(p, "web", 7, state="exited", one_off=True)
    run_live = running(p, "web", 8, one_off=True)
    obs = observed(
        running(p, "db"),
        running(p, "cache"),
        running(p, "web"),
        ghost,
        run_done,
        run_live,
        networks=("p_default",),
        volumes=("p_data",),
    )
    plain = plan_up(p, obs, images=ALL)
    assert plain.warnings == (
        "found orphan containers (p-gone-1, p-web-run-000000000007) for this project; if you removed or "
        "renamed their service in the compose file, run up with --remove-orphans to clean them up",
    )
    assert text(plain).startswith("warning: found orphan containers")
    removing = plan_up(p, obs, images=ALL, options=UpOptions(remove_orphans=True))
    assert text(removing).splitlines()[:2] == [
        "[0] remove container p-gone-1: orphan container (service gone is not in the project)",
        "[0] remove container p-web-run-000000000007: orphan one-off container of service web (exited)",
    ]
    assert removing.warnings == ()


def test_containers_of_disabled_services_are_not_orphans() -> None:
    p = project(STACK.replace("\nvolumes:", "\n  debug: {image: busybox, profiles: [dbg]}\nvolumes:"))
    obs = observed(
        running(p, "db"),
        running(p, "cache"),
        running(p, "web"),
        running(p, "debug"),
        networks=("p_default",),
        volumes=("p_data",),
    )
    plan = plan_up(p, obs, images=ALL)
    assert plan.warnings == () and plan.actions() == ()


BUILT = """
services:
  app:
    build: .
  db: {image: postgres}
"""


def test_images_are_built_or_pulled_first() -> None:
    p = project(BUILT)
    assert text(plan_up(p, observed(), images={})) == golden("""
        [0] create network p_default: not found
        [0] build image p-app (service app): image not built yet
        [0] pull image postgres (service db): image not in the store
        [1] create container p-app-1: new service
        [1] start container p-app-1: created
        [1] create container p-db-1: new service
        [1] start container p-db-1: created
    """)


def test_build_flag_rebuilds_and_existing_containers_follow_the_new_image() -> None:
    p = project(BUILT)
    obs = observed(running(p, "app"), running(p, "db"), networks=("p_default",))
    plan = plan_up(p, obs, images={"app": IMG, "db": IMG}, options=UpOptions(build=True))
    assert text(plan) == golden("""
        [0] build image p-app (service app): --build
        [1] recreate container p-app-1: image will be rebuilt
        [1] start container p-app-1: recreated
        [1] keep container p-db-1: up to date, running
    """)
    with pytest.raises(PlanError, match="service app: image p-app is not built, and --no-build was given"):
        plan_up(p, obs, images={"db": IMG}, options=UpOptions(no_build=True))


def test_external_and_unused_resources_are_not_created() -> None:
    p = project("""
    services:
      a: {image: a, networks: [front, ext], volumes: [vol:/v, outside:/o]}
      b: {image: b, networks: [back]}
    networks: {front: {}, back: {}, ext: {external: true}}
    volumes: {vol: {}, outside: {external: true}}
    """)
    plan = plan_up(p, observed(), images={"a": IMG, "b": IMG}, options=UpOptions(services=("a",)))
    assert [op.text() for op in plan.levels()[0]] == [
        "[0] create network p_front: not found",
        "[0] create volume p_vol: not found",
    ]


def test_the_same_inputs_give_the_same_plan() -> None:
    p = project(STACK)
    obs = observed(running(p, "web"), running(p, "db", state="exited"))
    assert plan_up(p, obs, images=ALL) == plan_up(p, obs, images=ALL)


def test_kept_operations_name_their_service_and_number() -> None:
    p = project(SCALED)
    plan = plan_up(p, observed(running(p, "worker", 2), networks=("p_default",)), images={"worker": IMG})
    keep = plan.operations[0]
    assert isinstance(keep, KeepContainer) and (keep.service, keep.number, keep.level) == ("worker", 2, 1)


# --- down ------------------------------------------------------------------------------------------------


def test_down_removes_dependents_first_then_networks() -> None:
    p = project(STACK)
    obs = observed(
        running(p, "db"),
        running(p, "cache"),
        running(p, "web"),
        running(p, "web", 3, state="exited", one_off=True),
        networks=("p_default",),
        volumes=("p_data",),
    )
    plan = plan_down(p, obs)
    assert text(plan) == golden("""
        [0] remove container p-web-1: down
        [0] remove container p-web-run-000000000003: down
        [1] remove container p-cache-1: down
        [1] remove container p-db-1: down
        [2] remove network p_default: down
    """)


def test_down_v_removes_named_volumes_but_not_external_ones_and_rmi() -> None:
    p = project(
        BUILT.replace("{image: postgres}", "{image: postgres, volumes: [data:/d, ext:/e]}")
        + "volumes: {data: {}, ext: {external: true}}\n"
    )
    obs = observed(running(p, "app"), running(p, "db"), networks=("p_default",), volumes=("p_data", "ext"))
    plan = plan_down(p, obs, remove_volumes=True, rmi="local")
    assert text(plan) == golden("""
        [0] remove container p-app-1: down
        [0] remove container p-db-1: down
        [1] remove network p_default: down
        [1] remove volume p_data: down -v
        [1] remove image p-app: --rmi local
    """)
    assert all(getattr(op, "remove_volumes", True) for op in plan.operations)
    everything = plan_down(p, obs, rmi="all")
    assert [op.text() for op in everything.operations][-2:] == [
        "[1] remove image p-app: --rmi all",
        "[1] remove image postgres: --rmi all",
    ]


def test_down_twice_plans_nothing_and_orphans_need_the_flag() -> None:
    p = project(STACK)
    assert text(plan_down(p, observed())) == "nothing to do\n"
    obs = observed(running(p, "gone"))
    assert plan_down(p, obs).operations == ()
    assert plan_down(p, obs).warnings[0].startswith("found orphan containers (p-gone-1)")
    assert text(plan_down(p, obs, remove_orphans=True)) == (
        "[0] remove container p-gone-1: orphan container (service not in the project)\n"
    )


def test_down_removes_containers_of_services_profiles_disable() -> None:
    p = project(STACK.replace("\nvolumes:", "\n  debug: {image: busybox, profiles: [dbg]}\nvolumes:"))
    plan = plan_down(p, observed(running(p, "debug")))
    assert text(plan) == "[0] remove container p-debug-1: down (service disabled by its profiles)\n"
