"""Styles over time: MAEST's per-window scores as time-ordered windows, and the one label-selection rule.

MAEST analyses a track in windows of ``config.max_length`` mel frames that start every ``config.window_hop`` frames,
plus one last window aligned to the end of the track (``modeling_maest.window_starts``); the front end makes
``FRAMES_PER_SECOND`` (62.5) frames per second. The model returns one score row per window
(``window_logits`` through the same activation as the track score), so a timeline costs no extra model time.

`select_labels` is the rule that turns one score row into labels (top-k and/or threshold). It is written here once
so that the track labels, the timeline windows and the file tags all follow the same rule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from configuration_maest import FRAMES_PER_SECOND


def select_labels(
    scores, labels: Sequence[str], top_k: int | None = None, threshold: float | None = None
) -> list[dict]:
    """``[{"label", "score"}, ...]`` best first (ties: lower label index first).

    Args:
        scores: one score per label ``(labels,)`` (numpy array, list or CPU tensor).
        labels (`Sequence[str]`): label names in score order.
        top_k (`int`, *optional*): keep at most this many labels (``None``: no limit).
        threshold (`float`, *optional*): keep only labels with ``score >= threshold`` (``None``: no threshold).
            With both, a label must pass both rules.

    Raises:
        `ValueError`: shapes differ, a score is NaN, ``top_k < 1`` or the threshold is not a finite number.
    """
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim != 1 or len(values) != len(labels):
        raise ValueError(f"scores of shape {values.shape} do not match {len(labels)} labels; give one row (labels,)")
    if np.isnan(values).any():
        raise ValueError("scores contain NaN; labels need real numbers (check the model output)")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise ValueError(f"top_k must be a whole number >= 1 or None, got {top_k!r}")
    if threshold is not None and (not isinstance(threshold, (int, float)) or not math.isfinite(threshold)):
        raise ValueError(f"threshold must be a finite number or None, got {threshold!r}")
    order = np.argsort(-values, kind="stable")
    selected = []
    for index in order:
        score = float(values[index])
        if threshold is not None and score < threshold:
            break
        if top_k is not None and len(selected) >= top_k:
            break
        selected.append({"label": labels[index], "score": score})
    return selected


def window_times(
    window_starts: Sequence[int], window_length: int, num_frames: int, frames_per_second: float = FRAMES_PER_SECOND
) -> list[tuple[float, float]]:
    """``(start_s, end_s)`` in seconds of every analysis window.

    Args:
        window_starts (`Sequence[int]`): first mel frame of each window, increasing
            (``modeling_maest.window_starts(num_frames, config.max_length, config.window_hop)``).
        window_length (`int`): window length in mel frames (``config.max_length``).
        num_frames (`int`): length of the track in mel frames.
        frames_per_second (`float`): mel frames per second (62.5 for MAEST).

    Returns:
        One ``(start_s, end_s)`` per window: ``start / fps`` and ``min(start + window_length, num_frames) / fps``
        (a track shorter than one window is one window of its own length).
    """
    if window_length < 1 or num_frames < 1:
        raise ValueError(f"window_length and num_frames must be >= 1 frame, got {window_length} and {num_frames}")
    starts = [int(start) for start in window_starts]
    if not starts:
        raise ValueError("window_starts is empty; every track has at least one window (start 0)")
    for previous, start in zip([-1] + starts, starts):
        if start <= previous or start >= num_frames:
            raise ValueError(
                f"window start {start} is not increasing or not inside the track of {num_frames} frames "
                f"(window_starts={starts[:8]}...); pass modeling_maest.window_starts(...) for this track"
            )
    return [(start / frames_per_second, min(start + window_length, num_frames) / frames_per_second) for start in starts]


def timeline(
    window_scores,
    window_starts: Sequence[int],
    window_length: int,
    num_frames: int,
    labels: Sequence[str],
    top_k: int | None = None,
    threshold: float | None = None,
    frames_per_second: float = FRAMES_PER_SECOND,
) -> list[dict]:
    """The windows of one track in time order, each with its labels.

    Args:
        window_scores: scores ``(windows, labels)`` of the track's real windows (drop padded windows with
            ``window_mask`` first): ``sigmoid(window_logits)`` for MAEST.
        window_starts, window_length, num_frames, frames_per_second: as in `window_times`.
        labels (`Sequence[str]`): label names in score order.
        top_k, threshold: as in `select_labels` (the tagger's ``--top-k`` / ``--threshold``).

    Returns:
        ``[{"start_s": float, "end_s": float, "labels": [{"label", "score"}, ...]}, ...]``, one per window.
    """
    values = np.asarray(window_scores, dtype=np.float64)
    times = window_times(window_starts, window_length, num_frames, frames_per_second)
    if values.ndim != 2 or values.shape[0] != len(times):
        raise ValueError(
            f"window scores of shape {values.shape} do not match {len(times)} windows; give (windows, labels) "
            "of the real windows only (index with window_mask)"
        )
    return [
        {"start_s": start, "end_s": end, "labels": select_labels(row, labels, top_k, threshold)}
        for (start, end), row in zip(times, values)
    ]


def format_time(seconds: float, long: bool | None = None) -> str:
    """``m:ss`` (or ``h:mm:ss`` when `long`, by default when ``seconds >= 3600``), rounded down to the second."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a time must be a finite number of seconds >= 0, got {seconds!r}")
    total = int(math.floor(seconds + 1e-9))
    if long is None:
        long = total >= 3600
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if long else f"{hours * 60 + minutes}:{secs:02d}"


__all__ = ["select_labels", "window_times", "timeline", "format_time"]
