# Copyright 2026 The MAEST for transformers authors. Licensed under the Apache License, Version 2.0.
"""maest-plot: a picture of one track, its top styles over time beside the track scores.

    maest-plot song.flac -o song.png                      # analyse the file now (the model runs once)
    maest-plot tags.jsonl --path Music/song.flac -o song.png   # from a maest-tag --timeline output, no model

The library entry is `main(argv)` (returns the exit status); `cli()` is the installed command. The picture is
`maest_tools.plot.timeline_figure`: rows = the track's best styles, columns = the analysis windows in time (m:ss),
colour = each window's score (the tagger's activation of ``window_logits``: sigmoid for MAEST), bars = the track
scores. From a record file, the windows' scores are those the record kept (``--timeline`` keeps each window's
``--top-k`` labels): a style not among a window's kept labels is drawn as 0 there (its score is below that window's
last kept score), and the rows are the track labels the record kept. Run ``maest-tag --timeline --top-k all`` to keep
every score.

Exit status: 0 drawn, 1 the track could not be analysed (decoding or the model failed), 2 a usage error (bad option,
no such file, a record file without that path or without a timeline, model not found).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from .cli import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    add_hop_argument,
    add_model_arguments,
    error_message,
    positive_int,
)
from .library import PLOT_TOP_K, tool_version
from .records import OUTPUT_FORMATS


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="maest-plot",
        description="Draw MAEST's top styles over time (heatmap: rows = styles, columns = 10 s windows, time in m:ss) "
        "beside the track scores, as a PNG. TRACK_OR_RECORD is an audio file (analysed now with --model) or a "
        "maest-tag output made with --timeline (.jsonl, .csv, .parquet; pick the track with --path; no model).",
        epilog="Example: maest-plot song.flac -o song.png",
    )
    add = parser.add_argument
    add("source", metavar="TRACK_OR_RECORD", help="an audio file, or a maest-tag --timeline output file")
    add("--output", "-o", required=True, metavar="PNG", help="the picture to write (PNG; replaced if it exists)")
    add_model_arguments(parser, when="for an audio file: ")
    add_hop_argument(parser, when="for an audio file: ")
    add("--device", default="cpu", help="torch device for an audio file: cpu (default), cuda, cuda:N, auto")
    add("--path", metavar="TRACK",
        help="for a record file: the record's 'path' as maest-tag wrote it (needed when the file holds several)")
    add("--top-k", type=positive_int, default=PLOT_TOP_K, metavar="K",
        help=f"styles drawn, best first (default {PLOT_TOP_K})")
    add("--title", default=None, help="title above the picture (default: the track's file name)")
    return parser


def _draw(output: str, window_scores, times, labels, track_scores, top_k: int, title: str) -> None:
    from .plot import save_timeline_png

    folder = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(folder):
        raise UsageError(f"--output {output!r}: the folder {folder!r} does not exist; create it first.")
    save_timeline_png(output, window_scores, times, labels, track_scores, top_k=top_k, title=title,
                      metadata={"Software": tool_version()})  # fmt: skip


def plot_track(path: str, output: str, model, feature_extractor, device="cpu", top_k: int = PLOT_TOP_K,
               title: str | None = None) -> str:
    """Analyse the audio file ``path`` with ``model`` (one pass) and draw its picture into ``output``."""
    import torch

    from .features import decode_features
    from .tag import scores_from_logits
    from .timeline import window_times

    features, _info = decode_features(path, feature_extractor, name_file=False)
    problem_type = model.config.problem_type
    with torch.inference_mode():
        result = model(input_values=torch.from_numpy(features)[None].to(device))
    track_scores = scores_from_logits(result.logits, problem_type)[0].cpu().numpy()
    mask = result.window_mask[0].cpu()
    window_scores = scores_from_logits(result.window_logits, problem_type)[0].cpu()[mask].numpy()
    starts = result.window_starts[0].cpu()[mask].tolist()
    times = window_times(starts, model.config.max_length, features.shape[0])
    id2label = {int(key): value for key, value in model.config.id2label.items()}
    labels = [id2label[index] for index in range(len(id2label))]
    _draw(output, window_scores, times, labels, track_scores, top_k, title or os.path.basename(path))
    return output


def plot_record(record: dict, output: str, top_k: int = PLOT_TOP_K, title: str | None = None) -> str:
    """Draw the picture of a maest-tag record made with ``--timeline`` (no model; see the module doc)."""
    if record.get("error") is not None:
        raise UsageError(f"the record of {record['path']!r} has no result: {record['error']}")
    if not record.get("timeline"):
        raise UsageError(
            f"the record of {record['path']!r} has no timeline: run maest-tag with --timeline (and --top-k all to keep "
            "every score), or pass the audio file itself."
        )
    labels = [item["label"] for item in record["labels"] or []]
    if not labels:
        raise UsageError(f"the record of {record['path']!r} kept no track labels (--threshold too high?): nothing to draw.")
    column = {label: index for index, label in enumerate(labels)}
    window_scores = np.zeros((len(record["timeline"]), len(labels)))
    for row, window in enumerate(record["timeline"]):
        for item in window["labels"] or []:
            if item["label"] in column:
                window_scores[row, column[item["label"]]] = item["score"]
    times = [(float(window["start_s"]), float(window["end_s"])) for window in record["timeline"]]
    track_scores = np.array([float(item["score"]) for item in record["labels"]])
    _draw(output, window_scores, times, labels, track_scores, min(top_k, len(labels)),
          title or os.path.basename(record["path"]))  # fmt: skip
    return output


def _find_record(source: str, wanted: str | None) -> dict:
    from .records import read_records

    records = read_records(source)
    if wanted is None:
        if len(records) == 1:
            return records[0]
        shown = ", ".join(repr(r["path"]) for r in records[:3])
        raise UsageError(f"{source} holds {len(records)} records ({shown}...): pick one with --path.")
    for candidate in (wanted, os.path.normpath(wanted)):
        for record in records:
            if record["path"] == candidate:
                return record
    shown = ", ".join(repr(r["path"]) for r in records[:3])
    raise UsageError(f"--path {wanted!r} is not in {source} (its paths look like {shown}); give it as maest-tag wrote it.")


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        if not os.path.isfile(args.source):
            raise UsageError(f"{args.source!r}: no such file (give an audio file or a maest-tag output file).")
        if os.path.splitext(args.source)[1].lower() in OUTPUT_FORMATS:
            plot_record(_find_record(args.source, args.path), args.output, args.top_k, args.title)
        else:
            if args.path is not None:
                raise UsageError("--path picks a track of a record file; with an audio file, leave it out.")
            from .devices import resolve_device
            from .features import load_feature_extractor
            from .tag import load_model

            model = load_model(args.model, allow_pickle=args.allow_pickle, quiet=True)
            if args.hop is not None:
                if args.hop > model.config.max_length:
                    raise UsageError(f"--hop {args.hop}: must be between 1 and max_length={model.config.max_length} frames.")
                model.config.window_hop = args.hop
            device = resolve_device(args.device, 0)
            model.to(device)
            try:
                plot_track(args.source, args.output, model, load_feature_extractor(), device, args.top_k, args.title)
            except UsageError:
                raise
            except Exception as error:  # the track could not be decoded or analysed
                print(f"maest-plot: error: {args.source}: {error_message(error)}", file=sys.stderr)
                return EXIT_FAILED
    except UsageError as error:
        print(f"maest-plot: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote {args.output}", file=sys.stderr)
    return EXIT_OK


def cli(argv: list[str] | None = None) -> int:
    """The `maest-plot` command."""
    return main(argv)


if __name__ == "__main__":
    sys.exit(cli())
