"""`anygen batch`: prompt files, bad lines, the manifest, resume, atomic writes, exit codes, batching and
a 2-process `accelerate launch` on CPU. Every run goes through a real tiny random AnyGenPipeline, saved
and loaded the way users load one."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anygen import cli
from anygen.apps import media
from anygen.apps.batch import MANIFEST, RunSettings, read_prompts, run_batch
from anygen.apps.loading import load_pipeline
from anygen.errors import AnyGenInputError
from anygen.testing import ScriptedReply, build_tiny_random_pipeline
from anygen.world import Scene, Shape, render_image

STEPS = 2


def script(prompt: str) -> str:
    """The reply a random backbone is made to give (it would not emit signal tokens by itself)."""
    if prompt.startswith("draw"):
        return "Here is the picture. [IMG]"
    if prompt.startswith("play"):
        return "Listen. [AUD]"
    if prompt.startswith("both"):
        return "A picture. [IMG] And a sound. [AUD]"
    return "a large red circle at the center on a black background"


pytestmark = pytest.mark.usefixtures("single_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny-anygen")
    build_tiny_random_pipeline(seed=0).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def pipe(model_dir):
    return load_pipeline(model_dir)


def settings(pipe, calls: list | None = None, **kw) -> RunSettings:
    def processors(prompt):
        if calls is not None:
            calls.append(prompt)
        if prompt == "interrupt":
            raise KeyboardInterrupt  # stands for Ctrl-C in the middle of a run
        return [ScriptedReply(pipe.tokenizer, script(prompt))]

    return RunSettings(num_inference_steps=STEPS, logits_processor=processors, **kw)


def write_lines(path: Path, lines: list) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / MANIFEST).read_text().splitlines()]


def leftovers(out: Path) -> list[str]:
    """Temporary names, half-written items and per-process record files: none may survive a run."""
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.name.startswith(".") or ".tmp" in p.name)


# --- parsing ---------------------------------------------------------------------------------------


def test_txt_skips_blank_and_comment_lines_and_ids_are_line_numbers(tmp_path):
    f = write_lines(tmp_path / "p.txt", ["# a comment", "draw a red circle", "", "   ", "  play a high tone  ", "#x"])
    items = read_prompts(f)
    assert [(i.id, i.line, i.prompt, i.error) for i in items] == [
        ("000002", 2, "draw a red circle", None),
        ("000005", 5, "play a high tone", None),
    ]


def test_jsonl_fields_and_bad_lines(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "in.png")
    lines = [
        {"prompt": "describe it", "id": "a", "seed": 3, "num_inference_steps": 4, "guidance_scale": 2, "negative_prompt": "blue", "image": "in.png"},
        '{"prompt": "draw", ',
        {"prompt": "draw", "colour": "red"},
        {"prompt": "describe", "image": ["in.png", "missing.png"]},
        {"prompt": "   "},
        {"prompt": "draw", "num_inference_steps": 0},
        {"prompt": "draw", "id": "a"},
        {"prompt": "draw", "id": "../escape"},
        ["not", "an", "object"],
        {"prompt": "draw", "id": 7, "seed": True},
    ]
    items = read_prompts(write_lines(tmp_path / "p.jsonl", lines))
    good = items[0]
    assert (good.id, good.seed, good.num_inference_steps, good.guidance_scale, good.negative_prompt) == ("a", 3, 4, 2.0, "blue")
    assert good.image == [str(tmp_path / "in.png")] and good.error is None
    errors = [(i.id, i.error) for i in items[1:]]
    expected = ["invalid JSON", "unknown field(s) 'colour'", "no such file 'missing.png'", "'prompt' must be a non-empty",
                "'num_inference_steps' must be", "duplicate id 'a' (first used on line 1)", "'id' must be",
                "expected a JSON object", "'seed' must be an integer"]
    for (item_id, error), want in zip(errors, expected):
        assert error is not None and want in error, (item_id, error, want)
    assert [e[0] for e in errors] == ["000002", "000003", "000004", "000005", "000006", "a#7", "000008", "000009", "7"]


def test_unusable_prompt_file_is_a_usage_error(tmp_path):
    with pytest.raises(AnyGenInputError, match="no such file"):
        read_prompts(tmp_path / "missing.txt")
    (tmp_path / "p.csv").write_text("draw\n")
    with pytest.raises(AnyGenInputError, match=r"\.txt .* or \.jsonl"):
        read_prompts(tmp_path / "p.csv")


# --- a run -----------------------------------------------------------------------------------------


def test_run_writes_items_and_manifest_records_bad_lines(tmp_path, pipe):
    scene = Scene(bg="black", objects=(Shape(color="red", shape="circle", size="large", pos="center"),))
    Image.fromarray(render_image(scene)).save(tmp_path / "circle.png")
    prompts = write_lines(tmp_path / "p.jsonl", [
        {"prompt": "draw a red circle", "id": "red", "seed": 5},
        {"prompt": "play a high tone"},
        "{oops",
        {"prompt": "what is this?", "image": "circle.png", "id": "look"},
        {"prompt": "both please", "id": "both"},
        {"prompt": "draw a blue square", "image": "gone.png"},
    ])
    out = tmp_path / "out"
    code = run_batch(prompts, out, pipe=pipe, settings=settings(pipe, batch_size=4, seed=11), progress=False)
    assert code == 1, "a bad line makes the exit code 1"
    records = manifest(out)
    assert [r["id"] for r in records] == ["red", "000002", "000003", "look", "both", "000006"]
    by_id = {r["id"]: r for r in records}
    assert [r["status"] for r in records] == ["ok", "ok", "error", "ok", "ok", "error"]
    assert "invalid JSON" in by_id["000003"]["error"] and "no such file 'gone.png'" in by_id["000006"]["error"]
    assert by_id["red"]["seed"] == 5 and by_id["000002"]["seed"] == 11, "an item's seed, else --seed"
    assert by_id["red"]["files"] == ["red/reply.txt", "red/image_0.png"]
    assert by_id["000002"]["files"] == ["000002/reply.txt", "000002/audio_0.wav"]
    assert by_id["both"]["files"] == ["both/reply.txt", "both/image_0.png", "both/audio_0.wav"]
    assert by_id["look"]["files"] == ["look/reply.txt"]
    assert all(r["error"] is None and r["seconds"] > 0 for r in records if r["status"] == "ok")
    assert not (out / "000003").exists() and not (out / "000006").exists()
    assert leftovers(out) == []

    # The files hold exactly what one plain pipeline call with the same inputs gives.
    def direct(prompt, seed, **kw):
        return pipe(prompt, seed=seed, num_inference_steps=STEPS, logits_processor=[ScriptedReply(pipe.tokenizer, script(prompt))], **kw)

    red = direct("draw a red circle", 5)
    assert (out / "red" / "reply.txt").read_text() == red.text == "Here is the picture. [IMG]"
    np.testing.assert_array_equal(np.asarray(Image.open(out / "red" / "image_0.png")), np.asarray(red.images[0]))
    both = direct("both please", 11)
    np.testing.assert_array_equal(np.asarray(Image.open(out / "both" / "image_0.png")), np.asarray(both.images[0]))
    import soundfile as sf

    wave, rate = sf.read(out / "000002" / "audio_0.wav", dtype="float32")
    tone = direct("play a high tone", 11).audios[0]
    assert rate == pipe.sample_rate and wave.shape == tone.shape
    np.testing.assert_allclose(wave, tone, atol=4 / 32768)  # 16-bit PCM steps + float noise of batched denoising
    assert (out / "look" / "reply.txt").read_text() == script("what is this?")


def test_all_ok_exit_code_and_existing_out_needs_resume(tmp_path, pipe):
    prompts = write_lines(tmp_path / "p.txt", ["draw one", "draw two", "tell me a story"])
    out = tmp_path / "out"
    assert run_batch(prompts, out, pipe=pipe, settings=settings(pipe, batch_size=2), progress=False) == 0
    assert [r["status"] for r in manifest(out)] == ["ok"] * 3
    with pytest.raises(AnyGenInputError, match="--resume"):
        run_batch(prompts, out, pipe=pipe, settings=settings(pipe), progress=False)


def test_resume_after_an_interruption_skips_done_items_and_redoes_the_rest(tmp_path, pipe):
    prompts = write_lines(tmp_path / "p.txt", ["draw a", "draw b", "interrupt", "draw d"])
    out = tmp_path / "out"
    calls: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        run_batch(prompts, out, pipe=pipe, settings=settings(pipe, calls), progress=False)
    assert calls == ["draw a", "draw b", "interrupt"]
    assert not (out / MANIFEST).exists(), "the manifest is merged at the end, or at the start of --resume"
    assert (out / "000001" / "image_0.png").is_file() and (out / "000002" / "image_0.png").is_file()
    before = (out / "000001" / "image_0.png").stat().st_mtime_ns
    (out / ".partial" / "000004").mkdir(parents=True)  # as if killed while writing item 4
    (out / ".partial" / "000004" / "image_0.png").write_bytes(b"\x89PNG half")

    prompts.write_text(prompts.read_text().replace("interrupt", "draw c"))
    calls.clear()
    assert run_batch(prompts, out, pipe=pipe, resume=True, settings=settings(pipe, calls), progress=False) == 0
    assert calls == ["draw c", "draw d"], "completed items are skipped, the rest redone"
    records = manifest(out)
    assert [r["id"] for r in records] == ["000001", "000002", "000003", "000004"]
    assert all(r["status"] == "ok" for r in records)
    assert (out / "000001" / "image_0.png").stat().st_mtime_ns == before
    assert leftovers(out) == []

    # An item whose files went missing is not complete any more: --resume redoes it.
    (out / "000002" / "image_0.png").unlink()
    calls.clear()
    assert run_batch(prompts, out, pipe=pipe, resume=True, settings=settings(pipe, calls), progress=False) == 0
    assert calls == ["draw b"] and (out / "000002" / "image_0.png").is_file()


def test_atomic_writes_leave_no_half_file(tmp_path):
    target = tmp_path / "reply.txt"
    media.write_text(target, "old")

    def half_then_fail(tmp):
        Path(tmp).write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        media._atomic(target, half_then_fail)
    assert target.read_text() == "old", "a failed write keeps the previous file whole"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reply.txt"], "and leaves no temporary file"
    frames = [Image.new("RGB", (16, 16), (i * 30, 0, 0)) for i in range(4)]
    media.write_video(tmp_path / "v.mp4", frames)
    media.write_video(tmp_path / "v.gif", frames)
    assert [f.shape for f in (np.asarray(x) for x in media.load_video(tmp_path / "v.gif"))] == [(16, 16, 3)] * 4
    assert len(media.load_video(tmp_path / "v.mp4")) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reply.txt", "v.gif", "v.mp4"]


def test_items_of_a_chunk_are_denoised_together(tmp_path, pipe):
    # The chunk goes through pipe.generate_batch: its 3 images share one UNet batch (6 rows under guidance),
    # the single audio its own; the files still equal one plain call per item (test_run_writes_items_...).
    prompts = write_lines(tmp_path / "p.txt", ["draw a", "both b", "say c", "draw d"])
    rows = []
    hook = pipe.image_generator.unet.register_forward_pre_hook(lambda m, args: rows.append(args[0].shape[0]))
    try:
        assert run_batch(prompts, tmp_path / "out", pipe=pipe, settings=settings(pipe, batch_size=4), progress=False) == 0
    finally:
        hook.remove()
    assert set(rows) == {6}
    assert [r["files"] for r in manifest(tmp_path / "out")] == [
        ["000001/reply.txt", "000001/image_0.png"],
        ["000002/reply.txt", "000002/image_0.png", "000002/audio_0.wav"],
        ["000003/reply.txt"],
        ["000004/reply.txt", "000004/image_0.png"],
    ]


# --- the command line ------------------------------------------------------------------------------


def test_cli_without_trained_weights_fails_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "DEFAULT_WEIGHTS", tmp_path / "no-weights")
    prompts = write_lines(tmp_path / "p.txt", ["draw"])
    for argv in (["batch", str(prompts), "--out", str(tmp_path / "o")], ["demo"]):
        assert cli.main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "not trained yet" in err and "--model" in err
    assert cli.main(["batch", str(tmp_path / "none.txt"), "--out", str(tmp_path / "o"), "--model", str(tmp_path)]) == 2
    assert "has no model_index.json" in capsys.readouterr().err


def test_cli_batch_compile_flag_reaches_the_loader(tmp_path, model_dir, monkeypatch):
    from anygen.apps import loading

    seen = []
    real = loading.load_pipeline

    def spy(*args, **kwargs):
        seen.append(kwargs.get("compile"))
        return real(*args, **{**kwargs, "compile": False})  # compiling itself: test_anygen_pipeline.py

    monkeypatch.setattr(loading, "load_pipeline", spy)
    prompts = write_lines(tmp_path / "p.txt", ["tell me about shape 1"])
    for extra, want in (([], False), (["--compile"], True)):
        out = tmp_path / f"o{len(extra)}"
        assert cli.main(["batch", str(prompts), "--out", str(out), "--model", str(model_dir), "--no-progress", *extra]) == 0
        assert seen[-1] is want


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_accelerate_launch_two_processes_split_and_merge(tmp_path, model_dir):
    prompts = write_lines(tmp_path / "p.txt", [f"tell me about shape {i}" for i in range(7)])
    out = tmp_path / "out"
    accelerate = Path(sys.executable).with_name("accelerate")
    # On a machine without GPUs, --multi_gpu is accelerate's multi-process launcher (torchrun); the batch
    # command then forms a CPU process group itself.
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           "-m", "anygen", "batch", str(prompts), "--out", str(out), "--model", str(model_dir),
           "--steps", "2", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    records = manifest(out)
    assert [r["id"] for r in records] == [f"{i:06d}" for i in range(1, 8)], "every item once, in input order"
    assert {r["process"] for r in records} == {0, 1}, "both processes took items"
    by_process = [r["process"] for r in records]
    assert by_process == sorted(by_process), "each process takes one contiguous slice"
    assert all(r["status"] == "ok" and (out / r["id"] / "reply.txt").is_file() for r in records)
    assert leftovers(out) == []
    assert "7/7 ok" in done.stderr
