"""JSON schemas for kubeconform, offline: the Kubernetes API's own from the OpenAPI v3 documents in
the k8s.io/kubernetes module (the version the local API server is built from), the CRDs' from
their openAPIV3Schema. Strict, as `kubeconform -strict` expects: an object with listed properties
accepts no others.

Files are named as kubeconform's default location names them: `<kind>-<group>-<version>.json`
(`<kind>-<version>.json` for the core group), `<group>` being the first label of the API group.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from imagefleet.dev.components import KUBERNETES

Schema = dict[str, Any]
# kubeconform's -schema-location for a directory written by `write_schemas`.
LOCATION_TEMPLATE = "{{ .ResourceKind }}{{ .KindSuffix }}.json"
ROOT_FIELDS: Schema = {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"}}


def file_name(kind: str, group: str, version: str) -> str:
    prefix = group.split(".")[0]
    return f"{kind.lower()}-{prefix}-{version}.json" if group else f"{kind.lower()}-{version}.json"


def strict(schema: Any) -> Any:
    """`schema` with additionalProperties: false on every object that lists its properties."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: strict(value) for key, value in schema.items()}
    if ("properties" in result and "additionalProperties" not in result
            and not result.get("x-kubernetes-preserve-unknown-fields")):
        result["additionalProperties"] = False
    return result


def _refs_to_definitions(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_refs_to_definitions(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    return {
        key: value.replace("#/components/schemas/", "#/definitions/") if isinstance(value, str) and key == "$ref"
        else _refs_to_definitions(value)
        for key, value in schema.items()
    }


def kubernetes_module_dir() -> Path:
    """The k8s.io/kubernetes module the local control plane is built from (downloaded by Go if needed)."""
    result = subprocess.run(
        ["go", "mod", "download", "-json", f"{KUBERNETES.module}@{KUBERNETES.version}"],
        capture_output=True, text=True, timeout=600, check=True,
        env={**os.environ, "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}, cwd="/",
    )
    return Path(json.loads(result.stdout)["Dir"])


def kubernetes_schemas(module_dir: Path) -> dict[str, Schema]:
    """Every kind of the Kubernetes API, standalone (its definitions inside), by file name."""
    found: dict[str, Schema] = {}
    for document in sorted((module_dir / "api" / "openapi-spec" / "v3").glob("api*__v*_openapi.json")):
        definitions = _refs_to_definitions(json.loads(document.read_text())["components"]["schemas"])
        strict_definitions = strict(definitions)
        for name, schema in definitions.items():
            for gvk in schema.get("x-kubernetes-group-version-kind", ()):
                found[file_name(gvk["kind"], gvk["group"], gvk["version"])] = {
                    **strict_definitions[name], "definitions": strict_definitions,
                }
    return found


def crd_schemas(crds: Iterable[Schema]) -> dict[str, Schema]:
    found = {}
    for crd in crds:
        spec = crd["spec"]
        for version in spec["versions"]:
            schema = strict(version["schema"]["openAPIV3Schema"])
            # The API server accepts these on every object, listed in the CRD's schema or not.
            schema["properties"] = {**ROOT_FIELDS, **schema.get("properties", {})}
            found[file_name(spec["names"]["kind"], spec["group"], version["name"])] = schema
    return found


def write_schemas(directory: Path, schemas: dict[str, Schema]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, schema in schemas.items():
        (directory / name).write_text(json.dumps(schema))
