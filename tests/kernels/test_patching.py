"""End to end: kernels installed into tiny diffusers and transformers models, forced on through the interpreter."""

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor2_0
from diffusers.models.resnet import ResnetBlock2D
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from anygen.kernels import AnyGenAttnProcessor, apply_kernels, force_kernels, kernels_applied, remove_kernels
from kernel_checks import assert_close, launcher_calls


def tiny_unet() -> UNet2DConditionModel:
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32,
        attention_head_dim=2, norm_num_groups=8,
    ).eval()


def tiny_vae() -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=32,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(32, 64),
    ).eval()


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )
    return LlamaForCausalLM(config).eval()


def snapshot(model: nn.Module) -> dict:
    """What remove_kernels must restore: module objects, processors, and no instance-level forwards."""
    return {
        name: (type(m), id(m), id(getattr(m, "processor", None)), "forward" in m.__dict__)
        for name, m in model.named_modules()
    }


@torch.no_grad()
def test_unet_and_vae_with_kernels_match_reference_and_disable_restores():
    unet, vae = tiny_unet(), tiny_vae()
    latents, timesteps, text = torch.randn(2, 4, 8, 8), torch.tensor([10, 500]), torch.randn(2, 7, 32)
    image = torch.randn(1, 3, 16, 16)
    ref_unet = unet(latents, timesteps, text).sample
    ref_vae = vae(image).sample
    before = [snapshot(unet), snapshot(vae)], [list(unet.state_dict()), list(vae.state_dict())]

    # 8 ResNet blocks x (norm1, norm2) + conv_norm_out; 4 transformer blocks x (self, cross).
    assert apply_kernels(unet).counts == {"group_norm_silu": 17, "attention": 8}
    # encoder: 2 + mid 2 ResNet blocks, decoder: mid 2 + up 4 -> 20 norms, + 2 conv_norm_out; mid attention x 2.
    assert apply_kernels(vae).counts == {"group_norm_silu": 22, "attention": 2}
    assert [list(unet.state_dict()), list(vae.state_dict())] == before[1]

    launches = launcher_calls()
    with force_kernels("triton"):
        out_unet = unet(latents, timesteps, text).sample
        out_vae = vae(image).sample
    assert launcher_calls() - launches == 17 + 22 + 8 + 2  # every site ran its Triton launcher once
    assert_close(out_unet, ref_unet, 1e-4, 1e-4, "unet")
    assert_close(out_vae, ref_vae, 1e-4, 1e-4, "vae")

    # Kernels on, CPU, auto mode: the same PyTorch ops as diffusers, so the very same numbers.
    assert torch.equal(unet(latents, timesteps, text).sample, ref_unet)

    remove_kernels(unet)
    remove_kernels(vae)
    assert not kernels_applied(unet) and not kernels_applied(vae)
    assert [snapshot(unet), snapshot(vae)] == before[0]
    assert torch.equal(unet(latents, timesteps, text).sample, ref_unet)
    assert torch.equal(vae(image).sample, ref_vae)


def test_llama_with_kernels_matches_reference_forward_and_backward():
    model = tiny_llama()
    ids = torch.randint(0, 64, (2, 9))

    def run():
        model.zero_grad()
        out = model(ids, labels=ids)
        out.loss.backward()
        return out.logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    ref_logits, ref_grads = run()
    before = snapshot(model)
    # 2 layers x (input, post-attention) + final norm; 2 MLPs.
    assert apply_kernels(model).counts == {"rms_norm": 5, "swiglu": 2}
    launches = launcher_calls()
    with force_kernels("triton"):
        logits, grads = run()
    assert launcher_calls() - launches == 2 * (5 + 2)  # a forward and a backward launch each
    assert_close(logits, ref_logits, 1e-5, 1e-5, "logits")
    for name, g in grads.items():
        assert_close(g, ref_grads[name], 1e-5, 1e-4, name)

    remove_kernels(model)
    assert snapshot(model) == before
    logits, grads = run()
    assert torch.equal(logits, ref_logits)


def test_apply_is_idempotent_and_handles_compose():
    unet = tiny_unet()
    handle = apply_kernels(unet)
    assert apply_kernels(unet) is handle
    # A container applied afterwards skips what the UNet's own handle already patched.
    outer = nn.ModuleDict({"unet": unet, "llama": tiny_llama()})
    assert apply_kernels(outer).counts == {"rms_norm": 5, "swiglu": 2}
    processors = {type(p) for p in unet.attn_processors.values()}
    assert processors == {AnyGenAttnProcessor}
    remove_kernels(outer)
    assert {type(p) for p in unet.attn_processors.values()} == {AnyGenAttnProcessor}
    handle.remove()
    assert {type(p) for p in unet.attn_processors.values()} == {AttnProcessor2_0}


@pytest.mark.parametrize("time_embedding_norm, fused", [("default", 2), ("scale_shift", 1)])
@torch.no_grad()
def test_resnet_block_variants(time_embedding_norm, fused):
    torch.manual_seed(0)
    block = ResnetBlock2D(in_channels=16, out_channels=32, temb_channels=24, groups=4,
                          time_embedding_norm=time_embedding_norm).eval()
    x, temb = torch.randn(2, 16, 5, 5), torch.randn(2, 24)
    ref = block(x, temb)
    assert apply_kernels(block).counts == {"group_norm_silu": fused}
    with force_kernels("triton"):
        assert_close(block(x, temb), ref, 1e-5, 1e-5)
    remove_kernels(block)
    assert isinstance(block.nonlinearity, nn.SiLU)


def test_non_silu_blocks_are_left_alone():
    block = ResnetBlock2D(in_channels=8, out_channels=8, temb_channels=None, groups=4, non_linearity="mish")
    assert apply_kernels(block).counts == {}
