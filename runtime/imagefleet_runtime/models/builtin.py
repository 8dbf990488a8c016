"""Built-in pipelines made from configs with seeded random weights: nothing is downloaded.

`tiny` is a small Stable-Diffusion-shaped pipeline (UNet, VAE, CLIP text encoder and tokenizer,
scheduler) for tests and demos on a CPU. `sd15-arch` has Stable Diffusion 1.5's real-sized
networks, so the true compute and memory cost can be measured without the weights.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

WEIGHT_SEED = 0
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
MAX_TOKENS = 77  # CLIP's context length, as in every Stable Diffusion


def byte_level_alphabet() -> list[str]:
    """The 256 printable stand-ins for bytes that byte-level BPE tokenizers (GPT-2, CLIP) use."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in printable]
    codes = printable + [256 + index for index in range(len(extra))]
    by_byte = dict(zip(printable + extra, codes, strict=True))
    return [chr(by_byte[b]) for b in range(256)]


def tiny_tokenizer() -> CLIPTokenizer:
    """A CLIP tokenizer with a byte-level vocabulary and no merges: every byte is a token."""
    alphabet = byte_level_alphabet()
    tokens = alphabet + [symbol + "</w>" for symbol in alphabet] + [BOS_TOKEN, EOS_TOKEN]
    vocab = {token: index for index, token in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=MAX_TOKENS)


def _text_encoder(
    tokenizer: CLIPTokenizer, *, hidden: int, intermediate: int, heads: int, layers: int, vocab: int = 0
) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=max(len(tokenizer), vocab),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_attention_heads=heads,
        num_hidden_layers=layers,
        max_position_embeddings=MAX_TOKENS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config)


def _scheduler() -> DDIMScheduler:
    """Stable Diffusion's training schedule; DDIM (eta 0) adds no noise after the first latents."""
    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def _pipeline(unet: UNet2DConditionModel, vae: AutoencoderKL, text_encoder: CLIPTextModel,
              tokenizer: CLIPTokenizer) -> StableDiffusionPipeline:
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_tiny() -> StableDiffusionPipeline:
    """About 0.5M parameters; the VAE halves the image, so 64x64 runs on 32x32 latents."""
    torch.manual_seed(WEIGHT_SEED)
    tokenizer = tiny_tokenizer()
    unet = UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 32),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
    )
    text_encoder = _text_encoder(tokenizer, hidden=32, intermediate=64, heads=4, layers=2)
    return _pipeline(unet, vae, text_encoder, tokenizer)


def build_sd15_arch() -> StableDiffusionPipeline:
    """Stable Diffusion 1.5's networks at full size (860M-parameter UNet) with random weights."""
    torch.manual_seed(WEIGHT_SEED)
    tokenizer = tiny_tokenizer()
    unet = UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=768,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=2,
        norm_num_groups=32,
        sample_size=512,
    )
    text_encoder = _text_encoder(tokenizer, hidden=768, intermediate=3072, heads=12, layers=12, vocab=49408)
    return _pipeline(unet, vae, text_encoder, tokenizer)


BUILDERS: dict[str, Callable[[], Any]] = {"tiny": build_tiny, "sd15-arch": build_sd15_arch}
