"""Tests of maest_tools.export_onnx (maest-export-onnx): onnxruntime against PyTorch on a tiny model, windowing, metadata and errors.

The reference is the PyTorch model itself through its public API (`model(x).logits` and `model.embed(x, block=K)`),
not the export wrapper, so a wrapper that picked the wrong block or head would fail here.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, tiny_model


pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from maest_tools import export_onnx  # noqa: E402

# The command as a user runs it (`maest-export-onnx`), from this checkout whatever the working directory.
COMMAND = [sys.executable, "-m", "maest_tools.export_onnx"]
SUBPROCESS_ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


# Every test but the argument checks runs on the module's exported file, whose export and check take about 25 s.
pytestmark = pytest.mark.slow

TOLERANCE = 1e-4
BLOCK = 0  # the tiny model has 2 blocks: block 0 is not the last, so a wrong block cannot pass


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=3)


@pytest.fixture(scope="module")
def onnx_path(model, tmp_path_factory):
    """The tiny model saved with save_pretrained and exported through the command line, as a user does."""
    folder = tmp_path_factory.mktemp("maest_onnx")
    model.save_pretrained(folder / "model")
    output = folder / "maest.onnx"
    completed = subprocess.run(
        [
            *COMMAND,
            "--model",
            str(folder / "model"),
            "--output",
            str(output),
            "--block",
            str(BLOCK),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=folder,
        env=SUBPROCESS_ENV,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "checked against PyTorch" in completed.stdout
    return output


@pytest.fixture(scope="module")
def runner(onnx_path):
    return export_onnx.MaestOnnxRunner(onnx_path)


def features(batch, frames, seed=0):
    return torch.randn(batch, frames, 96, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("frames", [76, 41])  # a full window (max_length) and a shorter one (3 time patches)
def test_onnxruntime_matches_pytorch(model, runner, batch, frames):
    inputs = features(batch, frames, seed=batch * 100 + frames)
    with torch.no_grad():
        expected_logits = model(inputs).logits.numpy()
        expected_embedding = model.embed(inputs, block=BLOCK).numpy()
    logits, embedding = runner(inputs.numpy())
    assert logits.shape == (batch, model.config.num_labels)
    assert embedding.shape == (batch, 3 * model.config.hidden_size)
    np.testing.assert_allclose(logits, expected_logits, atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(embedding, expected_embedding, atol=TOLERANCE, rtol=0)


def test_embedding_is_of_the_requested_block(model, runner):
    # The other block's embedding differs by far more than the tolerance: the check above is not vacuous.
    inputs = features(2, 76, seed=7)
    with torch.no_grad():
        other = model.embed(inputs, block=BLOCK + 1).numpy()
    _, embedding = runner(inputs.numpy())
    assert np.abs(embedding - other).max() > 100 * TOLERANCE


def test_whole_track_windowing_matches_pytorch(model, runner):
    # 300 frames: windows at 0, 70, 140, 210 and one more aligned to the end (224), as the PyTorch model cuts them.
    track = features(1, 300, seed=11)
    result = runner.analyse(track.numpy())
    with torch.no_grad():
        output = model(track)
        expected_embedding = model.embed(track, block=BLOCK)[0].numpy()
    np.testing.assert_array_equal(result["window_starts"], output.window_starts[0].numpy())
    np.testing.assert_allclose(result["window_logits"], output.window_logits[0].numpy(), atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(result["logits"], output.logits[0].numpy(), atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(result["embedding"], expected_embedding, atol=TOLERANCE, rtol=0)


def test_short_track_is_one_window_of_its_own_length(model, runner):
    track = features(1, 50, seed=12)
    result = runner.analyse(track[0].numpy())
    with torch.no_grad():
        expected = model(track).logits[0].numpy()
    assert result["window_starts"].tolist() == [0]
    np.testing.assert_allclose(result["logits"], expected, atol=TOLERANCE, rtol=0)


def test_metadata_describes_the_model(model, runner):
    config = model.config
    assert (runner.max_length, runner.window_hop, runner.num_mel_bins) == (config.max_length, config.window_hop, 96)
    assert runner.embedding_block == BLOCK
    assert runner.labels == [config.id2label[i] for i in range(config.num_labels)]


def test_too_many_frames_is_a_clear_error(runner):
    with pytest.raises(ValueError, match=r"at most max_length=76 frames.*got 77 frames.*analyse"):
        runner(features(1, 77).numpy())


@pytest.mark.parametrize(
    "shape, match",
    [
        ((1, 10, 96), r"at least patch_size=16 frames, got 10"),
        ((76, 96), r"\(batch, frames, 96\)"),
        ((1, 76, 80), r"\(batch, frames, 96\)"),
    ],
)
def test_bad_window_shapes_are_clear_errors(runner, shape, match):
    with pytest.raises(ValueError, match=match):
        runner(np.zeros(shape, np.float32))


def test_nan_input_is_a_clear_error(runner):
    inputs = features(1, 76).numpy()
    inputs[0, 3, 5] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        runner(inputs)


def test_export_argument_errors(model, tmp_path):
    with pytest.raises(ValueError, match=r"opset must be an int >= 18 .*got 13"):
        export_onnx.export_onnx(model, tmp_path / "a.onnx", opset=13, check=False)
    with pytest.raises(ValueError, match=r"embedding_block must be an int in 0..1.*got 2"):
        export_onnx.export_onnx(model, tmp_path / "b.onnx", embedding_block=2, check=False)
    patched = tiny_model(seed=3, inference_patchout_time=2)
    with pytest.raises(ValueError, match=r"inference_patchout_time=2.*inference_patchout_time = 1"):
        export_onnx.export_onnx(patched, tmp_path / "c.onnx", check=False)


def test_cli_rejects_a_bad_block(onnx_path, tmp_path):
    folder = onnx_path.parent / "model"
    completed = subprocess.run(
        [
            *COMMAND,
            "--model",
            str(folder),
            "--output",
            str(tmp_path / "x.onnx"),
            "--block",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=SUBPROCESS_ENV,
    )
    assert completed.returncode == 2
    assert "--block 5 is outside the model's 2 blocks: use 0..1" in completed.stderr
    assert not (tmp_path / "x.onnx").exists()


def test_metadata_is_json_serialisable_labels(onnx_path):
    import onnx

    props = {entry.key: entry.value for entry in onnx.load(str(onnx_path), load_external_data=False).metadata_props}
    assert json.loads(props["maest.id2label"])[0] == "Genre---Style 0"
    assert props["maest.max_length"] == "76"
