"""CEL of the ImageModelPool's own checks, with the catalog's checkpoint sizes as CEL map literals.

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


def checkpoint_table() -> str:
    """family -> precision -> MiB of one checkpoint, as a CEL map literal."""
    families = checkpoint_mib_by_family()
    return "{" + ", ".join(
        f"'{family}': {{" + ", ".join(f"'{precision}': {mib}" for precision, mib in sizes.items()) + "}"
        for family, sizes in families.items()
    ) + "}"


def preferred_precision_table() -> str:
    """family -> its preferred precision, as a CEL map literal."""
    return "{" + ", ".join(f"'{name}': '{model.precision.preferred}'" for name, model in model_catalog().items()) + "}"


POOL_NAME_RULE = {
    "rule": f"self.metadata.name.size() <= {MAX_POOL_NAME} && self.metadata.name.matches('{DNS_LABEL}') "
    "&& self.metadata.name.matches('^[a-z]')",
    "message": f"metadata.name must be a DNS-1035 label of at most {MAX_POOL_NAME} characters (lowercase letters, "
    "digits or '-', starting with a letter): the pool's Deployment and Service are named <name>-pool",
}


def budget_holds_a_checkpoint() -> dict[str, str]:
    """The rule on ImageModelPool.spec: an explicit GPU budget holds one checkpoint of the family (both figures
    in the message)."""
    precision = f"(has(self.precision) ? self.precision : {preferred_precision_table()}[self.family])"
    needed = f"{checkpoint_table()}[self.family][{precision}]"
    return {
        "rule": f"!has(self.memory) || !has(self.memory.gpuMiB) || self.memory.gpuMiB >= {needed}",
        "message": "spec.memory.gpuMiB must hold one checkpoint of spec.family at the pool's precision",
        "messageExpression": "'spec.memory.gpuMiB ' + string(self.memory.gpuMiB) + ' MiB cannot hold one ' "
        f"+ self.family + ' checkpoint at ' + {precision} + ', which needs ' + string({needed}) + ' MiB'",
        "fieldPath": ".memory.gpuMiB",
    }
