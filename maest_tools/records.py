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
"""

from __future__ import annotations

import csv
import glob
import hashlib
import json
import os
import time
from typing import Any

from .cli import UsageError, error_message
from .files import atomic_path


RECORD_FIELDS = ("path", "duration_s", "source_sampling_rate", "source_channels", "labels", "error")
"""Fields of every record, in output order; `OPTIONAL_FIELDS` follow when a record of the output has them."""

OPTIONAL_FIELDS = ("genres", "timeline", "embedding_ref")
"""Fields of some runs, in output order: ``genres`` (--genres), ``timeline`` (--timeline), ``embedding_ref``
(--embeddings); see `maest_tools.library`."""

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
            raise UsageError(f"{path}, line {number}, is not a maest-tag record (no 'path'); fix or remove that line.")
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
        return [{column: _from_csv_cell(column, text) for column, text in row.items()} for row in rows]
    _pa, pq = require_pyarrow()
    return pq.read_table(path).to_pylist()


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
            reason = error_message(error)
        raise UsageError(
            f"Could not write {output!r}: {reason}. Nothing is lost: the records are in "
            f"{', '.join(journals) or output}; fix the problem, then run "
            f"`maest-tag --merge {output}`."
        ) from None
    for journal in journals:
        os.remove(journal)
    return records

