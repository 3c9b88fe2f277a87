"""Generator training (stage 0) on tiny random components: the video sub-stage's options and its export."""

from __future__ import annotations

import pytest
import torch
from diffusers import AnimateDiffPipeline

from anygen.testing import tiny_image_generator
from anygen.training.generators import train_generators
from anygen.training.recipe import load_recipe
from anygen.world.datasets import VideoCaptionDataset

pytestmark = pytest.mark.usefixtures("single_thread")

RECIPE = """
name = "tiny-generators"
seed = 0
output_dir = "out"
run_dir = "runs"

[generators.motion_adapter]
motion_num_attention_heads = 2
motion_norm_num_groups = 8
steps = 2
batch_size = 1
lr = 1e-2
warmup = 0
validate_every = 100
validate_samples = 1
num_inference_steps = 2
{extra}
"""


def test_video_dataset_lanes():
    clips = [VideoCaptionDataset("train", 12, seed=0, lanes=[32])[i]["clip"] for i in range(12)]
    assert {c.lane for c in clips} == {32}
    # The lane is drawn after the clip: everything else is the clip the unrestricted dataset gives.
    free = [VideoCaptionDataset("train", 12, seed=0)[i]["clip"] for i in range(12)]
    assert [c.caption() for c in clips] == [c.caption() for c in free]
    assert len({c.lane for c in free}) > 1
    for bad in ([20], [], 32):
        with pytest.raises(ValueError, match="`lanes`"):
            VideoCaptionDataset("train", 4, lanes=bad)


def _train_video(tmp_path, extra: str):
    (tmp_path / "pipelines").mkdir()
    path = tmp_path / "pipelines" / "tiny.toml"
    path.write_text(RECIPE.replace("{extra}", extra))
    recipe = load_recipe(path)
    image = tiny_image_generator(seed=1)
    image.save_pretrained(recipe.run_dir / "generators" / "image" / "final")
    image.save_pretrained(recipe.output_dir / "image_generator")
    figures = train_generators(recipe, "generators:video")["video"]
    video = AnimateDiffPipeline.from_pretrained(recipe.output_dir / "video_generator")
    return image, video, figures


def _spatial_diff(video_unet: torch.nn.Module, image_unet: torch.nn.Module) -> float:
    """Largest difference between the image UNet's weights and the same weights in the loaded video UNet
    (a ``UNetMotionModel``: the image UNet's keys plus its motion modules)."""
    video = video_unet.state_dict()
    return max((video[k] - v).abs().max().item() for k, v in image_unet.state_dict().items())


def test_video_substage_trains_motion_modules_over_the_frozen_image_unet(tmp_path):
    image, video, figures = _train_video(tmp_path, "")
    assert figures["steps"] == 2 and "val_acc_all" in figures
    assert _spatial_diff(video.unet, image.unet) == 0.0  # AnimateDiff: the image UNet as it was
    # The motion modules start as the identity (zero output projections) and have learned since.
    outs = [v for k, v in video.motion_adapter.state_dict().items() if ".proj_out.weight" in k]
    assert outs and all(v.abs().max() > 0 for v in outs)
    assert (tmp_path / "out" / "video_generator" / "vae").is_symlink()


def test_video_substage_with_spatial_lr_exports_the_fine_tuned_unet(tmp_path):
    image, video, _ = _train_video(tmp_path, "spatial_lr = 1e-2\nlanes = [32]")
    assert _spatial_diff(video.unet, image.unet) > 1e-4  # the image layers were trained on clips and saved with it
    assert (tmp_path / "out" / "video_generator" / "vae").is_symlink()  # still shared
    frames = video("a small red circle moving left", num_frames=8, num_inference_steps=2, height=64, width=64,
                   output_type="np", generator=torch.Generator().manual_seed(0)).frames
    assert frames.shape == (1, 8, 64, 64, 3)


def test_video_substage_with_text_encoder_lr_saves_its_own_caption_encoder(tmp_path):
    image, video, _ = _train_video(tmp_path, "spatial_lr = 1e-2\ntext_encoder_lr = 1e-2")
    out = tmp_path / "out" / "video_generator"
    assert not (out / "text_encoder").is_symlink() and (out / "vae").is_symlink()
    assert _spatial_diff(video.text_encoder, image.text_encoder) > 1e-4


def test_background_hinge_sees_only_background_errors_above_the_margin():
    from anygen.training.generators import _background_hinge

    x = torch.full((1, 3, 16, 16), -1.0)  # black background
    fg = torch.zeros(1, 1, 16, 16)
    fg[..., 2:5, 2:5] = 1.0  # a shape in the top-left corner
    x[..., 2:5, 2:5] = 1.0
    y = x.clone()
    y[..., 2:5, 2:5] = 0.0  # a wrong shape colour: not this term's business
    y[..., 5:7, 5:7] += 0.5  # a halo within 3 px of the outline: neither
    y[..., 12:, :] += 0.05  # a faint tint below the margin: free
    assert _background_hinge(y, x, fg, outside=3, margin=0.08) == 0
    y[..., 12:14, 12:14] += 0.3  # a blotch far from the shape: (0.35 - 0.08)^2 on 4 of the background pixels
    far = (1 - torch.nn.functional.max_pool2d(fg, 7, 1, 3)).sum()
    torch.testing.assert_close(_background_hinge(y, x, fg, outside=3, margin=0.08), 4 * 0.27**2 / far)
