"""torch.export, ONNX (dynamo) and torch.compile of both model classes, for input of one window without a mask.

Each exported or compiled program is compared with the eager model (1e-5) on inputs of another batch size and
length than the example it was traced with, so a program fixed to the example's shapes fails.
"""

import numpy as np
import pytest
import torch
from conftest import tiny_model
from torch.export import Dim


# tiny_config: 76-frame windows. An exported window has 2 time patches or more (26 frames and up at stride 10):
# with a single column the patch grid follows other layout rules, so export would fix the length.
MIN_FRAMES, MAX_FRAMES = 26, 76


def both_models():
    model = tiny_model(seed=4)
    return {"classifier": model, "encoder": model.audio_spectrogram_transformer}


def first_output(output):
    """`logits` of the classifier, `last_hidden_state` of the encoder (the first field either way)."""
    return output[0]


def dynamic_shapes():
    return {"input_values": {0: Dim("batch", min=1, max=64), 1: Dim("frames", min=MIN_FRAMES, max=MAX_FRAMES)}}


def spectrogram(batch, frames, seed):
    return torch.randn(batch, frames, 96, generator=torch.Generator().manual_seed(seed))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["classifier", "encoder"])
def test_torch_export_static_and_dynamic(name):
    model = both_models()[name]
    example = spectrogram(2, MAX_FRAMES, seed=1)
    with torch.no_grad():
        static = torch.export.export(model, (example,))
        torch.testing.assert_close(
            first_output(static.module()(example)), first_output(model(example)), atol=1e-5, rtol=0
        )
        dynamic = torch.export.export(model, (example,), dynamic_shapes=dynamic_shapes())
        for batch, frames in ((1, MIN_FRAMES), (3, 50), (5, MAX_FRAMES)):
            x = spectrogram(batch, frames, seed=batch)
            torch.testing.assert_close(
                first_output(dynamic.module()(x)), first_output(model(x)), atol=1e-5, rtol=0
            )


@pytest.mark.slow
@pytest.mark.parametrize("name", ["classifier", "encoder"])
def test_onnx_dynamo_export_matches_eager(name, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model = both_models()[name]
    example = spectrogram(2, MAX_FRAMES, seed=1)
    program = torch.onnx.export(model, (example,), dynamo=True, dynamic_shapes=dynamic_shapes())
    program.save(str(tmp_path / "model.onnx"))
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch, frames in ((1, MIN_FRAMES), (3, 50)):
        x = spectrogram(batch, frames, seed=10 + batch)
        result = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        with torch.no_grad():
            expected = first_output(model(x)).numpy()
        np.testing.assert_allclose(result, expected, atol=1e-5, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["classifier", "encoder"])
def test_torch_compile_fullgraph(name):
    model = both_models()[name]
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)  # raises on any graph break
    with torch.no_grad():
        for batch, frames in ((2, MAX_FRAMES), (3, 50)):
            x = spectrogram(batch, frames, seed=20 + batch)
            torch.testing.assert_close(first_output(compiled(x)), first_output(model(x)), atol=1e-5, rtol=0)


def test_eager_checks_still_run_outside_tracing():
    model = both_models()["classifier"]
    with pytest.raises(ValueError, match="NaN or Inf"):
        model(torch.full((1, 40, 96), float("nan")))
    with pytest.raises(ValueError, match="fewer than one patch"):
        model(torch.randn(1, 15, 96))
