"""Genre scores from style scores, window times and the timeline: against independent computations."""

import json

import numpy as np
import pytest

from conftest import ROOT

from configuration_maest import FRAMES_PER_SECOND
from maest_tools.genres import genre_of, genre_score_matrix, genre_scores, genres_of, style_of
from maest_tools.timeline import format_time, select_labels, timeline, window_times
from modeling_maest import window_starts


LABELS_400 = json.loads((ROOT / "maest_tools" / "labels" / "discogs_400_labels.json").read_text())
LABELS_519 = json.loads((ROOT / "maest_tools" / "labels" / "discogs_519_labels.json").read_text())


def reference_genres(scores, labels):
    """Plain-Python max per genre, by splitting each label on its first '---'."""
    best = {}
    for label, score in zip(labels, scores):
        genre = label[: label.index("---")]
        best[genre] = max(best.get(genre, -1.0), float(score))
    return best


def test_genre_and_style_names():
    assert genre_of("Funk / Soul---RnB/Swing") == "Funk / Soul"
    assert style_of("Funk / Soul---RnB/Swing") == "RnB/Swing"
    assert genre_of("Folk, World, & Country---Fado") == "Folk, World, & Country"
    with pytest.raises(ValueError, match="Genre---Style"):
        genre_of("Techno")
    assert len(genres_of(LABELS_400)) == 15 and len(genres_of(LABELS_519)) == 15
    assert set(genres_of(LABELS_400)) == set(genres_of(LABELS_519))


@pytest.mark.parametrize("labels", [LABELS_400, LABELS_519], ids=["400", "519"])
def test_genre_scores_single_batch_and_dict(labels):
    rng = np.random.default_rng(len(labels))
    batch = rng.uniform(0, 1, size=(4, len(labels)))
    result = genre_scores(batch, labels)
    assert len(result) == 4
    for row, got in zip(batch, result):
        expected = reference_genres(row, labels)
        assert got == pytest.approx(expected)
        assert list(got.values()) == sorted(got.values(), reverse=True)  # best first
    single = genre_scores(batch[0], labels)
    assert single == result[0] and list(single) == list(result[0])
    as_dict = genre_scores(dict(zip(labels, batch[0].tolist())))
    assert as_dict == single and list(as_dict) == list(single)
    # Any leading shape: (2, 2, labels) gives nested lists.
    nested = genre_scores(batch.reshape(2, 2, -1), labels)
    assert nested[1][0] == result[2]
    genres, matrix = genre_score_matrix(batch, labels)
    assert matrix.shape == (4, 15) and genres == genres_of(labels)


def test_genre_score_is_the_max_not_mean_or_sum():
    labels = ["Electronic---Techno", "Electronic---House", "Electronic---Trance", "Jazz---Bop"]
    got = genre_scores(np.array([0.9, 0.0, 0.0, 0.5]), labels)
    assert got == {"Electronic": 0.9, "Jazz": 0.5}  # a mean would give Electronic 0.3 < Jazz
    tie = genre_scores(np.array([0.5, 0.0, 0.0, 0.5]), labels)
    assert list(tie) == ["Electronic", "Jazz"]  # ties: order of first appearance


def test_genre_scores_bad_input():
    with pytest.raises(ValueError, match="do not match"):
        genre_scores(np.zeros(3), LABELS_400)
    with pytest.raises(ValueError, match="NaN"):
        genre_scores(np.full(400, np.nan), LABELS_400)
    with pytest.raises(ValueError, match="labels are required"):
        genre_scores(np.zeros(400))
    with pytest.raises(ValueError, match="real number"):
        genre_scores({"Rock---Punk": float("nan")})


def test_select_labels_rule():
    labels = ["a", "b", "c", "d"]
    scores = [0.2, 0.7, 0.7, 0.1]
    assert [x["label"] for x in select_labels(scores, labels)] == ["b", "c", "a", "d"]  # ties: lower index first
    assert [x["label"] for x in select_labels(scores, labels, top_k=2)] == ["b", "c"]
    assert [x["label"] for x in select_labels(scores, labels, threshold=0.2)] == ["b", "c", "a"]
    assert [x["label"] for x in select_labels(scores, labels, top_k=1, threshold=0.2)] == ["b"]
    assert select_labels(scores, labels, threshold=0.9) == []
    assert select_labels(scores, labels, top_k=1)[0]["score"] == 0.7
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="top_k"):
            select_labels(scores, labels, top_k=bad)


def test_select_labels_matches_a_sort_by_hand():
    """The one label rule (the tagger, the timeline and the plots call it) against a plain sort on tied scores."""
    rng = np.random.default_rng(0)
    for top_k, threshold in [(5, None), (None, 0.5), (3, 0.2), (None, None)]:
        scores = np.round(rng.uniform(0, 1, 400), 2).astype(np.float32)  # rounding makes ties
        order = sorted(range(400), key=lambda index: (-float(scores[index]), index))
        expected = [
            {"label": LABELS_400[index], "score": float(scores[index])}
            for index in order
            if threshold is None or float(scores[index]) >= threshold
        ][:top_k]
        assert select_labels(scores, LABELS_400, top_k, threshold) == expected


@pytest.mark.parametrize("frames, length, hop", [(100, 626, 625), (626, 626, 625), (1500, 626, 625), (5000, 316, 313),
                                                 (3751, 1876, 1875)])
def test_window_times(frames, length, hop):
    starts = window_starts(frames, length, hop)
    times = window_times(starts, length, frames)
    assert len(times) == len(starts)
    for start, (start_s, end_s) in zip(starts, times):
        assert start_s == start / 62.5
        assert end_s == min(start + length, frames) / 62.5
    # The first window starts at 0, the last one ends at the end of the track.
    assert times[0][0] == 0.0 and times[-1][1] == pytest.approx(frames / FRAMES_PER_SECOND)


def test_window_times_bad_input():
    with pytest.raises(ValueError, match="increasing"):
        window_times([0, 0], 626, 2000)
    with pytest.raises(ValueError, match="inside"):
        window_times([0, 3000], 626, 2000)
    with pytest.raises(ValueError, match="empty"):
        window_times([], 626, 2000)


def test_timeline():
    frames = 1500  # 24 s: windows at 0, 625 and 874 (the last aligned to the end)
    starts = window_starts(frames, 626, 625)
    labels = ["Rock---Punk", "Jazz---Bop", "Electronic---Techno"]
    probs = np.array([[0.9, 0.1, 0.5], [0.2, 0.8, 0.3], [0.1, 0.2, 0.6]])
    result = timeline(probs, starts, 626, frames, labels, top_k=2, threshold=0.25)
    assert [(w["start_s"], w["end_s"]) for w in result] == [(0.0, 10.016), (10.0, 20.016), (13.984, 24.0)]
    assert [[x["label"] for x in w["labels"]] for w in result] == [
        ["Rock---Punk", "Electronic---Techno"], ["Jazz---Bop", "Electronic---Techno"], ["Electronic---Techno"]
    ]
    with pytest.raises(ValueError, match="windows"):
        timeline(probs[:2], starts, 626, frames, labels)


def test_format_time():
    assert format_time(0) == "0:00" and format_time(59.99) == "0:59" and format_time(61) == "1:01"
    assert format_time(3599) == "59:59" and format_time(3600) == "1:00:00" and format_time(3725) == "1:02:05"
    assert format_time(65, long=True) == "0:01:05"
    with pytest.raises(ValueError, match=">= 0"):
        format_time(-1)
