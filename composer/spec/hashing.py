"""The config hash of a service: what `up` compares to decide whether to recreate a container.

Like Compose (DC pkg/compose/hash.go), the hash covers the normalized service minus the attributes
that do not change the container itself: `build`, `pull_policy`, `scale`, `deploy.replicas`,
`depends_on` and `profiles`. It is the SHA-256 of canonical JSON (sorted keys, no spaces) of the same
dict that `composer config` prints, so the value is stable across runs and Python versions. It is not
byte-identical to Compose's hash, which serializes Go structs in declaration order.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from composer.spec.model import Service
from composer.spec.serialize import service_to_dict

__all__ = ["HASH_EXCLUDED", "canonical_json", "config_hash"]

HASH_EXCLUDED = ("build", "pull_policy", "scale", "depends_on", "profiles")


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def config_hash(service: Service) -> str:
    data = dict(service_to_dict(service))
    for key in HASH_EXCLUDED:
        data.pop(key, None)
    deploy = data.get("deploy")
    if isinstance(deploy, dict) and "replicas" in deploy:
        deploy = {k: v for k, v in deploy.items() if k != "replicas"}
        if deploy:
            data["deploy"] = deploy
        else:
            del data["deploy"]
    return hashlib.sha256(canonical_json(data).encode()).hexdigest()
