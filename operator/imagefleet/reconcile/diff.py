"""Does a live object hold what the operator would apply? A semantic comparison.

The operator applies with server-side apply, so a live object legitimately
holds more than the operator sent: server defaults (protocol, imagePullPolicy,
probe timeouts, ...) and fields other managers own (an extra label, an extra
env var). The comparison is therefore "desired is contained in live":

- mappings: every desired key must be there with a contained value;
- lists keyed by a field (containers by name, env by name, ownerReferences by
  uid, ...), as server-side apply merges them: every desired item must be there;
- other lists are atomic and compare item by item;
- quantities under `resources` compare by value ("1Gi" == "1024Mi").

Removals (a field the operator applied earlier and no longer wants) are caught
by the spec-hash annotation every child carries.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from decimal import InvalidOperation
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from .. import GROUP

SPEC_HASH_ANNOTATION = f"{GROUP}/spec-hash"

# List field name -> the item field server-side apply merges it by.
LIST_MAP_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ownerReferences": "uid",
}
PORT_KEYS = ("containerPort", "port")


def spec_hash(manifest: Mapping[str, Any]) -> str:
    """A short, stable digest of a manifest."""
    return hashlib.sha256(json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def with_spec_hash(manifest: dict[str, Any]) -> dict[str, Any]:
    """`manifest` annotated with its own hash (computed without the annotation and the replicas,
    which scaling changes and which are compared directly)."""
    spec = {key: value for key, value in manifest.get("spec", {}).items() if key != "replicas"}
    digest = spec_hash({**manifest, "spec": spec})
    metadata = manifest["metadata"]
    annotations = {**metadata.get("annotations", {}), SPEC_HASH_ANNOTATION: digest}
    return {**manifest, "metadata": {**metadata, "annotations": annotations}}


def _empty(value: Any) -> bool:
    return value is None or value == {} or value == []


def _same_quantity(desired: Any, live: Any) -> bool:
    try:
        return bool(parse_quantity(desired) == parse_quantity(live))
    except (ValueError, TypeError, InvalidOperation):
        return False


def _item_key(name: str, item: Any) -> tuple[str, Any] | None:
    if not isinstance(item, Mapping):
        return None
    if name == "ports":
        for key in PORT_KEYS:
            if key in item:
                return key, (item[key], item.get("protocol", "TCP"))
        return None
    field = LIST_MAP_KEYS.get(name)
    return (field, item.get(field)) if field and field in item else None


def differences(desired: Any, live: Any, path: str = "", *, _in_resources: bool = False) -> list[str]:
    """The paths where `live` does not contain `desired` (empty: nothing to do)."""
    if isinstance(desired, Mapping):
        if not isinstance(live, Mapping):
            return [path or "."]
        found: list[str] = []
        for key, value in desired.items():
            child = f"{path}.{key}"
            if key not in live:
                if not _empty(value):
                    found.append(child)
                continue
            in_resources = _in_resources or key in ("requests", "limits")
            found += differences(value, live[key], child, _in_resources=in_resources)
        return found
    if isinstance(desired, list):
        if not isinstance(live, list):
            return [path]
        name = path.rsplit(".", 1)[-1]
        keys = [_item_key(name, item) for item in desired]
        if desired and all(keys):
            live_by_key = {_item_key(name, item): item for item in live}
            found = []
            for key, item in zip(keys, desired, strict=True):
                assert key is not None
                label = f"{path}[{key[0]}={key[1]}]"
                found += differences(item, live_by_key[key], label) if key in live_by_key else [label]
            return found
        if len(desired) != len(live):
            return [path]
        found = []
        for index, (want, have) in enumerate(zip(desired, live, strict=True)):
            found += differences(want, have, f"{path}[{index}]")
        return found
    if desired == live and type(desired) is type(live):
        return []
    if _in_resources and _same_quantity(desired, live):
        return []
    return [path]
