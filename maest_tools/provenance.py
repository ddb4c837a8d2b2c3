# Copyright 2026 The MAEST for transformers authors. Licensed under the Apache License, Version 2.0.
"""Where an output's records came from: the sidecar ``OUTPUT.meta.json``, and the check that --resume never mixes.

Every run writes (atomically) ``OUTPUT.meta.json`` beside its output::

    {"format": "maest-tag-meta", "format_version": 1,
     "settings": {"model": "/abs/path/or/repo-id", "model_revision": "commit or null",
                  "weights_sha256": "...", "num_labels": 400, "dtype": "float32", "hop": 625,
                  "embeddings": "none", "block": null, "top_k": 5, "threshold": null, ...},
     "tool_version": "0.1.0", "written_utc": "2026-12-06T10:30:00Z", "pid": 1234}

The settings are built in ONE place, `run_settings`: a new option that changes the records is added there (one
line) and from then on it is recorded and checked on --resume. `compare_settings` lists what differs; a --resume
with different settings stops with exit status 2 and that list (``--overwrite`` starts over). Two rules relax plain
equality: ``model`` (the name it was given: a repo id or an absolute folder path) is informational, the weights
are identified by ``weights_sha256`` (a copied or moved folder is the same model); and going from
``embeddings: "none"`` to ``track`` or ``windows`` is allowed, since every record without an embedding is redone
(``block`` only matters when the earlier run stored embeddings).

``weights_sha256`` is the SHA-256 of the weight files' bytes (``model.safetensors``, or every shard of a sharded
checkpoint, or ``pytorch_model.bin`` under --allow-pickle, in name order): the whole file is read once per run,
0.6 to 0.9 s for 350 MB (MAEST's size) on the 2-core test machine (see docs/tagger.md).
"""

from __future__ import annotations

import datetime
import functools
import glob
import hashlib
import json
import os
from typing import Any

from .cli import UsageError, error_message
from .files import atomic_path


META_FORMAT = "maest-tag-meta"
META_VERSION = 1

INFORMATIONAL = frozenset({"model", "model_revision"})
"""Settings recorded for the reader but not compared on --resume (the weights hash identifies the model)."""

WEIGHT_PATTERNS = ("model*.safetensors", "pytorch_model*.bin")


def meta_path(output: str) -> str:
    """The provenance sidecar of ``output``: ``OUTPUT.meta.json``."""
    return output + ".meta.json"


def tool_version() -> str:
    """This package's version: the installed distribution's, else pyproject.toml's in a checkout, else "unknown"."""
    try:
        from importlib.metadata import version

        return version("maest-transformers")
    except Exception:  # not installed: run from a checkout
        pass
    try:
        import re

        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        with open(os.path.join(root, "pyproject.toml"), encoding="utf-8") as handle:
            found = re.search(r'^version\s*=\s*"([^"]+)"', handle.read(), re.MULTILINE)
        return found.group(1) if found else "unknown"
    except OSError:
        return "unknown"


def weight_files(folder: str) -> list[str]:
    """The weight files of a model folder, safetensors first (what `from_pretrained` reads), in name order."""
    for pattern in WEIGHT_PATTERNS:
        files = sorted(glob.glob(os.path.join(glob.escape(folder), pattern)))
        if files:
            return files
    return []


def weights_sha256(files: list[str]) -> str | None:
    """SHA-256 over the bytes of ``files`` in order (None when there are none); computed once per process for the
    same files, sizes and modification times (the record sidecar and the file tags both name the weights by it)."""
    if not files:
        return None
    return _sha256_of(tuple((path, *_size_and_mtime(path)) for path in files))


def _size_and_mtime(path: str) -> tuple[int, int]:
    status = os.stat(path)
    return status.st_size, status.st_mtime_ns


@functools.lru_cache(maxsize=8)
def _sha256_of(files: tuple) -> str:
    digest = hashlib.sha256()
    for path, _size, _mtime in files:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def model_weight_files(model_name: str, is_path: bool, revision: str | None) -> list[str]:
    """The weight files a loaded model came from: in its folder, or in the Hugging Face cache for a repo id."""
    if is_path:
        return weight_files(os.path.expanduser(model_name))
    try:
        from huggingface_hub import try_to_load_from_cache

        for name in ("model.safetensors", "pytorch_model.bin"):
            found = try_to_load_from_cache(model_name, name, revision=revision)
            if isinstance(found, str):
                return [found]
    except Exception:  # an unusual cache layout: the revision still identifies the weights
        pass
    return []


def run_settings(args, config, model_name: str, is_path: bool, weights: str | None) -> dict[str, Any]:
    """Every setting that changes the records of a run: THE list checked on --resume (add new options here).

    Args:
        args: the parsed command line (after `maest_tools.tag._check_arguments` and the block resolution).
        config: the loaded model's config (after --hop).
        model_name: --model as given; ``is_path``: it names a folder (recorded as an absolute path).
        weights: `weights_sha256` of the loaded weights (None if unknown; then the revision identifies them).
    """
    embeddings = getattr(args, "embeddings", "none")
    return {
        "model": os.path.abspath(os.path.expanduser(model_name)) if is_path else model_name,
        "model_revision": getattr(config, "_commit_hash", None),
        "weights_sha256": weights,
        "num_labels": int(config.num_labels),
        "dtype": args.dtype,
        "hop": int(config.window_hop),
        "embeddings": embeddings,
        "block": args.block if embeddings != "none" else None,
        "top_k": args.top_k,
        "threshold": args.threshold,
        "timeline": bool(getattr(args, "timeline", False)),
        "genres": bool(getattr(args, "genres", False)),
    }


def _compatible(name: str, old: Any, new: Any, old_settings: dict) -> bool:
    if name in INFORMATIONAL or old == new:
        return True
    if name == "embeddings":
        return old == "none"  # no record has an embedding yet: every one is redone with it
    if name == "block":
        return old_settings.get("embeddings", "none") == "none"
    if name in ("timeline", "genres"):
        return not old  # records without them are redone with them (maest_tools.library)
    if name == "weights_sha256":
        return old is None or new is None  # unknown on one side: model_revision / model decide
    return False


def compare_settings(old: dict, new: dict) -> list[str]:
    """The differences that forbid resuming, one ``name: earlier X, now Y`` line each (empty: compatible)."""
    differences = []
    for name in sorted(set(old) | set(new)):
        before, now = old.get(name), new.get(name)
        if not _compatible(name, before, now, old):
            differences.append(f"{name}: earlier {before!r}, now {now!r}")
    if old.get("weights_sha256") is None or new.get("weights_sha256") is None:
        # Without both hashes the model's name and revision are all there is to go on.
        for name in ("model", "model_revision"):
            if old.get(name) != new.get(name):
                differences.append(f"{name}: earlier {old.get(name)!r}, now {new.get(name)!r}")
    return differences


def read_meta(output: str) -> dict | None:
    """The sidecar of ``output`` (None when there is none).

    Raises:
        UsageError: it exists but is not a maest-tag sidecar (unreadable, not JSON, wrong format).
    """
    path = meta_path(output)
    if not os.path.lexists(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            meta = json.load(handle)
    except (OSError, ValueError) as error:
        raise UsageError(
            f"{path!r} is not a readable maest-tag provenance file ({error_message(error)}). Restore it, or start "
            "over with --overwrite."
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != META_FORMAT or not isinstance(meta.get("settings"), dict):
        raise UsageError(f"{path!r} is not a maest-tag provenance file (no 'settings'); start over with --overwrite.")
    return meta


def write_meta(output: str, settings: dict) -> None:
    """Write ``OUTPUT.meta.json`` atomically."""
    meta = {
        "format": META_FORMAT,
        "format_version": META_VERSION,
        "settings": settings,
        "tool_version": tool_version(),
        "written_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "pid": os.getpid(),
    }
    with atomic_path(meta_path(output)) as temporary:
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(meta, handle, indent=1, sort_keys=True)
            handle.write("\n")


def check_resume(output: str, settings: dict, has_records: bool) -> str | None:
    """Refuse a --resume whose settings differ from the output's sidecar; returns a warning to print, or None.

    Raises:
        UsageError: the settings differ (the message lists every difference).
    """
    meta = read_meta(output)
    if meta is None:
        if has_records:
            return (
                f"warning: {output} has records but no {os.path.basename(meta_path(output))} (written by an older "
                "maest-tag): the settings of those records cannot be checked; this run's are recorded from now on."
            )
        return None
    differences = compare_settings(meta["settings"], settings)
    if differences:
        listed = "\n  ".join(differences)
        raise UsageError(
            f"This run's settings differ from those that made {output} "
            f"(recorded in {meta_path(output)}):\n  {listed}\n"
            "Resuming would mix records made differently. Rerun with the earlier settings, start over with "
            "--overwrite, or choose another --output."
        )
    return None
