"""Residency of a pool pod's checkpoints and LoRA adapters (GPU, host RAM, disk) and what moving them costs.

Pure: no I/O. The runtime, the gateway and the simulator share it, so they agree by construction.
"""

from .lru import PLACES, Adapter, CheckpointTooLarge, Move, Place, Residency, Snapshot, Touch
from .names import adapter_key, checkpoint_key
from .pricing import SHARED_COMPONENTS, SwapCost, checkpoint_mib, move_seconds, shared_mib, swap_cost, swap_seconds

__all__ = [
    "PLACES",
    "SHARED_COMPONENTS",
    "Adapter",
    "CheckpointTooLarge",
    "Move",
    "Place",
    "Residency",
    "Snapshot",
    "SwapCost",
    "Touch",
    "adapter_key",
    "checkpoint_key",
    "checkpoint_mib",
    "move_seconds",
    "shared_mib",
    "swap_cost",
    "swap_seconds",
]
