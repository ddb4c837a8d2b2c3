"""Discogs genres from MAEST's style scores.

MAEST's labels are Discogs styles named ``"Genre---Style"`` (for example ``"Electronic---Techno"``,
``"Funk / Soul---RnB/Swing"``): 400 or 519 styles under 15 genres. This module gives each track a score per genre.

The rule: **a genre's score is the highest score among its styles** (``max``).

Why the maximum. MAEST is multi-label: a style's score is an independent probability that the style is present.
A genre is present when any of its styles is, so the strongest evidence for any one style is the evidence for the
genre, and the maximum stays a score in [0, 1] on the same scale as the styles. A mean would punish genres with
many styles (Electronic has 106 styles in the 400 set, Children's 3: one clear Techno track would get a tiny
Electronic score), and a sum is not a probability (it can exceed 1 and grows with the number of styles).

The functions take numpy arrays (one track ``(labels,)`` or a batch ``(..., labels)``; CPU torch tensors work too,
through ``numpy.asarray``) or a ``{label: score}`` mapping.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np


# Separator between the genre and the style in MAEST's (Discogs) label names.
GENRE_SEPARATOR = "---"


def _split(label: str) -> tuple[str, str]:
    if not isinstance(label, str) or GENRE_SEPARATOR not in label:
        raise ValueError(
            f"label {label!r} is not a Discogs 'Genre---Style' name; genres exist only for MAEST's Discogs labels "
            "(use a model whose id2label names are 'Genre---Style')"
        )
    genre, style = label.split(GENRE_SEPARATOR, 1)
    if not genre or not style:
        raise ValueError(f"label {label!r} has an empty genre or style around {GENRE_SEPARATOR!r}")
    return genre, style


def genre_of(label: str) -> str:
    """The Discogs genre of a MAEST label: ``genre_of("Funk / Soul---RnB/Swing") == "Funk / Soul"``.

    Raises:
        `ValueError`: the label is not a ``"Genre---Style"`` name.
    """
    return _split(label)[0]


def style_of(label: str) -> str:
    """The style part of a MAEST label: ``style_of("Funk / Soul---RnB/Swing") == "RnB/Swing"``."""
    return _split(label)[1]


def genres_of(labels: Sequence[str]) -> list[str]:
    """The distinct genres of `labels`, in the order of their first style in `labels`."""
    return list(dict.fromkeys(genre_of(label) for label in labels))


def genre_score_matrix(scores, labels: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Genre scores as an array, for batches.

    Args:
        scores: style scores ``(..., len(labels))`` (numpy array, list or CPU tensor), in [0, 1] for MAEST.
        labels (`Sequence[str]`): the style names in score order (``config.id2label`` order).

    Returns:
        ``(genres, genre_scores)``: the genres in order of first appearance in `labels`, and an array
        ``(..., len(genres))`` (float64) whose entry ``g`` is the maximum of the scores of the styles of ``genres[g]``.

    Raises:
        `ValueError`: the last axis does not match `labels`, a score is NaN, or a label is not ``"Genre---Style"``.
    """
    values = np.asarray(scores, dtype=np.float64)
    labels = list(labels)
    if values.ndim == 0 or values.shape[-1] != len(labels):
        raise ValueError(
            f"scores of shape {values.shape} do not match {len(labels)} labels: the last axis must hold one score "
            "per label, in the labels' order"
        )
    if np.isnan(values).any():
        raise ValueError("scores contain NaN; genre scores need real numbers (check the model output)")
    genres = genres_of(labels)
    index = {genre: g for g, genre in enumerate(genres)}
    columns = np.array([index[genre_of(label)] for label in labels])
    result = np.full(values.shape[:-1] + (len(genres),), -np.inf)
    for g in range(len(genres)):
        result[..., g] = values[..., columns == g].max(axis=-1)
    return genres, result


def _sorted(genres: list[str], row: np.ndarray) -> dict[str, float]:
    # Stable sort: ties keep the order of first appearance in the labels.
    order = sorted(range(len(genres)), key=lambda g: -row[g])
    return {genres[g]: float(row[g]) for g in order}


def genre_scores(scores, labels: Sequence[str] | None = None) -> dict[str, float] | list[dict[str, float]]:
    """Per-genre scores, best first: a genre's score is the highest score among its styles (see the module doc).

    Args:
        scores: one track's style scores (a ``{label: score}`` mapping, or a ``(labels,)`` array with `labels`), or a
            batch ``(tracks, labels)`` (any leading shape) with `labels`.
        labels (`Sequence[str]`, *optional*): the style names in score order; required for arrays, not allowed
            with a mapping (whose keys are the labels).

    Returns:
        ``{genre: score}`` ordered best first (ties: order of the genre's first style in `labels`) for one track;
        a list of those (nested like the leading axes) for a batch. Only genres with at least one style in the
        input appear.
    """
    if isinstance(scores, Mapping):
        if labels is not None:
            raise ValueError("give labels only with an array of scores; a mapping's keys are already the labels")
        for label, value in scores.items():
            if not isinstance(value, (int, float, np.floating, np.integer)) or math.isnan(float(value)):
                raise ValueError(f"score of {label!r} is {value!r}; expected a real number")
        labels, scores = list(scores), [float(value) for value in scores.values()]
    elif labels is None:
        raise ValueError("labels are required with an array of scores (the style names in score order)")
    genres, matrix = genre_score_matrix(scores, labels)
    if matrix.ndim == 1:
        return _sorted(genres, matrix)

    def nest(block):
        return _sorted(genres, block) if block.ndim == 1 else [nest(row) for row in block]

    return nest(matrix)


__all__ = ["GENRE_SEPARATOR", "genre_of", "style_of", "genres_of", "genre_score_matrix", "genre_scores"]
