#!/usr/bin/env python
"""maest-tag: tag (and embed) a music collection with MAEST, on one machine or many.

    python scripts/maest_tag.py ~/Music --output tags.jsonl

Every audio file found (files, folders searched recursively by extension, or a ``--file-list``) is decoded with
ffmpeg (mean downmix to mono, soxr resampling to 16 kHz) in DataLoader worker processes, turned into MAEST's
log-mel frames by the project's `MaestFeatureExtractor` (the Essentia-exact front end), and analysed as a whole track
by `MaestForAudioClassification` (10 s windows every `window_hop` frames, track score = mean of the window
probabilities). One record per input file is written:

    {"path": "...", "duration_s": 30.0, "source_sampling_rate": 44100, "source_channels": 2,
     "labels": [{"label": "Electronic---Techno", "score": 0.62}, ...], "error": null,
     "embedding_ref": "tags.jsonl.embeddings/3f/3f0c...e1.npy"}            # only with --embeddings

* ``path``: the file's path as found (a command-line path, a folder joined with the path inside it, or a line of
  the file list), normalised with ``os.path.normpath``; records are sorted by it.
* ``duration_s`` (seconds), ``source_sampling_rate`` (Hz), ``source_channels``: of the decoded audio stream.
* ``labels``: best first, each ``{"label": config.id2label[i], "score": s}``; the score is the track logit through
  sigmoid for multi-label models (MAEST: independent probabilities in [0, 1]), softmax for single-label models and
  the raw value for regression. ``--top-k`` best (default 5), or every label with ``score >= --threshold``.
* ``error``: ``null``, or why the file could not be tagged (it could not be decoded, is shorter than one patch,
  0.224 s...); then ``labels`` is ``null``, and so are ``duration_s``, ``source_sampling_rate`` and
  ``source_channels`` unless the file was decoded. A bad file never stops the run.
* ``embedding_ref``: with ``--embeddings``, the ``.npy`` file holding the embedding, relative to the output's
  folder (see "Embeddings" below).

Output formats, chosen by the extension of ``--output``: ``.jsonl`` (one JSON object per line), ``.csv`` (one row
per file; ``labels`` is a JSON string, empty cells are nulls) and ``.parquet`` (needs pyarrow; ``labels`` is a
list of ``{label, score}`` structs).

Crash safety. Records are appended to a JSONL journal and flushed one by one (fsync'ed every few seconds): the
output itself for a ``.jsonl`` run on one process, ``OUTPUT.partial.jsonl`` for ``.csv`` / ``.parquet``, and
``OUTPUT.shard-I-of-N.jsonl`` per shard for distributed runs. At the end every journal is merged into OUTPUT
(written to a temporary file, then renamed) and removed. An interrupted run keeps everything it wrote: rerun the
same command with ``--resume`` and only the missing files are processed. Without ``--resume`` the script refuses
to touch an existing output or journal (``--overwrite`` starts over).

Embeddings. ``--embeddings track`` stores the paper's embedding of each track (after block ``--layer``, 0-based,
before the final norm: concat(CLS, distillation, mean of the patch tokens), ``3 * hidden_size`` = 2304 float32
values for MAEST, averaged over the windows) as a ``(3 * hidden_size,)`` array; ``--embeddings windows`` stores
one row per analysis window, ``(windows, 3 * hidden_size)``, window ``w`` starting at frame
``window_starts(frames, max_length, window_hop)[w]`` (62.5 frames per second). Each track gets its own file
``OUTPUT.embeddings/<h[:2]>/<h>.npy`` where ``h`` is the SHA-1 of the record's path (UTF-8), so shards and
machines never collide and folders from several machines merge by copying.

Distribution. With ``torchrun --nproc_per_node N scripts/maest_tag.py ...`` (one or many nodes) the sorted inputs
are cut into blocks of ``--batch-size`` files and rank ``r`` of ``W`` takes the blocks ``b`` with ``b % W == r``;
each rank writes its own shard journal, and rank 0 merges every shard into OUTPUT once all ranks are done (OUTPUT
must be in a folder every node sees). Without torchrun, ``--shard I/N`` takes the same split for manual use on N
machines and ``--merge OUTPUT`` combines the shard journals afterwards. A block is one model batch whatever the
split, so the records are bit-for-bit those of a one-process run on the same kind of machine and thread count.

Exit status: 0 when every file was tagged, 1 when any file failed (the records say why), 2 for a usage or setup
error (bad option, no audio files found, model not found, output already exists...), 130 when interrupted.
A summary line ``N files: X tagged, Y failed (Z s of audio, W s)`` goes to stderr.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import glob
import hashlib
import json
import math
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

ROOT = Path(__file__).resolve().parent.parent
for _path in (str(ROOT), str(ROOT / "scripts")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from cli_types import non_negative_int, positive_int  # noqa: E402


DEFAULT_MODEL = "mtg-upf/discogs-maest-10s-fs-129e"
"""Model used without --model: the published 10 s MAEST (400 Discogs styles), fetched from the Hugging Face Hub."""

AUDIO_EXTENSIONS = (
    "aac", "ac3", "aif", "aifc", "aiff", "alac", "amr", "ape", "au", "caf", "dsf", "flac", "m4a", "mka", "mp2",
    "mp3", "mpc", "oga", "ogg", "opus", "spx", "tta", "wav", "wave", "weba", "wma", "wv",
)  # fmt: skip
"""File extensions (lower case, without dot) searched for in folders; matched case-insensitively."""

RECORD_FIELDS = ("path", "duration_s", "source_sampling_rate", "source_channels", "labels", "error")
"""Fields of every record, in output order; ``embedding_ref`` follows with --embeddings."""

MAX_BATCH_FRAMES = 1 << 19
"""Most mel frames in one padded batch (``batch x longest track``, 2.3 hours of audio, 200 MB of float32 input).
A batch is sent to the model early rather than grow past it; a longer track is analysed alone."""

FSYNC_INTERVAL_S = 5.0
"""Journals are flushed after every record and fsync'ed at most this often (seconds) and when closed."""

DIST_TIMEOUT = datetime.timedelta(days=7)
"""How long a rank waits at a barrier for the slowest rank (the ranks only meet at the start and the end)."""

EXIT_OK, EXIT_FAILED_FILES, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """A problem with the options, the inputs, the model or the output: reported in one message, exit status 2."""


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------------------------


def _parse_extensions(text: str) -> frozenset[str]:
    extensions = frozenset(part.strip().lower().lstrip(".") for part in text.split(",") if part.strip())
    if not extensions:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list of extensions such as 'flac,mp3', got {text!r}"
        )
    return extensions


def _walk_audio(folder: str, extensions: frozenset[str]) -> list[str]:
    """Audio files under ``folder`` (recursively, hidden files and folders skipped, symlinked files included)."""
    found = []
    for directory, subdirectories, names in os.walk(folder):
        subdirectories[:] = [name for name in subdirectories if not name.startswith(".")]
        for name in names:
            if name.startswith("."):
                continue  # hidden files, including macOS "._song.mp3" resource forks
            extension = name.rpartition(".")[2].lower() if "." in name else ""
            if extension in extensions:
                found.append(os.path.join(directory, name))
    return found


def _read_file_list(list_path: str) -> list[str]:
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
            in ``extensions``; hidden files and folders skipped). A path that does not exist is a `UsageError`.
        file_list: a text file with one path (file or folder) per line, relative to the current directory; blank
            lines and lines starting with ``#`` are ignored; ``"-"`` reads standard input. Listed files that do not
            exist are kept: they get an error record (a long list with a few stale entries still runs).
        extensions: extensions searched for in folders, without dot, case-insensitive.

    Returns:
        `list[str]`: ``os.path.normpath``'d paths in code-point order (the order of the records and of the shards).
    """
    extensions = frozenset(extension.lower().lstrip(".") for extension in extensions)
    found: set[str] = set()
    missing = []
    for path in paths:
        if os.path.isdir(path):
            found.update(_walk_audio(path, extensions))
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
        for path in _read_file_list(file_list):
            if os.path.isdir(path):
                found.update(_walk_audio(path, extensions))
            else:
                found.add(path)
    return sorted({os.path.normpath(path) for path in found})


def shard_of(paths: list[str], index: int, count: int, block: int = 1) -> list[tuple[int, str]]:
    """The part of ``paths`` for shard ``index`` of ``count``, as ``(position in paths, path)`` pairs.

    The sorted paths are cut into blocks of ``block`` consecutive files (block ``b`` = files ``b * block`` to
    ``(b + 1) * block - 1``) and shard ``index`` takes the blocks ``b`` with ``b % count == index``. Blocks are
    the model's batches, so every batch holds the same files whatever the number of shards, and the scores are
    bit-for-bit those of a one-process run (a batch's padding and window chunks would otherwise change the float
    rounding by about 1e-7).
    """
    return [(position, path) for position, path in enumerate(paths) if (position // block) % count == index]


def _parse_shard(text: str) -> tuple[int, int]:
    try:
        index_text, count_text = text.split("/")
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/N with integers, e.g. 0/4, got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"expected I/N with N >= 1 and 0 <= I <= N-1 (0-based), got {text!r}")
    return index, count


# ---------------------------------------------------------------------------------------------------------------------
# Records: journals, output formats, merging
# ---------------------------------------------------------------------------------------------------------------------

OUTPUT_FORMATS = {".jsonl": "jsonl", ".csv": "csv", ".parquet": "parquet"}


def output_format(output: str) -> str:
    """``"jsonl"``, ``"csv"`` or ``"parquet"`` from the extension of ``output``."""
    extension = os.path.splitext(output)[1].lower()
    if extension not in OUTPUT_FORMATS:
        raise UsageError(
            f"--output {output!r}: unknown extension {extension or '(none)'!r}; use .jsonl, .csv or .parquet."
        )
    return OUTPUT_FORMATS[extension]


def partial_journal_path(output: str) -> str:
    """Journal of a one-process ``.csv`` / ``.parquet`` run: ``OUTPUT.partial.jsonl``."""
    return output + ".partial.jsonl"


def shard_journal_path(output: str, index: int, count: int) -> str:
    """Journal of shard ``index`` of ``count``: ``OUTPUT.shard-{index}-of-{count}.jsonl``."""
    return f"{output}.shard-{index}-of-{count}.jsonl"


def shard_journals(output: str) -> dict[tuple[int, int], str]:
    """Existing shard journals of ``output``: ``{(index, count): path}``."""
    journals = {}
    prefix = output + ".shard-"
    for path in glob.glob(glob.escape(output) + ".shard-*-of-*.jsonl"):
        middle = path[len(prefix) : -len(".jsonl")]
        index_text, _, count_text = middle.partition("-of-")
        if index_text.isdigit() and count_text.isdigit():
            journals[(int(index_text), int(count_text))] = path
    return dict(sorted(journals.items()))


def embeddings_folder(output: str) -> str:
    """Folder of the embedding files of ``output``: ``OUTPUT.embeddings``."""
    return output + ".embeddings"


def embedding_ref(output: str, path: str) -> str:
    """Where the embedding of the record ``path`` is stored, relative to the folder of ``output``."""
    digest = hashlib.sha1(path.encode("utf-8", "surrogateescape")).hexdigest()
    return f"{os.path.basename(output)}.embeddings/{digest[:2]}/{digest}.npy"


def _json_line(record: dict) -> str:
    line = json.dumps(record, ensure_ascii=False, allow_nan=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:  # a file name that is not valid UTF-8 (surrogate escapes): keep it exact, as \u escapes
        line = json.dumps(record, ensure_ascii=True, allow_nan=False)
    return line + "\n"


def _repair_jsonl_tail(path: str) -> None:
    """Make ``path`` end with a complete line: drop a torn last line left by a crash, add a missing newline."""
    with open(path, "rb+") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        if size == 0:
            return
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return
        start = max(0, size - (1 << 20))
        handle.seek(start)
        tail = handle.read()
        cut = tail.rfind(b"\n")
        last_line = tail[cut + 1 :]
        try:
            json.loads(last_line.decode("utf-8", "surrogateescape"))
            handle.write(b"\n")
        except ValueError:
            handle.truncate(start + cut + 1 if cut >= 0 else 0)


def read_jsonl(path: str) -> list[dict]:
    """Records of a JSONL file or journal; a torn last line (an interrupted write) is ignored."""
    records = []
    with open(path, encoding="utf-8", errors="surrogateescape") as handle:
        lines = handle.read().split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as error:
            if number == len(lines):  # no newline after it: the write was cut short
                continue
            raise UsageError(
                f"{path}, line {number}, is not a JSON record ({error}); fix or remove that line."
            ) from None
        if not isinstance(record, dict) or not isinstance(record.get("path"), str):
            raise UsageError(f"{path}, line {number}, is not a maest_tag record (no 'path'); fix or remove that line.")
        records.append(record)
    return records


def _require_pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise UsageError(
            "Writing or reading .parquet needs pyarrow, which is not installed: `pip install pyarrow`, or use an "
            "--output ending in .jsonl or .csv."
        ) from None
    return pyarrow, pyarrow.parquet


def _parquet_schema(pa, with_embeddings: bool):
    fields = [
        ("path", pa.string()),
        ("duration_s", pa.float64()),
        ("source_sampling_rate", pa.int64()),
        ("source_channels", pa.int64()),
        ("labels", pa.list_(pa.struct([("label", pa.string()), ("score", pa.float64())]))),
        ("error", pa.string()),
    ]
    if with_embeddings:
        fields.append(("embedding_ref", pa.string()))
    return pa.schema(fields)


def _columns(records: list[dict]) -> list[str]:
    columns = list(RECORD_FIELDS)
    if any("embedding_ref" in record for record in records):
        columns.append("embedding_ref")
    return columns


def _csv_cell(column: str, value: Any) -> str:
    if value is None:
        return ""
    if column == "labels":
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float):
        return repr(value)  # shortest exact round trip
    return str(value)


def _from_csv_cell(column: str, text: str) -> Any:
    if text == "":
        return None
    if column == "labels":
        return json.loads(text)
    if column == "duration_s":
        return float(text)
    if column in ("source_sampling_rate", "source_channels"):
        return int(text)
    return text


def read_records(path: str) -> list[dict]:
    """Records of an output file of any format (``.jsonl``, ``.csv``, ``.parquet``), as dicts of the JSONL layout."""
    kind = output_format(path)
    if kind == "jsonl":
        return read_jsonl(path)
    if kind == "csv":
        with open(path, newline="", encoding="utf-8", errors="surrogateescape") as handle:
            rows = list(csv.DictReader(handle))
        return [{column: _from_csv_cell(column, text) for column, text in row.items()} for row in rows]
    _pa, pq = _require_pyarrow()
    return pq.read_table(path).to_pylist()


def write_records(path: str, records: list[dict]) -> None:
    """Write ``records`` to ``path`` in the format of its extension, atomically (temporary file, then rename)."""
    kind = output_format(path)
    columns = _columns(records)
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        if kind == "jsonl":
            with open(temporary, "w", encoding="utf-8", errors="surrogateescape") as handle:
                for record in records:
                    handle.write(_json_line({column: record.get(column) for column in columns}))
                handle.flush()
                os.fsync(handle.fileno())
        elif kind == "csv":
            with open(temporary, "w", newline="", encoding="utf-8", errors="surrogateescape") as handle:
                writer = csv.writer(handle)
                writer.writerow(columns)
                for record in records:
                    writer.writerow([_csv_cell(column, record.get(column)) for column in columns])
                handle.flush()
                os.fsync(handle.fileno())
        else:
            pa, pq = _require_pyarrow()
            schema = _parquet_schema(pa, "embedding_ref" in columns)
            rows = [{column: record.get(column) for column in columns} for record in records]
            table = pa.Table.from_pylist(rows, schema=schema)
            pq.write_table(table, temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


class JsonlJournal:
    """Append-only JSONL record file: one line per record, flushed at once, fsync'ed every `FSYNC_INTERVAL_S`."""

    def __init__(self, path: str):
        self.path = path
        if os.path.exists(path):
            _repair_jsonl_tail(path)
        self._handle = open(path, "a", encoding="utf-8", errors="surrogateescape")
        self._last_sync = time.monotonic()

    def append(self, record: dict) -> None:
        self._handle.write(_json_line(record))
        self._handle.flush()
        if time.monotonic() - self._last_sync >= FSYNC_INTERVAL_S:
            os.fsync(self._handle.fileno())
            self._last_sync = time.monotonic()

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()


def record_sources(output: str) -> list[str]:
    """Every file holding records of ``output``, oldest first: the output, its partial journal, its shard journals."""
    sources = [output] if os.path.exists(output) else []
    if os.path.exists(partial_journal_path(output)):
        sources.append(partial_journal_path(output))
    sources.extend(shard_journals(output).values())
    return sources


def collect_records(output: str) -> dict[str, dict]:
    """All records of ``output`` by path (a later record of a path replaces an earlier one, e.g. a retried file)."""
    records: dict[str, dict] = {}
    for source in record_sources(output):
        for record in read_records(source) if source == output else read_jsonl(source):
            records[record["path"]] = record
    return records


def merge_output(output: str) -> list[dict]:
    """Merge the output and every journal of it into ``output`` (sorted by path), then remove the journals.

    Returns:
        `list[dict]`: the records written.
    """
    journals = [source for source in record_sources(output) if source != output]
    records = [record for _path, record in sorted(collect_records(output).items())]
    try:
        write_records(output, records)
    except UsageError:
        raise
    except Exception as error:  # disk full, a file name Parquet cannot hold (not UTF-8)...
        if isinstance(error, UnicodeEncodeError):
            reason = "a file name is not valid UTF-8, which Parquet strings cannot hold (use .jsonl or .csv)"
        else:
            reason = _error_message(error)
        raise UsageError(
            f"Could not write {output!r}: {reason}. Nothing is lost: the records are in "
            f"{', '.join(journals) or output}; fix the problem, then run "
            f"`python scripts/maest_tag.py --merge {output}`."
        ) from None
    for journal in journals:
        os.remove(journal)
    return records


# ---------------------------------------------------------------------------------------------------------------------
# Decoding (DataLoader workers)
# ---------------------------------------------------------------------------------------------------------------------


def _error_message(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror and error.filename:
        return f"{error.strerror}: {error.filename!r}"
    message = str(error).strip()
    return message if message else type(error).__name__


class AudioFileDataset:
    """A map-style dataset of audio files: item ``i`` is ``paths[i]`` decoded and turned into MAEST input frames.

    Decoding runs ffmpeg (`feature_extraction_maest.load_audio`: mean downmix, soxr resampling to 16 kHz) and the
    log-mel front end runs here too, so both happen in the DataLoader's worker processes while the model works.
    The features (``0.375`` floats per sample) are smaller than the waveform they replace.

    ``items`` are ``(position in the sorted input list, path)`` pairs (see `shard_of`). Items are dicts with
    ``index`` (that position), ``path`` and either ``input_values`` (float32 `(frames, 96)`, normalised),
    ``duration_s``, ``source_sampling_rate``, ``source_channels`` and ``error=None``, or ``error`` (the message)
    for a file that cannot be used.
    """

    def __init__(self, items: list[tuple[int, str]], feature_extractor):
        self.items = items
        self.feature_extractor = feature_extractor

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        from feature_extraction_maest import load_audio

        index, path = self.items[index]
        try:
            waveform, info = load_audio(path)
            features = self.feature_extractor(
                waveform, sampling_rate=16000, return_tensors="pt", return_attention_mask=False
            )
        except Exception as error:  # any failure of one file becomes its error record
            return {"index": index, "path": path, "error": _error_message(error)}
        return {
            "index": index,
            "path": path,
            "input_values": features["input_values"][0],
            "duration_s": float(info["duration_s"]),
            "source_sampling_rate": int(info["source_sampling_rate"]),
            "source_channels": int(info["source_channels"]),
            "error": None,
        }


def _identity(item):
    return item


# ---------------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------------

DTYPES = ("float32", "bfloat16", "float16")


def _looks_like_path(model: str) -> bool:
    return (
        os.path.isabs(model)
        or model.startswith((".", "~"))
        or model.count("/") > 1
        or "\\" in model
        or os.path.exists(model)
    )


def load_model(model_name: str, allow_pickle: bool = False, quiet: bool = False):
    """`MaestForAudioClassification.from_pretrained` with the errors a user can act on.

    Args:
        model_name: a local folder (``config.json`` + ``model.safetensors``) or a Hugging Face repo id.
        allow_pickle: when the model has no ``model.safetensors``, also load a pickled ``pytorch_model.bin``
            (``use_safetensors=None``: safetensors first; transformers reads the pickle with
            ``torch.load(weights_only=True)``).
        quiet: hide the Hub's download progress bars too (transformers' weight-loading bar is always hidden).
    """
    from modeling_maest import MaestForAudioClassification

    expanded = os.path.expanduser(model_name)
    is_path = _looks_like_path(model_name)
    if is_path and not os.path.isdir(expanded):
        raise UsageError(
            f"--model {model_name!r}: no such folder. Pass a folder holding config.json and model.safetensors (e.g. "
            f"one made by scripts/convert_maest_checkpoint.py) or a Hugging Face repo id such as {DEFAULT_MODEL!r}."
        )
    from transformers.utils import logging as transformers_logging

    # Our own bar is the one to watch: hide transformers' weight-loading bar (keep the Hub's download bars).
    bars_were_enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    if not quiet and bars_were_enabled:
        import huggingface_hub.utils

        huggingface_hub.utils.enable_progress_bars()
    try:
        model = MaestForAudioClassification.from_pretrained(
            expanded if is_path else model_name, use_safetensors=None if allow_pickle else True
        )
    except (OSError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if "use_safetensors=False" in str(error):
            raise UsageError(
                f"--model {model_name!r} has no model.safetensors, only pickled weights (pytorch_model.bin). Convert "
                "them once (scripts/convert_maest_checkpoint.py, or load and save_pretrained with safetensors), or "
                "pass --allow-pickle if you trust the file."
            ) from None
        if is_path:
            raise UsageError(
                f"--model {model_name!r}: the folder is not a loadable MAEST model ({first_line}). It needs "
                "config.json and model.safetensors, as written by save_pretrained or "
                "scripts/convert_maest_checkpoint.py."
            ) from None
        offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
        reason = "HF_HUB_OFFLINE is set" if offline else "no network connection, or the repo id does not exist"
        raise UsageError(
            f"Could not load the model {model_name!r} from the Hugging Face Hub ({reason}): {first_line}\n"
            f"A repo id such as the default {DEFAULT_MODEL!r} is downloaded on first use (and cached), which needs "
            "network access. Either run once with network access (unset HF_HUB_OFFLINE), or point --model at a local "
            "folder holding config.json and model.safetensors, e.g. `--model /path/to/discogs-maest-10s-fs-129e` "
            "(a download of the repository, or a folder made by scripts/convert_maest_checkpoint.py)."
        ) from None
    finally:
        if bars_were_enabled:
            transformers_logging.enable_progress_bar()
    return model.eval()


def scores_from_logits(logits, problem_type: str | None):
    """Scores from track logits, as `MaestAudioClassificationPipeline.postprocess`: sigmoid for multi-label models
    (``problem_type`` None or ``"multi_label_classification"``), softmax for ``"single_label_classification"``, the
    logits themselves for ``"regression"``. Computed in float32."""
    logits = logits.float()
    if problem_type == "single_label_classification":
        return logits.softmax(-1)
    if problem_type == "regression":
        return logits
    return logits.sigmoid()


def select_labels(scores, id2label: dict, top_k: int | None, threshold: float | None) -> list[dict]:
    """``[{"label", "score"}, ...]`` best first (ties: lower label index first).

    ``threshold``: keep the labels with ``score >= threshold``; ``top_k``: keep at most that many (``None``: all).
    """
    import torch

    order = torch.sort(scores, descending=True, stable=True).indices
    values = scores[order].tolist()
    labels = []
    for index, score in zip(order.tolist(), values):
        if threshold is not None and score < threshold:
            break
        if top_k is not None and len(labels) >= top_k:
            break
        labels.append({"label": id2label[index], "score": score})
    return labels


# ---------------------------------------------------------------------------------------------------------------------
# Distribution
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class Distributed:
    """The torchrun context of this process (one process: rank 0 of 1, inactive)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    active: bool = False

    @classmethod
    def from_env(cls) -> "Distributed":
        """Read torchrun's RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE."""
        if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
            return cls()
        try:
            rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
            local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        except ValueError:
            raise UsageError(
                "RANK / WORLD_SIZE / LOCAL_RANK must be integers (set by torchrun), got "
                f"RANK={os.environ.get('RANK')!r} "
                f"WORLD_SIZE={os.environ.get('WORLD_SIZE')!r} LOCAL_RANK={os.environ.get('LOCAL_RANK')!r}."
            ) from None
        return cls(rank, world, local_rank, local_world, active=world > 1)

    def init(self) -> None:
        """Join the process group (gloo: the ranks only meet at barriers, so no GPU collective is needed)."""
        if self.active:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("gloo", timeout=DIST_TIMEOUT)

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.active:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class RunStats:
    """What this process did: records written, seconds of audio tagged."""

    records: int = 0
    audio_s: float = 0.0


class Tagger:
    """Runs the model on batches of decoded tracks and writes one record per file to a journal."""

    def __init__(self, model, feature_extractor, args, device, output: str, journal: JsonlJournal, progress):
        self.model = model
        self.padding_value = float(feature_extractor.padding_value)
        self.args = args
        self.device = device
        self.output = output
        self.journal = journal
        self.progress = progress
        self.stats = RunStats()
        self.started = time.monotonic()
        self.id2label = {int(key): value for key, value in model.config.id2label.items()}

    # -- records ------------------------------------------------------------------------------------------------------

    def _emit(self, record: dict) -> None:
        if self.args.embeddings != "none":
            record.setdefault("embedding_ref", None)
        self.journal.append(record)
        self.stats.records += 1
        if record.get("duration_s") is not None and record["error"] is None:
            self.stats.audio_s += record["duration_s"]
        if self.progress is not None:
            elapsed = max(time.monotonic() - self.started, 1e-9)
            self.progress.set_postfix_str(f"audio {self.stats.audio_s / elapsed:.1f} s/s", refresh=False)
            self.progress.update(1)

    def emit_error(self, item: dict, message: str) -> None:
        record = {"path": item["path"]}
        for name in RECORD_FIELDS[1:]:
            record[name] = None
        record["error"] = message
        if item.get("duration_s") is not None:
            record.update(
                duration_s=item["duration_s"],
                source_sampling_rate=item["source_sampling_rate"],
                source_channels=item["source_channels"],
            )
        self._emit(record)

    # -- model --------------------------------------------------------------------------------------------------------

    def _forward(self, items: list[dict]):
        import torch

        lengths = [item["input_values"].shape[0] for item in items]
        longest = max(lengths)
        input_values = torch.full((len(items), longest, items[0]["input_values"].shape[1]), self.padding_value)
        for row, item in enumerate(items):
            input_values[row, : lengths[row]] = item["input_values"]
        attention_mask = (torch.arange(longest)[None, :] < torch.tensor(lengths)[:, None]).to(torch.int32)
        input_values = input_values.to(self.device, non_blocking=True)
        attention_mask = attention_mask.to(self.device, non_blocking=True)
        with torch.inference_mode():
            # One pass gives the scores and, with --embeddings, the embedding after block --layer.
            block = self.args.layer if self.args.embeddings != "none" else None
            output = self.model(input_values=input_values, attention_mask=attention_mask, embedding_block=block)
            scores = scores_from_logits(output.logits, self.model.config.problem_type).cpu()
            embeddings = None
            if self.args.embeddings == "track":
                track = output.embedding.float().cpu()
                embeddings = [track[row] for row in range(len(items))]
            elif self.args.embeddings == "windows":
                windows, window_mask = output.window_embeddings.float().cpu(), output.window_mask.cpu()
                embeddings = [windows[row, window_mask[row]] for row in range(len(items))]
        return scores, embeddings

    def _save_embedding(self, path: str, embedding) -> str:
        import numpy as np

        reference = embedding_ref(self.output, path)
        target = os.path.join(os.path.dirname(os.path.abspath(self.output)), reference)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        temporary = f"{target}.tmp-{os.getpid()}.npy"
        np.save(temporary, embedding.numpy().astype(np.float32, copy=False))
        os.replace(temporary, target)
        return reference

    def run_batch(self, items: list[dict]) -> None:
        """Tag ``items`` in one model call; on a failure retry them one by one, so one bad track fails alone."""
        import torch

        try:
            scores, embeddings = self._forward(items)
        except Exception as error:  # e.g. out of memory on a huge track
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            if len(items) > 1:
                for item in items:
                    self.run_batch([item])
                return
            self.emit_error(items[0], f"the model failed on this track: {_error_message(error)}")
            return
        for row, item in enumerate(items):
            if not bool(torch.isfinite(scores[row]).all()):
                hint = " (float16 overflow? use --dtype bfloat16 or float32)" if self.args.dtype == "float16" else ""
                self.emit_error(item, f"the model produced non-finite scores{hint}")
                continue
            record = {
                "path": item["path"],
                "duration_s": item["duration_s"],
                "source_sampling_rate": item["source_sampling_rate"],
                "source_channels": item["source_channels"],
                "labels": select_labels(scores[row], self.id2label, self.args.top_k, self.args.threshold),
                "error": None,
            }
            if embeddings is not None:
                try:
                    record["embedding_ref"] = self._save_embedding(item["path"], embeddings[row])
                except OSError as error:
                    self.emit_error(item, f"could not write its embedding: {_error_message(error)}")
                    continue
            self._emit(record)

    def run(self, loader) -> None:
        """Consume the DataLoader, batching the decoded tracks of each block of ``--batch-size`` input files (see
        `shard_of`); a batch is also cut before it exceeds `MAX_BATCH_FRAMES` padded frames."""
        pending: list[dict] = []
        pending_block = None
        longest = 0
        for item in loader:
            if item["error"] is not None:
                self.emit_error(item, item["error"])
                continue
            frames = item["input_values"].shape[0]
            block = item["index"] // self.args.batch_size
            if pending and (block != pending_block or (len(pending) + 1) * max(longest, frames) > MAX_BATCH_FRAMES):
                self.run_batch(pending)
                pending, longest = [], 0
            pending.append(item)
            pending_block = block
            longest = max(longest, frames)
        if pending:
            self.run_batch(pending)


# ---------------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------------


def _top_k(text: str) -> int | str:
    if text.strip().lower() == "all":
        return "all"
    return positive_int(text)


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command line (every option documented with its unit and default)."""
    parser = argparse.ArgumentParser(
        prog="maest_tag.py",
        description="Tag (and embed) every audio file of a music collection with MAEST. One record per file: path, "
        "duration_s, source_sampling_rate, source_channels, labels (best first), error, and with --embeddings "
        "embedding_ref. Run it under torchrun to use several processes or machines.",
        epilog="Exit status: 0 all files tagged, 1 some files failed (see their 'error'), 2 usage or setup error, "
        "130 interrupted. Example: python scripts/maest_tag.py ~/Music --output tags.jsonl",
    )
    add = parser.add_argument
    add("inputs", nargs="*", metavar="PATH",
        help="audio files (any extension) and folders (searched recursively for audio extensions; hidden files and "
        "folders skipped)")  # fmt: skip
    add("--file-list", metavar="TXT",
        help="text file with one path (file or folder) per line, relative to the current directory; blank lines and "
        "'#' comments ignored; '-' reads stdin")  # fmt: skip
    add("--output", "-o", metavar="PATH", help="output file, .jsonl, .csv or .parquet (by extension); required")
    add("--model", default=DEFAULT_MODEL,
        help=f"local model folder or Hugging Face repo id (default: {DEFAULT_MODEL})")  # fmt: skip
    add("--allow-pickle", action="store_true",
        help="when the model has no model.safetensors, load its pickled pytorch_model.bin (with torch.load(weights_only=True)); default: model.safetensors only")  # fmt: skip
    add("--top-k", type=_top_k, default=None, metavar="K",
        help="keep the K best labels; 'all' keeps every label (default 5, or no limit with --threshold)")  # fmt: skip
    add("--threshold", type=_finite_float, default=None, metavar="T",
        help="keep every label with score >= T (an independent probability for MAEST)")  # fmt: skip
    add("--embeddings", choices=("none", "track", "windows"), default="none",
        help="also store embeddings: one (3*hidden,) vector per track (mean of the windows), or one row per window, "
        "(windows, 3*hidden); float32 .npy files in OUTPUT.embeddings/ (default: none)")  # fmt: skip
    add("--layer", type=int, default=6, metavar="BLOCK",
        help="0-based block whose output gives the embedding (default 6: the 7th of MAEST's 12 blocks)")  # fmt: skip
    add("--hop", type=positive_int, default=None, metavar="FRAMES",
        help="hop between analysis windows in mel frames (62.5 frames per second), 1..max_length (default: the "
        "model's window_hop, 625 for the 10 s models)")  # fmt: skip
    add("--batch-size", type=positive_int, default=8, metavar="N",
        help="tracks per model call (default 8); their windows run in chunks of --windows-per-batch")  # fmt: skip
    add("--windows-per-batch", type=positive_int, default=None, metavar="N",
        help="windows per forward pass (default: the model's max_windows_per_batch, 8); raise it on a GPU")
    add("--num-workers", type=non_negative_int, default=None, metavar="N",
        help="decoding processes per rank (default: CPUs per process on this node - 1, between 1 and 4; 0 decodes in "
        "the main process)")  # fmt: skip
    add("--device", default="auto",
        help="torch device: auto (cuda when available, else cpu), cpu, cuda, cuda:N (default auto; under torchrun "
        "cuda means cuda:LOCAL_RANK)")  # fmt: skip
    add("--dtype", choices=DTYPES, default="float32",
        help="model weight dtype (default float32; the features stay float32 up to the model)")  # fmt: skip
    add("--extensions", type=_parse_extensions, default=frozenset(AUDIO_EXTENSIONS), metavar="LIST",
        help="comma-separated extensions searched for in folders, case-insensitive (default: "
        + ",".join(AUDIO_EXTENSIONS) + ")")  # fmt: skip
    add("--resume", action="store_true",
        help="continue an interrupted run: skip the files already in the output or its journals")  # fmt: skip
    add("--retry-errors", action="store_true", help="with --resume, process the files whose record has an error again")
    add("--overwrite", action="store_true",
        help="start over: delete an existing output, its journals and its embeddings folder")  # fmt: skip
    add("--shard", type=_parse_shard, default=None, metavar="I/N",
        help="process only shard I of N (0-based: blocks of --batch-size sorted files b with b %% N == I) into "
        "OUTPUT.shard-I-of-N.jsonl; combine the shards with --merge OUTPUT")  # fmt: skip
    add("--merge", metavar="OUTPUT",
        help="merge the shard journals of OUTPUT into OUTPUT and exit (no other arguments)")  # fmt: skip
    add("--quiet", "-q", action="store_true", help="no progress bars")
    return parser


def _resolve_device(name: str, dist: Distributed):
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {name!r} is not a torch device; use auto, cpu, cuda or cuda:N.") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name!r}: CUDA is not available on this machine; use --device cpu.")
        if device.index is None:
            device = torch.device("cuda", dist.local_rank % torch.cuda.device_count())
        if device.index >= torch.cuda.device_count():
            raise UsageError(f"--device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s).")
    return device


def _default_num_workers(dist: Distributed) -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    return max(1, min(4, cpus // max(1, dist.local_world_size) - 1))


def _audio_seconds(records: dict[str, dict], paths: set[str]) -> float:
    """Seconds of audio of the successfully tagged ``paths``."""
    tagged = [records[path] for path in paths if path in records and records[path].get("error") is None]
    return sum(record.get("duration_s") or 0.0 for record in tagged)


def _summary(
    inputs: list[str], records: dict[str, dict], skipped: int, audio_s: float, wall_s: float
) -> tuple[str, int, list]:
    """The summary line, the exit status and the ``(path, error)`` of the failed files."""
    tagged = failed = missing = 0
    failures = []
    for path in inputs:
        record = records.get(path)
        if record is None:
            missing += 1
        elif record.get("error") is None:
            tagged += 1
        else:
            failed += 1
            failures.append((path, record["error"]))
    line = f"{len(inputs)} files: {tagged} tagged, {failed} failed ({audio_s:.1f} s of audio, {wall_s:.1f} s)"
    if skipped:
        line += f"; {skipped} of them were already in the output"
    if missing:
        line += f"; {missing} have no record yet"
    return line, (EXIT_FAILED_FILES if failed or missing else EXIT_OK), failures


def _report(line: str, failures: list) -> None:
    for path, error in failures[:10]:
        _log(f"failed: {path}: {error}")
    if len(failures) > 10:
        _log(f"... and {len(failures) - 10} more failed files (see the 'error' field of their records)")
    _log(line)


def _run_merge(output: str) -> int:
    output_format(output)
    journals = shard_journals(output)
    if not journals and not os.path.exists(partial_journal_path(output)):
        if not os.path.exists(output):
            raise UsageError(
                f"--merge {output!r}: neither the output nor any shard journal ({output}.shard-I-of-N.jsonl) exists."
            )
    counts = {count for _index, count in journals}
    status = EXIT_OK
    for count in sorted(counts):
        absent = [index for index in range(count) if (index, count) not in journals]
        if absent:
            _log(
                f"warning: shards {absent} of {count} are missing ({shard_journal_path(output, absent[0], count)}...): "
                "their files are not in the output yet; copy those journals here and run --merge again."
            )
            status = EXIT_FAILED_FILES
    records = merge_output(output)
    failures = [(record["path"], record["error"]) for record in records if record.get("error") is not None]
    line = f"{len(records)} files: {len(records) - len(failures)} tagged, {len(failures)} failed (merged into {output})"
    _report(line, failures)
    return max(status, EXIT_FAILED_FILES if failures else EXIT_OK)


def _check_arguments(args) -> None:
    if args.merge is not None:
        extra = [name for name in ("inputs", "file_list", "output", "shard") if getattr(args, name)]
        if extra:
            raise UsageError(f"--merge takes no other inputs or outputs (got {', '.join(extra)}); run it on its own.")
        return
    if args.output is None:
        raise UsageError("--output PATH is required (a .jsonl, .csv or .parquet file).")
    if not args.inputs and args.file_list is None:
        raise UsageError("No input: pass audio files or folders, or --file-list TXT.")
    if args.top_k == "all":
        args.top_k = None
    elif args.top_k is None and args.threshold is None:
        args.top_k = 5
    if args.retry_errors and not args.resume:
        raise UsageError("--retry-errors only makes sense with --resume.")
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite contradict each other; pass one of them.")


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _check_arguments(args)
        if args.merge is not None:
            return _run_merge(args.merge)
        return _tag(args)
    except UsageError as error:
        _log(f"maest_tag.py: error: {error}")
        return EXIT_USAGE


def _prepare_output(args, dist: Distributed, journal: str) -> None:
    """Refuse to clobber earlier results unless --resume / --overwrite; with --overwrite, clear them.

    A --shard run only looks at (and clears) its own journal: the other shards may be running on other machines.
    Otherwise rank 0 clears the output, every journal of it and its embeddings folder.
    """
    output = args.output
    if args.shard is not None and args.shard[1] > 1:
        existing = [journal] if os.path.exists(journal) else []
    else:
        existing = record_sources(output)
        if os.path.isdir(embeddings_folder(output)):
            existing.append(embeddings_folder(output) + os.sep)
    if not existing or args.resume:
        return
    if not args.overwrite:
        shown = ", ".join(existing[:3]) + (" ..." if len(existing) > 3 else "")
        raise UsageError(
            f"{shown} already exist(s) (results of an earlier or interrupted run). Pass --resume to continue it, "
            "--overwrite to start over, or choose another --output."
        )
    if args.shard is not None and args.shard[1] > 1:
        os.remove(journal)
    elif dist.rank == 0:
        for path in existing:
            if path.endswith(os.sep):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.remove(path)


def _tag(args) -> int:
    import torch

    started = time.monotonic()
    output = args.output
    output_format(output)
    if output_format(output) == "parquet":
        _require_pyarrow()
    if shutil.which("ffmpeg") is None:
        raise UsageError(
            "ffmpeg is not on PATH; it decodes the audio files. Install it (`apt-get install ffmpeg`, "
            "`conda install -c conda-forge ffmpeg` or `brew install ffmpeg`)."
        )
    dist = Distributed.from_env()

    inputs = find_audio_files(args.inputs, args.file_list, args.extensions)
    if not inputs:
        where = ", ".join(repr(path) for path in args.inputs) or repr(args.file_list)
        raise UsageError(
            f"No audio files found in {where} (extensions searched in folders: {','.join(sorted(args.extensions))}). "
            "Check the paths, or pass --extensions."
        )

    # The split: --shard I/N first, then the torchrun ranks inside it: shard g of `total` takes the blocks
    # b % total == g, i.e. b % N == I and (b // N) % world_size == rank.
    shard_index, shard_count = args.shard or (0, 1)
    total = shard_count * dist.world_size
    global_shard = shard_index + shard_count * dist.rank
    my_inputs = shard_of(inputs, global_shard, total, args.batch_size)
    sharded = total > 1
    manual_shard = args.shard is not None and shard_count > 1
    journal_path = (
        shard_journal_path(output, global_shard, total)
        if sharded
        else (output if output_format(output) == "jsonl" else partial_journal_path(output))
    )
    parent = os.path.dirname(os.path.abspath(output))
    os.makedirs(parent, exist_ok=True)

    # Model and options (validated on every rank before anything is written).
    model = load_model(args.model, allow_pickle=args.allow_pickle, quiet=args.quiet)
    config = model.config
    if args.hop is not None:
        if args.hop > config.max_length:
            raise UsageError(
                f"--hop {args.hop}: the hop (frames) must be between 1 and the window length max_length="
                f"{config.max_length} frames of this model, or audio between windows would be skipped."
            )
        config.window_hop = args.hop
    if args.windows_per_batch is not None:
        config.max_windows_per_batch = args.windows_per_batch
    if args.embeddings != "none" and not 0 <= args.layer < config.num_hidden_layers:
        raise UsageError(
            f"--layer {args.layer}: this model has {config.num_hidden_layers} blocks, so the layer (0-based) must be "
            f"between 0 and {config.num_hidden_layers - 1}."
        )
    device = _resolve_device(args.device, dist)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        # float32 means float32: no TF32 in the patch-embedding convolution (matmuls default to no TF32 already).
        torch.backends.cudnn.allow_tf32 = False
    model.to(device=device, dtype=getattr(torch, args.dtype))

    from feature_extraction_maest import MaestFeatureExtractor

    feature_extractor = MaestFeatureExtractor()

    dist.init()
    try:
        _prepare_output(args, dist, journal_path)
        dist.barrier()  # rank 0 has cleared the old results (--overwrite)
        done = collect_records(output) if args.resume else {}
        dist.barrier()  # every rank has read what was done before any rank writes

        def is_done(path: str) -> bool:
            record = done.get(path)
            if record is None:
                return False
            if record.get("error") is not None:
                return not args.retry_errors
            return args.embeddings == "none" or bool(record.get("embedding_ref"))

        todo = [(position, path) for position, path in my_inputs if not is_done(path)]

        progress = None
        if not args.quiet and dist.local_rank == 0 and todo:
            from tqdm import tqdm

            description = f"rank {dist.rank} of {dist.world_size}" if dist.active else "tagging"
            progress = tqdm(
                total=len(todo), unit="file", desc=description, file=sys.stderr, mininterval=0.5, dynamic_ncols=True
            )

        journal = JsonlJournal(journal_path)
        tagger = Tagger(model, feature_extractor, args, device, output, journal, progress)
        try:
            if todo:
                from torch.utils.data import DataLoader

                workers = args.num_workers if args.num_workers is not None else _default_num_workers(dist)
                dataset = AudioFileDataset(todo, feature_extractor)
                loader = DataLoader(
                    dataset,
                    batch_size=None,
                    shuffle=False,
                    num_workers=workers,
                    collate_fn=_identity,
                    prefetch_factor=4 if workers else None,
                )
                tagger.run(loader)
        except KeyboardInterrupt:
            journal.close()
            if progress is not None:
                progress.close()
            _log(
                f"Interrupted: {tagger.stats.records} new records are safe in {journal_path}. Run the same "
                "command with --resume to continue."
            )
            return EXIT_INTERRUPTED
        journal.close()
        if progress is not None:
            progress.close()

        dist.barrier()  # every rank has finished its part
        if dist.rank != 0:
            # Rank 0 reports for every rank: a rank's non-zero exit makes torchrun stop the others, so only rank 0
            # (after merging) exits with 1 when files failed.
            if not manual_shard:
                dist.barrier()
            return EXIT_OK

        processed = [path for path in inputs if not is_done(path)]
        skipped_all = len(inputs) - len(processed)
        if manual_shard:
            # Other machines hold the other shards: report this machine's part, merge later.
            part = [path for _position, path in shard_of(inputs, shard_index, shard_count, args.batch_size)]
            records = collect_records(output)
            processed_part = set(processed).intersection(part)
            audio_s = _audio_seconds(records, processed_part)
            skipped_part = len(part) - len(processed_part)
            line, status, failures = _summary(part, records, skipped_part, audio_s, time.monotonic() - started)
            _report(line, failures)
            written = journal_path if not dist.active else f"{output}.shard-*-of-{total}.jsonl"
            _log(
                f"Wrote shard {shard_index} of {shard_count} to {written}; once every shard "
                f"is done, run `python scripts/maest_tag.py --merge {output}` where all the shard files are."
            )
            return status

        if dist.active:
            absent = [shard_journal_path(output, rank, total) for rank in range(total)
                      if not os.path.exists(shard_journal_path(output, rank, total))]  # fmt: skip
            if absent:
                _log(
                    f"error: rank 0 cannot see the shard files {absent[:3]}: OUTPUT must be in a folder shared by "
                    "every node. Copy those files next to the output and run --merge."
                )
        records = {record["path"]: record for record in merge_output(output)}
        dist.barrier()  # the other ranks end only after the merge (see above)
        audio_s = _audio_seconds(records, set(processed))
        line, status, failures = _summary(inputs, records, skipped_all, audio_s, time.monotonic() - started)
        _report(line, failures)
        _log(f"Wrote {len(records)} records to {output}")
        return status
    finally:
        dist.close()


def _cli() -> None:
    # A polite stop (SIGTERM from a scheduler) ends like Ctrl-C: journals closed, nothing lost.
    def _interrupt(_signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)
    sys.exit(main())


if __name__ == "__main__":
    _cli()
