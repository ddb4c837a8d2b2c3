#!/usr/bin/env python
# Copyright 2026 The MAEST for transformers authors. Licensed under the Apache License, Version 2.0.
"""Time to tag a folder of N audio files into their tags, with the model and without it (maest-tag, as a user runs it).

The files (MP3, FLAC, Ogg Vorbis, Opus and M4A in turn, `--seconds` long, the user's own tags and a cover where the
format takes one) are made with ffmpeg from a test clip in a temporary folder. The model is MAEST's full-size
architecture (`configuration_maest.MaestConfig` defaults: ViT-Base, 10 s windows, the 400 Discogs labels) with random
weights (the speed does not depend on the weights), or `--arch tiny` (the tests' tiny model). Each step is one
`python -m maest_tools.tag` process, timed from start to exit (Python start-up and model loading included):

  tag            maest-tag DIR -o tags.jsonl                                      (the model, no library feature)
  tag+library    maest-tag DIR -o tags.jsonl --write-tags --timeline --genres     (the model, tags into the files)
  tag+plots      maest-tag DIR -o tags.jsonl --plots PLOTS                        (the model, one PNG per track)
  remove         maest-tag DIR --remove-tags                                      (no model)
  write-from     maest-tag --write-tags-from tags.jsonl                           (no model)

Writes benchmarks/results/library-<label>.json and .md, with the load average (other users of the machine slow it).

    python benchmarks/bench_library.py                          # 20 files of 30 s, full-size model
    python benchmarks/bench_library.py --files 5 --arch tiny    # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from _results import markdown_table, write_results  # noqa: E402  (benchmarks/, the script's folder)


FORMATS = ["mp3", "flac", "ogg", "opus", "m4a"]


def build_model(folder: Path, arch: str) -> str:
    """A model folder with random weights: MAEST's full size (`full`) or the tests' tiny model (`tiny`)."""
    if arch == "tiny":
        from hub_utils import save_tiny_repo

        save_tiny_repo(folder)
        return "tiny (hidden 32, 2 blocks, 10 s windows, 400 labels)"
    import torch

    from configuration_maest import MaestConfig
    from modeling_maest import MaestForAudioClassification

    labels = json.loads((ROOT / "maest_tools" / "labels" / "discogs_400_labels.json").read_text())
    config = MaestConfig(id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)})
    torch.manual_seed(0)
    MaestForAudioClassification(config).eval().save_pretrained(folder)
    return (f"full size, random weights (hidden {config.hidden_size}, {config.num_hidden_layers} blocks, "
            f"{config.max_length}-frame windows every {config.window_hop}, {len(labels)} labels)")  # fmt: skip


def run(arguments: list[str], cwd: Path) -> tuple[float, float]:
    """``(seconds of the whole process, seconds the command reports in its summary line)``; the difference is Python
    start-up, imports and model loading."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "maest_tools.tag", *arguments], cwd=cwd, env=env,
                            capture_output=True, text=True)  # fmt: skip
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"maest-tag {' '.join(arguments)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    summary = [line for line in result.stderr.splitlines() if " files: " in line][-1]
    inside = float(re.search(r"([0-9.]+) s\)", summary).group(1))
    return elapsed, inside


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=20, help="number of files (default 20)")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each file in seconds (default 30)")
    parser.add_argument("--arch", choices=("full", "tiny"), default="full", help="model size (default full)")
    parser.add_argument("--label", default=platform.node() or "local", help="result file label (default: host name)")
    parser.add_argument("--output-dir", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)

    from tagged_files import make_file

    steps = {}
    with tempfile.TemporaryDirectory(prefix="maest-bench-library-") as scratch:
        scratch = Path(scratch)
        music = scratch / "music"
        music.mkdir()
        for index in range(args.files):
            fmt = FORMATS[index % len(FORMATS)]
            make_file(music, f"track{index:03d}", fmt, seconds=args.seconds, offset=float(index % 20))
        size_mb = sum(p.stat().st_size for p in music.iterdir()) / 1e6
        model = build_model(scratch / "model", args.arch)
        common = ["--model", "model", "--quiet"]
        steps["tag"] = run(["music", "-o", "plain.jsonl", *common], scratch)
        steps["tag+library"] = run(["music", "-o", "tags.jsonl", "--write-tags", "--timeline", "--genres", *common],
                                   scratch)  # fmt: skip
        steps["tag+plots"] = run(["music", "-o", "plots.jsonl", "--plots", "plots", *common], scratch)
        steps["remove"] = run(["music", "--remove-tags", "--quiet"], scratch)
        steps["write-from"] = run(["--write-tags-from", "tags.jsonl", "--model", "model", "--quiet"], scratch)
        with open(scratch / "tags.jsonl", encoding="utf-8") as handle:
            windows = sum(len(json.loads(line)["timeline"]) for line in handle if line.strip())
    load = os.getloadavg()
    result = {
        "label": args.label, "files": args.files, "seconds_per_file": args.seconds, "formats": FORMATS,
        "total_mb": round(size_mb, 2), "windows": windows, "model": model, "cpu_count": os.cpu_count(),
        "torch_threads": __import__("torch").get_num_threads(), "load_average": [round(v, 2) for v in load],
        "seconds": {name: round(value[0], 2) for name, value in steps.items()},
        "seconds_in_command": {name: round(value[1], 2) for name, value in steps.items()},
        "ms_per_file": {name: round(1000 * value[0] / args.files, 1) for name, value in steps.items()},
    }
    commands = {
        "tag": "`maest-tag DIR -o tags.jsonl` (model)",
        "tag+library": "`... --write-tags --timeline --genres` (model)",
        "tag+plots": "`... --plots PLOTS` (model)",
        "remove": "`maest-tag DIR --remove-tags` (no model)",
        "write-from": "`maest-tag --write-tags-from tags.jsonl` (no model)",
    }
    rows = [(name, commands[name], f"{value[0]:.2f}", f"{value[1]:.2f}", f"{1000 * value[0] / args.files:.1f}")
            for name, value in steps.items()]  # fmt: skip
    lines = [
        f"# Tagging a music library ({args.label})",
        "",
        f"{args.files} files of {args.seconds:g} s ({', '.join(FORMATS)} in turn; {size_mb:.1f} MB, {windows} windows of "
        f"10 s), model: {model}; {os.cpu_count()} CPUs, load average at the end {load[0]:.2f} / {load[1]:.2f} / "
        f"{load[2]:.2f} (1 / 5 / 15 min; other users share the machine). Each step is one `maest-tag` process: Python "
        "start-up and model loading included; \"inside the command\" is the time its summary line reports (the files' "
        "work, without start-up and loading).",
        "",
        *markdown_table(("step", "command", "process (s)", "inside the command (s)", "ms per file (process)"), rows),
    ]
    write_results(args.output_dir / f"library-{args.label}", result, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
