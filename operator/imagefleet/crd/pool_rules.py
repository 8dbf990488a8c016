"""CEL of the ImageModelPool's own checks, with the catalog's checkpoint sizes as literals.

The CRD carries the rules one pool can check alone: its name, and its GPU budget against one checkpoint
of its family (the figures `poolbudget.checkpoint_mib` gives the operator, so both size it alike). A
member is checked against its pool by the chart's ValidatingAdmissionPolicy (templates/pool-admission.yaml):
its family must be the pool's, so one checkpoint of it is one of the family's and fits this budget.
"""

from __future__ import annotations

from ..catalog import model_catalog
from ..poolbudget import checkpoint_mib_by_family
from .models import DNS_LABEL

POOL_SUFFIX = "-pool"
MAX_POOL_NAME = 63 - len(POOL_SUFFIX)


POOL_NAME_RULE = {
    "rule": f"self.metadata.name.size() <= {MAX_POOL_NAME} && self.metadata.name.matches('{DNS_LABEL}') "
    "&& self.metadata.name.matches('^[a-z]')",
    "message": f"metadata.name must be a DNS-1035 label of at most {MAX_POOL_NAME} characters (lowercase letters, "
    "digits or '-', starting with a letter): the pool's Deployment and Service are named <name>-pool",
}



def budget_rules() -> list[dict[str, str]]:
    """Rules on ImageModelPool.spec, one per family: an explicit GPU budget holds one checkpoint of it at the
    pool's precision, the message giving both figures. Literals only (the catalog's sizes, per family and
    precision), so the API server's cost estimate stays small."""
    rules = []
    for family, sizes in checkpoint_mib_by_family().items():
        preferred = model_catalog()[family].precision.preferred
        precision = f"(has(self.precision) ? self.precision : '{preferred}')"
        needed = f"({precision} == 'fp32' ? {sizes['fp32']} : {precision} == 'bf16' ? {sizes['bf16']} : {sizes['fp16']})"
        figures = f"{sizes['fp16']} MiB at fp16, {sizes['bf16']} at bf16, {sizes['fp32']} at fp32"
        rules.append({
            "rule": f"self.family != '{family}' || !has(self.memory) || !has(self.memory.gpuMiB) "
            f"|| self.memory.gpuMiB >= {needed}",
            "message": f"spec.memory.gpuMiB cannot hold one {family} checkpoint: it needs {figures}",
            # format(), not `+` with string(): the API server's cost estimate refuses the concatenation.
            "messageExpression": f"'spec.memory.gpuMiB %d MiB cannot hold one {family} checkpoint: it needs {figures} "
            f"(preferred {preferred})'.format([self.memory.gpuMiB])",
            "fieldPath": ".memory.gpuMiB",
        })
    return rules
