# Copyright 2026 The MAEST for transformers authors. Licensed under the Apache License, Version 2.0.
"""Writing a benchmark's results: ``STEM.json`` (the numbers) and ``STEM.md`` (the report), shared by the benchmarks."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path


def write_results(stem: Path, record: dict, lines: list[str]) -> None:
    """Write ``record`` to ``stem.json`` and the markdown ``lines`` to ``stem.md`` (creating the folder), and print
    the markdown.
    """
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """The lines of a markdown table: ``header``, its rule, then one line per row of (already formatted) cells."""
    return ["| " + " | ".join(cells) + " |" for cells in (header, ["---"] * len(header), *rows)]
