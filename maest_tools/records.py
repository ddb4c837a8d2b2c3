# Copyright 2026 The MAEST for transformers authors. Licensed under the Apache License, Version 2.0.
"""The tagger's records: one JSON object per audio file, their journals, output formats and merging.

A record is ``{"path", "duration_s", "source_sampling_rate", "source_channels", "labels", "error"}`` (and
``embedding_ref`` with embeddings); see `maest_tools.tag` for the meaning of each field. Records are appended to a
JSONL journal as they are made (`JsonlJournal`), and merged at the end into the output (`merge_output`), whose
format follows its extension: ``.jsonl``, ``.csv`` (``labels``, ``genres`` and ``timeline`` as JSON strings, empty
cells are nulls) or ``.parquet`` (needs pyarrow; those fields as lists of structs). Journals:
``OUTPUT.partial.jsonl`` (one-process ``.csv`` / ``.parquet`` run) and
``OUTPUT.shard-I-of-N.jsonl`` (shards). Embeddings: ``OUTPUT.embeddings/<h[:2]>/<h>.npy``, ``h`` the SHA-1 of the
record's path.

Records are made valid UTF-8 when they are created (`portable_record`: a file name that is not valid UTF-8 is shown
with U+FFFD in ``path`` and kept exactly in ``path_bytes_b64``), matched by `record_key`, and checked field by
field whenever they are read back (`record_problem`, `FIELD_CHECKS`).
"""

from __future__ import annotations

import base64
import csv
import glob
import math
import hashlib
import json
import os
import time
from typing import Any

from .cli import UsageError, error_message
from .files import atomic_path


RECORD_FIELDS = ("path", "duration_s", "source_sampling_rate", "source_channels", "labels", "error")
"""Fields of every record, in output order; `OPTIONAL_FIELDS` follow when a record of the output has them."""

OPTIONAL_FIELDS = ("genres", "timeline", "embedding_ref", "path_bytes_b64")
"""Fields of some runs, in output order: ``genres`` (--genres), ``timeline`` (--timeline), ``embedding_ref``
(--embeddings; see `maest_tools.library`) and ``path_bytes_b64`` (a file name that is not valid UTF-8; see
`portable_record`)."""

JSON_FIELDS = ("labels", "genres", "timeline")
"""Fields holding lists: a JSON string in CSV, a list of structs in Parquet."""

FSYNC_INTERVAL_S = 5.0
"""Journals are flushed after every record and fsync'ed at most this often (seconds) and when closed."""

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


def _is_text(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def portable_record(record: dict) -> dict:
    """``record`` made valid UTF-8 for every output format and strict reader, at record creation.

    A file name that is not valid UTF-8 (its undecodable bytes appear in Python as surrogate escapes, PEP 383) is
    stored twice: ``path`` for display, the name decoded with each undecodable byte replaced by U+FFFD, and
    ``path_bytes_b64``, the base64 of the name's exact bytes (``os.fsencode(path)``), which identifies the file
    (`record_key`). Other text fields (an error message quoting the name) get the U+FFFD replacement only.
    """
    path = record.get("path")
    if isinstance(path, str) and not _is_text(path):
        raw = path.encode("utf-8", "surrogateescape")
        record["path"] = raw.decode("utf-8", "replace")
        record["path_bytes_b64"] = base64.b64encode(raw).decode("ascii")
    for name, value in record.items():
        if name != "path" and isinstance(value, str) and not _is_text(value):
            record[name] = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return record


def record_key(record: dict) -> str:
    """The file a record is about, exactly: ``path``, or the name of ``path_bytes_b64`` (surrogate-escaped) when
    the name is not valid UTF-8. Records are matched (--resume, merging) and sorted by it."""
    encoded = record.get("path_bytes_b64")
    if encoded:
        return base64.b64decode(encoded).decode("utf-8", "surrogateescape")
    return record["path"]


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_labels(value) -> bool:
    return isinstance(value, list) and all(
        isinstance(entry, dict) and isinstance(entry.get("label"), str) and _is_number(entry.get("score"))
        for entry in value
    )


def _is_b64(value) -> bool:
    try:
        base64.b64decode(value, validate=True)
        return isinstance(value, str)
    except (ValueError, TypeError):
        return False


FIELD_CHECKS = {
    "path": (lambda value: isinstance(value, str) and value != "", "a non-empty string"),
    "duration_s": (lambda value: value is None or (_is_number(value) and value >= 0), "null or seconds >= 0"),
    "source_sampling_rate": (lambda value: value is None or _is_count(value), "null or an integer (Hz)"),
    "source_channels": (lambda value: value is None or _is_count(value), "null or an integer"),
    "labels": (lambda value: value is None or _is_labels(value), "null or a list of {label: str, score: number}"),
    "error": (lambda value: value is None or isinstance(value, str), "null or a string"),
    "embedding_ref": (lambda value: value is None or isinstance(value, str), "null or a string"),
    "path_bytes_b64": (lambda value: value is None or _is_b64(value), "null or base64 text"),
}
"""The type of each record field, checked on every record read back (--resume, --merge): ``name: (check, what it
must be)``. Fields not listed here (added by options) are kept as they are."""


def record_problem(record) -> str | None:
    """Why ``record`` is not a valid maest-tag record (None when it is): a missing field or a field of the wrong
    type (`FIELD_CHECKS`), or a record that has neither labels nor an error."""
    if not isinstance(record, dict):
        return f"not a JSON object but {type(record).__name__}"
    for name in RECORD_FIELDS:
        if name not in record:
            return f"no {name!r} field"
    for name, (check, expected) in FIELD_CHECKS.items():
        if name in record and not check(record[name]):
            return f"{name!r} is {record[name]!r}, expected {expected}"
    if record["error"] is None and record["labels"] is None:
        return "neither 'labels' nor 'error'"
    return None


def _json_line(record: dict) -> str:
    line = json.dumps(record, ensure_ascii=False, allow_nan=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:  # a file name that is not valid UTF-8 (surrogate escapes): keep it exact, as \u escapes
        line = json.dumps(record, ensure_ascii=True, allow_nan=False)
    return line + "\n"


def repair_jsonl_tail(path: str) -> None:
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


def read_jsonl(path: str, dropped: list[str] | None = None) -> list[dict]:
    """Records of a JSONL file or journal, each checked (`record_problem`).

    Args:
        dropped: without it, a torn last line (an interrupted write, redone by --resume) is ignored and a malformed
            line raises; with a list, both are left out and described in it (``"FILE, line N: why"``).

    Raises:
        UsageError: (without ``dropped``) a line that is not a valid record; the message names the file, the line
            and the problem.
    """
    records = []
    with open(path, encoding="utf-8", errors="surrogateescape") as handle:
        lines = handle.read().split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            problem = record_problem(record)
        except ValueError as error:
            if number == len(lines):  # no newline after it: the write was cut short
                if dropped is not None:
                    dropped.append(f"{path}, line {number}: a torn last line (an interrupted write)")
                continue
            problem = f"not JSON ({error})"
        if problem is not None:
            if dropped is not None:
                dropped.append(f"{path}, line {number}: {problem}")
                continue
            raise UsageError(
                f"{path}, line {number}, is not a valid maest-tag record: {problem}. Fix or remove that line, or "
                "start over with --overwrite."
            ) from None
        records.append(record)
    return records


def require_pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise UsageError(
            "Writing or reading .parquet needs pyarrow, which is not installed: `pip install pyarrow`, or use an "
            "--output ending in .jsonl or .csv."
        ) from None
    return pyarrow, pyarrow.parquet


def _parquet_schema(pa, columns: list[str]):
    label = pa.struct([("label", pa.string()), ("score", pa.float64())])
    fields = [
        ("path", pa.string()),
        ("duration_s", pa.float64()),
        ("source_sampling_rate", pa.int64()),
        ("source_channels", pa.int64()),
        ("labels", pa.list_(label)),
        ("error", pa.string()),
    ]
    optional = {
        "genres": pa.list_(pa.struct([("genre", pa.string()), ("score", pa.float64())])),
        "timeline": pa.list_(
            pa.struct([("start_s", pa.float64()), ("end_s", pa.float64()), ("labels", pa.list_(label))])
        ),
        "embedding_ref": pa.string(),
        "path_bytes_b64": pa.string(),
    }
    fields += [(name, optional[name]) for name in OPTIONAL_FIELDS if name in columns]
    return pa.schema(fields)


def _columns(records: list[dict]) -> list[str]:
    columns = list(RECORD_FIELDS)
    columns += [name for name in OPTIONAL_FIELDS if any(name in record for record in records)]
    return columns


def _csv_cell(column: str, value: Any) -> str:
    if value is None:
        return ""
    if column in JSON_FIELDS:
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float):
        return repr(value)  # shortest exact round trip
    return str(value)


def _from_csv_cell(column: str, text: str) -> Any:
    if text == "":
        return None
    if column in JSON_FIELDS:
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
        records = []
        for number, row in enumerate(rows, start=2):
            try:
                record = {column: _from_csv_cell(column, text) for column, text in row.items()}
            except ValueError as error:
                raise UsageError(f"{path}, line {number}, is not a valid maest-tag row ({error}); fix or remove "
                                 "it, or start over with --overwrite.") from None  # fmt: skip
            problem = record_problem(record)
            if problem is not None:
                raise UsageError(f"{path}, line {number}, is not a valid maest-tag record: {problem}.")
            records.append(record)
        return records
    _pa, pq = require_pyarrow()
    records = [{name: value for name, value in record.items()} for record in pq.read_table(path).to_pylist()]
    for number, record in enumerate(records):
        problem = record_problem(record)
        if problem is not None:
            raise UsageError(f"{path}, row {number}, is not a valid maest-tag record: {problem}.")
    return records


def write_records(path: str, records: list[dict]) -> None:
    """Write ``records`` to ``path`` in the format of its extension, atomically (`maest_tools.files.atomic_path`)."""
    kind = output_format(path)
    columns = _columns(records)
    with atomic_path(path) as temporary:
        if kind == "jsonl":
            with open(temporary, "w", encoding="utf-8", errors="surrogateescape") as handle:
                for record in records:
                    handle.write(_json_line({column: record.get(column) for column in columns}))
        elif kind == "csv":
            with open(temporary, "w", newline="", encoding="utf-8", errors="surrogateescape") as handle:
                writer = csv.writer(handle)
                writer.writerow(columns)
                for record in records:
                    writer.writerow([_csv_cell(column, record.get(column)) for column in columns])
        else:
            pa, pq = require_pyarrow()
            schema = _parquet_schema(pa, columns)
            rows = [{column: record.get(column) for column in columns} for record in records]
            pq.write_table(pa.Table.from_pylist(rows, schema=schema), temporary)


class JsonlJournal:
    """Append-only JSONL record file: one line per record, flushed at once, fsync'ed every `FSYNC_INTERVAL_S`."""

    def __init__(self, path: str):
        self.path = path
        if os.path.exists(path):
            repair_jsonl_tail(path)
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


def collect_records(output: str, dropped: list[str] | None = None) -> dict[str, dict]:
    """All records of ``output`` by `record_key` (a later record of a file replaces an earlier one, e.g. a retried
    file). ``dropped``: see `read_jsonl` (the output itself is always read strictly)."""
    records: dict[str, dict] = {}
    for source in record_sources(output):
        if os.path.isdir(source):
            raise UsageError(f"{source!r} is a folder, where maest-tag keeps records of {output!r}; move it away.")
        for record in read_records(source) if source == output else read_jsonl(source, dropped):
            records[record_key(record)] = record
    return records


def merge_output(output: str, dropped: list[str] | None = None) -> list[dict]:
    """Merge the output and every journal of it into ``output`` (sorted by file), then remove the journals.

    Args:
        dropped: a list to receive what could not be merged (torn or malformed journal lines, see `read_jsonl`);
            when anything was dropped the journals are kept, so nothing is lost. Without it a malformed line raises.

    Returns:
        `list[dict]`: the records written.
    """
    journals = [source for source in record_sources(output) if source != output]
    found: list[str] = []
    records = [record for _key, record in sorted(collect_records(output, found).items())]
    try:
        write_records(output, records)
    except UsageError:
        raise
    except Exception as error:  # disk full, unwritable folder...
        raise UsageError(
            f"Could not write {output!r}: {error_message(error)}. Nothing is lost: the records are in "
            f"{', '.join(journals) or output}; fix the problem, then run "
            f"`maest-tag --merge {output}`."
        ) from None
    if dropped is not None:
        dropped.extend(found)
    if not found:
        for journal in journals:
            os.remove(journal)
    return records
