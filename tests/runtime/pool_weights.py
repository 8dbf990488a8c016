"""Weights for pool-mode tests and the CPU benchmark, made locally: tiny checkpoints with random
denoisers (saved with save_pretrained) and LoRA adapters made with peft (saved in diffusers' format)."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict

from imagefleet_runtime.models.builtin import build_tiny

LORA_FILE = "pytorch_lora_weights.safetensors"
ATTENTION = ["to_q", "to_k", "to_v", "to_out.0"]


def make_checkpoint(
    directory: Path, seed: int, *, own_vae: bool = False, unet_channels: tuple[int, int] | None = None
) -> Path:
    """A tiny checkpoint whose UNet (and, with own_vae, VAE) is drawn from `seed`; text encoder and
    VAE otherwise equal to the built-in tiny's, so a pool shares them. `unet_channels` widens the UNet."""
    pipeline = build_tiny()
    torch.manual_seed(seed)
    config = dict(pipeline.unet.config)
    if unet_channels is not None:
        config["block_out_channels"] = unet_channels
    parts = {"unet": UNet2DConditionModel.from_config(config)}
    if own_vae:
        parts["vae"] = type(pipeline.vae).from_config(pipeline.vae.config)
    pipeline.register_modules(**parts)
    pipeline.save_pretrained(directory)
    return directory


def make_lora(directory: Path, seed: int, *, rank: int = 4, unet: UNet2DConditionModel | None = None) -> Path:
    """A LoRA on the attention projections of tiny's UNet (or of `unet`), random A and B drawn from `seed`."""
    target = unet if unet is not None else build_tiny().unet
    torch.manual_seed(seed)
    target.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=ATTENTION, init_lora_weights=False))
    StableDiffusionPipeline.save_lora_weights(directory, unet_lora_layers=get_peft_model_state_dict(target))
    return directory


def make_foreign_lora(directory: Path, seed: int) -> Path:
    """A LoRA made for another base: a UNet with twice tiny's channels (same layer names, other shapes)."""
    config = {**build_tiny().unet.config, "block_out_channels": (32, 64), "norm_num_groups": 8}
    return make_lora(directory, seed, unet=UNet2DConditionModel.from_config(config))


def make_corrupt_lora(directory: Path) -> Path:
    """A LoRA file that is not safetensors."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / LORA_FILE).write_bytes(b"\x00not a safetensors file" * 64)
    return directory
