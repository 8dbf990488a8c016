"""The ImageModelDeployment API: spec and status as pydantic models.

These models are the one source of the CRD's OpenAPI schema (see `generate.py`):
field docs become `kubectl explain` text, constraints become schema bounds, and
the cross-field rules below become CEL `x-kubernetes-validations`, so the API
server itself rejects a bad object with a message naming the field.

Fields whose defaults depend on the tier (batching, autoscaling targets) or on
the model (generation) are optional without a schema default: the operator fills
them when it builds the Deployment and never writes them back into the spec.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel

from ..catalog import MODEL_NAMES, ModelName, Precision

Tier = Literal["bulk", "standard", "premium"]
# One value today: spelled as an enum (pydantic would write a `const`, which CRDs do not know).
DemandSource = Annotated[Literal["Gateway"], WithJsonSchema({"type": "string", "enum": ["Gateway"]})]
ConditionStatus = Literal["True", "False", "Unknown"]

MAX_REPLICAS = 100
MIN_IMAGE_SIDE = 64
MAX_IMAGE_SIDE = 4096
MAX_BATCH_SIZE = 64
MAX_STEPS = 500

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
HF_REPO_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$"
_CATALOG_LIST = "[" + ", ".join(f"'{name}'" for name in MODEL_NAMES) + "]"


def rule(expression: str, message: str, field_path: str | None = None) -> dict[str, str]:
    """One CEL validation rule; `field_path` points the error at a child field."""
    validation = {"rule": expression, "message": message}
    if field_path:
        validation["fieldPath"] = field_path
    return validation


def validations(*rules: dict[str, str]) -> dict[str, Any]:
    return {"x-kubernetes-validations": list(rules)}


_COMPARISON_WORDS = {"<=": "must not exceed", ">=": "must be at least"}


def ordered(section: str, a: str, comparison: str, b: str) -> dict[str, str]:
    """A CEL rule `a <comparison> b` across two optional fields of spec.<section>, true when
    either is unset; the error names both fields and points at `a`."""
    return rule(
        f"!has(self.{a}) || !has(self.{b}) || self.{a} {comparison} self.{b}",
        f"spec.{section}.{a} {_COMPARISON_WORDS[comparison]} spec.{section}.{b}",
        f".{a}",
    )


class _ApiModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)


IntOrString = Annotated[
    int | str,
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            **validations(
                rule(
                    "type(self) == int ? self >= 0 : self.matches('^[0-9]+%$')",
                    "must be a non-negative integer or a percentage such as '25%'",
                )
            ),
        }
    ),
]


class PersistentVolumeModelSource(_ApiModel):
    """Weights from a PersistentVolumeClaim (air-gapped clusters): a diffusers model directory, mounted read-only."""

    claim_name: str = Field(
        min_length=1, max_length=253, pattern=DNS_SUBDOMAIN,
        description="Name of a PersistentVolumeClaim in the resource's namespace.",
    )
    sub_path: str | None = Field(
        None, min_length=1, max_length=1024,
        description="Directory inside the claim holding the model (default: the claim's root).",
        json_schema_extra=validations(
            rule(
                "!self.startsWith('/') && !self.contains('..')",
                "spec.model.persistentVolumeClaim.subPath must be a relative path without '..'",
            )
        ),
    )


CacheAccessMode = Literal["ReadWriteOnce", "ReadWriteOncePod", "ReadWriteMany"]
# A resource.Quantity of bytes, as a PersistentVolumeClaim's storage request takes it.
STORAGE_QUANTITY = r"^[0-9]+(\.[0-9]+)?([KMGTPE]i?)?$"
SECRET_KEY = r"^[-._a-zA-Z0-9]+$"


class SecretKeySelector(_ApiModel):
    """One key of a Secret in the resource's namespace."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN, description="Name of the Secret.")
    key: str = Field(min_length=1, max_length=253, pattern=SECRET_KEY, description="Key of the value in the Secret.")


class ModelCacheSpec(_ApiModel):
    """Download the weights once into a PersistentVolumeClaim the operator creates (named
    `<resource>-model-cache`), with a Job running the runtime image; the runtime pods start only
    after it succeeded and mount the claim read-only. The ModelCached condition shows progress."""

    size: str = Field(
        min_length=1, max_length=32, pattern=STORAGE_QUANTITY,
        description="Storage to request, e.g. '40Gi': the weights at the chosen variant (an SDXL fp16 pipeline is "
        "about 7 GB, FLUX.1 about 34 GB) and room for one download in progress.",
    )
    storage_class_name: str | None = Field(
        None, min_length=1, max_length=253, pattern=DNS_SUBDOMAIN,
        description="StorageClass of the claim (default: the cluster's default class).",
    )
    access_modes: list[CacheAccessMode] = Field(
        ["ReadWriteOnce"], min_length=1, max_length=3,
        description="Access modes of the claim. ReadWriteMany lets replicas on several nodes share the cache; "
        "ReadWriteOnce and ReadWriteOncePod mount on one node only, so they allow one replica and no rollout surge.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    token_secret_ref: SecretKeySelector | None = Field(
        None,
        description="The Hugging Face token (gated or private models): a Secret key the download Job reads as HF_TOKEN "
        "through secretKeyRef. The operator checks that the key exists and never copies the value.",
    )


class AdapterSpec(_ApiModel):
    """A LoRA adapter on the checkpoint (pool members only), hot-swapped in the pool's pods without a restart."""

    name: str = Field(
        min_length=1, max_length=1024,
        description="A Hugging Face repo id such as 'org/pixel-art-lora', or a relative path in the pool's model "
        "cache.",
        json_schema_extra=validations(
            rule(
                f"self.matches('{HF_REPO_ID}') || (!self.startsWith('/') && !self.contains('..'))",
                "spec.model.adapter.name must be a Hugging Face repo id or a relative path without '..'",
            )
        ),
    )
    weight_name: str | None = Field(
        None, min_length=1, max_length=255, pattern=r"^[^/]+$",
        description="The weights file in the repo or directory (default: diffusers' own choice, "
        "pytorch_lora_weights.safetensors).",
    )
    scale: float = Field(1.0, ge=0, le=4, description="Strength of the adapter (diffusers' set_adapters weight).")


class ModelSpec(_ApiModel):
    """Which model to serve and where its weights come from."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            rule(
                f"self.name in {_CATALOG_LIST} || self.name.matches('{HF_REPO_ID}')",
                "spec.model.name must be a catalog model (" + ", ".join(MODEL_NAMES)
                + ") or a Hugging Face repo id such as 'org/model'",
                ".name",
            ),
            rule(
                f"!has(self.family) || !(self.name in {_CATALOG_LIST})",
                "spec.model.family is only for Hugging Face repo ids: catalog models know their family",
                ".family",
            ),
            rule(
                "!has(self.cache) || !has(self.persistentVolumeClaim)",
                "spec.model.cache and spec.model.persistentVolumeClaim are two sources of the weights: set one",
                ".cache",
            ),
            rule(
                "!has(self.revision) || self.name != 'tiny'",
                "spec.model.revision: model 'tiny' is built in and has no revision; remove it",
                ".revision",
            ),
            rule(
                "!has(self.revision) || !has(self.persistentVolumeClaim)",
                "spec.model.revision is for weights from the Hub: a claim holds the weights it holds",
                ".revision",
            ),
            rule(
                "!has(self.cache) || self.name != 'tiny'",
                "spec.model.cache: model 'tiny' is built in and downloads nothing; remove the cache",
                ".cache",
            ),
        )
    )

    name: str = Field(
        min_length=1, max_length=128,
        description="A catalog model (" + ", ".join(MODEL_NAMES) + ") or a Hugging Face repo id such as "
        "'org/model'. 'tiny' is a built-in random-weight pipeline that downloads nothing.",
    )
    family: ModelName | None = Field(
        None,
        description="For a Hugging Face repo id: the catalog model it derives from (e.g. 'sdxl' for an SDXL "
        "fine-tune), used for the memory-fit estimate and generation defaults. Without it the fit is Unknown.",
    )
    revision: str | None = Field(
        None, min_length=1, max_length=255, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*$",
        description="The Hugging Face revision to load or download: a commit sha (40 hex digits, reproducible), a "
        "tag or a branch. Default: the repo's main branch as it is when a pod starts or the cache Job runs.",
    )
    persistent_volume_claim: PersistentVolumeModelSource | None = Field(
        None,
        description="Load the weights from this claim instead of the Hugging Face Hub (the runtime runs offline).",
    )
    cache: ModelCacheSpec | None = Field(None, description=ModelCacheSpec.__doc__)
    adapter: AdapterSpec | None = Field(None, description=AdapterSpec.__doc__)


class AutoscalingSpec(_ApiModel):
    """Scale on queue depth and p95 latency. Targets left out come from the tier."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            ordered("autoscaling", "minReplicas", "<=", "maxReplicas"),
            ordered("autoscaling", "scaleUpStabilizationSeconds", "<=", "scaleDownStabilizationSeconds"),
            rule(
                "!has(self.minReplicas) || self.minReplicas >= 1 || has(self.demandSource)",
                "spec.autoscaling.minReplicas may be 0 only with spec.autoscaling.demandSource set: "
                "at zero there are no pods and no metrics, and only a demand source wakes the resource",
                ".minReplicas",
            ),
        )
    )

    enabled: bool = Field(
        False,
        description="Scale between minReplicas and maxReplicas. spec.replicas (kubectl scale) is then ignored, "
        "with a Warning Event and the ManualScaling condition.",
    )
    min_replicas: int | None = Field(
        None, ge=0, le=MAX_REPLICAS,
        description="Fewest replicas (tier default). 0 needs demandSource: the resource scales to zero when idle.",
    )
    max_replicas: int | None = Field(None, ge=1, le=MAX_REPLICAS, description="Most replicas (tier default).")
    target_queue_depth: float | None = Field(
        None, gt=0, le=10_000, description="Waiting requests per replica to aim for (tier default)."
    )
    target_p95_seconds: float | None = Field(
        None, gt=0, le=3600, alias="targetP95Seconds",
        description="p95 request latency to stay under, in seconds (tier default).",
    )
    scale_up_stabilization_seconds: int | None = Field(
        None, ge=0, le=3600, description="Scale up to the lowest recommendation of this window (tier default)."
    )
    scale_down_stabilization_seconds: int | None = Field(
        None, ge=0, le=3600, description="Scale down to the highest recommendation of this window (tier default)."
    )
    demand_source: DemandSource | None = Field(
        None,
        description="What wakes the resource from zero replicas: Gateway (imagefleet gateway writes the "
        "imagefleet.io/demand-at annotation while it holds requests for it). Needed for minReplicas 0.",
    )


class BatchingSpec(_ApiModel):
    """Dynamic batching in the runtime. Fields left out come from the tier."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            ordered("batching", "queueSize", ">=", "maxBatchSize"),
        )
    )

    max_batch_size: int | None = Field(
        None, ge=1, le=MAX_BATCH_SIZE, description="Most images run as one pipeline call (tier default)."
    )
    max_delay_milliseconds: int | None = Field(
        None, ge=0, le=60_000,
        description="Deprecated, no effect: continuous batching starts a request at once on an idle replica "
        "and puts every waiting compatible request into the next batch; accepted so existing resources stay valid.",
    )
    queue_size: int | None = Field(
        None, ge=1, le=10_000, description="Images waiting per replica before it answers 429 (tier default)."
    )


def _image_side(what: str) -> Any:
    return Field(
        None, ge=MIN_IMAGE_SIDE, le=MAX_IMAGE_SIDE, multiple_of=8,
        description=f"{what} in pixels, a multiple of 8 from {MIN_IMAGE_SIDE} to {MAX_IMAGE_SIDE} (model default).",
    )


class GenerationSpec(_ApiModel):
    """Defaults and limits for generation requests. Fields left out come from the model."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            ordered("generation", "defaultSteps", "<=", "maxSteps"),
            ordered("generation", "defaultWidth", "<=", "maxWidth"),
            ordered("generation", "defaultHeight", "<=", "maxHeight"),
        )
    )

    default_steps: int | None = Field(None, ge=1, le=MAX_STEPS, description="Denoising steps when a request names none.")
    max_steps: int | None = Field(None, ge=1, le=MAX_STEPS, description="Most denoising steps a request may ask for.")
    default_guidance_scale: float | None = Field(
        None, ge=0, le=30, description="Classifier-free guidance scale when a request names none."
    )
    default_width: int | None = _image_side("Default width")
    default_height: int | None = _image_side("Default height")
    max_width: int | None = _image_side("Largest width")
    max_height: int | None = _image_side("Largest height")


class RolloutSpec(_ApiModel):
    """How the runtime Deployment rolls out a change. The default needs no spare GPU."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            rule(
                "!((self.maxSurge == 0 || self.maxSurge == '0%') "
                "&& (self.maxUnavailable == 0 || self.maxUnavailable == '0%'))",
                "spec.rollout.maxSurge and spec.rollout.maxUnavailable cannot both be 0",
                ".maxUnavailable",
            ),
        )
    )

    max_surge: IntOrString = Field(
        0, description="Extra replicas (and GPUs) during a rollout: a number or a percentage."
    )
    max_unavailable: IntOrString = Field(
        1, description="Replicas that may be down during a rollout: a number or a percentage."
    )


class InferencePoolSpec(_ApiModel):
    """An InferencePool (Gateway API Inference Extension) selecting this resource's runtime pods."""

    enabled: bool = Field(
        False, description="Create the InferencePool named after the resource when its CRD is installed "
        "(the InferencePoolReady condition says when it is not).",
    )


class RoutingSpec(_ApiModel):
    """How `imagefleet gateway` routes to this resource: its model group and where its excess goes."""

    group: str | None = Field(
        None, min_length=1, max_length=63, pattern=DNS_LABEL,
        description="The model group a request names in its `model` field (default: the resource's name). "
        "Resources of one group differ by tier: quality low, medium and high pick bulk, standard and premium.",
    )
    overflow_to: str | None = Field(
        None, min_length=1, max_length=63, pattern=DNS_LABEL,
        description="Another resource of the same group and namespace that takes the requests this one cannot "
        "when every pod is saturated. A missing target, one in another group or a cycle of targets is reported "
        "in the RoutingValid condition, and the gateway then ignores the field.",
    )
    inference_pool: InferencePoolSpec | None = Field(None, description=InferencePoolSpec.__doc__)


class DisruptionSpec(_ApiModel):
    """A PodDisruptionBudget of the runtime pods against evictions (node drains, upgrades); set exactly one field."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            rule(
                "has(self.maxUnavailable) != has(self.minAvailable)",
                "spec.disruption needs exactly one of maxUnavailable and minAvailable",
                ".maxUnavailable",
            ),
        )
    )

    max_unavailable: IntOrString | None = Field(
        None, description="Most runtime pods evictions may take down at once: a number or a percentage."
    )
    min_available: IntOrString | None = Field(
        None, description="Fewest runtime pods that must stay up through evictions: a number or a percentage."
    )


class TopologySpreadSpec(_ApiModel):
    """A topologySpreadConstraint of the runtime pods (of the current rollout) over a node label's values."""

    topology_key: str = Field(
        min_length=1, max_length=316,
        description="Node label to spread over: kubernetes.io/hostname (nodes) or topology.kubernetes.io/zone "
        "(zones).",
    )
    max_skew: int = Field(1, ge=1, le=MAX_REPLICAS, description="Most pods one value may have above the fewest.")
    when_unsatisfiable: Literal["ScheduleAnyway", "DoNotSchedule"] = Field(
        "ScheduleAnyway",
        description="ScheduleAnyway (default) prefers the spread but uses a free GPU anywhere; DoNotSchedule "
        "leaves a pod Pending rather than break the skew.",
    )


IMAGE_SIZE = r"^[1-9][0-9]*x[1-9][0-9]*$"
MAX_COMPILE_SIZES = 8


class SpeedSpec(_ApiModel):
    """Speed options of the runtime on the GPU, all off by default (docs/runtime.md, Speed options)."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            rule(
                "!has(self.compileSizes) || self.compile",
                "spec.speed.compileSizes needs spec.speed.compile: true",
                ".compileSizes",
            ),
        )
    )

    channels_last: bool = Field(
        False, description="Hold the denoiser and the VAE in channels-last (NHWC) memory format."
    )
    fuse_qkv: bool = Field(
        False, alias="fuseQKV",
        description="Fuse each attention's query, key and value projections into one matmul (diffusers' "
        "fuse_qkv_projections; every catalog model has it; a repo id whose denoiser lacks it fails to start).",
    )
    tf32: bool = Field(
        False,
        description="Run fp32 matmuls and convolutions as TF32 on tensor cores: needs precision fp32 and a CUDA GPU "
        "class (else FitsGPU is False, reason UnsupportedSpeedOption).",
    )
    compile: bool = Field(
        False,
        description="torch.compile the denoiser. Requests may then ask only for the default size and "
        "compileSizes (others get 422); the runtime compiles each before it turns Ready.",
    )
    compile_sizes: list[Annotated[str, Field(max_length=11, pattern=IMAGE_SIZE)]] | None = Field(
        None, max_length=MAX_COMPILE_SIZES,
        description="With compile: image sizes (WIDTHxHEIGHT, multiples of 8 within generation.maxWidth x "
        "maxHeight) a request may ask for besides the default size.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )


# A root rule (it needs metadata.name): the shortest overflow cycle is refused by the API server itself.
OVERFLOW_NOT_SELF = rule(
    "!has(self.spec.routing) || !has(self.spec.routing.overflowTo) "
    "|| self.spec.routing.overflowTo != self.metadata.name",
    "spec.routing.overflowTo must name another resource of the group, not this one",
    ".spec.routing.overflowTo",
)


class ImageModelDeploymentSpec(_ApiModel):
    """What to serve, on which GPUs, and how to scale it."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            rule(
                "self.tier != 'premium' || !has(self.autoscaling) || !has(self.autoscaling.minReplicas) "
                "|| self.autoscaling.minReplicas >= 1",
                "spec.autoscaling.minReplicas must be at least 1 for tier premium (it never scales to zero)",
                ".autoscaling.minReplicas",
            ),
            rule(
                "!has(self.model.cache) || 'ReadWriteMany' in self.model.cache.accessModes "
                "|| (self.autoscaling.enabled ? has(self.autoscaling.maxReplicas) && self.autoscaling.maxReplicas <= 1 "
                ": self.replicas <= 1)",
                "spec.model.cache.accessModes: a ReadWriteOnce or ReadWriteOncePod cache mounts on one node only, so "
                "it serves one replica (spec.replicas, or spec.autoscaling.maxReplicas set to 1); use ReadWriteMany "
                "for more",
                ".model.cache.accessModes",
            ),
            rule(
                "!has(self.model.cache) || 'ReadWriteMany' in self.model.cache.accessModes "
                "|| self.rollout.maxSurge == 0 || self.rollout.maxSurge == '0%'",
                "spec.rollout.maxSurge must be 0 with a ReadWriteOnce or ReadWriteOncePod cache: a surge pod on "
                "another node could not mount it",
                ".rollout.maxSurge",
            ),
            rule(
                "!has(self.speed) || !self.speed.tf32 || !has(self.precision) || self.precision == 'fp32'",
                "spec.speed.tf32 needs spec.precision fp32 (TF32 is a mode of fp32 matmuls)",
                ".speed.tf32",
            ),
            rule(
                "!has(self.model.adapter) || has(self.pool)",
                "spec.model.adapter needs spec.pool: adapters are hot-swapped in a pool's pods",
                ".model.adapter",
            ),
            rule(
                f"!has(self.pool) || self.model.name in {_CATALOG_LIST} || has(self.model.family)",
                "spec.model.family is required for a Hugging Face repo id in a pool: the pool serves one family",
                ".model.family",
            ),
            rule(
                "!has(self.pool) || (!has(self.model.cache) && !has(self.model.persistentVolumeClaim))",
                "spec.model.cache and spec.model.persistentVolumeClaim are not for pool members: the pool's pods "
                "load a member's weights from the Hugging Face Hub by name",
                ".pool",
            ),
        )
    )

    pool: str | None = Field(
        None, min_length=1, max_length=58, pattern=DNS_LABEL,
        description="An ImageModelPool of this namespace to run on: the resource then has no Deployment of its own "
        "and shares the pool's pods with the pool's other members (the model must be of the pool's family). "
        "Its tier, routing group and status stay its own; replicas, autoscaling, batching and speed are the pool's.",
    )
    model: ModelSpec = Field(description="The model and the source of its weights.")
    tier: Tier = Field(
        "standard",
        description="Preset for the batching and autoscaling fields left out: bulk (large batches, throughput), "
        "standard, premium (batch 1, tight p95, never below one replica).",
    )
    precision: Precision | None = Field(
        None,
        description="Weight and activation precision: fp16, bf16 or fp32. Left out: the model's preferred one from the "
        "catalog (bf16 for FLUX and SD 3.5; fp16 for SD 1.5, SDXL and a repo id without model.family).",
    )
    gpu_class: str = Field(
        min_length=1, max_length=63, pattern=DNS_LABEL,
        description="A class from the operator's GPU class catalog (built in: cpu, t4-16gb, l4-24gb, a100-80gb, "
        "h100-80gb, h200-141gb).",
    )
    replicas: int = Field(
        1, ge=0, le=MAX_REPLICAS,
        description="Replicas when autoscaling is off (the scale subresource: kubectl scale imd NAME --replicas=N).",
    )
    autoscaling: AutoscalingSpec = Field(
        AutoscalingSpec(), description=AutoscalingSpec.__doc__,
        json_schema_extra={"default": AutoscalingSpec().model_dump(by_alias=True, exclude_none=True)},
    )
    batching: BatchingSpec | None = Field(None, description=BatchingSpec.__doc__)
    generation: GenerationSpec | None = Field(None, description=GenerationSpec.__doc__)
    rollout: RolloutSpec = Field(
        RolloutSpec(), description=RolloutSpec.__doc__,
        json_schema_extra={"default": RolloutSpec().model_dump(by_alias=True)},
    )
    routing: RoutingSpec | None = Field(None, description=RoutingSpec.__doc__)
    disruption: DisruptionSpec | None = Field(
        None, description="A PodDisruptionBudget named after the resource, selecting its runtime pods: how many "
        "voluntary evictions (node drains, node-pool upgrades) may take at once; exactly one of maxUnavailable and "
        "minAvailable. Left out: no budget (the operator deletes its own).",
    )
    topology_spread: list[TopologySpreadSpec] | None = Field(
        None, max_length=4,
        description="Spread the runtime pods over nodes or zones, one entry per node label (no entry: the "
        "scheduler's defaults).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["topologyKey"]},
    )
    speed: SpeedSpec | None = Field(None, description=SpeedSpec.__doc__)


class Condition(_ApiModel):
    """A condition following the Kubernetes API conventions (metav1.Condition)."""

    type: str = Field(max_length=316, pattern=r"^[A-Za-z][A-Za-z0-9]*$", description="CamelCase condition type.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(
        min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="CamelCase reason for the last transition.",
    )
    message: str = Field(max_length=32768, description="Human-readable details.")
    last_transition_time: datetime = Field(description="When the status last changed.")
    observed_generation: int | None = Field(None, ge=0, description="The .metadata.generation this was set for.")


class MemoryEstimate(_ApiModel):
    """The memory-fit estimate of one replica against its GPU class."""

    estimate_mib: int = Field(alias="estimateMiB", ge=0, description="Estimated peak memory of one replica, MiB.")
    limit_mib: int = Field(
        alias="limitMiB", ge=0, description="Usable memory of the class after the safety margin, MiB."
    )
    capacity_mib: int = Field(alias="capacityMiB", ge=0, description="Memory of the class's card, MiB.")


class MeasuredMemory(_ApiModel):
    """The largest peak memory the runtime pods report, read from Prometheus every interval (kept when the pods go)."""

    peak_mib: int = Field(alias="peakMiB", ge=0, description="Largest peak over the pods, MiB.")
    source: Literal["cuda", "process"] = Field(
        description="cuda: the card's allocator (torch.cuda.max_memory_allocated), compared with the estimate "
        "(a Warning Event MemoryEstimateLow when above it). process: resident memory of the server process, on "
        "CPU and with the emulated engine; no card's memory, never compared."
    )
    observed_time: datetime = Field(description="When this figure was read.")


class AutoscalingStatus(_ApiModel):
    """The autoscaler's last recommendation, signal by signal."""

    queue_depth_replicas: int | None = Field(None, ge=0, description="Replicas the queue depth asks for.")
    p95_replicas: int | None = Field(None, ge=0, alias="p95Replicas", description="Replicas the p95 latency asks for.")
    utilization_replicas: int | None = Field(None, ge=0, description="Replicas the busy share asks for.")
    capacity_replicas: int | None = Field(
        None, ge=0, description="Replicas the queueing model asks for to meet the p95 target at the arrival rate."
    )
    busy_replicas: float | None = Field(None, ge=0, description="Replicas busy generating, on average.")
    winner: str | None = Field(None, max_length=32, description="The signal that decided.")


PodName = Annotated[str, Field(max_length=253)]
# Pods a pool member's status lists per place (its counts say how many there are in all).
MAX_LISTED_PODS = 16


class PoolResidency(_ApiModel):
    """A pool member: the pool pods holding its weights, read from their imagefleet_resident series."""

    gpu_pods: int = Field(ge=0, le=MAX_REPLICAS, description="Pool pods holding its checkpoint (and its adapter) "
                          "on the GPU: a request sent there is a residency hit.")
    host_pods: int = Field(ge=0, le=MAX_REPLICAS, description="Pool pods holding its checkpoint in host RAM: it "
                           "swaps onto their GPU without a disk read.")
    gpu: list[PodName] | None = Field(None, max_length=MAX_LISTED_PODS, description="Those pods on the GPU, by "
                                      f"name (sorted, at most {MAX_LISTED_PODS}).")
    host: list[PodName] | None = Field(None, max_length=MAX_LISTED_PODS, description="Those pods in host RAM, by "
                                       f"name (sorted, at most {MAX_LISTED_PODS}).")


class ImageModelDeploymentStatus(_ApiModel):
    """What the operator and the autoscaler observed."""

    observed_generation: int | None = Field(None, description="The .metadata.generation last reconciled.")
    conditions: list[Condition] | None = Field(
        None, max_length=32,
        description="Ready, Progressing, FitsGPU, MetricsAvailable, RoutingValid, InferencePoolReady and ModelCached "
        "(and the autoscaler's own).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    replicas: int | None = Field(None, ge=0, description="Pods of the runtime Deployment.")
    ready_replicas: int | None = Field(None, ge=0, description="Pods ready to serve.")
    desired_replicas: int | None = Field(None, ge=0, description="Replicas asked of the Deployment.")
    selector: str | None = Field(None, description="Label selector of the pods (for the scale subresource).")
    queue_depth: float | None = Field(None, ge=0, description="Last observed queue depth summed over the pods.")
    p95_seconds: float | None = Field(
        None, ge=0, alias="p95Seconds", description="Last observed p95 latency (a pool member: from arrival at the "
        "gateway to the pod's answer, of the requests it served in the rate window)."
    )
    last_scale_time: datetime | None = Field(None, description="When the autoscaler last changed the replicas.")
    autoscaling: AutoscalingStatus | None = Field(None, description=AutoscalingStatus.__doc__)
    memory: MemoryEstimate | None = Field(None, description=MemoryEstimate.__doc__)
    measured_memory: MeasuredMemory | None = Field(None, description=MeasuredMemory.__doc__)
    pool: str | None = Field(None, description="The ImageModelPool that serves this resource (spec.pool), once found.")
    requests_per_second: float | None = Field(
        None, ge=0, description="A pool member: requests per second for it at the gateway, over the rate window."
    )
    residency: PoolResidency | None = Field(None, description=PoolResidency.__doc__)


# -- ImageModelPool ------------------------------------------------------------

MAX_POOL_MIB = 4 * 1024 * 1024


class PoolAutoscalingSpec(_ApiModel):
    """Scale the pool on the sum of its members' demand (GPU-seconds plus the swaps the model mix causes)."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            ordered("autoscaling", "minReplicas", "<=", "maxReplicas"),
        )
    )

    enabled: bool = Field(
        False, description="Scale between minReplicas and maxReplicas; spec.replicas (kubectl scale) is then ignored."
    )
    min_replicas: int = Field(
        1, ge=0, le=MAX_REPLICAS,
        description="Fewest pods. 0: the pool scales to zero as a whole when no member has demand, and any "
        "member's demand (the gateway's imagefleet.io/demand-at annotation) wakes it.",
    )
    max_replicas: int = Field(4, ge=1, le=MAX_REPLICAS, description="Most pods.")
    scale_down_stabilization_seconds: int = Field(
        300, ge=0, le=3600, description="Scale down to the highest recommendation of this window."
    )


class PoolMemorySpec(_ApiModel):
    """Memory budgets of each pool pod for resident checkpoints (defaults from the GPU class and the family)."""

    gpu_mib: int | None = Field(
        None, alias="gpuMiB", ge=1, le=MAX_POOL_MIB,
        description="GPU memory for checkpoints kept on the card, MiB (default: the class's usable memory less one "
        "batch's activations at the family's default size). Must hold one checkpoint of the family.",
    )
    host_mib: int | None = Field(
        None, alias="hostMiB", ge=0, le=MAX_POOL_MIB,
        description="Host RAM for checkpoints kept off the card, MiB (default: the class's memory limit less one "
        "checkpoint and the runtime's overhead); the rest are read from disk.",
    )


class ImageModelPoolSpec(_ApiModel):
    """Shared runtime pods for one model family; ImageModelDeployments join with spec.pool."""

    family: ModelName = Field(
        description="The catalog model family the pool serves (" + ", ".join(MODEL_NAMES) + "): its members are "
        "that model, fine-tunes of it (Hugging Face repo ids with model.family set to it) and LoRA adapters on them.",
        json_schema_extra={"maxLength": 32, **validations(
            rule("self == oldSelf", "spec.family is immutable: the members are of this family; make another pool")
        )},
    )
    gpu_class: str = Field(
        min_length=1, max_length=63, pattern=DNS_LABEL,
        description="A class from the operator's GPU class catalog (built in: cpu, t4-16gb, l4-24gb, a100-80gb, "
        "h100-80gb, h200-141gb).",
    )
    precision: Precision | None = Field(
        None, description="Weight and activation precision of every checkpoint (default: the family's preferred).",
        json_schema_extra={"maxLength": 4},
    )
    replicas: int = Field(
        1, ge=0, le=MAX_REPLICAS,
        description="Pods when autoscaling is off (the scale subresource: kubectl scale imp NAME --replicas=N).",
    )
    autoscaling: PoolAutoscalingSpec = Field(
        PoolAutoscalingSpec(), description=PoolAutoscalingSpec.__doc__,
        json_schema_extra={"default": PoolAutoscalingSpec().model_dump(by_alias=True)},
    )
    memory: PoolMemorySpec | None = Field(None, description=PoolMemorySpec.__doc__)
    disruption: DisruptionSpec | None = Field(
        None, description="A PodDisruptionBudget of the pool's pods (<pool>-pool) against evictions (node drains, "
        "upgrades): how many may go down at once; set exactly one of maxUnavailable and minAvailable.",
    )


class PoolAutoscalingStatus(_ApiModel):
    """The pool autoscaler's last sizing."""

    demand_gpu_seconds: float | None = Field(
        None, ge=0, description="GPU-seconds per second the members' demand asks for, swaps included."
    )
    swap_seconds: float | None = Field(None, ge=0, description="Of which swap seconds per second the model mix causes.")
    active_members: int | None = Field(None, ge=0, description="Members with demand in the last window.")


class ImageModelPoolStatus(_ApiModel):
    """What the operator and the pool autoscaler observed."""

    observed_generation: int | None = Field(None, description="The .metadata.generation last reconciled.")
    conditions: list[Condition] | None = Field(
        None, max_length=32,
        description="Ready, Progressing and FitsGPU (and MetricsAvailable Unknown while autoscaling is off).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    replicas: int | None = Field(None, ge=0, description="Pods of the pool's Deployment.")
    ready_replicas: int | None = Field(None, ge=0, description="Pods ready to serve.")
    desired_replicas: int | None = Field(None, ge=0, description="Replicas asked of the Deployment.")
    selector: str | None = Field(None, description="Label selector of the pods (for the scale subresource).")
    members: int | None = Field(None, ge=0, description="ImageModelDeployments with spec.pool naming this pool.")
    gpu_budget_mib: int | None = Field(None, alias="gpuBudgetMiB", ge=0, description="GPU budget the pods run with.")
    host_budget_mib: int | None = Field(None, alias="hostBudgetMiB", ge=0, description="Host budget the pods run with.")
    memory: MemoryEstimate | None = Field(None, description="The memory-fit estimate of one pool pod (its family's "
                                          "pipeline at the pool's batching) against its GPU class.")
    last_scale_time: datetime | None = Field(None, description="When the autoscaler last changed the replicas.")
    autoscaling: PoolAutoscalingStatus | None = Field(None, description=PoolAutoscalingStatus.__doc__)
