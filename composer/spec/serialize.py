"""The model as `docker compose config --format json` prints it (Docker Compose v2).

Same key names, nesting, value types and omissions: `"command": null` when unset, ports with
`mode: ingress` and `published` as a string, durations in Go's format (`1m0s`), byte sizes as
strings of bytes, `networks: {"default": null}`, empty values left out. Keys come in Compose's
order: maps sorted, struct fields in compose-go's declaration order (the order of our dataclasses).

Values are the model's own: literal `$` stay `$`. `docker compose config` escapes them as `$$`
so that its output can be loaded again; pass `escape_dollars=True` for that.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from composer.spec.model import (
    Build,
    Deploy,
    Env,
    FileRef,
    Healthcheck,
    Network,
    Pairs,
    Port,
    Project,
    Raw,
    Resource,
    SecretObject,
    Service,
    ServiceNetwork,
    Ulimit,
    Volume,
    VolumeMount,
)

__all__ = ["escape_dollars", "project_to_dict", "service_to_dict", "to_json"]

Out = dict[str, Any]


def _num(value: float) -> float | int:
    """Go prints a float without a fraction as an integer (`1`, not `1.0`)."""
    return int(value) if value == int(value) else value


def _put(out: Out, key: str, value: Any) -> None:
    """Set `key` unless `value` is empty (Go's `omitempty`)."""
    if value is None or value is False or (value == 0 and not isinstance(value, bool)):
        return
    if isinstance(value, (str, list, dict, tuple)) and not value:
        return
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, float):
        value = _num(value)
    out[key] = value


def _pairs(pairs: Pairs) -> dict[str, str]:
    return dict(pairs)


def _env(env: Env) -> dict[str, str | None]:
    return dict(env)


def _raw(raw: Raw | None) -> Any:
    return None if raw is None else raw.value()


def _ulimits(ulimits: tuple[Ulimit, ...]) -> Out:
    out: Out = {}
    for limit in ulimits:
        if limit.single is not None:
            out[limit.name] = limit.single
        else:
            entry: Out = {}
            _put(entry, "soft", limit.soft)
            _put(entry, "hard", limit.hard)
            out[limit.name] = entry
    return out


def _file_ref(ref: FileRef) -> Out:
    out: Out = {}
    _put(out, "source", ref.source)
    _put(out, "target", ref.target)
    _put(out, "uid", ref.uid)
    _put(out, "gid", ref.gid)
    if ref.mode is not None:
        out["mode"] = ref.mode
    return out


def _port(port: Port) -> Out:
    out: Out = {}
    _put(out, "name", port.name)
    _put(out, "mode", port.mode)
    _put(out, "host_ip", port.host_ip)
    _put(out, "target", port.target)
    _put(out, "published", port.published)
    _put(out, "protocol", port.protocol)
    _put(out, "app_protocol", port.app_protocol)
    return out


def _mount(mount: VolumeMount) -> Out:
    out: Out = {}
    _put(out, "type", mount.type)
    _put(out, "source", mount.source)
    _put(out, "target", mount.target)
    _put(out, "read_only", mount.read_only)
    _put(out, "consistency", mount.consistency)
    if mount.bind is not None:
        bind: Out = {}
        _put(bind, "selinux", mount.bind.selinux)
        _put(bind, "propagation", mount.bind.propagation)
        _put(bind, "create_host_path", mount.bind.create_host_path)
        _put(bind, "recursive", mount.bind.recursive)
        out["bind"] = bind
    if mount.volume is not None:
        volume: Out = {}
        _put(volume, "labels", _pairs(mount.volume.labels))
        _put(volume, "nocopy", mount.volume.nocopy)
        _put(volume, "subpath", mount.volume.subpath)
        out["volume"] = volume
    if mount.tmpfs is not None:
        tmpfs: Out = {}
        _put(tmpfs, "size", None if mount.tmpfs.size is None else str(mount.tmpfs.size))
        _put(tmpfs, "mode", mount.tmpfs.mode)
        out["tmpfs"] = tmpfs
    if mount.image is not None:
        image: Out = {}
        _put(image, "subpath", mount.image.subpath)
        out["image"] = image
    return out


def _network(attachment: ServiceNetwork) -> Out | None:
    if not attachment.declared:
        return None
    out: Out = {}
    _put(out, "aliases", attachment.aliases)
    _put(out, "driver_opts", _pairs(attachment.driver_opts))
    _put(out, "gw_priority", attachment.gw_priority)
    _put(out, "interface_name", attachment.interface_name)
    _put(out, "ipv4_address", attachment.ipv4_address)
    _put(out, "ipv6_address", attachment.ipv6_address)
    _put(out, "link_local_ips", attachment.link_local_ips)
    _put(out, "mac_address", attachment.mac_address)
    _put(out, "priority", attachment.priority)
    return out


def _healthcheck(check: Healthcheck) -> Out:
    out: Out = {}
    _put(out, "test", check.test)
    for key in ("timeout", "interval"):
        value = getattr(check, key)
        _put(out, key, None if value is None else str(value))
    if check.retries is not None:
        out["retries"] = check.retries
    for key in ("start_period", "start_interval"):
        value = getattr(check, key)
        _put(out, key, None if value is None else str(value))
    _put(out, "disable", check.disable)
    return out


def _build(build: Build) -> Out:
    out: Out = {}
    _put(out, "context", build.context)
    _put(out, "dockerfile", build.dockerfile)
    _put(out, "dockerfile_inline", build.dockerfile_inline)
    _put(out, "entitlements", build.entitlements)
    _put(out, "args", _env(build.args))
    _put(out, "provenance", build.provenance)
    _put(out, "sbom", build.sbom)
    _put(out, "ssh", build.ssh)
    _put(out, "labels", _pairs(build.labels))
    _put(out, "cache_from", build.cache_from)
    _put(out, "cache_to", build.cache_to)
    _put(out, "no_cache", build.no_cache)
    _put(out, "no_cache_filter", build.no_cache_filter)
    _put(out, "additional_contexts", _pairs(build.additional_contexts))
    _put(out, "pull", build.pull)
    _put(out, "extra_hosts", build.extra_hosts)
    _put(out, "isolation", build.isolation)
    _put(out, "network", build.network)
    _put(out, "target", build.target)
    _put(out, "secrets", [_file_ref(ref) for ref in build.secrets])
    _put(out, "shm_size", None if build.shm_size is None else str(build.shm_size))
    _put(out, "tags", build.tags)
    _put(out, "ulimits", _ulimits(build.ulimits))
    _put(out, "platforms", build.platforms)
    _put(out, "privileged", build.privileged)
    return out


def _resource(resource: Resource | None) -> Out | None:
    if resource is None:
        return None
    out: Out = {}
    _put(out, "cpus", resource.cpus)
    _put(out, "memory", None if resource.memory is None else str(resource.memory))
    _put(out, "pids", resource.pids)
    _put(out, "devices", _raw(resource.devices))
    _put(out, "generic_resources", _raw(resource.generic_resources))
    return out


def _deploy(deploy: Deploy) -> Out:
    out: Out = {}
    _put(out, "mode", deploy.mode)
    if deploy.replicas is not None:
        out["replicas"] = deploy.replicas
    _put(out, "labels", _pairs(deploy.labels))
    _put(out, "update_config", _raw(deploy.update_config))
    _put(out, "rollback_config", _raw(deploy.rollback_config))
    resources: Out = {}
    limits = _resource(deploy.resources.limits)
    if limits is not None:
        resources["limits"] = limits
    reservations = _resource(deploy.resources.reservations)
    if reservations is not None:
        resources["reservations"] = reservations
    out["resources"] = resources
    if deploy.restart_policy is not None:
        policy: Out = {}
        rp = deploy.restart_policy
        _put(policy, "condition", rp.condition)
        _put(policy, "delay", None if rp.delay is None else str(rp.delay))
        if rp.max_attempts is not None:
            policy["max_attempts"] = rp.max_attempts
        _put(policy, "window", None if rp.window is None else str(rp.window))
        out["restart_policy"] = policy
    out["placement"] = _raw(deploy.placement) or {}
    _put(out, "endpoint_mode", deploy.endpoint_mode)
    return out


def service_to_dict(service: Service) -> Out:
    """One service as Compose prints it under `services.<name>` (also the input of the config hash)."""
    s = service
    out: Out = {}
    _put(out, "profiles", s.profiles)
    _put(out, "annotations", _pairs(s.annotations))
    if s.attach is not None:
        out["attach"] = s.attach
    if s.build is not None:
        out["build"] = _build(s.build)
    _put(out, "develop", _raw(s.develop))
    _put(out, "blkio_config", _raw(s.blkio_config))
    _put(out, "cap_add", s.cap_add)
    _put(out, "cap_drop", s.cap_drop)
    _put(out, "cgroup_parent", s.cgroup_parent)
    _put(out, "cgroup", s.cgroup)
    _put(out, "cpu_count", s.cpu_count)
    _put(out, "cpu_percent", s.cpu_percent)
    _put(out, "cpu_period", s.cpu_period)
    _put(out, "cpu_quota", s.cpu_quota)
    _put(out, "cpu_rt_period", s.cpu_rt_period)
    _put(out, "cpu_rt_runtime", s.cpu_rt_runtime)
    _put(out, "cpus", s.cpus)
    _put(out, "cpuset", s.cpuset)
    _put(out, "cpu_shares", s.cpu_shares)
    out["command"] = None if s.command is None else list(s.command)
    _put(out, "configs", [_file_ref(ref) for ref in s.configs])
    _put(out, "container_name", s.container_name)
    _put(out, "credential_spec", _raw(s.credential_spec))
    depends: Out = {}
    for dep in s.depends_on:
        entry: Out = {"condition": dep.condition}
        _put(entry, "restart", dep.restart)
        entry["required"] = dep.required
        depends[dep.service] = entry
    _put(out, "depends_on", depends)
    if s.deploy is not None:
        out["deploy"] = _deploy(s.deploy)
    _put(out, "device_cgroup_rules", s.device_cgroup_rules)
    devices = []
    for device in s.devices:
        d: Out = {}
        _put(d, "source", device.source)
        _put(d, "target", device.target)
        _put(d, "permissions", device.permissions)
        devices.append(d)
    _put(out, "devices", devices)
    _put(out, "dns", s.dns)
    _put(out, "dns_opt", s.dns_opt)
    _put(out, "dns_search", s.dns_search)
    _put(out, "domainname", s.domainname)
    out["entrypoint"] = None if s.entrypoint is None else list(s.entrypoint)
    _put(out, "environment", _env(s.environment))
    _put(out, "expose", s.expose)
    _put(out, "external_links", s.external_links)
    _put(out, "extra_hosts", s.extra_hosts)
    _put(out, "group_add", s.group_add)
    _put(out, "gpus", _raw(s.gpus))
    _put(out, "hostname", s.hostname)
    if s.healthcheck is not None:
        out["healthcheck"] = _healthcheck(s.healthcheck)
    _put(out, "image", s.image)
    if s.init is not None:
        out["init"] = s.init
    _put(out, "ipc", s.ipc)
    _put(out, "isolation", s.isolation)
    _put(out, "labels", _pairs(s.labels))
    _put(out, "links", s.links)
    if s.logging is not None:
        logging: Out = {}
        _put(logging, "driver", s.logging.driver)
        _put(logging, "options", _pairs(s.logging.options))
        out["logging"] = logging
    for key in ("mem_limit", "mem_reservation", "memswap_limit", "mem_swappiness"):
        size = getattr(s, key)
        _put(out, key, None if size is None else str(size))
    _put(out, "mac_address", s.mac_address)
    _put(out, "network_mode", s.network_mode)
    _put(out, "networks", {n.name: _network(n) for n in s.networks})
    _put(out, "oom_kill_disable", s.oom_kill_disable)
    _put(out, "oom_score_adj", s.oom_score_adj)
    _put(out, "pid", s.pid)
    _put(out, "pids_limit", s.pids_limit)
    _put(out, "platform", s.platform)
    _put(out, "ports", [_port(port) for port in s.ports])
    _put(out, "privileged", s.privileged)
    _put(out, "pull_policy", s.pull_policy)
    _put(out, "read_only", s.read_only)
    _put(out, "restart", s.restart)
    _put(out, "runtime", s.runtime)
    if s.scale is not None:
        out["scale"] = s.scale
    _put(out, "secrets", [_file_ref(ref) for ref in s.secrets])
    _put(out, "security_opt", s.security_opt)
    _put(out, "shm_size", None if s.shm_size is None else str(s.shm_size))
    _put(out, "stdin_open", s.stdin_open)
    _put(out, "stop_grace_period", None if s.stop_grace_period is None else str(s.stop_grace_period))
    _put(out, "stop_signal", s.stop_signal)
    _put(out, "storage_opt", _pairs(s.storage_opt))
    _put(out, "sysctls", _pairs(s.sysctls))
    _put(out, "tmpfs", s.tmpfs)
    _put(out, "tty", s.tty)
    _put(out, "ulimits", _ulimits(s.ulimits))
    _put(out, "user", s.user)
    _put(out, "userns_mode", s.userns_mode)
    _put(out, "uts", s.uts)
    _put(out, "volume_driver", s.volume_driver)
    _put(out, "volumes", [_mount(mount) for mount in s.volumes])
    _put(out, "volumes_from", s.volumes_from)
    _put(out, "working_dir", s.working_dir)
    _put(out, "post_start", _raw(s.post_start))
    _put(out, "pre_stop", _raw(s.pre_stop))
    return out


def _network_def(network: Network) -> Out:
    out: Out = {}
    _put(out, "name", network.name)
    _put(out, "driver", network.driver)
    _put(out, "driver_opts", _pairs(network.driver_opts))
    ipam: Out = {}
    _put(ipam, "driver", network.ipam.driver)
    pools = []
    for pool in network.ipam.config:
        entry: Out = {}
        _put(entry, "subnet", pool.subnet)
        _put(entry, "gateway", pool.gateway)
        _put(entry, "ip_range", pool.ip_range)
        _put(entry, "aux_addresses", _pairs(pool.aux_addresses))
        pools.append(entry)
    _put(ipam, "config", pools)
    _put(ipam, "options", _pairs(network.ipam.options))
    out["ipam"] = ipam
    _put(out, "external", network.external)
    _put(out, "internal", network.internal)
    _put(out, "attachable", network.attachable)
    _put(out, "labels", _pairs(network.labels))
    if network.enable_ipv4 is not None:
        out["enable_ipv4"] = network.enable_ipv4
    if network.enable_ipv6 is not None:
        out["enable_ipv6"] = network.enable_ipv6
    return out


def _volume_def(volume: Volume) -> Out:
    out: Out = {}
    _put(out, "name", volume.name)
    _put(out, "driver", volume.driver)
    _put(out, "driver_opts", _pairs(volume.driver_opts))
    _put(out, "external", volume.external)
    _put(out, "labels", _pairs(volume.labels))
    return out


def _file_object(obj: SecretObject, *, secret: bool) -> Out:
    out: Out = {}
    _put(out, "name", obj.name)
    _put(out, "file", obj.file)
    _put(out, "environment", obj.environment)
    if not secret and obj.environment is None:  # Compose never prints a secret's content
        _put(out, "content", obj.content)
    _put(out, "external", obj.external)
    _put(out, "labels", _pairs(obj.labels))
    _put(out, "driver", obj.driver)
    _put(out, "driver_opts", _pairs(obj.driver_opts))
    _put(out, "template_driver", obj.template_driver)
    return out


def project_to_dict(project: Project, *, escape_dollars: bool = False) -> Out:
    """The whole project as `docker compose config --format json` prints it (enabled services only)."""
    sections: Out = {"name": project.name}
    if project.configs:
        sections["configs"] = {c.key: _file_object(c, secret=False) for c in project.configs}
    if project.networks:
        sections["networks"] = {n.key: _network_def(n) for n in project.networks}
    if project.secrets:
        sections["secrets"] = {s.key: _file_object(s, secret=True) for s in project.secrets}
    if project.services:
        sections["services"] = {s.name: service_to_dict(s) for s in project.services}
    if project.volumes:
        sections["volumes"] = {v.key: _volume_def(v) for v in project.volumes}
    for key, raw in project.extensions:
        sections[key] = raw.value()
    out = {key: sections[key] for key in sorted(sections)}
    return _map_strings(out, _escape) if escape_dollars else out


def _escape(text: str) -> str:
    return text.replace("$", "$$")


def _map_strings(value: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return {k: _map_strings(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_strings(v, fn) for v in value]
    return value


def escape_dollars(value: Any) -> Any:
    """Every string value with `$` written `$$`, as `docker compose config` prints them."""
    return _map_strings(value, _escape)


def to_json(value: Any) -> str:
    """JSON text the way Go's encoder writes it (2-space indent; `<`, `>`, `&` as \\u escapes)."""
    text = json.dumps(value, indent=2, ensure_ascii=False)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
