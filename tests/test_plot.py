"""The track picture: a real PNG of the right size that is not blank, for 1 window, hundreds, and long names."""

import json

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from conftest import ROOT  # noqa: E402

from maest_tools.plot import save_timeline_png, timeline_figure  # noqa: E402
from maest_tools.timeline import window_times  # noqa: E402
from modeling_maest import window_starts  # noqa: E402


LABELS = json.loads((ROOT / "maest_tools" / "labels" / "discogs_400_labels.json").read_text())


def read_png(path) -> np.ndarray:
    try:
        from PIL import Image

        return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255.0
    except ImportError:
        import matplotlib.image

        return matplotlib.image.imread(path)[..., :3]


def track(seconds: float, seed: int = 0):
    """Window scores, window times and track scores of a made-up track of `seconds` (10 s windows)."""
    frames = int(seconds * 62.5)
    starts = window_starts(frames, 626, 625)
    rng = np.random.default_rng(seed)
    probs = rng.uniform(0, 1, size=(len(starts), len(LABELS))) ** 4
    return probs, window_times(starts, 626, frames), probs.mean(axis=0)


@pytest.mark.parametrize("seconds, windows", [(6.0, 1), (210.0, 21), (3 * 3600 + 5.0, 1081)])
def test_png_is_a_real_picture(tmp_path, seconds, windows):
    probs, times, scores = track(seconds)
    assert len(times) == windows
    path = save_timeline_png(tmp_path / "track.png", probs, times, LABELS, scores, top_k=10, title="a track", dpi=80)
    image = read_png(path)
    assert image.shape[1] == 12 * 80 and image.shape[0] == pytest.approx((1.6 + 0.42 * 10) * 80, abs=2)
    # Not blank: many colours, and the heatmap area is far from uniform.
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 50
    assert image.std() > 0.1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["track.png"]  # no temporary file left
    figure = timeline_figure(probs, times, LABELS, scores)
    figure.canvas.draw()
    ticks = [tick.get_text() for tick in figure.axes[0].get_xticklabels() if tick.get_text()]
    assert len(ticks) >= 3 and len(set(ticks)) == len(ticks)  # whole seconds: no repeated time labels


def test_rows_are_the_track_top_styles_and_time_axis():
    probs, times, scores = track(600.0, seed=3)
    figure = timeline_figure(probs, times, LABELS, scores, top_k=5)
    heat = figure.axes[0]
    expected = [LABELS[i] for i in np.argsort(-scores, kind="stable")[:5]]
    shown = [tick.get_text().replace("\n", " ") for tick in heat.get_yticklabels()]
    for label, text in zip(expected, shown):
        genre, style = label.split("---")
        assert text.startswith(style[:10]) and genre[:5] in text
    figure.canvas.draw()
    ticks = [tick.get_text() for tick in heat.get_xticklabels() if tick.get_text()]
    assert "0:00" in ticks and all(":" in t and len(t.split(":")) == 2 for t in ticks)
    assert heat.get_xlim() == (0.0, times[-1][1])
    # The heatmap's cells hold exactly the chosen styles' window scores, best style first.
    mesh = heat.collections[0]
    order = np.argsort(-scores, kind="stable")[:5]
    np.testing.assert_allclose(np.asarray(mesh.get_array()).reshape(5, -1), probs[:, order].T)


def test_long_tracks_use_hours_and_long_names_wrap():
    labels = ["Genre---" + "A very long style name that goes on and on " * 3, "Other---Short"]
    probs = np.array([[0.9, 0.1], [0.5, 0.2]])
    figure = timeline_figure(probs, [(0.0, 3000.0), (3000.0, 7300.0)], labels, probs.mean(0), top_k=2)
    figure.canvas.draw()
    heat = figure.axes[0]
    low, high = heat.get_xlim()
    ticks = [t.get_text() for t in heat.get_xticklabels() if low <= t.get_position()[0] <= high]
    assert ticks == ["0:00:00", "0:15:00", "0:30:00", "0:45:00", "1:00:00", "1:15:00", "1:30:00", "1:45:00",
                     "2:00:00"]  # 7300 s: round quarter hours
    long_text = heat.get_yticklabels()[0].get_text()
    assert long_text.count("\n") == 1 and all(len(line) <= 28 for line in long_text.split("\n"))


def test_bad_input_is_named():
    probs, times, scores = track(30.0)
    with pytest.raises(ValueError, match="windows"):
        timeline_figure(probs[:1], times, LABELS, scores)
    bad = probs.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        timeline_figure(bad, times, LABELS, scores)
