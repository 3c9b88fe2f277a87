"""`anygen demo`: the Gradio chat app, driven through its `/chat` API with gradio_client and through a real
headless Chromium (Debian's /usr/bin/chromium via Playwright). The app serves a real tiny random
AnyGenPipeline, saved and loaded the way users load one; its replies are scripted (a random backbone
would not emit signal tokens by itself), everything downstream of the reply runs for real."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from anygen.apps.demo import ERROR_TITLE, NOTE_PREFIX, launch_demo
from anygen.apps.loading import load_pipeline
from anygen.apps.media import load_audio_clip
from anygen.errors import AnyGenInputError
from anygen.testing import ScriptedReply, build_tiny_random_pipeline
from anygen.world import Scene, Shape, render_image

CHROMIUM = "/usr/bin/chromium"
DESCRIPTION = "a large red circle at the center on a black background"


def script(messages: list[dict]) -> str:
    last = messages[-1]["content"]
    if "what is" in last:
        return DESCRIPTION
    if "blue" in last:
        return "Here it is in blue. [IMG]"
    return "Here is a red circle. [IMG]"


pytestmark = pytest.mark.usefixtures("single_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-anygen")
    build_tiny_random_pipeline(seed=0).save_pretrained(path)
    return load_pipeline(path)


@pytest.fixture(scope="module")
def app(pipe):
    """The launched demo; ``app.calls`` collects the conversation of every pipeline call."""
    calls: list[list[dict]] = []

    def processors(messages):
        calls.append(messages)
        return [ScriptedReply(pipe.tokenizer, script(messages))]

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = launch_demo(pipe, port=port, block=False, logits_processor=processors)
    demo.calls = calls
    demo.url = f"http://127.0.0.1:{port}/"
    yield demo
    demo.close()


def client(app, tmp_path) -> Client:
    """A new chat session (the conversation is per client); downloads go to the test's folder."""
    return Client(app.url, verbose=False, download_files=str(tmp_path / "downloads"))


def direct(pipe, prompt, **kw):
    return pipe(prompt, seed=0, num_inference_steps=20, logits_processor=[ScriptedReply(pipe.tokenizer, script(
        prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]))], **kw)


def test_text_to_image_over_the_api(app, pipe, tmp_path):
    reply, seed = client(app, tmp_path).predict({"text": "draw a red circle", "files": []}, api_name="/chat")
    assert seed == 0 and reply["role"] == "assistant"
    text, path = reply["content"]
    assert text == "Here is a red circle."
    image = Image.open(path)
    assert image.size == (16, 16)
    np.testing.assert_array_equal(np.asarray(image), np.asarray(direct(pipe, "draw a red circle").images[0]))
    assert app.calls[-1] == [{"role": "user", "content": "draw a red circle"}]


def test_describe_an_upload(app, tmp_path):
    scene = Scene(bg="black", objects=(Shape(color="red", shape="circle", size="large", pos="center"),))
    Image.fromarray(render_image(scene)).save(tmp_path / "circle.png")
    reply, _ = client(app, tmp_path).predict({"text": "what is in this picture?", "files": [handle_file(tmp_path / "circle.png")]},
                                             api_name="/chat")
    assert reply["content"] == [DESCRIPTION]
    assert app.calls[-1] == [{"role": "user", "content": "<image>\nwhat is in this picture?"}]


def test_edit_over_two_turns_passes_the_whole_conversation(app, pipe, tmp_path):
    c = client(app, tmp_path)
    first, _ = c.predict({"text": "draw a red circle", "files": []}, api_name="/chat")
    second, _ = c.predict({"text": "now make it blue", "files": []}, api_name="/chat")
    conversation = [
        {"role": "user", "content": "draw a red circle"},
        {"role": "assistant", "content": "Here is a red circle. [IMG]"},
        {"role": "user", "content": "now make it blue"},
    ]
    assert app.calls[-1] == conversation
    text, path = second["content"]
    assert text == "Here it is in blue."
    edited = np.asarray(Image.open(path))
    np.testing.assert_array_equal(edited, np.asarray(direct(pipe, conversation).images[0]))
    alone = np.asarray(direct(pipe, "now make it blue").images[0])
    assert np.abs(edited.astype(int) - alone).max() > 0, "the earlier turn must change what is generated"


def test_reply_streams_text_first_then_previews_then_the_image(app, tmp_path):
    job = client(app, tmp_path).submit({"text": "draw a red circle", "files": []}, 7, False, 12, 4.0, "Euler", api_name="/chat")
    final, seed = job.result()
    # Every streamed (reply, seed) pair, in order (gradio_client also lists single-value status items).
    updates = [o[0]["content"] for o in job.outputs() if isinstance(o, (list, tuple)) and len(o) == 2]
    assert seed == 7
    first = updates[0]
    assert all(isinstance(x, str) for x in first), f"the text comes before any media: {first}"
    assert "Here is a red circle.".startswith(first[0])
    previews = [u[1] for u in updates if len(u) == 2 and "preview_" in str(u[1])]
    assert previews, f"no denoising preview among {updates}"
    assert Path(final["content"][1]).name == "image_0.png"


def test_bad_input_comes_back_as_a_chat_message(app, tmp_path):
    c = client(app, tmp_path)
    reply, _ = c.predict({"text": "  ", "files": []}, api_name="/chat")
    assert reply["metadata"]["title"] == ERROR_TITLE and "Type a request" in reply["content"]
    (tmp_path / "broken.png").write_bytes(b"not a picture")
    reply, _ = c.predict({"text": "what is this?", "files": [handle_file(tmp_path / "broken.png")]}, api_name="/chat")
    assert reply["metadata"]["title"] == ERROR_TITLE and "cannot read" in reply["content"]
    (tmp_path / "broken.wav").write_bytes(b"RIFF not a sound")
    reply, _ = c.predict({"text": "what do you hear?", "files": [handle_file(tmp_path / "broken.wav")]}, api_name="/chat")
    assert reply["metadata"]["title"] == ERROR_TITLE and "cannot read" in reply["content"]
    reply, _ = c.predict({"text": "draw a red circle", "files": []}, api_name="/chat")
    assert "metadata" not in reply or not reply["metadata"], "the session goes on after errors"


def _tone(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def test_load_audio_clip_converts_and_says_so(tmp_path):
    import soundfile as sf
    import torch
    import torchaudio

    sf.write(tmp_path / "short.wav", _tone(0.5, 16000), 16000)
    wave, note = load_audio_clip(tmp_path / "short.wav")
    assert note is None and wave.dtype == np.float32 and wave.shape == (8000,)
    sf.write(tmp_path / "long.wav", _tone(3.0, 44100, channels=2), 44100, subtype="FLOAT")
    wave, note = load_audio_clip(tmp_path / "long.wav")
    assert wave.dtype == np.float32 and wave.shape == (16000,)
    assert note == "long.wav was resampled from 44100 Hz to 16000 Hz and cut to its first 1 s (it lasts 3.0 s)."
    expected = torchaudio.functional.resample(torch.from_numpy(_tone(1.0, 44100)), 44100, 16000).numpy()
    np.testing.assert_allclose(wave, expected, atol=1e-5)
    with pytest.raises(AnyGenInputError, match="cannot read"):
        (tmp_path / "bad.wav").write_bytes(b"RIFF....WAVE")
        load_audio_clip(tmp_path / "bad.wav")


def test_long_recording_is_converted_with_a_note(app, tmp_path):
    import soundfile as sf

    sf.write(tmp_path / "recording.wav", _tone(3.0, 48000), 48000)
    c = client(app, tmp_path)
    reply, _ = c.predict({"text": "what do you hear?", "files": [handle_file(tmp_path / "recording.wav")]}, api_name="/chat")
    assert not reply.get("metadata"), reply
    note, text, image = reply["content"]
    assert note.startswith(NOTE_PREFIX) and "resampled from 48000 Hz" in note and "first 1 s (it lasts 3.0 s)" in note
    assert text == "Here is a red circle." and Path(image).suffix == ".png"
    assert app.calls[-1] == [{"role": "user", "content": "<audio>\nwhat do you hear?"}]
    c.predict({"text": "now make it blue", "files": []}, api_name="/chat")
    assert app.calls[-1][1] == {"role": "assistant", "content": "Here is a red circle. [IMG]"}, "the note is not the model's"


def test_serves_only_its_own_files(app):
    for path in ("/etc/hostname", str(Path(__file__).resolve())):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{app.url}gradio_api/file={path}", timeout=10)
        assert e.value.code == 403


def test_browser_types_a_prompt_and_sees_the_image(app, tmp_path):
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"the browser test needs Debian's chromium at {CHROMIUM} (apt-get install chromium)"
    hosts = set()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.on("request", lambda r: hosts.add(r.url.split("/")[2]))
        page.goto(app.url, wait_until="load")  # not "networkidle": the page keeps its event stream open
        box = page.locator("textarea").first  # the chat input (the settings' fields are not textareas)
        box.wait_for(state="visible", timeout=60_000)
        box.fill("draw a red circle")
        box.press("Enter")
        image = page.locator("img[src*='image_0.png']").first  # only a generated reply has this file name
        image.wait_for(state="visible", timeout=30_000)
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle(), timeout=10_000)
        size = image.bounding_box()
        page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
        browser.close()
    assert size["width"] > 0 and size["height"] > 0
    assert (tmp_path / "demo.png").stat().st_size > 10_000
    assert hosts <= {app.url.split("/")[2]}, f"the page fetched from other hosts: {hosts}"
