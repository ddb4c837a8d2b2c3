"""The remote code under the transformers release of this venv gives the pinned release's numbers (1e-5).

Only public behaviour is used (repo id from an offline HF cache, pipelines, Auto classes with trust_remote_code),
so the test does not depend on how the root modules are laid out. Run by `.ci/compat` once per release.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import cases


def assert_close(actual, expected, what):
    np.testing.assert_allclose(actual, expected, rtol=cases.TOLERANCE, atol=cases.TOLERANCE, err_msg=what)


@pytest.fixture(scope="module")
def data(reference):
    return {name: reference[name] for name in ("stereo", "input_values", "labels")}


def test_inputs_are_the_reference_inputs(reference):
    # The inputs are regenerated here; the comparison below is only meaningful if they are the same.
    for name, value in cases.inputs().items():
        np.testing.assert_array_equal(value, reference[name], err_msg=name)


def test_pipelines_by_repo_id(reference, audio_path, data):
    numbers = cases.pipeline_numbers(audio_path, data["stereo"])
    for name in ("scores_file", "scores_stereo", "embedding_file", "embedding_stereo"):
        assert np.isfinite(numbers[name]).all(), name
        assert_close(numbers[name], reference[name], name)
    # The scores are sigmoid probabilities of 400 labels and the stereo clip is not the file: the check can fail.
    assert numbers["scores_file"].shape == (400,) and ((numbers["scores_file"] > 0) & (numbers["scores_file"] < 1)).all()
    assert not np.allclose(numbers["scores_file"], numbers["scores_stereo"], rtol=0, atol=cases.TOLERANCE)


def test_auto_classes(reference, data):
    config, model, classifier, extractor = cases.load_auto()
    assert [type(obj).__name__ for obj in (config, model, classifier, extractor)] == [
        "MaestConfig", "MaestModel", "MaestForAudioClassification", "MaestFeatureExtractor"
    ]
    assert type(model).__module__.startswith("transformers_modules")
    numbers = cases.auto_numbers(data)
    for name in ("config", "last_hidden_state", "pooler_output", "logits", "features"):
        assert_close(numbers[name], reference[name], name)


def test_save_pretrained_keeps_code_auto_map_and_pipelines(reference, data, tmp_path):
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModelForAudioClassification

    config, model, classifier, extractor = cases.load_auto()
    # The constants of the loaded remote code say what a saved MAEST folder must hold.
    constants = sys.modules[type(config).__module__]
    saved = tmp_path / "resaved"
    classifier.save_pretrained(saved)
    extractor.save_pretrained(saved)
    for name in constants.MAEST_CODE_FILES:
        assert (saved / name).is_file(), f"save_pretrained did not copy {name}"
    config_json = json.loads((saved / "config.json").read_text())
    assert config_json["model_type"] == "maest"
    for auto_class in ("AutoConfig", "AutoModelForAudioClassification"):
        assert config_json["auto_map"][auto_class] == constants.MAEST_AUTO_MAP[auto_class], auto_class
    assert config_json["custom_pipelines"] == constants.MAEST_CUSTOM_PIPELINES
    preprocessor_json = json.loads((saved / "preprocessor_config.json").read_text())
    assert preprocessor_json["auto_map"] == constants.MAEST_FEATURE_EXTRACTOR_AUTO_MAP
    # The saved folder loads again through its own code and gives the same numbers.
    again_config = AutoConfig.from_pretrained(saved, trust_remote_code=True)
    again = AutoModelForAudioClassification.from_pretrained(saved, trust_remote_code=True).eval()
    again_extractor = AutoFeatureExtractor.from_pretrained(saved, trust_remote_code=True)
    assert again_config.max_length == config.max_length and again_config.window_hop == config.window_hop
    with torch.no_grad():
        assert_close(again(torch.from_numpy(data["input_values"])).logits.double().numpy(), reference["logits"], "logits")
    features = again_extractor([data["stereo"]], sampling_rate=cases.STEREO_RATE, return_tensors="np")["input_values"]
    assert_close(features, reference["features"], "features")


def test_training_step(reference, data):
    numbers = cases.training_step(data)
    assert np.isfinite(numbers["loss_before"]) and np.isfinite(numbers["loss_after"])
    assert numbers["loss_after"] < numbers["loss_before"], "one SGD step did not lower the training loss"
    assert list(numbers["grad_names"]) == list(reference["grad_names"])
    # Gradients reach every weight (the patch embedding and the first block included), and every weight changes.
    assert np.isfinite(numbers["grad_norms"]).all() and (numbers["grad_norms"] > 0).all()
    assert (numbers["weight_change"] > 0).all()
    for name in ("loss_before", "loss_after", "grad_norms"):
        assert_close(numbers[name], reference[name], name)


def test_training_step_with_gradient_checkpointing(reference, data):
    numbers = cases.training_step(data, gradient_checkpointing=True)
    # The blocks really are recomputed in the backward pass (more module calls than without checkpointing) ...
    assert numbers["module_calls"] > reference["module_calls"]
    # ... and the step is the same as without checkpointing.
    assert list(numbers["grad_names"]) == list(reference["grad_names"])
    for name in ("loss_before", "loss_after", "grad_norms"):
        assert_close(numbers[name], reference[name], name)


def test_published_ast_layout_config_loads(tmp_path):
    """A config.json as the published mtg-upf/discogs-maest-* checkpoints have it (AST names and model_type)."""
    # The same file tests/convert_utils.py reads (this folder runs without tests/ on sys.path), with 400 labels.
    published = json.loads((Path(__file__).resolve().parent.parent / "data" / "published_ast_config.json").read_text())
    published["id2label"] = {str(i): f"label {i}" for i in range(400)}
    published["label2id"] = {f"label {i}": i for i in range(400)}
    (tmp_path / "published").mkdir()
    (tmp_path / "published" / "config.json").write_text(json.dumps(published))
    maest_config_class = type(cases.load_auto()[0])
    config = maest_config_class.from_pretrained(tmp_path / "published")
    assert config.model_type == "maest" and config.num_labels == 400 and config.id2label[399] == "label 399"
    assert (config.max_length, config.window_hop, config.num_time_positions) == (1256, 1250, 125)
    assert config.head_layer_norm_eps == 1e-5 and config.layer_norm_eps == 1e-6
    # Saved by this release, it loads again with the same fields.
    config.save_pretrained(tmp_path / "resaved")
    again = maest_config_class.from_pretrained(tmp_path / "resaved")
    assert (again.max_length, again.window_hop, again.num_labels, again.hidden_size) == (1256, 1250, 400, 768)
