"""Linux capabilities by name, Docker's default set, and its cap_add / cap_drop / privileged rules.

Pure: `resolve_caps` turns the compose-level wishes into the set of capability numbers that the
container keeps (bounding, permitted and effective sets for root; bounding only for other users).
"""

from __future__ import annotations

from collections.abc import Iterable

from composer.errors import ComposerError

__all__ = ["ALL_CAPS", "DEFAULT_CAPS", "CapabilityError", "cap_mask", "cap_names", "resolve_caps"]

# linux/capability.h, in number order.
ALL_CAPS: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
    "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN",
    "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)  # fmt: skip
_NUMBER = {name: index for index, name in enumerate(ALL_CAPS)}

# moby: oci/caps/defaults.go
DEFAULT_CAPS: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
    "CAP_AUDIT_WRITE",
)  # fmt: skip


class CapabilityError(ComposerError):
    """An unknown capability name in cap_add / cap_drop."""


def _normalize(name: str) -> str:
    upper = name.strip().upper()
    if upper == "ALL":
        return upper
    full = upper if upper.startswith("CAP_") else f"CAP_{upper}"
    if full not in _NUMBER:
        raise CapabilityError(f"capabilities: unknown capability {name!r}")
    return full


def resolve_caps(
    *, cap_add: Iterable[str] = (), cap_drop: Iterable[str] = (), privileged: bool = False, last_cap: int
) -> frozenset[int]:
    """The capability numbers a container keeps, by Docker's rules (moby: oci/caps/utils.go).

    `cap_add: [ALL]` means every capability but the dropped ones; `cap_drop: [ALL]` means only the
    added ones; otherwise the default 14, minus drops, plus adds. Capabilities above the kernel's
    `cap_last_cap` are left out.
    """
    known = [name for name in ALL_CAPS if _NUMBER[name] <= last_cap]
    adds = [_normalize(n) for n in cap_add]
    drops = [_normalize(n) for n in cap_drop]
    if privileged:
        names = known
    elif "ALL" in adds:
        names = [n for n in known if n not in drops]
    elif "ALL" in drops:
        names = [n for n in adds if n != "ALL"]
    else:
        names = [n for n in DEFAULT_CAPS if n not in drops] + adds
    return frozenset(_NUMBER[n] for n in names if _NUMBER[n] <= last_cap)


def cap_mask(caps: Iterable[int]) -> int:
    mask = 0
    for number in caps:
        mask |= 1 << number
    return mask


def cap_names(mask: int) -> tuple[str, ...]:
    """The names in a mask such as /proc/self/status's CapEff, in number order."""
    return tuple(name for index, name in enumerate(ALL_CAPS) if mask >> index & 1)
