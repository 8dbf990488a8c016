"""What one request costs, in GPU-seconds on its resource's card, by the catalog's cost model
(`imagefleet.cost`, the figures the emulated engine and the simulator use).

A request is priced as one pipeline call of its own: its steps, its pixels and its `n` images at
the resource's precision, with the resource's generation defaults for what it leaves out. The
figure is real-card seconds (the emulated engine runs them faster by its speed-up): it weighs
requests against each other and sums to the queued work the gateway reports, in GPU-seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..catalog import load_gpu_classes
from ..cost import EmulationError, batch_factor, builtin_plan
from ..crd.models import ImageModelDeploymentSpec
from ..resolve import catalog_model, effective_generation, effective_precision


@dataclass(frozen=True)
class Pricing:
    """One resource's cost model, reduced to what a request's price needs."""

    seconds_per_step_pixel: float
    batch_cost: float
    default_steps: int
    default_width: int
    default_height: int

    def work_seconds(self, *, steps: int | None, size: tuple[int, int] | None, images: int) -> float:
        width, height = size or (self.default_width, self.default_height)
        steps = steps or self.default_steps
        return self.seconds_per_step_pixel * steps * width * height * batch_factor(self.batch_cost, images)


def pricing_of(spec: ImageModelDeploymentSpec) -> Pricing | None:
    """The resource's pricing; None when the catalog has no cost figures for its model on its class."""
    model = catalog_model(spec)
    if model is None or spec.gpu_class not in load_gpu_classes():
        return None
    try:
        plan = builtin_plan(model=model.name, gpu_class=spec.gpu_class, precision=effective_precision(spec, model))
    except EmulationError:
        return None
    anchor = plan.anchor
    per_step_pixel = plan.base_seconds / (anchor.steps * anchor.width * anchor.height)
    if plan.precision == "fp32" and not plan.overhead_bound:
        per_step_pixel *= plan.class_cost.fp32_factor
    generation = effective_generation(spec.generation, model)
    return Pricing(per_step_pixel, plan.class_cost.batch_cost, generation.default_steps, generation.default_width,
                   generation.default_height)
