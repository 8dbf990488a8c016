"""The cost model: pure functions of the cost table in imagefleet.catalog (emulation.yaml).

The emulated engine takes its call times from it; the operator sizes a runtime pod's grace
period with it (the time to drain a full queue).

    call seconds = base x steps / anchor steps x pixels / anchor pixels
                   x (1 + batch_cost x (images - 1)) x (fp32_factor if fp32)
    load seconds = weight MiB at the precision / load bandwidth

`base` is the model's anchor on the class at half precision, or an anchor on another class
scaled by the two classes' relative times; an overhead-bound model (tiny) takes its one anchor
as is, on every class and at every precision. Durations here are real-card seconds; the emulated
engine divides them by the emulation speedup.
"""

from __future__ import annotations

from dataclasses import dataclass

from imagefleet.catalog import (
    Anchor,
    ClassCost,
    EmulationTable,
    GPUClass,
    ModelInfo,
    Precision,
    emulation_table,
    load_gpu_classes,
    model_catalog,
)
from imagefleet.fit import BYTES_PER_PARAMETER, estimate, usable_mib


class EmulationError(ValueError):
    """The model, class and precision cannot be emulated; the message says why and what would work."""


@dataclass(frozen=True)
class Plan:
    """What one emulated pod runs: a model on a GPU class at a precision, with its figures resolved."""

    model: ModelInfo
    gpu_class: GPUClass
    precision: Precision
    anchor: Anchor
    # The anchor's seconds at half precision, scaled to this class.
    base_seconds: float
    class_cost: ClassCost
    # Precision does not change the time (a model bound by per-call overhead).
    overhead_bound: bool
    size_multiple: int
    load_mib_per_second: float

    @property
    def native_size(self) -> int:
        return self.model.defaults.width

    @property
    def weights_mib(self) -> float:
        return self.model.parameters_billions * 1e9 * BYTES_PER_PARAMETER[self.precision] / 2**20

    def fits(self, images: int, width: int, height: int) -> bool:
        """Whether a call fits the class's memory, by the operator's own FitsGPU estimate."""
        return estimate(self.model, self.precision, images, width, height).total_mib <= usable_mib(self.gpu_class)


def make_plan(
    table: EmulationTable,
    models: dict[str, ModelInfo],
    gpu_classes: dict[str, GPUClass],
    *,
    model: str,
    gpu_class: str,
    precision: Precision,
) -> Plan:
    """Resolve the figures for `model` on `gpu_class`; EmulationError when there are none."""
    if gpu_class not in gpu_classes or gpu_class not in table.classes:
        known = sorted(set(gpu_classes) & set(table.classes))
        raise EmulationError(f"gpu_class {gpu_class!r} is not an emulated GPU class (known: {', '.join(known)})")
    if model not in table.models or model not in models:
        raise EmulationError(f"model {model!r} has no emulation figures (emulated models: {', '.join(table.models)})")
    card = gpu_classes[gpu_class]
    if precision not in card.precisions:
        raise EmulationError(
            f"{gpu_class} cannot run {precision} (it runs {', '.join(card.precisions)}); set precision to one of those"
        )
    cost = table.models[model]
    anchor, base = _base(table, cost.anchors, cost.overhead_bound, gpu_class)
    if anchor is None:
        measured_on = ", ".join(sorted({a.gpu_class for a in cost.anchors}))
        raise EmulationError(
            f"no emulation figure for {model} on {gpu_class}: it is measured on {measured_on} only, "
            f"and {gpu_class} has no relative time to scale by"
        )
    return Plan(
        model=models[model],
        gpu_class=card,
        precision=precision,
        anchor=anchor,
        base_seconds=base,
        class_cost=table.classes[gpu_class],
        overhead_bound=cost.overhead_bound,
        size_multiple=cost.size_multiple,
        load_mib_per_second=table.load.bandwidth_mib_per_second,
    )


def _base(
    table: EmulationTable, anchors: tuple[Anchor, ...], overhead_bound: bool, gpu_class: str
) -> tuple[Anchor | None, float]:
    """The anchor used for `gpu_class` and its half-precision seconds scaled to that class."""
    if overhead_bound:
        return anchors[0], anchors[0].seconds

    def half(anchor: Anchor) -> float:
        factor = table.classes[anchor.gpu_class].fp32_factor if anchor.precision == "fp32" else 1.0
        return anchor.seconds / factor

    for anchor in anchors:
        if anchor.gpu_class == gpu_class:
            return anchor, half(anchor)
    target = table.classes[gpu_class].relative_time
    if target is not None:
        for anchor in anchors:
            source = table.classes[anchor.gpu_class].relative_time
            if source is not None:
                return anchor, half(anchor) * target / source
    return None, 0.0


def batch_factor(batch_cost: float, images: int) -> float:
    """One call of `images` images over one call of one image: 1 + batch_cost x (images - 1)."""
    return 1.0 + batch_cost * (images - 1)


def call_seconds(plan: Plan, *, width: int, height: int, steps: int, images: int) -> float:
    """How long a real card takes for one pipeline call."""
    anchor = plan.anchor
    seconds = plan.base_seconds * steps / anchor.steps * (width * height) / (anchor.width * anchor.height)
    seconds *= batch_factor(plan.class_cost.batch_cost, images)
    if plan.precision == "fp32" and not plan.overhead_bound:
        seconds *= plan.class_cost.fp32_factor
    return seconds


def load_seconds(plan: Plan) -> float:
    """How long reading the weights takes (the warm-up call comes on top, as in the real runtime)."""
    return plan.weights_mib / plan.load_mib_per_second


def builtin_plan(*, model: str, gpu_class: str, precision: Precision) -> Plan:
    """make_plan with the built-in catalogs (models, GPU classes, emulation figures)."""
    return make_plan(
        emulation_table(), model_catalog(), load_gpu_classes(), model=model, gpu_class=gpu_class, precision=precision
    )
