"""Loading as users do: Auto classes with trust_remote_code, the pipeline by repo id from the Hugging Face cache.

The pipeline runs in a fresh Python process with HF_HUB_OFFLINE=1 and a private cache, so transformers really
resolves the repo id, copies the remote code and imports it as a package, as on a user's machine.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import SHARED_AUDIO, TEST_AUDIO, tiny_config_kwargs
from hub_utils import CODE_FILES, discogs_400_labels, place_in_hub_cache, save_tiny_repo

from configuration_maest import MAEST_CUSTOM_PIPELINES, MaestConfig

from feature_extraction_maest import MaestFeatureExtractor, load_audio
from modeling_maest import MaestForAudioClassification, window_starts


REPO_ID = "maest-tests/discogs-maest-tiny"
# The same model saved before pipeline_maest.py existed: its config.json names the pipelines in modeling_maest.
OLD_REPO_ID = "maest-tests/discogs-maest-tiny-old-config"


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return save_tiny_repo(tmp_path_factory.mktemp("repo") / "discogs-maest-tiny")


def test_saved_repo_keeps_code_and_auto_map(repo):
    for name in CODE_FILES:
        assert (repo / name).exists(), name
    config = json.loads((repo / "config.json").read_text())
    assert config["model_type"] == "maest"
    assert config["auto_map"]["AutoConfig"] == "configuration_maest.MaestConfig"
    assert config["auto_map"]["AutoModelForAudioClassification"] == "modeling_maest.MaestForAudioClassification"
    assert config["custom_pipelines"] == MAEST_CUSTOM_PIPELINES
    assert config["custom_pipelines"]["audio-classification"]["impl"] == "pipeline_maest.MaestAudioClassificationPipeline"
    preprocessor = json.loads((repo / "preprocessor_config.json").read_text())
    assert preprocessor["auto_map"]["AutoFeatureExtractor"] == "feature_extraction_maest.MaestFeatureExtractor"


def test_auto_classes_with_remote_code(repo, tmp_path, monkeypatch):
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoModelForAudioClassification

    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    config = AutoConfig.from_pretrained(repo, trust_remote_code=True)
    assert type(config).__name__ == "MaestConfig" and type(config).__module__.startswith("transformers_modules")
    model = AutoModelForAudioClassification.from_pretrained(repo, trust_remote_code=True).eval()
    assert type(model).__name__ == "MaestForAudioClassification"
    base = AutoModel.from_pretrained(repo, trust_remote_code=True)
    assert type(base).__name__ == "MaestModel"
    extractor = AutoFeatureExtractor.from_pretrained(repo, trust_remote_code=True)
    assert type(extractor).__name__ == "MaestFeatureExtractor"

    local = MaestForAudioClassification.from_pretrained(repo).eval()
    x = torch.randn(1, 700, 96)
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, local(x).logits)
        torch.testing.assert_close(base(x[:, :626]).pooler_output, local.audio_spectrogram_transformer(x[:, :626]).pooler_output)

    # A model loaded through remote code saves its code and auto_map again (what push_to_hub uploads).
    resaved = tmp_path / "resaved"
    model.save_pretrained(resaved)
    extractor.save_pretrained(resaved)
    for name in CODE_FILES:
        assert (resaved / name).exists(), name
    config = json.loads((resaved / "config.json").read_text())
    assert config["auto_map"]["AutoModelForAudioClassification"] == "modeling_maest.MaestForAudioClassification"
    assert "custom_pipelines" in config
    again = AutoModelForAudioClassification.from_pretrained(resaved, trust_remote_code=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(x).logits, local(x).logits)


def four_minute_track() -> np.ndarray:
    """The shared 4-minute track when present, else 4 minutes made of the test clips (so the test never skips)."""
    shared = SHARED_AUDIO / "long_orchestral_wesnoth_weight_of_revenge_16k_mono.flac"
    if shared.exists():
        return load_audio(shared)[0]
    clips = [load_audio(p)[0] for p in sorted(TEST_AUDIO.glob("*16k_mono.flac"))]
    return np.concatenate((clips * 4)[:8])


PIPELINE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from transformers import pipeline
    repo_id, old_repo_id, flac, ogg, long_npy, out = sys.argv[1:7]
    pipe = pipeline("audio-classification", model=repo_id, trust_remote_code=True)
    embedder = pipeline("feature-extraction", model=repo_id, trust_remote_code=True)
    old_pipe = pipeline("audio-classification", model=old_repo_id, trust_remote_code=True)
    old_embedder = pipeline("feature-extraction", model=old_repo_id, trust_remote_code=True)
    long_audio = np.load(long_npy)
    results = {
        "class": type(pipe).__name__,
        "model_class": type(pipe.model).__name__,
        "flac": pipe(flac),
        "ogg": pipe(ogg),
        "long_all": pipe({"array": long_audio, "sampling_rate": 16000}, top_k=None),
        "flac_top3": pipe(flac, top_k=3),
        "flac_embedding": embedder(flac),
        "old_classes": [type(old_pipe).__name__, type(old_embedder).__name__],
        "old_flac": old_pipe(flac),
        "old_flac_embedding": old_embedder(flac),
    }
    json.dump(results, open(out, "w"))
    """
)


def manual_track_scores(model, extractor, audio):
    """Cut 626-frame windows every 625 frames by hand (end-aligned tail) and average the sigmoid scores."""
    features = extractor(audio, sampling_rate=16000, return_tensors="pt")["input_values"]
    frames = features.shape[1]
    probabilities = []
    with torch.no_grad():
        for start in window_starts(frames, 626, 625):
            window = features[:, start : start + 626]
            probabilities.append(model(window).logits.sigmoid()[0])
    return torch.stack(probabilities).mean(0), frames


@pytest.mark.slow
def test_pipeline_by_repo_id_offline_on_real_music(repo, tmp_path, flac_path, ogg_path):
    hub_cache = tmp_path / "hub"
    place_in_hub_cache(repo, hub_cache, REPO_ID)
    old_snapshot = place_in_hub_cache(repo, hub_cache, OLD_REPO_ID)
    old_config = json.loads((old_snapshot / "config.json").read_text())
    for task, entry in old_config["custom_pipelines"].items():
        entry["impl"] = entry["impl"].replace("pipeline_maest.", "modeling_maest.")
    (old_snapshot / "config.json").write_text(json.dumps(old_config, indent=2))
    long_audio = four_minute_track()
    long_npy = tmp_path / "long.npy"
    np.save(long_npy, long_audio)
    out = tmp_path / "out.json"
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        HF_HUB_CACHE=str(hub_cache),
        HF_HOME=str(tmp_path / "hf_home"),
        HF_MODULES_CACHE=str(tmp_path / "modules"),
        PYTHONPATH="",  # the repository's own modules must not be importable: only the cached remote code runs
    )
    run = subprocess.run(
        [sys.executable, "-c", PIPELINE_SCRIPT, REPO_ID, OLD_REPO_ID, str(flac_path), str(ogg_path), str(long_npy), str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    results = json.loads(out.read_text())
    assert results["class"] == "MaestAudioClassificationPipeline"
    assert results["model_class"] == "MaestForAudioClassification"

    labels = discogs_400_labels()
    model = MaestForAudioClassification.from_pretrained(repo).eval()
    extractor = MaestFeatureExtractor.from_pretrained(repo)

    # 30 s FLAC by path: top 5 by default, scores = mean of the three windows' sigmoid scores.
    expected, frames = manual_track_scores(model, extractor, load_audio(flac_path)[0])
    assert frames == 1876 and window_starts(frames, 626, 625) == [0, 625, 1250]
    top = results["flac"]
    assert [set(r) for r in top] == [{"label", "score"}] * 5
    order = torch.argsort(expected, descending=True)[:5]
    assert [r["label"] for r in top] == [labels[i] for i in order]
    np.testing.assert_allclose([r["score"] for r in top], expected[order].numpy(), atol=1e-5)
    assert len(results["flac_top3"]) == 3

    # The OGG (44.1 kHz stereo) by path: decoded, downmixed as the mean, resampled to 16 kHz.
    expected_ogg, _ = manual_track_scores(model, extractor, load_audio(ogg_path)[0])
    top = results["ogg"]
    np.testing.assert_allclose([r["score"] for r in top], expected_ogg[[labels.index(r["label"]) for r in top]].numpy(), atol=1e-5)

    # The 4-minute track: every window, the tail included; all 400 scores with top_k=None.
    expected_long, frames = manual_track_scores(model, extractor, long_audio)
    assert len(window_starts(frames, 626, 625)) >= 24
    scores = {r["label"]: r["score"] for r in results["long_all"]}
    assert len(scores) == 400
    np.testing.assert_allclose([scores[label] for label in labels], expected_long.numpy(), atol=1e-5)

    # The embedding pipeline by repo id: the middle block of the model by default, as MaestModel.embed.
    features = extractor(load_audio(flac_path)[0], sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        expected_embedding = model.embed(**features)[0]
    np.testing.assert_allclose(results["flac_embedding"], expected_embedding.numpy(), atol=1e-5)

    # A config.json saved before pipeline_maest.py existed names modeling_maest.*Pipeline: the same pipelines load.
    assert results["old_classes"] == ["MaestAudioClassificationPipeline", "MaestEmbeddingPipeline"]
    assert results["old_flac"] == results["flac"]
    assert results["old_flac_embedding"] == results["flac_embedding"]


@pytest.mark.slow  # a fresh Python process and both pipelines
def test_extractor_save_pretrained_writes_its_auto_map(tmp_path, monkeypatch):
    """`MaestFeatureExtractor().save_pretrained` alone (a fresh process: no test helper registered anything) writes
    the auto_map; with a model saved by `maest_tools.hub.save_model_folder` the folder loads through both pipelines."""
    from conftest import ROOT

    from configuration_maest import MAEST_FEATURE_EXTRACTOR_AUTO_MAP
    from maest_tools.hub import save_model_folder

    folder = tmp_path / "extractor-only"
    script = "import sys; from feature_extraction_maest import MaestFeatureExtractor as E; E().save_pretrained(sys.argv[1])"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", script, str(folder)], check=True, cwd=tmp_path, env=env)
    settings = json.loads((folder / "preprocessor_config.json").read_text())
    assert settings["auto_map"] == MAEST_FEATURE_EXTRACTOR_AUTO_MAP
    assert (folder / "feature_extraction_maest.py").read_bytes() == (ROOT / "feature_extraction_maest.py").read_bytes()

    from transformers import AutoFeatureExtractor, pipeline

    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    assert type(AutoFeatureExtractor.from_pretrained(folder, trust_remote_code=True)).__name__ == "MaestFeatureExtractor"
    torch.manual_seed(5)
    model = MaestForAudioClassification(MaestConfig(**tiny_config_kwargs())).eval()
    repo = save_model_folder(model, tmp_path / "model")
    assert json.loads((repo / "preprocessor_config.json").read_text())["auto_map"] == MAEST_FEATURE_EXTRACTOR_AUTO_MAP
    audio = load_audio(TEST_AUDIO / "orchestral_wesnoth_northerners_16k_mono.flac")[0][:48000]
    tagger = pipeline("audio-classification", model=str(repo), trust_remote_code=True)
    embedder = pipeline("feature-extraction", model=str(repo), trust_remote_code=True)
    inputs = MaestFeatureExtractor()(audio, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        scores = model(**inputs).logits.sigmoid()[0]
        expected = model.audio_spectrogram_transformer.embed(inputs["input_values"])[0]
    assert tagger(audio, top_k=1)[0]["score"] == pytest.approx(float(scores.max()), abs=1e-5)
    np.testing.assert_allclose(np.asarray(embedder(audio)).reshape(-1), expected.numpy(), atol=1e-4)
