"""Builders of the generators' diffusers components from recipe tables.

Each builder takes the flat keyword table of its recipe section, so a size is
changed by editing ``pipelines/*.toml``, never code.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel


def build_vae(
    in_channels: int = 3,
    block_out_channels: tuple[int, ...] = (8, 16, 32, 64),
    latent_channels: int = 8,
    layers_per_block: int = 1,
    norm_num_groups: int = 8,
    sample_size: int = 64,
) -> AutoencoderKL:
    """An ``AutoencoderKL`` that downsamples by ``2 ** (len(block_out_channels) - 1)``."""
    n = len(block_out_channels)
    return AutoencoderKL(
        in_channels=in_channels,
        out_channels=in_channels,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(block_out_channels),
        layers_per_block=layers_per_block,
        latent_channels=latent_channels,
        norm_num_groups=norm_num_groups,
        sample_size=sample_size,
        scaling_factor=1.0,
    )


def build_unet(
    latent_channels: int,
    cross_attention_dim: int,
    block_out_channels: tuple[int, ...] = (64, 128),
    layers_per_block: int = 1,
    attention_head_dim: int = 8,
    norm_num_groups: int = 32,
    sample_size: int = 8,
) -> UNet2DConditionModel:
    """A ``UNet2DConditionModel`` with cross-attention in every block (latents are tiny, so attention is cheap)."""
    n = len(block_out_channels)
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=latent_channels,
        out_channels=latent_channels,
        down_block_types=("CrossAttnDownBlock2D",) * n,
        up_block_types=("CrossAttnUpBlock2D",) * n,
        block_out_channels=tuple(block_out_channels),
        layers_per_block=layers_per_block,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=attention_head_dim,
        norm_num_groups=norm_num_groups,
    )


def build_motion_adapter(
    block_out_channels: tuple[int, ...],
    motion_layers_per_block: int = 1,
    motion_num_attention_heads: int = 4,
    motion_norm_num_groups: int = 32,
    motion_max_seq_length: int = 16,
) -> MotionAdapter:
    """A ``MotionAdapter`` whose blocks match the image UNet's (AnimateDiff)."""
    return MotionAdapter(
        block_out_channels=tuple(block_out_channels),
        motion_layers_per_block=motion_layers_per_block,
        motion_num_attention_heads=motion_num_attention_heads,
        motion_norm_num_groups=motion_norm_num_groups,
        motion_max_seq_length=motion_max_seq_length,
        use_motion_mid_block=True,
    )


@torch.no_grad()
def fold_latent_normalisation(vae: AutoencoderKL, mean: torch.Tensor, std: torch.Tensor) -> None:
    """Make the VAE's latents zero-mean, unit-variance per channel, in place.

    The affine map z' = (z - mean) / std is folded into ``quant_conv`` (and its
    inverse into ``post_quant_conv``), so every diffusers pipeline, which only
    knows a scalar ``scaling_factor``, sees normalised latents with
    ``scaling_factor = 1``.

    Args:
        vae: an ``AutoencoderKL`` with ``use_quant_conv`` and ``use_post_quant_conv``.
        mean: per-channel latent mean, shape (C,).
        std: per-channel latent std, shape (C,).
    """
    c = vae.config.latent_channels
    q, pq = vae.quant_conv, vae.post_quant_conv
    if q is None or pq is None:
        raise ValueError("fold_latent_normalisation needs a VAE with quant_conv and post_quant_conv")
    # quant_conv outputs [mean (C), logvar (C)]: normalise the mean, shift the log-variance by -2 log std.
    q.weight[:c] /= std.view(c, 1, 1, 1)
    q.bias[:c] = (q.bias[:c] - mean) / std
    q.bias[c:] = q.bias[c:] - 2 * torch.log(std)
    # post_quant_conv(z) = W z + b with z = z' * std + mean  ->  W' = W diag(std), b' = b + W mean.
    w = pq.weight  # (C_out, C_in, 1, 1)
    pq.bias.add_((w[:, :, 0, 0] * mean.view(1, c)).sum(1))
    w.mul_(std.view(1, c, 1, 1))
