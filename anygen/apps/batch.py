"""Batch generation from a prompt file: ``anygen batch PROMPTS --out DIR``.

Input, one item per line:

* ``.txt``: the prompt; blank lines and lines starting with ``#`` are skipped.
* ``.jsonl``: an object with ``prompt`` and optionally ``id``, ``seed``,
  ``num_inference_steps``, ``guidance_scale``, ``negative_prompt`` and
  ``image`` / ``audio`` / ``video`` (a path or a list of paths, relative to the
  prompt file's folder).

An item's id is its ``id`` or its line number (``000007``). Output:
``DIR/<id>/reply.txt`` with the media next to it, and ``DIR/manifest.jsonl``,
one record per item in input order: ``id``, ``line``, ``status`` (``ok`` or
``error``), ``files`` (relative to ``DIR``), ``seed``, ``seconds``, ``error``,
``process``. An item is written into ``DIR/.partial/<id>`` and renamed into
place when complete; every file inside is itself written to a temporary name
and renamed. A bad line is recorded with its error and the run goes on.

Multi-process: under ``accelerate launch`` every process reads the same items
and takes its own slice (``PartialState.split_between_processes``); each
process appends its records to ``DIR/.manifest.rank<N>.jsonl``, and the main
process merges them into ``manifest.jsonl`` at the end (or, after an
interruption, at the start of the ``--resume`` run).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from ..errors import AnyGenInputError
from .media import load_audio, load_image, load_video, write_output

FIELDS = ("prompt", "id", "seed", "num_inference_steps", "guidance_scale", "negative_prompt", "image", "audio", "video")
MEDIA_FIELDS = ("image", "audio", "video")
ID_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
MANIFEST = "manifest.jsonl"
PARTIAL = ".partial"


@dataclass
class BatchItem:
    """One line of a prompt file.

    Args:
        id: the item's name, also its output folder.
        line: 1-based line number in the prompt file.
        prompt: the request.
        seed, num_inference_steps, guidance_scale, negative_prompt: per-item overrides (``None``: the run's default).
        image, audio, video: absolute paths of attached files.
        error: why the line is unusable (the item is then recorded, not generated).
    """

    id: str
    line: int
    prompt: str = ""
    seed: int | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    negative_prompt: str | None = None
    image: list[str] = field(default_factory=list)
    audio: list[str] = field(default_factory=list)
    video: list[str] = field(default_factory=list)
    error: str | None = None


def _line_id(line: int) -> str:
    return f"{line:06d}"


def _parse_json_line(text: str, line: int, base: Path) -> BatchItem:
    """One ``.jsonl`` line → a :class:`BatchItem` (``error`` set when the line is bad)."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        return BatchItem(_line_id(line), line, error=f"invalid JSON: {e.msg} at column {e.colno}")
    if not isinstance(obj, dict):
        return BatchItem(_line_id(line), line, error=f"expected a JSON object with a 'prompt', got {type(obj).__name__}")
    item = BatchItem(_line_id(line), line)
    raw_id = obj.get("id")
    if raw_id is not None:
        if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or not ID_RE.fullmatch(str(raw_id)):
            item.error = f"'id' must be a string or integer of letters, digits, '.', '_', '-' (not starting with '.' or '-'), got {raw_id!r}"
            return item
        item.id = str(raw_id)
    unknown = sorted(set(obj) - set(FIELDS))
    if unknown:
        item.error = f"unknown field(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(FIELDS)}"
        return item
    prompt = obj.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        item.error = "'prompt' must be a non-empty string"
        return item
    item.prompt = prompt
    checks: dict[str, tuple[type | tuple[type, ...], str]] = {
        "seed": (int, "an integer"),
        "num_inference_steps": (int, "a positive integer"),
        "guidance_scale": ((int, float), "a number"),
        "negative_prompt": (str, "a string"),
    }
    for name, (types, what) in checks.items():
        value = obj.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, types) or (name == "num_inference_steps" and value < 1):
            item.error = f"'{name}' must be {what}, got {value!r}"
            return item
        setattr(item, name, float(value) if name == "guidance_scale" else value)
    for name in MEDIA_FIELDS:
        value = obj.get(name)
        if value is None:
            continue
        paths = [value] if isinstance(value, str) else value
        if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
            item.error = f"'{name}' must be a file path or a list of file paths, got {value!r}"
            return item
        resolved = [str((base / p).resolve()) for p in paths]
        missing = [p for p, r in zip(paths, resolved) if not Path(r).is_file()]
        if missing:
            item.error = f"'{name}': no such file {missing[0]!r} (paths are relative to {str(base)!r})"
            return item
        setattr(item, name, resolved)
    return item


def read_prompts(path: str | Path) -> list[BatchItem]:
    """Parse a ``.txt`` or ``.jsonl`` prompt file.

    Bad lines become items with ``error`` set (they are recorded, not generated);
    a repeated id is an error on its later line.

    Args:
        path: the prompt file.

    Returns:
        The items, in file order.

    Raises:
        AnyGenInputError: the file is missing or is neither ``.txt`` nor ``.jsonl``.
    """
    path = Path(path)
    if path.suffix not in (".txt", ".jsonl"):
        raise AnyGenInputError(f"prompts: {str(path)!r} must be a .txt (one prompt per line) or .jsonl file")
    if not path.is_file():
        raise AnyGenInputError(f"prompts: no such file {str(path)!r}")
    items: list[BatchItem] = []
    base = path.resolve().parent
    for line, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = text.strip()
        if path.suffix == ".txt":
            if text and not text.startswith("#"):
                items.append(BatchItem(_line_id(line), line, prompt=text))
        elif text:
            items.append(_parse_json_line(text, line, base))
    first_line: dict[str, int] = {}
    for item in items:
        if item.id in first_line:
            item.error = item.error or f"duplicate id {item.id!r} (first used on line {first_line[item.id]})"
            item.id = f"{item.id}#{item.line}"  # keeps the record apart from the first one's
        first_line.setdefault(item.id, item.line)
    return items


# --- manifest ---------------------------------------------------------------------------------


def _read_records(path: Path) -> list[dict]:
    """Records of a manifest file; a torn last line (an interrupted append) is ignored."""
    records = []
    if path.is_file():
        for text in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(text)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and "id" in record:
                records.append(record)
    return records


def _rank_files(out: Path) -> list[Path]:
    return sorted(out.glob(".manifest.rank*.jsonl"))


def merge_manifests(out: Path, order: Iterable[str] = ()) -> list[dict]:
    """Fold ``manifest.jsonl`` and every process's record file into one ``manifest.jsonl``.

    The latest record of an id wins; ids in ``order`` come first, in that order.
    The new manifest is written to a temporary name and renamed; the per-process
    files are deleted after.

    Returns:
        The merged records.
    """
    from .media import write_text

    latest: dict[str, dict] = {}
    rank_files = _rank_files(out)
    for path in [out / MANIFEST, *rank_files]:
        for record in _read_records(path):
            latest.pop(record["id"], None)  # re-insert: a later record moves to the end
            latest[record["id"]] = record
    ordered = [latest.pop(i) for i in order if i in latest]
    records = ordered + list(latest.values())
    write_text(out / MANIFEST, "".join(json.dumps(r) + "\n" for r in records))
    for path in rank_files:
        path.unlink()
    return records


def completed_ids(out: Path) -> set[str]:
    """Ids whose manifest record is ``ok`` and whose files are all on disk."""
    return {
        r["id"] for r in _read_records(out / MANIFEST)
        if r.get("status") == "ok" and all((out / f).is_file() for f in r.get("files", []))
    }


# --- generation -----------------------------------------------------------------------------


@dataclass
class RunSettings:
    """How a run calls the pipeline.

    Args:
        seed, num_inference_steps, guidance_scale: defaults for items that set none (``None``: the pipeline's).
        batch_size: items read together; their media that share a generator are denoised together.
        logits_processor: a function of an item's prompt returning extra ``LogitsProcessor`` objects for its
            call, e.g. ``anygen.testing.ScriptedReply`` to script a random-weight pipeline's replies.
    """

    seed: int = 0
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    batch_size: int = 1
    logits_processor: Callable[[str], list] | None = None


def _call_kwargs(item: BatchItem, settings: RunSettings) -> dict[str, Any]:
    """The pipeline keyword arguments of one item (media decoded from its files)."""
    kwargs: dict[str, Any] = {"seed": item.seed if item.seed is not None else settings.seed}
    steps = item.num_inference_steps or settings.num_inference_steps
    guidance = item.guidance_scale if item.guidance_scale is not None else settings.guidance_scale
    if steps is not None:
        kwargs["num_inference_steps"] = steps
    if guidance is not None:
        kwargs["guidance_scale"] = guidance
    if item.negative_prompt is not None:
        kwargs["negative_prompt"] = item.negative_prompt
    if settings.logits_processor is not None:
        kwargs["logits_processor"] = settings.logits_processor(item.prompt)
    if item.image:
        kwargs["images"] = [load_image(p) for p in item.image]
    if item.audio:
        kwargs["audios"] = [load_audio(p) for p in item.audio]
    if item.video:
        kwargs["videos"] = [load_video(p) for p in item.video]
    return kwargs


def generate_items(pipe, items: list[BatchItem], settings: RunSettings) -> Iterator[tuple[BatchItem, Any, float]]:
    """Run the pipeline over ``items``; yield ``(item, output or exception, seconds)`` per item, in order.

    Items are taken ``settings.batch_size`` at a time through ``pipe.generate_batch``, which denoises the media
    of a chunk that go to the same generator with the same settings together. ``seconds`` is the chunk's time
    shared evenly. An item whose inputs cannot be read, or whose call fails, fails alone.
    """
    for start in range(0, len(items), settings.batch_size):
        chunk = items[start : start + settings.batch_size]
        ready: list[tuple[BatchItem, dict]] = []
        for item in chunk:
            try:
                ready.append((item, {"prompt": item.prompt, **_call_kwargs(item, settings)}))
            except Exception as e:  # an unreadable input file fails this item only
                yield item, e, 0.0
        if not ready:
            continue
        t0 = time.perf_counter()
        outputs = pipe.generate_batch([request for _, request in ready], return_exceptions=True)
        seconds = (time.perf_counter() - t0) / len(ready)
        for (item, _), out in zip(ready, outputs):
            yield item, out, seconds


def _error_text(e: BaseException) -> str:
    return str(e) if isinstance(e, AnyGenInputError) else f"{type(e).__name__}: {e}"


def _write_item(out_dir: Path, item: BatchItem, output) -> list[str]:
    """Write one item's files into ``.partial/<id>`` and rename that folder to ``<id>``."""
    partial = out_dir / PARTIAL / item.id
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    names = write_output(output, partial)
    final = out_dir / item.id
    if final.exists():  # a redone item: replace the old folder whole
        shutil.rmtree(final)
    os.replace(partial, final)
    return [f"{item.id}/{n}" for n in names]


class _RecordFile:
    """This process's record file: one JSON line per item, flushed and fsynced as it is written."""

    def __init__(self, path: Path):
        self.f = open(path, "a", encoding="utf-8")

    def append(self, record: dict) -> None:
        self.f.write(json.dumps(record) + "\n")
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self) -> None:
        self.f.close()


def process_items(pipe, items: list[BatchItem], out_dir: Path, settings: RunSettings, rank: int = 0,
                  progress: bool = True) -> list[dict]:
    """Generate ``items`` (bad lines included, recorded as errors) into ``out_dir``; return their records."""
    from tqdm.auto import tqdm

    good = [it for it in items if it.error is None]
    records: list[dict] = []
    log = _RecordFile(out_dir / f".manifest.rank{rank}.jsonl")
    bar = tqdm(total=len(items), desc="anygen batch" if rank == 0 else f"anygen batch [{rank}]", unit="item",
               position=rank, disable=not progress, dynamic_ncols=True)

    def record(item: BatchItem, status: str, files: list[str], seed, seconds: float, error: str | None) -> None:
        r = dict(id=item.id, line=item.line, status=status, files=files, seed=seed,
                 seconds=round(seconds, 4), error=error, process=rank)
        log.append(r)
        records.append(r)
        bar.update(1)

    try:
        for item in items:
            if item.error is not None:
                record(item, "error", [], item.seed, 0.0, item.error)
        for item, output, seconds in generate_items(pipe, good, settings):
            seed = item.seed if item.seed is not None else settings.seed
            if isinstance(output, BaseException):
                record(item, "error", [], seed, seconds, _error_text(output))
                continue
            try:
                files = _write_item(out_dir, item, output)
            except Exception as e:
                record(item, "error", [], seed, seconds, f"writing the output failed: {_error_text(e)}")
                continue
            record(item, "ok", files, seed, seconds, None)
    finally:
        bar.close()
        log.close()
    return records


def run_batch(
    prompts: str | Path,
    out: str | Path,
    *,
    pipe=None,
    load_pipeline=None,
    resume: bool = False,
    settings: RunSettings | None = None,
    progress: bool = True,
) -> int:
    """Generate every item of a prompt file into ``out``; also the body of each process under ``accelerate launch``.

    Args:
        prompts: a ``.txt`` or ``.jsonl`` prompt file (see the module docstring).
        out: the output folder.
        pipe: the pipeline to call; or
        load_pipeline: a function of the device returning the pipeline (called once per process).
        resume: skip items already completed in ``out`` and redo the rest; without it ``out`` must hold no earlier run.
        settings: seed / steps / guidance defaults and the batch size.
        progress: show a progress bar.

    Returns:
        0 when every item succeeded, 1 when some failed (the manifest says which).

    Raises:
        AnyGenInputError: a bad prompt file, or ``out`` holds an earlier run and ``resume`` is off.
    """
    import torch
    from accelerate import PartialState

    settings = settings or RunSettings()
    if settings.batch_size < 1:
        raise AnyGenInputError(f"--batch-size must be at least 1, got {settings.batch_size}")
    out = Path(out)
    items = read_prompts(prompts)
    if not resume and ((out / MANIFEST).exists() or _rank_files(out)):
        raise AnyGenInputError(f"--out {str(out)!r} already holds a batch run; pass --resume to continue it, or choose another folder")
    # On a machine without CUDA, accelerate only forms a multi-process group when told the processes are on CPU.
    state = PartialState(cpu=not torch.cuda.is_available())
    if pipe is None:
        pipe = load_pipeline(state.device)
    state.wait_for_everyone()  # every process has checked `out` before the main one touches it
    if state.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(out / PARTIAL, ignore_errors=True)  # half-written items of an interrupted run
        if _rank_files(out):  # records of an interrupted run
            merge_manifests(out)
    state.wait_for_everyone()
    done = completed_ids(out) if resume else set()
    todo = [it for it in items if it.id not in done]
    with state.split_between_processes(todo) as mine:
        process_items(pipe, mine, out, settings, rank=state.process_index, progress=progress)
    state.wait_for_everyone()
    status = 0
    if state.is_main_process:
        records = merge_manifests(out, order=[it.id for it in items])
        shutil.rmtree(out / PARTIAL, ignore_errors=True)
        by_id = {r["id"]: r for r in records}
        failed = [by_id[it.id] for it in items if by_id.get(it.id, {}).get("status") != "ok"]
        print(
            f"anygen batch: {len(items) - len(failed)}/{len(items)} ok ({len(done)} already done), "
            f"{len(failed)} failed; manifest: {out / MANIFEST}",
            file=sys.stderr,
        )
        for r in failed[:10]:
            print(f"  line {r.get('line')} ({r['id']}): {r.get('error')}", file=sys.stderr)
        status = 1 if failed else 0
    state.wait_for_everyone()
    return status
