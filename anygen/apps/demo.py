"""The Gradio chat demo: ``anygen demo``.

A ``gr.ChatInterface(multimodal=True)``: the user types, uploads images,
sounds and videos (or records from the microphone); the reply shows its text
with the generated images, videos and sounds inline, where the model put them.
The whole conversation goes to the pipeline on every turn, so "now make it
blue" refers to the last image.

Streaming: the reply's text grows as the backbone writes it (an observing
``LogitsProcessor``, which passes the scores through unchanged); then, for
images, a preview of the denoising (the pipeline's ``callback_on_step_end``
decodes the latents with the generator's VAE) replaces the placeholder while
previews stay under :data:`PREVIEW_BUDGET` of the time spent denoising
(``benchmarks/demo_preview.py`` measures the overhead); then the final media.
The scheduler chosen in the settings goes to the pipeline's ``scheduler=``.

A recorded or uploaded sound longer than the model hears (1 s), or at another
sample rate, is converted (resampled to 16 kHz, its first second kept) and the
reply starts with a note saying so.

Offline by default: binds 127.0.0.1, analytics off, no share link unless
asked, no web fonts, and every file it serves lives in its own temporary
folder (uploads, generated media and the example files alike). One request
runs at a time (a queue with a concurrency limit of 1, and a lock around the
pipeline, which the UI and the API routes share). Bad input comes back as a
chat message. The API endpoint ``/chat`` takes ``{"text": ..., "files": [...]}``
plus the settings and returns the reply message (media as files) and the seed used.
"""

from __future__ import annotations

import atexit
import inspect
import os
import queue
import random
import re
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import AnyGenInputError
from .media import load_any, load_audio_clip, media_kind, write_audio, write_image, write_video

PREVIEW_BUDGET = 0.10
"""Previews may add at most this fraction to the time spent denoising (the issue's bar is 20 %)."""

SCHEDULERS = {
    "default": None,
    "DDIM": "DDIMScheduler",
    "DPM-Solver++": "DPMSolverMultistepScheduler",
    "Euler": "EulerDiscreteScheduler",
}
MARKERS = {"image": "[IMG]", "video": "[VID]", "audio": "[AUD]"}
PLACEHOLDERS = {"image": "<image>", "video": "<video>", "audio": "<audio>"}
_MARKER_RE = re.compile(r"\[(IMG|VID|AUD)\]")
_SIGNAL_TOKEN_RE = re.compile(r"\[(?:IMG|VID|AUD)\d+\]")
_KIND_OF_MARKER = {"IMG": "image", "VID": "video", "AUD": "audio"}
ERROR_TITLE = "⚠️ Error"
NOTE_PREFIX = "ℹ️ "
"""Starts a note of the demo's own in a reply (e.g. a converted sound); notes are not part of the conversation."""

EXAMPLES = [
    ("draw a large red circle at the center on a black background", None),
    ("animate a small blue square moving right", None),
    ("play a beeping buzzy high tone", None),
    ("what is in this picture?", "example_image.png"),
    ("what do you hear?", "example_sound.wav"),
    ("which way does it move?", "example_clip.mp4"),
    ("make it blue", "example_image.png"),
    ("paint a small yellow triangle at the top-left on a gray background, then play a rising pure low tone", None),
]
"""(text, attached example file): draw, animate, play, describe an image / a sound / a video, edit, two outputs."""


class _Cancelled(Exception):
    """The request was stopped (the user pressed stop or left)."""


class _ReplyState:
    """What the worker thread of one request tells the chat function, and the stop switch it obeys."""

    def __init__(self, pipe):
        self.pipe = pipe
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.cancel = threading.Event()
        self.tokens: list[int] = []
        self.sent: list[int] | None = None
        self.last = 0.0

    def check(self) -> None:
        if self.cancel.is_set():
            raise _Cancelled()

    def update(self, tokens: list[int]) -> None:
        self.tokens = tokens
        if time.perf_counter() - self.last > 0.05:  # at most 20 text updates a second
            self.flush()

    def flush(self) -> None:
        if self.tokens != self.sent:
            self.sent, self.last = list(self.tokens), time.perf_counter()
            self.events.put(("text", self.text(self.sent)))

    def text(self, tokens: list[int]) -> str:
        """The reply so far: special tokens dropped, complete signal groups as markers ([IMG] ...)."""
        from ..models.tokenizer import collapse_signal_groups

        pipe = self.pipe
        signal = {t for ids in pipe.signal_groups.values() for t in ids}
        special = set(pipe.tokenizer.all_special_ids) - signal
        text = pipe.tokenizer.decode([t for t in tokens if t not in special], skip_special_tokens=False)
        return collapse_signal_groups(text, pipe.num_signal_tokens).strip()


def write_example_media(folder: Path) -> None:
    """Render the example attachments from the Shapes World into ``folder``."""
    from PIL import Image

    from ..world import Clip, Scene, Shape, Sound, render_audio, render_image, render_video

    scene = Scene(bg="black", objects=(Shape(color="red", shape="circle", size="large", pos="center"),))
    write_image(folder / "example_image.png", Image.fromarray(render_image(scene)))
    write_audio(folder / "example_sound.wav", render_audio(Sound(pitch="medium", timbre="pure", pattern="beeping")), 16_000)
    frames = render_video(Clip(color="green", shape="square", size="large", motion="left"))
    write_video(folder / "example_clip.mp4", [Image.fromarray(f) for f in frames])


# --- chat messages <-> pipeline conversation ---------------------------------------------------


def _items(content) -> list[tuple[str, str]]:
    """A chat message's content as ``("text", str)`` / ``("file", path)`` items, whatever gradio form it is in."""
    if content is None:
        return []
    if isinstance(content, (list, tuple)):
        if isinstance(content, tuple) and content and isinstance(content[0], str) and Path(content[0]).suffix:
            return [("file", content[0])]  # gradio's (path, alt_text) tuple form
        return [x for c in content for x in _items(c)]
    if isinstance(content, str):
        return [("text", content)]
    if isinstance(content, dict):
        if content.get("type") == "text":
            return [("text", content.get("text", ""))]
        if "file" in content and isinstance(content["file"], dict):
            return [("file", content["file"]["path"])]
        if "path" in content:
            return [("file", content["path"])]
        if content.get("type") == "component" and isinstance(content.get("value"), dict):
            return _items(content["value"])
    if hasattr(content, "value"):  # a gradio component (e.g. gr.Image) holding a file
        return _items(content.value)
    return []


def _is_error(message: dict) -> bool:
    return (message.get("metadata") or {}).get("title") == ERROR_TITLE


def to_conversation(history: list[dict], message: dict) -> tuple[list[dict[str, str]], dict[str, list[str]]]:
    """The chat so far plus the new message → the pipeline's messages and the attached files.

    User files become placeholders at the start of their message (``<image>`` ...), in order; an
    assistant's media become its markers (``[IMG]`` ...), where they stand in the reply, which is
    the reply format the pipeline reads back. A turn that ended in an error is left out.

    Returns:
        ``(messages, files)`` with ``files = {"image": [...], "audio": [...], "video": [...]}`` paths.

    Raises:
        AnyGenInputError: the new message is empty, or a file is of an unknown type.
    """
    files: dict[str, list[str]] = {"image": [], "audio": [], "video": []}
    turns: list[tuple[str, list[tuple[str, str]]]] = []
    history = list(history or [])
    for i, msg in enumerate(history):
        if _is_error(msg) or (msg.get("role") == "user" and any(_is_error(m) for m in history[i + 1 : i + 2])):
            continue
        role = msg.get("role")
        if role not in ("user", "assistant"):
            continue
        if turns and turns[-1][0] == role:  # gradio splits one turn into several messages
            turns[-1][1].extend(_items(msg.get("content")))
        else:
            turns.append((role, _items(msg.get("content"))))
    new_items = [("file", f if isinstance(f, str) else f.get("path")) for f in (message.get("files") or [])]
    text = (message.get("text") or "").strip()
    if not text:
        raise AnyGenInputError("Type a request with your message, e.g. 'draw a red circle' or 'what is in this picture?'")
    new_items.append(("text", text))
    if turns and turns[-1][0] == "user":  # an unanswered user turn (e.g. after an error) merges into this one
        new_items = turns.pop()[1] + new_items
    turns.append(("user", new_items))

    messages = []
    for role, items in turns:
        texts, placeholders = [], []
        for kind, value in items:
            if kind == "text":
                if not (role == "assistant" and value.startswith(NOTE_PREFIX)):
                    texts.append(value.strip())
                continue
            medium = media_kind(value)
            if medium is None:
                raise AnyGenInputError(
                    f"Cannot use {Path(value).name!r}: attach an image (.png, .jpg, ...), a sound (.wav, .flac, ...) "
                    "or a video (.mp4, .webm, ...)"
                )
            if role == "user":
                files[medium].append(value)
                placeholders.append(PLACEHOLDERS[medium])
            else:
                texts.append(MARKERS[medium])
        content = " ".join(t for t in texts if t)
        if role == "user" and placeholders:
            content = " ".join(placeholders) + "\n" + content
        messages.append({"role": role, "content": content})
    return messages, files


def reply_content(text: str, media: list[Any]) -> list:
    """A reply as chat content: its text with each marker replaced by the medium in ``media`` (a path, or a note)."""
    content: list = []
    text = _SIGNAL_TOKEN_RE.sub("", text)  # a signal group still being written
    pieces = _MARKER_RE.split(text)  # [text, kind, text, kind, ..., text]
    for i, piece in enumerate(pieces):
        if i % 2 == 0:
            if piece.strip():
                content.append(piece.strip())
            continue
        j = (i - 1) // 2
        item = media[j] if j < len(media) else None
        kind = _KIND_OF_MARKER[piece]
        content.append({"path": str(item)} if isinstance(item, (str, Path)) else f"*({kind} coming…)*")
    return content or ["(no reply)"]


def _load_attachments(files: dict[str, list[str]]) -> tuple[dict[str, list], list[str]]:
    """The attached files as pipeline arguments (``{"images": [...], ...}``), and notes on converted sounds.

    Raises:
        AnyGenInputError: a file cannot be read.
    """
    media, notes = {}, []
    for kind, paths in files.items():
        values = []
        for path in paths:
            if kind == "audio":  # recordings and uploads come at any rate and length
                wave, note = load_audio_clip(path)
                values.append(wave)
                notes += [note] if note else []
            else:
                values.append(load_any(path)[1])
        if values:
            media[f"{kind}s"] = values
    return media, notes


# --- the chat function ------------------------------------------------------------------------


def _defaults(pipe) -> dict[str, Any]:
    params = inspect.signature(pipe.__call__).parameters
    return {k: params[k].default for k in ("num_inference_steps", "guidance_scale")}


class ChatDemo:
    """The demo's chat function and state (a temporary folder, a lock around the pipeline).

    Args:
        pipe: an :class:`~anygen.AnyGenPipeline`.
        workdir: the folder every served file lives in (uploads, replies, examples).
        logits_processor: a function of the conversation returning extra ``LogitsProcessor`` objects for
            each call (e.g. ``anygen.testing.ScriptedReply`` to script a random-weight pipeline's replies).
        preview_budget: the most previews may add to the time spent denoising an image (0 disables them).
    """

    def __init__(self, pipe, workdir: str | Path, logits_processor: Callable[[list[dict]], list] | None = None,
                 preview_budget: float = PREVIEW_BUDGET):
        self.pipe = pipe
        self.workdir = Path(workdir)
        self.logits_processor = logits_processor
        self.preview_budget = preview_budget
        self.lock = threading.Lock()
        self.defaults = _defaults(pipe)

    # Each step of a request reports to the chat function through a queue: ("text", str), ("preview",
    # (index, PIL image)), ("done", AnyGenOutput) or ("error", exception).

    def _observer(self, reply: "_ReplyState"):
        from transformers import LogitsProcessor

        class ReplyObserver(LogitsProcessor):
            """Passes the scores through; reports the reply so far (each call sees one more token)."""

            start: int | None = None

            def __call__(self, input_ids, scores):
                reply.check()
                if self.start is None:
                    self.start = input_ids.shape[1]
                reply.update(input_ids[0, self.start :].tolist())
                return scores

        return ReplyObserver()

    def _step_callback(self, reply: "_ReplyState"):
        """The pipeline's ``callback_on_step_end`` for one request.

        At the end of every denoising step it checks for a stop and sends the finished reply text (the backbone
        is done once denoising starts); for an image it also decodes a preview with the generator's VAE, from a
        quarter of the steps on, while previews fit the budget.
        """
        budget = self.preview_budget
        clock = {"start": 0.0, "spent": 0.0, "cost": 0.0}

        def on_step_end(pipeline, step, timestep, callback_kwargs):
            reply.check()
            reply.flush()
            now = time.perf_counter()
            if step == 0:  # a new medium
                clock.update(start=now, spent=0.0)
            steps = len(pipeline.scheduler.timesteps)
            if callback_kwargs["modality"] != "image" or budget <= 0 or step == steps - 1:
                return None
            denoising = now - clock["start"] - clock["spent"]
            if step >= steps // 4 and clock["spent"] + clock["cost"] <= budget * denoising:
                vae = pipeline.vae
                latents = callback_kwargs["latents"]
                decoded = vae.decode(latents / vae.config.scaling_factor, return_dict=False)[0]
                preview = pipeline.image_processor.postprocess(decoded, output_type="pil")[0]
                reply.events.put(("preview", (callback_kwargs["medium_index"], preview)))
                clock["cost"] = time.perf_counter() - now
                clock["spent"] += clock["cost"]
            return None

        return on_step_end

    def _run(self, messages, media, settings, reply: "_ReplyState") -> None:
        extra = list(self.logits_processor(messages)) if self.logits_processor else []
        with self.lock:
            if reply.cancel.is_set():
                return
            try:
                out = self.pipe(messages, **media, **settings, logits_processor=[self._observer(reply), *extra],
                                callback_on_step_end=self._step_callback(reply))
                reply.events.put(("done", out))
            except BaseException as e:  # everything reaches the chat, nothing kills the server
                reply.events.put(("error", e))

    def _error(self, e: BaseException) -> dict:
        text = str(e) if isinstance(e, AnyGenInputError) else f"Generation failed: {type(e).__name__}: {e}"
        return {"role": "assistant", "content": text, "metadata": {"title": ERROR_TITLE}}

    def respond(self, message: dict, history: list[dict], seed: float | None, random_seed: bool, steps: float,
                guidance: float, scheduler: str) -> Iterator[tuple[dict, int]]:
        """The ChatInterface function: yields ``(reply message, seed used)`` as the reply grows."""
        seed = random.randrange(2**31 - 1) if random_seed or seed is None else int(seed)
        try:
            messages, files = to_conversation(history, message or {})
            media, notes = _load_attachments(files)
            if scheduler not in SCHEDULERS:
                raise AnyGenInputError(f"scheduler must be one of {list(SCHEDULERS)}, got {scheduler!r}")
        except AnyGenInputError as e:
            yield self._error(e), seed
            return
        settings = dict(seed=seed, num_inference_steps=int(steps), guidance_scale=float(guidance),
                        scheduler=SCHEDULERS[scheduler])
        folder = self.workdir / "replies" / uuid.uuid4().hex
        folder.mkdir(parents=True)
        reply = _ReplyState(self.pipe)
        threading.Thread(target=self._run, args=(messages, media, settings, reply), daemon=True).start()
        notes = [NOTE_PREFIX + n for n in notes]
        text, previews = "", {}
        try:
            while True:
                kind, value = reply.events.get()
                if kind == "text":
                    text = value
                    if not text:
                        continue
                    yield {"role": "assistant", "content": notes + reply_content(text, [])}, seed
                elif kind == "preview":
                    i, im = value  # i: the medium's position in the reply, i.e. its marker's
                    path = folder / f"preview_{i}_{len(previews)}.png"
                    write_image(path, im)
                    previews[i] = path
                    media = [previews.get(j) for j in range(len(_MARKER_RE.findall(text)))]
                    yield {"role": "assistant", "content": notes + reply_content(text, media)}, seed
                elif kind == "error":
                    yield self._error(value), seed
                    return
                else:
                    content = notes + reply_content(value.text, self._save(value, folder))
                    yield {"role": "assistant", "content": content}, seed
                    return
        finally:
            reply.cancel.set()  # the user stopped or left: the worker stops at its next token or step

    def _save(self, out, folder: Path) -> list[Path]:
        """Write the media of a reply; return their paths in reply order."""
        paths = {"IMG": [], "VID": [], "AUD": []}
        for i, im in enumerate(out.images):
            write_image(folder / f"image_{i}.png", im)
            paths["IMG"].append(folder / f"image_{i}.png")
        for i, frames in enumerate(out.videos):
            write_video(folder / f"video_{i}.mp4", frames, fps=int(getattr(self.pipe.config, "fps", 8)))
            paths["VID"].append(folder / f"video_{i}.mp4")
        for i, wave in enumerate(out.audios):
            write_audio(folder / f"audio_{i}.wav", wave, out.sample_rate)
            paths["AUD"].append(folder / f"audio_{i}.wav")
        return [paths[m].pop(0) for m in _MARKER_RE.findall(out.text) if paths[m]]


def build_demo(pipe, workdir: str | Path, logits_processor: Callable[[list[dict]], list] | None = None,
               preview_budget: float = PREVIEW_BUDGET):
    """Build the chat UI around a pipeline.

    Args:
        pipe: an :class:`~anygen.AnyGenPipeline`.
        workdir: the folder it may write and serve files from (set ``GRADIO_TEMP_DIR`` to it as well).
        logits_processor: see :class:`ChatDemo`.
        preview_budget: see :class:`ChatDemo`.

    Returns:
        The ``gr.ChatInterface`` (not launched; call ``.queue(...)`` and ``.launch(...)``).
    """
    import gradio as gr

    workdir = Path(workdir)
    examples_dir = workdir / "examples"
    examples_dir.mkdir(parents=True, exist_ok=True)
    write_example_media(examples_dir)
    chat = ChatDemo(pipe, workdir, logits_processor=logits_processor, preview_budget=preview_budget)

    seed = gr.Number(value=0, precision=0, minimum=0, label="Seed")
    additional = [
        seed,
        gr.Checkbox(value=False, label="Random seed (the seed used is written back above)"),
        gr.Slider(1, 100, value=chat.defaults["num_inference_steps"], step=1, label="Inference steps"),
        gr.Slider(0.0, 15.0, value=chat.defaults["guidance_scale"], step=0.5, label="Guidance scale (≤ 1: off)"),
        gr.Dropdown(list(SCHEDULERS), value="default", label="Scheduler"),
    ]
    examples = [[{"text": text, "files": [str(examples_dir / f)] if f else []}] for text, f in EXAMPLES]
    return gr.ChatInterface(
        chat.respond,
        multimodal=True,
        textbox=gr.MultimodalTextbox(
            file_types=["image", "audio", "video"], file_count="multiple", sources=["upload", "microphone"],
            placeholder="Ask for an image, a video or a sound, or attach one and ask about it", autofocus=True,
        ),
        chatbot=gr.Chatbot(label="AnyGen", height=560, buttons=["copy"]),
        additional_inputs=additional,
        additional_inputs_accordion=gr.Accordion("Settings", open=False),
        additional_outputs=[seed],
        examples=examples,
        example_labels=[text if not f else f"{text} (+ {f.split('_')[1].split('.')[0]})" for text, f in EXAMPLES],
        cache_examples=False,
        title="AnyGen",
        description="Any-to-any generation in the Shapes World: draw, animate, play, describe, edit.",
        analytics_enabled=False,
        concurrency_limit=1,
        api_name="chat",
        fill_height=True,
    )


def launch_demo(pipe, host: str = "127.0.0.1", port: int = 7860, share: bool = False, block: bool = True,
                logits_processor: Callable[[list[dict]], list] | None = None, preview_budget: float = PREVIEW_BUDGET):
    """Serve the demo.

    Args:
        pipe: an :class:`~anygen.AnyGenPipeline`.
        host: the address to bind (default: this machine only).
        port: the port.
        share: also open a public share link (needs internet; off by default).
        block: serve until interrupted; with ``False``, return once the server is up.
        logits_processor: see :class:`ChatDemo`.
        preview_budget: see :class:`ChatDemo`.

    Returns:
        The launched ``gr.ChatInterface`` (``.close()`` stops it).
    """
    workdir = Path(tempfile.mkdtemp(prefix="anygen-demo-"))
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    # Read by gradio whenever it stores or serves a file: everything it serves lives in workdir.
    os.environ["GRADIO_TEMP_DIR"] = str(workdir)
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(workdir / "cached_examples")
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    demo = build_demo(pipe, workdir, logits_processor=logits_processor, preview_budget=preview_budget)
    demo.queue(max_size=32, default_concurrency_limit=1)
    demo.launch(
        server_name=host, server_port=port, share=share, prevent_thread_lock=not block, ssr_mode=False,
        allowed_paths=[], footer_links=["api"], max_file_size="20mb", quiet=not block, pwa=False,
    )
    return demo
