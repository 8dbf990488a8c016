"""Operator settings, from IMAGEFLEET_* environment variables (the Helm chart sets them)."""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .builders.inference_pool import DEFAULT_ENDPOINT_PICKER, EndpointPicker
from .builders.network_policy import RuntimeIngress
from .catalog import GPUClass, load_gpu_classes

DEFAULT_RUNTIME_IMAGE = "ghcr.io/imagefleet/imagefleet-runtime:0.1.0"
PEER_FIELDS = frozenset({"namespaceSelector", "podSelector", "ipBlock"})


class OperatorSettings(BaseSettings):
    """Each field is read from IMAGEFLEET_<FIELD NAME IN CAPITALS>."""

    model_config = SettingsConfigDict(env_prefix="IMAGEFLEET_", extra="ignore", frozen=True)

    prometheus_url: str | None = Field(
        None, description="Prometheus HTTP API base URL for the autoscaler; unset: autoscaling reports no metrics."
    )
    gpu_classes_file: Path | None = Field(None, description="YAML GPU class catalog; unset: the built-in catalog.")
    runtime_image: str = Field(DEFAULT_RUNTIME_IMAGE, min_length=1, description="Image of the inference runtime.")
    autoscale_interval_seconds: float = Field(15.0, gt=0, description="How often the autoscaler evaluates.")
    namespaces: str = Field("", description="Comma-separated namespaces to watch; empty: all namespaces.")
    peering: str | None = Field(
        None, description="kopf peering name, for several operator replicas (one active); unset: standalone."
    )
    metrics_port: int | None = Field(
        None, ge=1, le=65535, description="Port of the operator's /metrics (resource status as series); unset: none."
    )
    kube_write_qps: float = Field(
        50.0, gt=0, description="The operator's API writes per second on average (a client-side limit)."
    )
    kube_write_burst: int = Field(100, ge=1, description="API writes the operator may send at once above its QPS.")
    resync_seconds: float = Field(
        120.0, gt=0, description="How often every resource is re-checked for drift that no event announced."
    )

    endpoint_picker_service: str = Field(
        DEFAULT_ENDPOINT_PICKER.service, min_length=1, max_length=253,
        description="The endpoint picker Service each InferencePool names; '{name}' is the resource's name "
        "(the default is the name the Inference Extension's inferencepool chart gives its picker).",
    )
    endpoint_picker_port: int = Field(
        DEFAULT_ENDPOINT_PICKER.port, ge=1, le=65535, description="The endpoint picker Service's port."
    )

    runtime_ingress_from: str | None = Field(
        None, description="JSON list of NetworkPolicy peers (namespaceSelector/podSelector, or ipBlock) that may "
        "reach the runtime pods' generation port (the gateway): the operator makes one NetworkPolicy per resource "
        "admitting only them there; unset: no NetworkPolicy.",
    )
    runtime_metrics_from: str | None = Field(
        None, description="JSON list of NetworkPolicy peers that may reach the runtime pods' metrics port "
        "(Prometheus), in the same NetworkPolicy; unset: none.",
    )

    @field_validator("runtime_ingress_from", "runtime_metrics_from")
    @classmethod
    def _peers(cls, value: str | None) -> str | None:
        if value is not None:
            peers = json.loads(value)
            if not isinstance(peers, list) or not all(isinstance(peer, dict) and peer and set(peer) <= PEER_FIELDS
                                                      for peer in peers):
                raise ValueError(f"a JSON list of NetworkPolicy peers, each with some of {sorted(PEER_FIELDS)}")
        return value

    @property
    def runtime_ingress(self) -> RuntimeIngress | None:
        if self.runtime_ingress_from is None:
            return None
        metrics = () if self.runtime_metrics_from is None else tuple(json.loads(self.runtime_metrics_from))
        return RuntimeIngress(tuple(json.loads(self.runtime_ingress_from)), metrics)

    @property
    def endpoint_picker(self) -> EndpointPicker:
        return EndpointPicker(self.endpoint_picker_service, self.endpoint_picker_port)

    @property
    def namespace_list(self) -> list[str]:
        return [name.strip() for name in self.namespaces.split(",") if name.strip()]

    @cached_property
    def gpu_classes(self) -> dict[str, GPUClass]:
        """The GPU class catalog (raises CatalogError with the file's problem)."""
        return load_gpu_classes(self.gpu_classes_file)
