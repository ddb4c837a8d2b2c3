# Copyright 2026 The MAEST for transformers authors. Licensed under the Apache License, Version 2.0.
"""maest-tag's music-library features: styles over time, genres, tags written into the files, one picture per track.

The tagger (`maest_tools.tag`) calls this module at three points and nowhere else:

* `add_arguments` defines the options ``--timeline``, ``--genres``, ``--write-tags``, ``--genre-field``,
  ``--touch``, ``--dry-run``, ``--remove-tags``, ``--write-tags-from`` and ``--plots``;
* `run_without_model` handles ``--remove-tags`` and ``--write-tags-from``, which never load the model;
* `LibraryFeatures` (one per tagging run) turns one batch's model output into per-track windows
  (`LibraryFeatures.split_windows`), adds the ``timeline`` and ``genres`` fields to a record
  (`LibraryFeatures.record_fields`) and, once the record is in the journal, writes the file's tags and picture
  (`LibraryFeatures.after_record`).

Everything comes from the model pass the tagger makes anyway: the window scores are ``window_logits`` through the
tagger's own activation (sigmoid for MAEST), the window times ``window_starts`` at
``configuration_maest.FRAMES_PER_SECOND`` (62.5 frames per second, the last window aligned to the end of the
track). Labels are chosen by the one rule of `maest_tools.timeline.select_labels` (``--top-k`` / ``--threshold``),
genres by `maest_tools.genres.genre_scores` (a genre's score is the highest score among its styles), tags are written
by `maest_tools.filetags` (scheme and safety: docs/file-tags.md) and pictures by `maest_tools.plot`.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import time
from dataclasses import dataclass

import numpy as np

from .cli import EXIT_FAILED, EXIT_OK, UsageError, error_message


PLOT_TOP_K = 10
"""Styles (rows) drawn per picture by ``--plots`` and ``maest-plot`` (the track's best, whatever ``--top-k``)."""

PLOT_SOFTWARE = "maest-tag"
"""Start of the PNG ``Software`` text of every picture this tool draws: an existing file at a picture's name is
replaced only when it carries it (a picture made by an earlier run), so an unrelated file is never overwritten."""

STALE_TEMPORARY_S = 60.0
"""A temporary tag-writing copy (`maest_tools.filetags`) whose inode changed longer ago than this (seconds) is left
over from an interrupted run and is removed before tags are written; a younger one may belong to another running
process (a shard on another machine writing the same folder) and is left alone."""


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------------------
# Identity of the tool and the model (written into the tags)
# ---------------------------------------------------------------------------------------------------------------------


def tool_version() -> str:
    """``"maest-tag <version>"``: the installed package's version, else the checkout's pyproject.toml, else
    ``unknown``."""
    import importlib.metadata

    try:
        version = importlib.metadata.version("maest-transformers")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
        pyproject = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pyproject.toml")
        try:
            with open(pyproject, encoding="utf-8") as handle:
                match = re.search(r'^version\s*=\s*"([^"]+)"', handle.read(), re.MULTILINE)
            version = match.group(1) if match else version
        except OSError:
            pass
    return f"maest-tag {version}"


def model_identity(model_name: str, config=None) -> tuple[str, str | None]:
    """``(model, revision)`` for the ``MAEST_MODEL`` / ``MAEST_MODEL_REVISION`` tags.

    ``model`` is the Hub repo id, or the folder's name for a local folder. ``revision`` is the Hub commit the
    weights were loaded from (``config._commit_hash``, known without extra work), or for a local folder
    ``sha256:<16 hex>``: the start of the weights' SHA-256 that the record sidecar holds in full
    (`maest_tools.provenance.weights_sha256`, computed once per run), else ``None``.
    """
    from .provenance import weight_files, weights_sha256

    expanded = os.path.expanduser(model_name)
    if os.path.isdir(expanded):
        name = os.path.basename(os.path.normpath(os.path.abspath(expanded)))
        digest = weights_sha256(weight_files(expanded))
        return name, f"sha256:{digest[:16]}" if digest else None
    commit = getattr(config, "_commit_hash", None) if config is not None else None
    return model_name, commit if isinstance(commit, str) and commit else None


# ---------------------------------------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The library options of maest-tag (see docs/tagger.md), in --help order.

    A declarative table (flag, then its argparse keywords) rather than one call per option: the options differ only
    in their values.
    """
    from .filetags import GENRE_FIELD_MODES

    switch = {"action": "store_true"}
    options = (
        ("--timeline", switch, "add 'timeline' to each record: the analysis windows in time order, each {start_s, "
         "end_s, labels} (seconds; labels by the same --top-k / --threshold rule); from the same model pass"),
        ("--genres", switch, "add 'genres' to each record: every Discogs genre with its score, best first; a genre's "
         "score is the highest score among its styles"),
        ("--write-tags", switch, "write the top styles, genres, scores and the model into each audio file as "
         "namespaced MAEST_* tags (after its record is journaled; scheme: docs/file-tags.md)"),
        ("--genre-field", {"choices": GENRE_FIELD_MODES, "default": "leave"}, "with --write-tags / "
         "--write-tags-from: the standard genre field (TCON / GENRE / ©gen) is left alone (default), or the top "
         "style names are added to it, or replace it (the old value is kept for --remove-tags)"),
        ("--touch", switch, "files whose tags change get the current modification time (default: the old one is "
         "kept)"),
        ("--dry-run", switch, "print what --write-tags / --write-tags-from / --remove-tags would change in each audio "
         "file and change no audio file (a tagging run still writes its records and --plots)"),
        ("--remove-tags", switch, "remove every MAEST_* tag from the files or folders given (and restore a genre that "
         "--genre-field replaced); no model is loaded, no --output"),
        ("--write-tags-from", {"metavar": "RECORDS"}, "write the tags from a finished maest-tag output (.jsonl, .csv "
         "or .parquet) without running the model; --model names the model that made it (written into the tags)"),
        ("--plots", {"metavar": "DIR"}, "draw one PNG per track into DIR (maest-plot's picture: top styles over time, "
         "track scores); named <file name>-<10 hex of the path's SHA-1>.png"),
    )  # fmt: skip
    group = parser.add_argument_group("music library (docs/library.md)")
    for flag, keywords, help_text in options:
        group.add_argument(flag, help=help_text, **keywords)


def runs_without_model(args) -> bool:
    """Whether the command line is ``--remove-tags`` or ``--write-tags-from`` (no model, no records output)."""
    return bool(args.remove_tags or args.write_tags_from is not None)


def check_tagging_arguments(args) -> None:
    """Reject contradictory library options of a tagging run (one with the model)."""
    if (args.genre_field != "leave" or args.touch or args.dry_run) and not args.write_tags:
        given = [name for name, on in (("--genre-field", args.genre_field != "leave"), ("--touch", args.touch),
                                       ("--dry-run", args.dry_run)) if on]  # fmt: skip
        raise UsageError(
            f"{', '.join(given)} only apply to writing tags into the audio files: add --write-tags (or use "
            "--write-tags-from RECORDS / --remove-tags)."
        )
    if args.plots is not None and os.path.exists(args.plots) and not os.path.isdir(args.plots):
        raise UsageError(f"--plots {args.plots!r} is a file; give a folder (it is created if missing).")


def _check_without_model_arguments(args) -> None:
    mode = "--remove-tags" if args.remove_tags else "--write-tags-from"
    if args.remove_tags and args.write_tags_from is not None:
        raise UsageError("--remove-tags and --write-tags-from contradict each other; pass one of them.")
    conflicting = [name for name, on in (
        ("--output", args.output is not None), ("--write-tags", args.write_tags), ("--timeline", args.timeline),
        ("--genres", args.genres), ("--plots", args.plots is not None), ("--merge", args.merge is not None),
        ("--resume", args.resume), ("--shard", args.shard is not None), ("--embeddings", args.embeddings != "none"),
    ) if on]  # fmt: skip
    if args.remove_tags and args.genre_field != "leave":
        conflicting.append("--genre-field")
    if args.write_tags_from is not None and (args.inputs or args.file_list is not None):
        conflicting.append("input paths")
    if conflicting:
        raise UsageError(
            f"{mode} runs without the model and writes no records output: it takes no {', '.join(conflicting)}."
        )
    if args.remove_tags and not args.inputs and args.file_list is None:
        raise UsageError("--remove-tags needs the audio files or folders to clean, e.g. `maest-tag ~/Music --remove-tags`.")


# ---------------------------------------------------------------------------------------------------------------------
# Writing tags and pictures
# ---------------------------------------------------------------------------------------------------------------------


def clean_leftovers(paths, older_than_s: float = STALE_TEMPORARY_S) -> list[str]:
    """Remove the temporary tag-writing copies that an interrupted run left in the folders of ``paths``.

    Only `maest_tools.filetags.is_temporary_file` names are considered, and only those whose inode changed more than
    ``older_than_s`` seconds ago (a write in progress elsewhere keeps its copy). Returns the removed paths.
    """
    from .filetags import cleanup_temporary_files

    removed = []
    now = time.time()
    for folder in sorted({os.path.dirname(os.path.realpath(path)) for path in paths}):
        try:
            candidates = cleanup_temporary_files(folder, recursive=False, dry_run=True)
        except OSError:
            continue  # an unreadable folder: its files report their own errors
        for candidate in candidates:
            try:
                if now - os.lstat(candidate).st_ctime > older_than_s:
                    os.unlink(candidate)
                    removed.append(candidate)
            except OSError:
                pass
    return removed


def tags_from_record(record: dict, model: str, model_revision: str | None, version: str):
    """The `maest_tools.filetags.MaestTags` of a record: its ``labels`` as the styles and, for Discogs labels,
    the genres of those styles with their scores (a genre's best style is always among the selected styles, since
    the styles are the best first, so these genre scores are exact: the ones `genre_scores` gives)."""
    from .filetags import MaestTags
    from .genres import GENRE_SEPARATOR, genre_scores

    labels = record.get("labels") or []
    styles = [(item["label"], float(item["score"])) for item in labels]
    genres = []
    if styles and all(GENRE_SEPARATOR in label for label, _ in styles):
        best = {}
        for label, score in styles:  # a label may repeat only in a hand-edited record: keep its best score
            best[label] = max(score, best.get(label, score))
        genres = list(genre_scores(best).items())
    return MaestTags(styles=styles, genres=genres, model=model, tool_version=version, model_revision=model_revision)


def plot_file_name(path: str) -> str:
    """The picture's file name for a record path: ``<file name, unsafe characters as _>-<SHA-1[:10]>.png``.

    The hash of the whole path (UTF-8, undecodable bytes kept) makes names unique across folders; the readable part
    keeps letters, digits, ``.``, ``-`` and ``_`` of the file name, at most 80 characters.
    """
    digest = hashlib.sha1(path.encode("utf-8", "surrogateescape")).hexdigest()[:10]
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", os.path.basename(path))[:80].lstrip(".") or "track"
    return f"{readable}-{digest}.png"


def _png_software(path: str) -> str | None:
    """The ``Software`` text chunk of a PNG file, or None (not a PNG, no such chunk)."""
    import struct

    try:
        with open(path, "rb") as handle:
            if handle.read(8) != b"\x89PNG\r\n\x1a\n":
                return None
            while True:
                header = handle.read(8)
                if len(header) < 8:
                    return None
                length, kind = struct.unpack(">I4s", header)
                if kind == b"IDAT" or kind == b"IEND":
                    return None
                data = handle.read(length)
                handle.read(4)
                if kind == b"tEXt" and data.startswith(b"Software\x00"):
                    return data[len(b"Software\x00") :].decode("latin-1")
    except OSError:
        return None


def save_plot(folder: str, path: str, window_scores, window_times, labels, track_scores) -> str:
    """Draw the picture of the track ``path`` into ``folder`` (`plot_file_name`); returns the PNG's path.

    Raises:
        `OSError`: a file that this tool did not draw already has that name (it is not overwritten), or writing
            failed.
    """
    from .plot import save_timeline_png

    target = os.path.join(folder, plot_file_name(path))
    if os.path.lexists(target):
        software = _png_software(target)
        if os.path.islink(target) or software is None or not software.startswith(PLOT_SOFTWARE):
            raise FileExistsError(
                f"{target} exists and was not drawn by maest-tag; not overwritten (move it away or choose another "
                "--plots folder)"
            )
    save_timeline_png(target, window_scores, window_times, labels, track_scores, top_k=PLOT_TOP_K,
                      title=os.path.basename(path), metadata={"Software": tool_version()})  # fmt: skip
    return target


@dataclass
class TrackWindows:
    """One track's analysis windows from the model pass: scores ``(windows, labels)`` (the tagger's activation of
    ``window_logits``, real windows only), their first mel frames, and the track's length in mel frames."""

    scores: np.ndarray
    starts: list[int]
    num_frames: int


class LibraryFeatures:
    """The library work of one tagging run (see the module doc); inactive without the options."""

    def __init__(self, args, model_name: str, config, label_names: list[str]):
        from .genres import genres_of

        self.args = args
        self.config = config
        self.label_names = label_names
        self.needs_windows = bool(args.timeline or args.plots is not None)
        self._identity = None
        self._version = tool_version()
        self.model_name = model_name
        if args.genres:
            try:
                genres_of(label_names)
            except ValueError as error:
                raise UsageError(
                    f"--genres needs Discogs labels named 'Genre---Style'; this model's labels are not ({error})."
                ) from None
        if args.plots is not None:
            os.makedirs(args.plots, exist_ok=True)

    def prepare(self, paths: list[str]) -> None:
        """Before any tag is written (rank 0, before the ranks start): remove stale temporary copies."""
        if self.args.write_tags and not self.args.dry_run:
            removed = clean_leftovers(paths)
            if removed:
                _log(f"removed {len(removed)} temporary file(s) left by an interrupted tag write, e.g. {removed[0]}")

    def split_windows(self, window_scores, window_mask, window_starts, lengths: list[int]) -> list[TrackWindows]:
        """Per-track windows of a batch: ``window_scores`` ``(batch, windows, labels)`` (activation applied),
        ``window_mask`` / ``window_starts`` ``(batch, windows)`` from the model output, ``lengths`` in mel frames."""
        result = []
        for row, length in enumerate(lengths):
            mask = window_mask[row].bool()
            result.append(TrackWindows(
                scores=window_scores[row][mask].float().numpy(),
                starts=[int(start) for start in window_starts[row][mask].tolist()],
                num_frames=int(length),
            ))  # fmt: skip
        return result

    def _times(self, windows: TrackWindows):
        from .timeline import window_times

        return window_times(windows.starts, self.config.max_length, windows.num_frames)

    def record_fields(self, windows: TrackWindows | None, track_scores) -> dict:
        """The ``timeline`` and ``genres`` fields of a record (only those asked for)."""
        from .genres import genre_scores
        from .timeline import timeline

        fields = {}
        if self.args.genres:
            scores = genre_scores(np.asarray(track_scores, dtype=np.float64), self.label_names)
            fields["genres"] = [{"genre": genre, "score": score} for genre, score in scores.items()]
        if self.args.timeline:
            fields["timeline"] = timeline(windows.scores, windows.starts, self.config.max_length, windows.num_frames,
                                          self.label_names, self.args.top_k, self.args.threshold)  # fmt: skip
        return fields

    def after_record(self, record: dict, windows: TrackWindows | None, track_scores) -> str | None:
        """Write the file's tags and picture (the record is already journaled). Returns ``None``, or the error a
        replacement record should carry (the run goes on)."""
        from .filetags import TagWriteError, write_tags

        problems = []
        if self.args.write_tags:
            try:
                if self._identity is None:
                    self._identity = model_identity(self.model_name, self.config)
                tags = tags_from_record(record, *self._identity, self._version)
                change = write_tags(record["path"], tags, genre_field=self.args.genre_field, touch=self.args.touch,
                                    dry_run=self.args.dry_run)  # fmt: skip
                if self.args.dry_run:
                    print(change.describe(), flush=True)
            except (TagWriteError, ValueError) as error:
                problems.append(f"tags not written: {getattr(error, 'reason', None) or error_message(error)}")
        if self.args.plots is not None:
            try:
                save_plot(self.args.plots, record["path"], windows.scores, self._times(windows), self.label_names,
                          np.asarray(track_scores, dtype=np.float64))  # fmt: skip
            except (OSError, ValueError) as error:
                problems.append(f"picture not drawn: {error_message(error)}")
        return "; ".join(problems) or None


# ---------------------------------------------------------------------------------------------------------------------
# Without the model: --remove-tags, --write-tags-from
# ---------------------------------------------------------------------------------------------------------------------


def run_without_model(args) -> int:
    """``maest-tag PATHS --remove-tags`` or ``maest-tag --write-tags-from RECORDS``; returns the exit status.

    One line per failed file and a summary ``N files: X changed, Y unchanged, Z failed`` go to stderr; with
    ``--dry-run`` each change is printed to stdout and no file is written. Exit status 1 when any file failed.
    """
    from .discovery import find_audio_files
    from .filetags import TagWriteError, remove_tags, write_tags

    _check_without_model_arguments(args)
    started = time.monotonic()
    jobs = []  # (path, tags or None for removal)
    skipped = 0
    if args.remove_tags:
        paths = find_audio_files(args.inputs, args.file_list, args.extensions)
        if not paths:
            raise UsageError(f"No audio files found in {', '.join(map(repr, args.inputs)) or repr(args.file_list)}.")
        jobs = [(path, None) for path in paths]
    else:
        from .records import read_records

        source = args.write_tags_from
        if not os.path.isfile(source):
            raise UsageError(f"--write-tags-from {source!r}: no such file; give a maest-tag output (.jsonl, .csv, .parquet).")
        records = read_records(source)
        model, revision = model_identity(args.model)
        version = tool_version()
        for record in records:
            if record.get("error") is not None or record.get("labels") is None:
                skipped += 1  # no result to write
                continue
            try:
                jobs.append((record["path"], tags_from_record(record, model, revision, version)))
            except (KeyError, TypeError, ValueError) as error:
                raise UsageError(f"{source}: the record of {record.get('path')!r} is not a maest-tag record ({error}).") from None
    if not args.dry_run:
        removed = clean_leftovers([path for path, _ in jobs])
        if removed:
            _log(f"removed {len(removed)} temporary file(s) left by an interrupted tag write, e.g. {removed[0]}")
    changed = unchanged = 0
    failures = []
    for path, tags in jobs:
        try:
            if tags is None:
                change = remove_tags(path, touch=args.touch, dry_run=args.dry_run)
            else:
                change = write_tags(path, tags, genre_field=args.genre_field, touch=args.touch, dry_run=args.dry_run)
        except TagWriteError as error:
            failures.append((path, error.reason))
            continue
        except OSError as error:  # the file vanished, a folder is unreadable...
            failures.append((path, error_message(error)))
            continue
        if args.dry_run:
            print(change.describe(), flush=True)
        changed += change.changed
        unchanged += not change.changed
    for path, reason in failures[:10]:
        _log(f"failed: {path}: {reason}")
    if len(failures) > 10:
        _log(f"... and {len(failures) - 10} more failed files")
    verb = "would change" if args.dry_run else ("cleaned" if args.remove_tags else "tagged")
    line = (f"{len(jobs)} files: {changed} {verb}, {unchanged} unchanged, {len(failures)} failed "
            f"({time.monotonic() - started:.2f} s)")  # fmt: skip
    if skipped:
        line += f"; {skipped} records without labels (errors) skipped"
    _log(line)
    return EXIT_FAILED if failures else EXIT_OK


__all__ = [
    "LibraryFeatures", "TrackWindows", "add_arguments", "check_tagging_arguments", "clean_leftovers",
    "model_identity", "plot_file_name", "run_without_model", "runs_without_model", "save_plot", "tags_from_record",
    "tool_version",
]
