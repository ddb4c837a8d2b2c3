"""A picture of a track: MAEST's top styles over time (heatmap) beside the track-level scores (bars).

matplotlib without a display: the figure is a `matplotlib.figure.Figure` drawn by `FigureCanvasAgg`, so nothing
touches pyplot's global state or the backend another part of the program (a notebook, a Gradio demo) has chosen.
"""

from __future__ import annotations

import os
import secrets
import textwrap
from collections.abc import Sequence

import numpy as np

from .timeline import format_time, select_labels


# Longest label text on the style axis; longer Discogs names are wrapped onto a second line, then shortened.
LABEL_WIDTH = 28


def _label_text(label: str) -> str:
    """``"Style (Genre)"`` for ``"Genre---Style"``, wrapped to two lines of `LABEL_WIDTH` characters."""
    genre, separator, style = label.partition("---")
    text = f"{style} ({genre})" if separator else label
    lines = textwrap.wrap(text, LABEL_WIDTH, break_long_words=True) or [text]
    if len(lines) > 2:
        lines = [lines[0], textwrap.shorten(" ".join(lines[1:]), LABEL_WIDTH, placeholder="…")]
    return "\n".join(lines)


# Steps of the time axis in seconds: round clock values (seconds, minutes, quarter hours...).
TIME_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200)


def _time_step(duration: float, most_ticks: int = 10) -> int:
    """The smallest step of `TIME_STEPS` that puts at most `most_ticks` intervals on `duration` seconds."""
    return next((step for step in TIME_STEPS if duration / step <= most_ticks), TIME_STEPS[-1])


def timeline_figure(
    window_probs,
    window_times: Sequence[tuple[float, float]],
    labels: Sequence[str],
    track_scores,
    top_k: int = 10,
    title: str | None = None,
):
    """The figure of one track.

    Args:
        window_probs: per-window scores ``(windows, labels)`` in [0, 1] (``sigmoid(window_logits)`` of the real
            windows).
        window_times: ``(start_s, end_s)`` of each window, in seconds (`maest_tools.timeline.window_times`).
        labels (`Sequence[str]`): label names in score order.
        track_scores: the track's scores ``(labels,)`` (the tagger's track score), which choose and order the rows.
        top_k (`int`): how many styles to show (rows), best first.
        title (`str`, *optional*): the title (e.g. the file name).

    Returns:
        `matplotlib.figure.Figure` with an Agg canvas: heatmap rows = the `top_k` styles of the track, columns =
        windows in time (each window drawn from its start to the next window's start, the last one to the end of the
        track, so overlapping windows tile the track), time in m:ss (h:mm:ss from one hour) at round steps (seconds, minutes, quarter hours...), the colour scale 0-1,
        and the track scores as horizontal bars on the right.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MultipleLocator

    probs = np.asarray(window_probs, dtype=np.float64)
    scores = np.asarray(track_scores, dtype=np.float64)
    times = [(float(start), float(end)) for start, end in window_times]
    if probs.ndim != 2 or probs.shape != (len(times), len(labels)):
        raise ValueError(
            f"window_probs of shape {probs.shape} do not match {len(times)} windows x {len(labels)} labels"
        )
    if scores.shape != (len(labels),):
        raise ValueError(f"track_scores of shape {scores.shape} do not match {len(labels)} labels")
    if not np.isfinite(probs).all() or not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinity; a plot needs real numbers (check the model output)")
    starts = [start for start, _ in times]
    if any(later <= earlier for earlier, later in zip(starts, starts[1:])) or times[-1][1] <= times[-1][0]:
        raise ValueError(f"window times must start in increasing order and end after they start, got {times[:5]}...")

    chosen = select_labels(scores, list(labels), top_k=top_k)
    index = {label: i for i, label in enumerate(labels)}
    rows = [index[item["label"]] for item in chosen]
    matrix = probs[:, rows].T  # (styles, windows), best style first
    edges = np.array(starts + [times[-1][1]])
    duration = edges[-1]
    long = duration >= 3600

    height = 1.6 + 0.42 * len(rows)
    figure = Figure(figsize=(12, height), layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(1, 3, width_ratios=[6, 1.6, 0.12])
    heat = figure.add_subplot(grid[0, 0])
    bars = figure.add_subplot(grid[0, 1], sharey=heat)
    bar_colour = figure.add_subplot(grid[0, 2])

    mesh = heat.pcolormesh(edges, np.arange(len(rows) + 1), matrix, cmap="magma", vmin=0.0, vmax=1.0,
                           shading="flat")
    heat.set_ylim(len(rows), 0)
    heat.set_yticks(np.arange(len(rows)) + 0.5, [_label_text(labels[r]) for r in rows], fontsize=8)
    heat.set_xlim(0, duration)
    heat.xaxis.set_major_locator(MultipleLocator(_time_step(duration)))
    heat.xaxis.set_major_formatter(FuncFormatter(lambda seconds, _: format_time(seconds, long) if seconds >= 0 else ""))
    heat.set_xlabel("time (h:mm:ss)" if long else "time (m:ss)")
    heat.set_title(f"top {len(rows)} styles over time ({len(times)} window{'s' if len(times) != 1 else ''})",
                   fontsize=9)

    values = scores[rows]
    bars.barh(np.arange(len(rows)) + 0.5, values, height=0.7, color="#5a3a8a")
    for y, value in enumerate(values):
        bars.text(min(value, 1.0) + 0.02, y + 0.5, f"{value:.2f}", va="center", fontsize=7)
    bars.set_xlim(0, 1.15)
    bars.set_xticks([0, 0.5, 1])
    bars.set_xlabel("track score")
    bars.tick_params(axis="y", labelleft=False)
    bars.set_title("track", fontsize=9)
    figure.colorbar(mesh, cax=bar_colour, label="window score")
    if title:
        figure.suptitle(title, fontsize=10)
    return figure


def save_timeline_png(path, *args, dpi: int = 100, metadata: dict | None = None, **kwargs) -> str:
    """Draw `timeline_figure(*args, **kwargs)` and write it to `path` as PNG, atomically.

    `metadata` (`dict[str, str]`, *optional*) becomes PNG text chunks (matplotlib's ``savefig(metadata=...)``, e.g.
    ``{"Software": "maest-tag 0.1.0"}``, which the tagger uses to recognise its own pictures).

    The PNG goes to a hidden temporary file in the same folder that is renamed into place, so an interrupted run
    never leaves a half-written picture. Returns the path.
    """
    path = os.fspath(path)
    figure = timeline_figure(*args, **kwargs)
    folder = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(folder, f".{os.path.basename(path)}.maest-tmp-{secrets.token_hex(6)}")
    try:
        with open(temporary, "wb") as handle:
            figure.savefig(handle, format="png", dpi=dpi, metadata=metadata)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    return path


__all__ = ["timeline_figure", "save_timeline_png"]
