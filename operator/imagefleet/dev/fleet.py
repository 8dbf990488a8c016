"""The simulated fleet: which KWOK nodes to create, as Node manifests."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from .errors import DevError

GPU_RESOURCE = "nvidia.com/gpu"
GPU_TAINT = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}
SIMULATED_LABEL = "imagefleet.io/simulated"
# KWOK manages the nodes carrying this annotation (see Cluster's kwok flags).
KWOK_ANNOTATION = "kwok.x-k8s.io/node"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class NodeDefaults(_Model):
    cpu: str = "32"
    memory: str = "256Gi"
    pods: str = "250"


class GPUClassNodes(_Model):
    nodes: int = Field(ge=0)
    gpus_per_node: int = Field(0, ge=0, alias="gpusPerNode")
    product: str | None = None
    memory_mib: int | None = Field(None, gt=0, alias="memoryMiB")


class Fleet(_Model):
    node_defaults: NodeDefaults = Field(default_factory=NodeDefaults, alias="nodeDefaults")
    classes: dict[str, GPUClassNodes]


def load_fleet(path: Path | None = None) -> Fleet:
    """The fleet described in `path`, or the built-in one."""
    try:
        text = path.read_text() if path else resources.files(__package__).joinpath("fleet.yaml").read_text()
        return Fleet.model_validate(yaml.safe_load(text))
    except (OSError, yaml.YAMLError, ValueError) as error:
        raise DevError(f"cannot read the fleet file {path}: {error}".replace("\n", " ")) from error


def node_manifests(fleet: Fleet) -> list[dict[str, Any]]:
    """One Node per simulated machine, with GPU feature discovery labels and GPU capacity."""
    nodes = []
    for class_name, spec in fleet.classes.items():
        for index in range(spec.nodes):
            name = f"{class_name}-{index}"
            labels = {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                SIMULATED_LABEL: "true",
            }
            capacity = {
                "cpu": fleet.node_defaults.cpu,
                "memory": fleet.node_defaults.memory,
                "pods": fleet.node_defaults.pods,
            }
            taints = []
            if spec.gpus_per_node:
                labels |= {
                    "nvidia.com/gpu.present": "true",
                    "nvidia.com/gpu.count": str(spec.gpus_per_node),
                    "nvidia.com/gpu.product": spec.product or class_name,
                    "nvidia.com/gpu.memory": str(spec.memory_mib or 0),
                }
                capacity[GPU_RESOURCE] = str(spec.gpus_per_node)
                taints.append(GPU_TAINT)
            nodes.append(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {"name": name, "labels": labels, "annotations": {KWOK_ANNOTATION: "fake"}},
                    "spec": {"taints": taints},
                    "status": {"capacity": capacity, "allocatable": dict(capacity)},
                }
            )
    return nodes
