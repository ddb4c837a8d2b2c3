# Copyright 2026 The MAEST for transformers authors. Licensed under the Apache License, Version 2.0.
"""Finding audio files: the one list of audio extensions, folders searched recursively, file lists.

The tagger and the fine-tuner read a folder through `walk_audio`, so the same folder gives the same files to both.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable

from .cli import UsageError


AUDIO_EXTENSIONS = (
    "aac", "ac3", "aif", "aifc", "aiff", "alac", "amr", "ape", "au", "caf", "dsf", "flac", "m4a", "mka", "mp2",
    "mp3", "mp4", "mpc", "oga", "ogg", "opus", "spx", "tta", "wav", "wave", "weba", "webm", "wma", "wv",
)  # fmt: skip
"""File extensions (lower case, without dot) searched for in folders; matched case-insensitively. Any format ffmpeg
decodes works when a file is named directly."""


def parse_extensions(text: str) -> frozenset[str]:
    """argparse type of `--extensions`: `"flac,.MP3"` -> `{"flac", "mp3"}`."""
    extensions = frozenset(part.strip().lower().lstrip(".") for part in text.split(",") if part.strip())
    if not extensions:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list of extensions such as 'flac,mp3', got {text!r}"
        )
    return extensions


def is_audio_name(name: str, extensions: Iterable[str] = AUDIO_EXTENSIONS) -> bool:
    """`name` is not hidden (no leading '.', which also skips macOS "._song.mp3" forks) and ends in an extension."""
    if name.startswith(".") or "." not in name:
        return False
    return name.rpartition(".")[2].lower() in extensions


def walk_audio(folder: str | os.PathLike, extensions: Iterable[str] = AUDIO_EXTENSIONS) -> list[str]:
    """Audio files under `folder`, recursively, sorted; hidden files and folders skipped, symlinked files included."""
    extensions = frozenset(extension.lower().lstrip(".") for extension in extensions)
    found = []
    for directory, subdirectories, names in os.walk(folder):
        subdirectories[:] = [name for name in subdirectories if not name.startswith(".")]
        found.extend(os.path.join(directory, name) for name in names if is_audio_name(name, extensions))
    return sorted(found)


def read_file_list(list_path: str) -> list[str]:
    """Paths of a file list: one per line, blank lines and lines starting with '#' ignored, '-' reads stdin."""
    try:
        if list_path == "-":
            text = sys.stdin.read()
        else:
            with open(list_path, encoding="utf-8", errors="surrogateescape") as handle:
                text = handle.read()
    except OSError as error:
        raise UsageError(f"Cannot read the file list --file-list {list_path!r}: {error.strerror or error}.") from None
    lines = [line.rstrip("\r\n") for line in text.split("\n")]
    return [line for line in lines if line.strip() and not line.lstrip().startswith("#")]


def find_audio_files(
    paths: Iterable[str], file_list: str | None = None, extensions: Iterable[str] = AUDIO_EXTENSIONS
) -> list[str]:
    """The sorted, de-duplicated list of audio files to analyse.

    Args:
        paths: files (taken whatever their extension) and folders (searched recursively for files whose extension is
            in `extensions`; hidden files and folders skipped). A path that does not exist is a `UsageError`.
        file_list: a text file with one path (file or folder) per line, relative to the current directory; blank
            lines and lines starting with `#` are ignored; `"-"` reads standard input. Listed files that do not
            exist are kept: they get an error record (a long list with a few stale entries still runs).
        extensions: extensions searched for in folders, without dot, case-insensitive.

    Returns:
        `list[str]`: `os.path.normpath`'d paths in code-point order (the order of the records and of the shards).
    """
    extensions = frozenset(extension.lower().lstrip(".") for extension in extensions)
    found: set[str] = set()
    missing = []
    for path in paths:
        if os.path.isdir(path):
            found.update(walk_audio(path, extensions))
        elif os.path.exists(path):
            found.add(path)
        else:
            missing.append(path)
    if missing:
        shown = ", ".join(repr(path) for path in missing[:5])
        if len(missing) > 5:
            shown += f" and {len(missing) - 5} more"
        raise UsageError(f"Input path not found: {shown}. Check the spelling, or pass files with --file-list.")
    if file_list is not None:
        for path in read_file_list(file_list):
            if os.path.isdir(path):
                found.update(walk_audio(path, extensions))
            else:
                found.add(path)
    return sorted({os.path.normpath(path) for path in found})
