#!/usr/bin/env python
# Copyright 2026 The MAEST for transformers authors. Licensed under the Apache License, Version 2.0.
"""Time to write MAEST tags into N audio files (no model: the tags are given), with the full safety procedure.

The files are made with ffmpeg from a test clip (every format of `maest_tools.filetags`, in turn, with the user's
own tags and a cover where the format takes one) in a temporary folder on the same disk as the output, then:

  write       first write of 10 styles + genres + model + version into each file (copy, tag, verify, fsync, rename)
  rewrite     the same write again: idempotent, reads and compares only (no file is rewritten)
  remove      removal of the tags (restoring the files' own tags)

Each pass is repeated `--repeats` times on fresh copies; the median is reported as files per second and ms per file.
Writes benchmarks/results/filetags-<label>.json and .md.

    python benchmarks/bench_filetags.py                   # 50 files of 30 s
    python benchmarks/bench_filetags.py --files 200 --seconds 240
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from _results import markdown_table, write_results  # noqa: E402  (benchmarks/, the script's folder)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=50, help="number of files (default 50)")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each file in seconds (default 30)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes on fresh copies (default 3, median)")
    parser.add_argument("--label", default=platform.node() or "local", help="result file label (default: host name)")
    parser.add_argument("--output-dir", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)

    import mutagen

    from maest_tools.filetags import MaestTags, remove_tags, write_tags
    from tagged_files import FORMATS, make_file

    labels = json.loads((ROOT / "maest_tools" / "labels" / "discogs_400_labels.json").read_text())
    tags = MaestTags(
        styles=[(label, 0.9 - 0.05 * i) for i, label in enumerate(labels[::40])],
        genres=[("Electronic", 0.9), ("Rock", 0.4), ("Funk / Soul", 0.2)],
        model="mtg-upf/discogs-maest-10s-fs-129e", model_revision="benchmark", tool_version="bench_filetags",
    )
    formats = list(FORMATS)
    results = {"write": [], "rewrite": [], "remove": []}
    with tempfile.TemporaryDirectory(dir=args.output_dir.parent) as scratch:
        scratch = Path(scratch)
        sources = scratch / "sources"
        sources.mkdir()
        masters = [make_file(sources, f"master-{fmt}", fmt, seconds=args.seconds, offset=0.0) for fmt in formats]
        sizes = []
        for repeat in range(args.repeats):
            work = scratch / f"run{repeat}"
            work.mkdir()
            files = []
            for i in range(args.files):
                master = masters[i % len(masters)]
                target = work / f"{i:04d}-{master.name}"
                shutil.copy2(master, target)
                files.append(target)
            sizes = [f.stat().st_size for f in files]
            os.sync()
            for name, action in (("write", lambda p: write_tags(p, tags)), ("rewrite", lambda p: write_tags(p, tags)),
                                 ("remove", remove_tags)):
                start = time.perf_counter()
                changed = sum(action(path).written for path in files)
                results[name].append(time.perf_counter() - start)
                if name == "rewrite":
                    assert changed == 0, "the second write must change nothing"
            shutil.rmtree(work)

    summary = {
        name: {
            "median_s": statistics.median(runs), "runs_s": runs,
            "ms_per_file": 1000 * statistics.median(runs) / args.files,
            "files_per_s": args.files / statistics.median(runs),
        }
        for name, runs in results.items()
    }
    record = {
        "files": args.files, "seconds_per_file": args.seconds, "formats": formats, "repeats": args.repeats,
        "mean_file_bytes": sum(sizes) / len(sizes), "results": summary,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "mutagen": mutagen.version_string, "loadavg": os.getloadavg()},
    }
    rows = [(name, f"{row['median_s']:.2f}", f"{row['ms_per_file']:.1f}", f"{row['files_per_s']:.1f}")
            for name, row in summary.items()]  # fmt: skip
    lines = [
        f"# Writing MAEST tags into files ({args.label})", "",
        f"{args.files} files of {args.seconds:g} s ({', '.join(formats)} in turn; "
        f"mean {record['mean_file_bytes'] / 1e6:.2f} MB), median of {args.repeats} passes, no model. "
        f"Load average at the end: {record['machine']['loadavg'][0]:.2f}.", "",
        *markdown_table(("pass", "total (s)", "ms per file", "files per s"), rows),
    ]
    write_results(args.output_dir / f"filetags-{args.label}", record, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
