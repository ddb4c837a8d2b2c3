"""maest_tools.convert (maest-convert) and loading the published checkpoints as they are.

Every numerical claim is checked against `reference_maest.reference_forward`, a plain-torch float64 forward of
MAEST (patch embedding, factorised positions, pre-norm blocks, CLS/distillation head) run on the raw release tensors the checkpoints were written from, on logits AND on the hidden
state of every token after the embeddings and after every block (logits alone would hide token-order bugs), at the
full window and at a shorter input.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT
from convert_utils import (
    PUBLISHED_PREPROCESSOR,
    label_list,
    release_state,
    write_published_folder,
    write_release_checkpoint,
)
from hub_utils import CODE_FILES, place_in_hub_cache
from reference_maest import reference_forward, release_to_ast_layout
from safetensors.torch import load_file

from configuration_maest import MAEST_PRESETS
from feature_extraction_maest import MaestFeatureExtractor, load_audio
from modeling_maest import MaestForAudioClassification

from maest_tools import convert


TOLERANCE = 1e-4
EXPECTED_FILES = {"config.json", "model.safetensors", "preprocessor_config.json", "README.md", *CODE_FILES}


def spectrogram(frames, batch=2, seed=1):
    return torch.randn(batch, frames, 96, generator=torch.Generator().manual_seed(seed))


def measure(model, state, frames):
    """Max abs differences of logits and of every hidden state between `model` and the reference, on one input."""
    x = spectrogram(frames)
    expected_logits, expected_hidden = reference_forward(state, x, head_dim=64)
    with torch.no_grad():
        out = model(x, output_hidden_states=True)
    assert len(out.hidden_states) == len(expected_hidden) == model.config.num_hidden_layers + 1
    for ours, theirs in zip(out.hidden_states, expected_hidden):
        assert ours.shape == theirs.shape == (2, 2 + 9 * ((frames - 16) // 10 + 1), model.config.hidden_size)
    logits = float((out.logits - expected_logits).abs().max())
    hidden = max(float((a - b).abs().max()) for a, b in zip(out.hidden_states, expected_hidden))
    return logits, hidden


def assert_matches_reference(model, state, lengths, tag):
    for frames in lengths:
        logits, hidden = measure(model, state, frames)
        print(f"[numbers] {tag} {frames} frames: logits {logits:.2e}, hidden states {hidden:.2e}")
        assert logits <= TOLERANCE and hidden <= TOLERANCE, (tag, frames, logits, hidden)


def load_clean(folder, **kwargs):
    model, info = MaestForAudioClassification.from_pretrained(folder, output_loading_info=True, **kwargs)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    return model.eval()


def run_convert(checkpoint, output_dir, **kwargs):
    lines = []
    report = convert.convert(str(checkpoint), output_dir, log=lines.append, **kwargs)
    return report, "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------------
# Release files
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["plain", "lightning"])
def test_release_checkpoint_converts_to_the_source_model(tmp_path, form):
    state = release_state(hidden=128, layers=2, time_positions=6, labels=400, intermediate=93)
    checkpoint = write_release_checkpoint(tmp_path / "maest.ckpt", state, form)
    out = tmp_path / "converted"
    report, log = run_convert(checkpoint, out)

    assert {p.name for p in out.iterdir()} == EXPECTED_FILES
    assert report.shape == convert.MaestShape(128, 2, 2, 93, 9, 6, 400)
    assert report.variant is None and "no published variant" in log
    if form == "lightning":
        assert "using the" in log and "'net_swa.' tensors, ignoring" in log
    assert [r.frames for r in report.results] == [66, 39]
    assert all(r.passed and r.reference.startswith("float64 forward") for r in report.results)

    model = load_clean(out)
    assert_matches_reference(model, state, (66, 43), f"release {form}")
    if form == "lightning":  # the net. weights are a different model: the converter must not have used them
        other = release_state(hidden=128, layers=2, time_positions=6, labels=400, intermediate=93, seed=100)
        x = spectrogram(66)
        with torch.no_grad():
            assert float((model(x).logits - reference_forward(other, x)[0]).abs().max()) > 0.1

    # The weights themselves: the AST layout of section 3 (qkv split, factorised positions summed frequency-major).
    expected = release_to_ast_layout(state)
    saved = load_file(out / "model.safetensors")
    assert saved.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(saved[key], expected[key], atol=1e-6, rtol=0, msg=key)

    config = json.loads((out / "config.json").read_text())
    root_config = json.loads((ROOT / "config.json").read_text())
    assert config["model_type"] == "maest"
    assert config["architectures"] == ["MaestForAudioClassification"]
    assert config["auto_map"] == {
        "AutoConfig": "configuration_maest.MaestConfig",
        "AutoModel": "modeling_maest.MaestModel",
        "AutoModelForAudioClassification": "modeling_maest.MaestForAudioClassification",
    }
    assert config["custom_pipelines"] == root_config["custom_pipelines"]
    assert [config["id2label"][str(i)] for i in range(400)] == label_list(400)
    assert config["label2id"]["Rock---Shoegaze"] == label_list(400).index("Rock---Shoegaze")
    assert config["problem_type"] == "multi_label_classification"
    assert (config["max_length"], config["window_hop"], config["head_layer_norm_eps"]) == (66, 66, 1e-5)
    preprocessor = json.loads((out / "preprocessor_config.json").read_text())
    assert preprocessor == dict(json.loads((ROOT / "preprocessor_config.json").read_text()), max_length=66)
    for name in CODE_FILES:
        assert (out / name).read_bytes() == (ROOT / name).read_bytes()

    card = (out / "README.md").read_text()
    assert card.startswith("---\nlicense: cc-by-nc-sa-4.0\n")
    assert "pipeline(\"audio-classification\"" in card and "400 Discogs styles" in card
    assert "66 mel frames" in card and "maest.ckpt" in card
    for r in report.results:
        assert f"| {r.frames} frames" in card and f"{r.logits_diff:.2e}" in card and f"{r.hidden_diff:.2e}" in card


def test_519_labels_and_30_second_window(tmp_path):
    state = release_state(hidden=64, layers=1, time_positions=187, labels=519, intermediate=71)
    checkpoint = write_release_checkpoint(tmp_path / "maest-30s-519.ckpt", state, "lightning")
    out = tmp_path / "converted"
    report, _ = run_convert(checkpoint, out)
    assert report.shape.max_length == 1876 and report.shape.num_labels == 519
    assert [r.frames for r in report.results] == [1876, 1125]

    config = json.loads((out / "config.json").read_text())
    assert (config["max_length"], config["window_hop"]) == (1876, 1875)
    labels_519 = label_list(519)
    assert [config["id2label"][str(i)] for i in range(519)] == labels_519
    assert labels_519[:400] != label_list(400)  # the 519 list is not the 400 list extended: the order matters

    model = load_clean(out)
    assert model.config.num_time_positions == 187
    assert_matches_reference(model, state, (1876, 1125), "519 labels, 30 s")


# ---------------------------------------------------------------------------------------------------------------------
# Published (AST layout) checkpoints
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("weights", ["safetensors", "bin"])
def test_published_folder_loads_as_is_and_converts(tmp_path, weights):
    state = release_state(hidden=128, layers=2, time_positions=6, labels=400, intermediate=93, seed=3)
    labels = [f"Genre {i // 10}---Style {i}" for i in range(400)]  # the converter must take the source's own labels
    folder = write_published_folder(tmp_path / "discogs-maest-tiny", state, labels, weights)

    if weights == "bin":
        with pytest.raises(OSError, match="use_safetensors=False"):
            MaestForAudioClassification.from_pretrained(folder)
    published = load_clean(folder, use_safetensors=weights == "safetensors")
    assert published.config.head_layer_norm_eps == 1e-5
    assert_matches_reference(published, state, (66, 43), f"published {weights} loaded as is")

    out = tmp_path / "converted"
    report, log = run_convert(folder, out)
    assert report.results[0].reference == "transformers ASTForAudioClassification"
    assert report.results[1].reference.startswith("float64 forward")
    assert all(r.passed for r in report.results)
    assert "head LayerNorm with eps 1e-05" in log
    converted = load_clean(out)
    assert_matches_reference(converted, state, (66, 43), f"published {weights} converted")
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "maest" and config["id2label"]["123"] == labels[123]
    assert config["layer_norm_eps"] == 1e-6 and config["head_layer_norm_eps"] == 1e-5
    card = (out / "README.md").read_text()
    assert "discogs-maest-tiny" in card
    # The licence of the published weights; no base_model line for a local folder (it has no Hub name).
    front_matter = card.split("---")[1]
    assert "license: cc-by-nc-sa-4.0" in front_matter and "base_model" not in front_matter


def test_repo_id_from_the_hub_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    state = release_state(hidden=64, layers=1, time_positions=6, labels=400, intermediate=71, seed=4)
    folder = write_published_folder(tmp_path / "published", state, label_list(400))
    cache = tmp_path / "hub"
    place_in_hub_cache(folder, cache, "mtg-upf/discogs-maest-tiny")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)

    model = load_clean("mtg-upf/discogs-maest-tiny", cache_dir=cache)
    assert_matches_reference(model, state, (66,), "repo id loaded as is")
    report, log = run_convert("mtg-upf/discogs-maest-tiny", tmp_path / "converted")
    assert "mtg-upf/discogs-maest-tiny" in log and all(r.passed for r in report.results)
    front_matter = (tmp_path / "converted" / "README.md").read_text().split("---")[1]
    assert "\nbase_model: mtg-upf/discogs-maest-tiny\n" in front_matter and "license: cc-by-nc-sa-4.0" in front_matter
    with pytest.raises(convert.ConversionError, match="cannot be downloaded"):
        run_convert("mtg-upf/discogs-maest-absent", tmp_path / "absent")


def test_auto_model_with_remote_code_on_a_converted_folder(tmp_path, monkeypatch):
    from transformers import AutoConfig, AutoModelForAudioClassification

    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    state = release_state(hidden=64, layers=2, time_positions=6, labels=400, intermediate=71, seed=5)
    out = tmp_path / "converted"
    run_convert(write_release_checkpoint(tmp_path / "m.ckpt", state), out)

    config = AutoConfig.from_pretrained(out, trust_remote_code=True)
    assert type(config).__name__ == "MaestConfig" and type(config).__module__.startswith("transformers_modules")
    model, info = AutoModelForAudioClassification.from_pretrained(out, trust_remote_code=True, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    model.eval()
    assert type(model).__name__ == "MaestForAudioClassification"
    assert type(model).__module__.startswith("transformers_modules")
    assert_matches_reference(model, state, (66, 43), "AutoModel remote code")
    long = spectrogram(200, batch=1)
    with torch.no_grad():
        torch.testing.assert_close(model(long).logits, load_clean(out)(long).logits)


def test_published_preprocessor_config_gives_our_front_end(tmp_path, flac_path):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(PUBLISHED_PREPROCESSOR))
    extractor = MaestFeatureExtractor.from_pretrained(tmp_path)
    ours = MaestFeatureExtractor()
    audio = load_audio(flac_path)[0]
    published = extractor(audio, sampling_rate=16000, return_tensors="pt")
    expected = ours(audio, sampling_rate=16000, return_tensors="pt")
    assert published["input_values"].shape == (1, 1876, 96)  # the whole clip: no truncation to max_length
    assert torch.equal(published["input_values"], expected["input_values"])
    assert "attention_mask" not in published  # return_attention_mask false, as published, for a single clip


# ---------------------------------------------------------------------------------------------------------------------
# Variants
# ---------------------------------------------------------------------------------------------------------------------


def preset_shape(name):
    preset = MAEST_PRESETS[name]
    return convert.MaestShape(768, 12, 12, 3072, 9, preset["time_positions"], preset["num_labels"])


def test_every_published_variant_is_recognised():
    assert len(MAEST_PRESETS) == 8
    for name, preset in MAEST_PRESETS.items():
        shape = preset_shape(name)
        assert shape.max_length == preset["max_length"]
        assert name in convert.matching_variants(shape)
        assert convert.select_variant(shape, name, None)[0] == name
    name_519 = "discogs-maest-30s-pw-129e-519l"
    assert convert.matching_variants(preset_shape(name_519)) == [name_519]
    assert convert.matching_variants(preset_shape("discogs-maest-5s-pw-129e")) == ["discogs-maest-5s-pw-129e"]
    ten = convert.matching_variants(preset_shape("discogs-maest-10s-fs-129e"))
    assert ten == ["discogs-maest-10s-fs-129e", "discogs-maest-10s-pw-129e", "discogs-maest-10s-dw-75e"]
    # Same shapes: the source's name decides, else the card says which ones it may be.
    assert convert.select_variant(preset_shape("discogs-maest-10s-pw-129e"), None, "discogs-maest-10s-dw-75e")[0] == (
        "discogs-maest-10s-dw-75e"
    )
    variant, note = convert.select_variant(preset_shape("discogs-maest-10s-pw-129e"), None, "model")
    assert variant is None and "pass --arch" in note


@pytest.mark.slow
def test_full_size_checkpoint_with_arch(tmp_path, capsys):
    """A ViT-Base release file with the shapes of discogs-maest-5s-pw-129e, through the command line."""
    state = release_state(hidden=768, layers=12, time_positions=31, labels=400, intermediate=3072, seed=6)
    checkpoint = write_release_checkpoint(tmp_path / "discogs-maest-5s-pw-129e.ckpt", state)
    del state
    out = tmp_path / "converted"
    argv = ["--checkpoint", str(checkpoint), "--output-dir", str(out), "--arch", "discogs-maest-5s-pw-129e"]
    status = convert.main(argv)
    printed = capsys.readouterr().out
    assert status == 0, printed
    print(printed)
    config = json.loads((out / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"]) == (768, 12, 12)
    assert (config["max_length"], config["window_hop"]) == (316, 313)
    card = (out / "README.md").read_text()
    assert "# MAEST for 🤗 transformers: `discogs-maest-5s-pw-129e`" in card and "313 frames" in card
    assert printed.count(": OK") == 2

    # The wrong variant: the error lists every mismatching field.
    status = convert.main(["--checkpoint", str(checkpoint), "--output-dir", str(tmp_path / "x"),
                           "--arch", "discogs-maest-30s-pw-129e-519l"])  # fmt: skip
    error = capsys.readouterr().err
    assert status == 2
    assert "time_positions: expected 187, found 31" in error and "num_labels: expected 519, found 400" in error
    assert "match discogs-maest-5s-pw-129e" in error


def test_arch_that_does_not_fit_a_tiny_checkpoint(tmp_path):
    checkpoint = write_release_checkpoint(tmp_path / "tiny.ckpt", release_state())
    with pytest.raises(convert.ConversionError) as error:
        run_convert(checkpoint, tmp_path / "out", arch="discogs-maest-10s-fs-129e")
    message = str(error.value)
    assert "does not have the shapes of discogs-maest-10s-fs-129e" in message
    assert "hidden_size: expected 768, found 128" in message and "time_positions: expected 62, found 6" in message
    assert "Leave --arch out" in message
    with pytest.raises(convert.ConversionError, match="not a published MAEST variant"):
        run_convert(checkpoint, tmp_path / "out", arch="discogs-maest-15s")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------------------


def _without(state, key):
    return {k: v for k, v in state.items() if k != key}


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda s: {"conv.weight": torch.zeros(3, 3), "fc.bias": torch.zeros(3)},
         "not a MAEST release checkpoint:\n  missing keys: cls_token, freq_new_pos_embed"),
        (lambda s: dict(s, **{"blocks.0.attn.extra.weight": torch.zeros(2)}),
         "unexpected keys: blocks.0.attn.extra.weight"),
        (lambda s: _without(s, "blocks.1.norm2.bias"), "missing keys: blocks.1.norm2.bias"),
        (lambda s: dict(s, **{"head.1.bias": torch.zeros(5)}), "head.1.bias: expected (400,), found (5,)"),
        (lambda s: release_state(hidden=96), "hidden size 96 is not a multiple of 64"),
        (lambda s: release_state(freq_patches=8), "8 frequency rows"),
        (lambda s: release_state(labels=7), "has 7 outputs; the published MAEST models have 400 or 519"),
        (lambda s: {"state_dict": {"net.a": 3}}, "the entries net.a are not tensors"),
        (lambda s: [1, 2], "holds list, not a state dict"),
    ],
    ids=["foreign", "unexpected", "missing", "shape", "width", "frequency", "labels", "not-tensors", "not-dict"],
)  # fmt: skip
def test_release_files_that_are_not_maest(tmp_path, make, message):
    path = tmp_path / "bad.ckpt"
    torch.save(make(release_state(hidden=64, layers=2)), path)
    with pytest.raises(convert.ConversionError) as error:
        run_convert(path, tmp_path / "out")
    assert message in str(error.value)


def test_labels_file_for_other_label_counts(tmp_path):
    state = release_state(hidden=64, layers=1, labels=7)
    checkpoint = write_release_checkpoint(tmp_path / "seven.ckpt", state)
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps([f"tag {i}" for i in range(7)]))
    run_convert(checkpoint, tmp_path / "out", labels=str(labels))
    assert load_clean(tmp_path / "out").config.id2label[6] == "tag 6"
    labels.write_text(json.dumps(["a", "b"]))
    with pytest.raises(convert.ConversionError, match="holds 2 names but the checkpoint's head has 7 outputs"):
        run_convert(checkpoint, tmp_path / "out2", labels=str(labels))


def test_pickled_objects_need_allow_pickle(tmp_path):
    import argparse

    state = release_state(hidden=64, layers=1)
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": {f"net_swa.{k}": v for k, v in state.items()}, "hparams": argparse.Namespace(lr=1)}, path)
    with pytest.raises(convert.ConversionError, match=r"\(e.g. argparse.Namespace\).*--allow-pickle"):
        run_convert(path, tmp_path / "out")
    report, _ = run_convert(path, tmp_path / "out", allow_pickle=True)
    assert all(r.passed for r in report.results)


def test_paths_and_folders_that_are_not_checkpoints(tmp_path, capsys):
    status = convert.main(["--checkpoint", str(tmp_path / "missing.ckpt"), "--output-dir", str(tmp_path / "out")])
    assert status == 2 and f"error: No such file or folder: {tmp_path / 'missing.ckpt'}" in capsys.readouterr().err

    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    with pytest.raises(convert.ConversionError, match="is not a checkpoint torch can read"):
        run_convert(text, tmp_path / "out")

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "README.md").write_text("hi")
    with pytest.raises(convert.ConversionError, match=r"has no config.json \(it holds: README.md\)"):
        run_convert(empty, tmp_path / "out")
    (empty / "config.json").write_text("{}")
    with pytest.raises(convert.ConversionError, match="has no model.safetensors or pytorch_model.bin"):
        run_convert(empty, tmp_path / "out")

    state = release_state(hidden=64, layers=1)
    folder = write_published_folder(tmp_path / "published", state, label_list(400))
    with pytest.raises(convert.ConversionError, match="published-layout .* Pass the folder"):
        run_convert(folder / "model.safetensors", tmp_path / "out")
    with pytest.raises(convert.ConversionError, match="is the source folder"):
        run_convert(folder, folder)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "pytorch_model.bin").write_text("old")
    with pytest.raises(convert.ConversionError, match=r"already holds files .*\(pytorch_model.bin\)"):
        run_convert(folder, busy)

    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(dict(config, max_length=626)))
    with pytest.raises(convert.ConversionError, match="max_length=626 in config.json but 66 in the weights"):
        run_convert(folder, tmp_path / "out")


# ---------------------------------------------------------------------------------------------------------------------
# The converter's own check, pushing, the command line
# ---------------------------------------------------------------------------------------------------------------------


def _time_major_positions(release_to_maest):
    def wrong(tensors, shape):
        out = release_to_maest(tensors, shape)
        key = "audio_spectrogram_transformer.embeddings.position_embeddings"
        table = out[key]
        grid = table[:, 2:].reshape(1, shape.frequency_patches, shape.time_positions, -1).transpose(1, 2)
        out[key] = torch.cat([table[:, :2], grid.reshape(1, -1, table.shape[-1])], dim=1)
        return out

    return wrong


def _query_key_swapped(release_to_maest):
    def wrong(tensors, shape):
        out = release_to_maest(tensors, shape)
        p = "audio_spectrogram_transformer.encoder.layer.1.attention.attention."
        for kind in ("weight", "bias"):
            out[p + f"query.{kind}"], out[p + f"key.{kind}"] = out[p + f"key.{kind}"], out[p + f"query.{kind}"]
        return out

    return wrong


@pytest.mark.parametrize("corrupt", [_time_major_positions, _query_key_swapped], ids=["time-major", "qk-swap"])
def test_self_check_rejects_a_wrong_conversion(tmp_path, monkeypatch, corrupt):
    monkeypatch.setattr(convert, "release_to_maest", corrupt(convert.release_to_maest))
    checkpoint = write_release_checkpoint(tmp_path / "m.ckpt", release_state(hidden=128, layers=2))
    out = tmp_path / "out"
    with pytest.raises(convert.CheckFailed, match="does not reproduce the source model"):
        run_convert(checkpoint, out)
    assert not (out / "model.safetensors").exists() and not (out / "README.md").exists()


class RecordingHfApi:
    """Stands in for huggingface_hub.HfApi: records the calls and the files the folder holds when uploaded."""

    calls = []

    def create_repo(self, **kwargs):
        self.calls.append(("create_repo", kwargs))
        return f"https://huggingface.co/{kwargs['repo_id']}"

    def upload_folder(self, **kwargs):
        from pathlib import Path

        files = sorted(p.name for p in Path(kwargs["folder_path"]).iterdir())
        self.calls.append(("upload_folder", dict(kwargs, files=files)))


def test_push_to_hub_uploads_the_checked_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("huggingface_hub.HfApi", RecordingHfApi)
    RecordingHfApi.calls = []
    checkpoint = write_release_checkpoint(tmp_path / "m.ckpt", release_state(hidden=64, layers=1))
    out = tmp_path / "out"
    argv = ["--checkpoint", str(checkpoint), "--output-dir", str(out), "--push-to-hub", "me/maest-tiny", "--private"]
    assert convert.main(argv) == 0
    assert "Pushed to https://huggingface.co/me/maest-tiny (private)" in capsys.readouterr().out
    (create, create_args), (upload, upload_args) = RecordingHfApi.calls
    assert create == "create_repo" and create_args == dict(repo_id="me/maest-tiny", repo_type="model", private=True,
                                                           exist_ok=True)  # fmt: skip
    assert upload == "upload_folder" and upload_args["repo_id"] == "me/maest-tiny"
    assert upload_args["folder_path"] == str(out) and set(upload_args["files"]) == EXPECTED_FILES
    assert 'model="me/maest-tiny"' in (out / "README.md").read_text()

    class RefusingHfApi(RecordingHfApi):
        def create_repo(self, **kwargs):
            raise OSError("401 Unauthorized: invalid token")

    monkeypatch.setattr("huggingface_hub.HfApi", RefusingHfApi)
    out_2 = tmp_path / "out2"
    assert convert.main(argv[:3] + [str(out_2), "--push-to-hub", "me/maest-tiny"]) == 2
    error = capsys.readouterr().err
    assert "written and checked, but uploading it to 'me/maest-tiny' failed: OSError: 401 Unauthorized" in error
    assert {p.name for p in out_2.iterdir()} == EXPECTED_FILES

    with pytest.raises(SystemExit):
        convert.parse_args(["--checkpoint", "x", "--output-dir", "y", "--private"])
    assert "--private only applies with --push-to-hub" in capsys.readouterr().err


@pytest.mark.slow
def test_command_line_script_runs_standalone(tmp_path):
    checkpoint = write_release_checkpoint(tmp_path / "m.ckpt", release_state(hidden=64, layers=1))
    run = subprocess.run(
        [sys.executable, "-m", "maest_tools.convert",
         "--checkpoint", str(checkpoint), "--output-dir", str(tmp_path / "out")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Architecture: hidden 64, 1 blocks, 1 heads" in run.stdout and run.stdout.count(": OK") == 2
    assert (tmp_path / "out" / "model.safetensors").exists()


# ---------------------------------------------------------------------------------------------------------------------
# --random-weights: a demo folder without any checkpoint
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow  # a full-size ViT-Base: about 5 s of CPU to initialise and write 344 MB
def test_random_weights_folder_is_complete_and_says_so(tmp_path, capsys):
    out = tmp_path / "demo-model"
    status = convert.main(["--random-weights", "--arch", "discogs-maest-10s-fs-129e", "--output", str(out)])
    printed = capsys.readouterr().out
    assert status == 0, printed
    assert "RANDOM weights" in printed
    assert {p.name for p in out.iterdir()} == EXPECTED_FILES
    for name in CODE_FILES:
        assert (out / name).read_bytes() == (ROOT / name).read_bytes(), name
    config = json.loads((out / "config.json").read_text())
    assert config["random_weights"] is True and config["model_type"] == "maest"
    assert config["auto_map"]["AutoModelForAudioClassification"] == "modeling_maest.MaestForAudioClassification"
    assert set(config["custom_pipelines"]) == {"audio-classification", "feature-extraction"}
    preset = MAEST_PRESETS["discogs-maest-10s-fs-129e"]
    assert (config["hidden_size"], config["num_hidden_layers"], config["intermediate_size"]) == (768, 12, 3072)
    assert (config["max_length"], config["window_hop"]) == (preset["max_length"], preset["window_hop"])
    assert [config["id2label"][str(i)] for i in range(400)] == label_list(400)
    preprocessor = json.loads((out / "preprocessor_config.json").read_text())
    assert preprocessor["auto_map"] == {"AutoFeatureExtractor": "feature_extraction_maest.MaestFeatureExtractor"}
    # The marker survives loading and saving again; the card says it in its tags and title; no base_model.
    from configuration_maest import MaestConfig

    reloaded = MaestConfig.from_pretrained(out)
    assert reloaded.random_weights is True
    reloaded.save_pretrained(tmp_path / "resaved")
    assert json.loads((tmp_path / "resaved" / "config.json").read_text())["random_weights"] is True
    card = (out / "README.md").read_text()
    front_matter = card.split("---")[1]
    assert "  - random-weights" in front_matter and "license: apache-2.0" in front_matter
    assert "base_model" not in front_matter
    assert card.split("---", 2)[2].lstrip().startswith("# RANDOM WEIGHTS")
    # Every weight is in the file (nothing is initialised again on load) and it is not all zeros.
    model = load_clean(out)
    assert float(model.classifier.dense.weight.detach().std()) > 0


def test_random_weights_tiny_folder_loads_through_both_pipelines(tmp_path, monkeypatch):
    """The demo folder with test-size overrides (the same code path) runs through both pipelines."""
    from transformers import pipeline

    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    out = convert.write_random_folder(tmp_path / "demo", "discogs-maest-5s-pw-129e", log=lambda line: None,
                                      hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=37)  # fmt: skip
    local = load_clean(out)
    assert local.config.random_weights is True and local.config.max_length == 316
    tagger = pipeline("audio-classification", model=str(out), trust_remote_code=True)
    embedder = pipeline("feature-extraction", model=str(out), trust_remote_code=True)
    audio = load_audio(ROOT / "tests" / "data" / "audio" / "orchestral_wesnoth_northerners_16k_mono.flac")[0]
    top = tagger(audio, top_k=3)
    inputs = MaestFeatureExtractor()(audio, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        scores = local(**inputs).logits.sigmoid()[0]
    best = scores.topk(3)
    assert [r["label"] for r in top] == [local.config.id2label[int(i)] for i in best.indices]
    assert [r["score"] for r in top] == pytest.approx(best.values.tolist(), abs=1e-5)
    assert np.asarray(embedder(audio)).shape[-1] == 3 * 32


def test_random_weights_needs_arch_and_no_checkpoint(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        convert.parse_args(["--random-weights", "--output", str(tmp_path / "x")])
    assert exit_info.value.code == 2 and "--random-weights needs --arch" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        convert.parse_args(["--random-weights", "--checkpoint", "x.ckpt", "--arch", "discogs-maest-5s-pw-129e",
                            "--output", "y"])  # fmt: skip
    assert "not allowed with argument" in capsys.readouterr().err
    # --output is the documented name; --output-dir still works.
    assert convert.parse_args(["--checkpoint", "x", "--output-dir", "y"]).output == "y"
    assert convert.parse_args(["--checkpoint", "x", "--output", "z"]).output == "z"
