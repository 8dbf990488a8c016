"""Pool mode on diffusers: many checkpoints and LoRA adapters of one family served by one pipeline's parts.

The base pipeline (settings.model) is loaded as usual; its VAE, text encoders, tokenizers and
scheduler are shared by every checkpoint. A checkpoint is its denoiser, plus any other component
of a local checkpoint folder that differs from the base's (compared tensor by tensor when it is
read from disk; equal ones are dropped and the base's used). Where each checkpoint is follows the
pod's LRU residency (imagefleet.residency): `prepare` reads a checkpoint from disk (a folder, a
Hugging Face repo id, or the base's own source), moves denoisers between the device and host RAM
with `.to()`, and drops them to disk. Adapters are loaded with diffusers'
`load_lora_weights(..., adapter_name=)`, kept by (checkpoint, adapter) in an LRU set of
`adapter_slots`, removed with `delete_adapters` (or, when a load takes the place of an evicted
adapter of the same checkpoint, hot-swapped into its layers: `load_lora_weights(..., hotswap=True)`,
no new layers; an adapter peft cannot hot-swap there is loaded anew), and chosen per call with `set_adapters` (and
`disable_lora` where a call has none), component by component: a LoRA's text-encoder weights
land in the shared text encoder, so each call sets what is active there too.

Faults: a checkpoint or adapter that cannot be loaded is a 400 naming it; nothing resident is lost.
"""

from __future__ import annotations

import copy
import gc
import itertools
import logging
import time
from pathlib import Path
from typing import Any, NoReturn

import torch
from diffusers import ModelMixin
from diffusers.loaders.lora_base import (
    disable_lora_for_text_encoder,
    enable_lora_for_text_encoder,
    set_adapters_for_text_encoder,
)

from imagefleet.residency import Adapter, Move, Snapshot

from .batcher import AdapterRef, BatchKey, CheckpointRef, Prepared
from .engine import PipelineEngine
from .errors import AdapterRefused, CheckpointRefused
from .memory import MIB
from .models.builtin import BUILDERS
from .models.loader import CATALOG, DTYPES
from .pool import PoolState
from .settings import Settings

logger = logging.getLogger(__name__)

# Components a checkpoint folder may carry besides its denoiser; used from the base when equal to its.
SHARED = ("vae", "text_encoder", "text_encoder_2", "text_encoder_3")


def parts_mib(parts: dict[str, torch.nn.Module]) -> float:
    """MiB of a checkpoint's own parameters and buffers."""
    total = 0
    for module in parts.values():
        total += sum(t.numel() * t.element_size() for t in itertools.chain(module.parameters(), module.buffers()))
    return total / MIB


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    """Whether two modules hold equal tensors under the same names."""
    left, right = a.state_dict(), b.state_dict()
    return left.keys() == right.keys() and all(
        left[name].shape == right[name].shape and torch.equal(left[name], right[name].to(left[name].device))
        for name in left
    )


def lora_shapes_fit(denoiser: torch.nn.Module, slot: str) -> bool:
    """Whether every LoRA layer pair of adapter `slot` fits its base layer (hotswap copies tensors unchecked)."""
    for module in denoiser.modules():
        down, up = getattr(module, "lora_A", {}), getattr(module, "lora_B", {})
        if slot not in down:
            continue
        base = module.get_base_layer().weight
        if down[slot].weight.shape[1] != base.shape[1] or up[slot].weight.shape[0] != base.shape[0]:
            return False
    return True


class PoolPipelineEngine(PipelineEngine):
    """A pool pod's diffusers engine: `prepare` makes a key's checkpoint and adapters resident, `generate` runs."""

    def __init__(self, pipeline: Any, device: torch.device, settings: Settings) -> None:
        super().__init__(pipeline, device)
        self.settings = settings
        self.dtype = DTYPES[settings.precision]
        self.family = settings.pool_family
        self.denoiser = "transformer" if getattr(pipeline, "transformer", None) is not None else "unet"
        self.pool = PoolState(settings)
        self._denoiser_class = type(getattr(pipeline, self.denoiser))
        self._denoiser_config = getattr(pipeline, self.denoiser).config
        # The shared components without a denoiser: each checkpoint's pipeline is a copy with its own.
        self._template = copy.copy(pipeline)
        self._template.register_modules(**{self.denoiser: None})
        # checkpoint -> its own modules (on the device or in host RAM) and the pipeline that runs them.
        self._parts: dict[str, dict[str, torch.nn.Module]] = {self.pool.base: {self.denoiser: self._denoiser(pipeline)}}
        self._pipelines: dict[str, Any] = {self.pool.base: pipeline}
        # (checkpoint, adapter key) -> the adapter's name inside PEFT (unique: text encoders are shared).
        self._slots: dict[tuple[str, str], str] = {}
        self._numbers = itertools.count()
        self.pool.touch(self.pool.base, parts_mib(self._parts[self.pool.base]))
        self.summary += f", pool of {self.family}"

    def resident(self) -> Snapshot:
        return self.pool.snapshot()

    def prepare(self, key: BatchKey) -> Prepared:
        name = self.pool.name(key)
        read: dict[str, torch.nn.Module] | None = None
        read_seconds = 0.0
        if self.pool.place(name) == "disk":
            started = time.monotonic()
            read = self._read(key.checkpoint)
            read_seconds = time.monotonic() - started
            mib = parts_mib(read)
        else:
            mib = parts_mib(self._parts[name])
        touch = self.pool.touch(name, mib, [Adapter(a.key, 0.0) for a in key.adapters])
        by_key = {a.key: a for a in key.adapters}
        # Evicted adapters whose layers a load of this touch reuses (hotswap): their PEFT names.
        vacant = {(m.checkpoint, m.replaces): "" for m in touch.moves if m.replaces is not None}
        seconds = []
        for move in touch.moves:
            started = time.monotonic()
            if move.adapter is None:
                self._move_checkpoint(move, read)
            else:
                self._move_adapter(move, by_key, vacant)
            if move.adapter is None and move.source == "disk" and move.target == "gpu":
                started -= read_seconds  # read from disk before the touch
            seconds.append(time.monotonic() - started)
        self.pipeline = self._pipelines[name]
        self._activate(name, key.adapters)
        return Prepared(touch, tuple(seconds), self.pool.snapshot())

    def _denoiser(self, pipeline: Any) -> torch.nn.Module:
        module: torch.nn.Module = getattr(pipeline, self.denoiser)
        return module

    def _source(self, checkpoint: CheckpointRef | None) -> str | Path:
        """Where a checkpoint's files are: a local directory, or a Hub repo id (catalog names map to theirs)."""
        if checkpoint is None:
            if self.settings.model_path is not None and (self.settings.model_path / "model_index.json").is_file():
                return self.settings.model_path
            return CATALOG.get(self.settings.model, self.settings.model)
        path = Path(checkpoint.name)
        if path.is_absolute():
            return path
        return CATALOG.get(checkpoint.name, checkpoint.name)

    def _read(self, checkpoint: CheckpointRef | None) -> dict[str, torch.nn.Module]:
        """A checkpoint's own modules, read into host RAM at the pod's precision; CheckpointRefused if it cannot be."""
        label = self.pool.base if checkpoint is None else checkpoint.name
        if checkpoint is None and self.settings.model in BUILDERS:  # a built-in base is rebuilt, same seed
            return {self.denoiser: self._denoiser(BUILDERS[self.settings.model]()).to(dtype=self.dtype)}
        source = self._source(checkpoint)
        options: dict[str, Any] = {"torch_dtype": self.dtype, "local_files_only": self.settings.offline}
        cache = self.settings.model_path
        if not isinstance(source, Path) and cache is not None and not (cache / "model_index.json").is_file():
            options["cache_dir"] = cache  # a hub cache (e.g. the model-cache volume), as for the base
        if checkpoint is not None and checkpoint.revision is not None:
            options["revision"] = checkpoint.revision
        if isinstance(source, Path) and not (source / self.denoiser).is_dir():
            raise CheckpointRefused(
                f"checkpoint {label!r}: {source} has no {self.denoiser}/ folder (a diffusers checkpoint of "
                f"{self.family} has one)", param="checkpoint",
            )
        try:
            parts = {self.denoiser: self._denoiser_class.from_pretrained(source, subfolder=self.denoiser, **options)}
        except Exception as error:  # noqa: BLE001 - any failure to read is the request's checkpoint's fault
            raise CheckpointRefused(f"checkpoint {label!r} cannot be loaded from {source}: {error}",
                                    param="checkpoint") from None
        config, reference = parts[self.denoiser].config, self._denoiser_config
        if any(config.get(field) != reference.get(field) for field in ("in_channels", "cross_attention_dim")):
            raise CheckpointRefused(
                f"checkpoint {label!r} is not a {self.family} checkpoint: its {self.denoiser} does not take "
                f"{self.family}'s latents and text embeddings", param="checkpoint",
            )
        if isinstance(source, Path):
            for name in SHARED:
                base = getattr(self._template, name, None)
                if base is None or not (source / name).is_dir():
                    continue
                own = type(base).from_pretrained(source, subfolder=name, torch_dtype=self.dtype)
                if not same_weights(base, own):
                    parts[name] = own
        return parts

    def _move_checkpoint(self, move: Move, read: dict[str, torch.nn.Module] | None) -> None:
        name = move.checkpoint
        if move.target == "disk":
            self._parts.pop(name, None)
            self._pipelines.pop(name, None)
            gc.collect()
            return
        if move.source == "disk":
            assert read is not None
            self._parts[name] = read
        target = self.device if move.target == "gpu" else torch.device("cpu")
        for module in self._parts[name].values():
            module.to(target)
        if move.target == "gpu" and name not in self._pipelines:
            pipeline = copy.copy(self._template)
            pipeline.register_modules(**self._parts[name])
            self._pipelines[name] = pipeline

    def _move_adapter(
        self, move: Move, wanted: dict[str, AdapterRef], vacant: dict[tuple[str, str | None], str]
    ) -> None:
        """Evict (delete_adapters, or keep the layers for the load that replaces it) or load one adapter."""
        assert move.adapter is not None
        pipeline = self._pipelines[move.checkpoint]
        if move.target != "gpu":
            slot = self._slots.pop((move.checkpoint, move.adapter))
            if (move.checkpoint, move.adapter) in vacant:
                vacant[(move.checkpoint, move.adapter)] = slot
            else:
                pipeline.delete_adapters(slot)
            return
        adapter = wanted[move.adapter]
        options: dict[str, Any] = {"local_files_only": self.settings.offline}
        if adapter.weight_name is not None:
            options["weight_name"] = adapter.weight_name
        path = Path(adapter.name)
        if path.is_absolute() and not (path / (adapter.weight_name or "")).exists():
            self._refuse(move, pipeline, vacant.pop((move.checkpoint, move.replaces), None),
                         f"not found: {path / (adapter.weight_name or '')} does not exist on this pod")
        if move.replaces is not None:
            slot = vacant.pop((move.checkpoint, move.replaces))
            try:  # into the replaced adapter's layers: no new layers (peft's limits: same targets, rank <= theirs)
                pipeline.load_lora_weights(adapter.name, adapter_name=slot, hotswap=True, **options)
                swapped = lora_shapes_fit(getattr(pipeline, self.denoiser), slot)
            except Exception as error:  # noqa: BLE001 - not hot-swappable (or bad): load it anew below
                logger.info("adapter %s: no hotswap into %s (%s); loading it anew", adapter.name, move.replaces, error)
                swapped = False
            if swapped:
                self._slots[(move.checkpoint, move.adapter)] = slot
                return
            pipeline.delete_adapters(slot)  # a fresh load below says what is wrong, if anything
        slot = f"a{next(self._numbers)}"
        failure: str | None = None
        try:
            pipeline.load_lora_weights(adapter.name, adapter_name=slot, **options)
        except Exception as error:  # noqa: BLE001 - missing, corrupt, or shaped for another base
            failure = f"{type(error).__name__}: {error}"
            if "size mismatch" in failure:
                failure = f"its layers' shapes differ from the {self.family} {self.denoiser}'s (made for another base)"
        if failure is None and slot not in pipeline.get_list_adapters().get(self.denoiser, []):
            failure = f"none of its weights match a layer of the {self.family} {self.denoiser} (made for another base?)"
        if failure is not None:
            self._refuse(move, pipeline, slot, failure)
        self._slots[(move.checkpoint, move.adapter)] = slot

    def _refuse(self, move: Move, pipeline: Any, slot: str | None, failure: str) -> NoReturn:
        """Undo a failed adapter load (its PEFT layers, its residency) and refuse the request naming it."""
        assert move.adapter is not None
        if slot is not None and slot in {name for names in pipeline.get_list_adapters().values() for name in names}:
            pipeline.delete_adapters(slot)
        self.pool.drop_adapter(move.checkpoint, move.adapter)
        raise AdapterRefused(
            f"adapter {move.adapter!r} cannot be loaded into {self.family} checkpoint {move.checkpoint!r}: "
            f"{failure[:500]}", param="adapters",
        )

    def _activate(self, name: str, adapters: tuple[AdapterRef, ...]) -> None:
        """Make exactly this call's adapters active, at their scales, in every component that has any."""
        pipeline = self._pipelines[name]
        wanted = {self._slots[(name, a.key)]: a.scale for a in adapters}
        for component, present in pipeline.get_list_adapters().items():
            module = getattr(pipeline, component)
            mine = [slot for slot in wanted if slot in present]
            if isinstance(module, ModelMixin):
                if mine:
                    module.enable_lora()
                    module.set_adapters(mine, [wanted[slot] for slot in mine])
                else:
                    module.disable_lora()
            elif mine:
                enable_lora_for_text_encoder(module)
                set_adapters_for_text_encoder(mine, module, [wanted[slot] for slot in mine])
            else:
                disable_lora_for_text_encoder(module)
