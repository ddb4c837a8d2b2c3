"""Batches of real tracks through the pipelines, embeddings and inference patchout (tiny models, real music)."""

import numpy as np
import pytest
import torch
from conftest import SHARED_AUDIO, TEST_AUDIO, tiny_model
from hub_utils import save_tiny_repo

from feature_extraction_maest import MaestFeatureExtractor, load_audio, num_frames
from modeling_maest import MaestForAudioClassification, window_starts


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A tiny model with the real 400 labels and the real 10 s windows (626 frames every 625)."""
    return save_tiny_repo(tmp_path_factory.mktemp("repo") / "tiny", seed=3)


@pytest.fixture(scope="module")
def modules_cache(tmp_path_factory):
    import os

    folder = tmp_path_factory.mktemp("modules")
    old = os.environ.get("HF_MODULES_CACHE")
    os.environ["HF_MODULES_CACHE"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("HF_MODULES_CACHE", None)
    else:
        os.environ["HF_MODULES_CACHE"] = old


@pytest.fixture(scope="module")
def classifier(repo, modules_cache):
    from transformers import pipeline

    return pipeline("audio-classification", model=str(repo), trust_remote_code=True)


@pytest.fixture(scope="module")
def embedder(repo, modules_cache):
    from transformers import pipeline

    return pipeline("feature-extraction", model=str(repo), trust_remote_code=True)


@pytest.fixture(scope="module")
def long_track():
    """The shared 4-minute track (or 4 minutes of the test clips where the shared set is absent)."""
    shared = SHARED_AUDIO / "long_orchestral_wesnoth_weight_of_revenge_16k_mono.flac"
    if shared.exists():
        return load_audio(shared)[0]
    clips = [load_audio(p)[0] for p in sorted(TEST_AUDIO.glob("*16k_mono.flac"))]
    return np.concatenate((clips * 4)[:8])


@pytest.fixture(scope="module")
def tracks(long_track, flac_path):
    """Tracks of very different lengths: 4 minutes, 30 s, 12 s (two windows), 3 s and 0.3 s (shorter than a window)."""
    clip = load_audio(flac_path)[0]
    return [long_track, clip, clip[16000 : 16000 * 13], clip[: 16000 * 3], clip[50000:54800]]


def by_label(result):
    return {r["label"]: r["score"] for r in result}


def test_pipeline_batch_equals_one_by_one(classifier, tracks):
    inputs = [{"array": t, "sampling_rate": 16000} for t in tracks]
    alone = [classifier(x, top_k=None) for x in inputs]
    batched = classifier(inputs, batch_size=4, top_k=None)
    assert len(batched) == len(tracks)
    for one, many in zip(alone, batched):
        one, many = by_label(one), by_label(many)
        assert len(one) == 400
        np.testing.assert_allclose([many[k] for k in one], list(one.values()), atol=1e-5, rtol=0)


def test_padded_batch_window_logits_are_marked(repo, tracks):
    model = MaestForAudioClassification.from_pretrained(repo).eval()
    extractor = MaestFeatureExtractor.from_pretrained(repo)
    features = extractor(tracks, sampling_rate=16000, return_tensors="pt")
    assert features["input_values"].shape[0] == len(tracks)
    with torch.no_grad():
        out = model(**features)
    config = model.config
    expected_starts = [window_starts(num_frames(len(t)), config.max_length, config.window_hop) for t in tracks]
    counts = [len(starts) for starts in expected_starts]
    assert out.window_mask.sum(1).tolist() == counts
    # The long track spans several windows (how many depends on which clip is at hand), the 12 s clip two, the
    # shortest one.
    assert counts[0] > 2 and counts[2] == 2 and counts[-1] == 1
    for i, starts in enumerate(expected_starts):
        assert out.window_starts[i, : counts[i]].tolist() == starts
        assert starts[-1] + min(config.max_length, num_frames(len(tracks[i]))) == num_frames(len(tracks[i]))
    for i, track in enumerate(tracks):
        with torch.no_grad():
            alone = model(**extractor(track, sampling_rate=16000, return_tensors="pt"))
        torch.testing.assert_close(out.window_logits[i, : counts[i]], alone.window_logits[0], atol=1e-5, rtol=0)
        assert (out.window_logits[i, counts[i] :] == 0).all()


def test_embedding_is_consistent_with_hidden_states():
    model = tiny_model(seed=4)
    x = torch.randn(2, 76, 96)
    with torch.no_grad():
        hidden_states = model.audio_spectrogram_transformer(x, output_hidden_states=True).hidden_states
        for block in range(2):
            h = hidden_states[block + 1]
            expected = torch.cat([h[:, 0], h[:, 1], h[:, 2:].mean(1)], dim=-1)
            torch.testing.assert_close(model.embed(x, block=block), expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(model.embed(x, block=-1), model.embed(x, block=1))


def test_track_embedding_is_the_mean_of_window_embeddings():
    model = tiny_model(seed=5)
    x = torch.randn(1, 300, 96)
    with torch.no_grad():
        windows, mask = model.embed(x, block=0, per_window=True)
        starts = window_starts(300, 76, 70)
        assert windows.shape == (1, len(starts), 96) and mask.all()
        for i, start in enumerate(starts):
            torch.testing.assert_close(windows[0, i], model.embed(x[:, start : start + 76], block=0)[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(model.embed(x, block=0), windows.mean(1), atol=1e-6, rtol=0)


def test_padded_batch_embeddings_equal_one_by_one():
    model = tiny_model(seed=6)
    lengths = [20, 76, 150, 400]
    x = torch.randn(len(lengths), max(lengths), 96)
    mask = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    with torch.no_grad():
        batched = model.embed(x, attention_mask=mask, block=1)
        windows, window_mask = model.embed(x, attention_mask=mask, block=1, per_window=True)
        for i, n in enumerate(lengths):
            torch.testing.assert_close(batched[i], model.embed(x[i : i + 1, :n], block=1)[0], atol=1e-5, rtol=0)
            assert window_mask[i].sum() == len(window_starts(n, 76, 70))
    with pytest.raises(ValueError, match="block must be an int in 0..1"):
        model.embed(x, block=2)


def test_embedding_pipeline_equals_model_embed(embedder, repo, tracks, flac_path):
    model = MaestForAudioClassification.from_pretrained(repo).eval()
    extractor = MaestFeatureExtractor.from_pretrained(repo)
    expected = []
    with torch.no_grad():
        for track in tracks[1:]:
            expected.append(model.embed(**extractor(track, sampling_rate=16000, return_tensors="pt"), block=1)[0])
    results = embedder([{"array": t, "sampling_rate": 16000} for t in tracks[1:]], block=1, batch_size=3)
    for result, reference in zip(results, expected):
        assert len(result) == 96  # 3 x hidden_size (2304 for MAEST)
        np.testing.assert_allclose(result, reference.numpy(), atol=1e-5)
    windows = embedder(str(flac_path), block=1, per_window=True, return_tensors=True)
    assert windows.shape == (3, 96)  # 30 s: three 10 s windows
    # Without `block`, the middle block of the model at hand: num_hidden_layers // 2 = 1 for the 2-block tiny model.
    assert model.config.num_hidden_layers == 2
    np.testing.assert_allclose(embedder({"array": tracks[1], "sampling_rate": 16000}), expected[0].numpy(), atol=1e-5)


def test_pipelines_read_a_single_2d_array_as_one_multichannel_signal(classifier, embedder, tracks):
    mono = tracks[3]
    stereo = np.stack([mono, 0.5 * mono])  # downmixed as the mean: 0.75 * mono
    for layout in (stereo, stereo.T, torch.from_numpy(stereo)):
        result = classifier(layout, sampling_rate=16000, top_k=None)
        reference = classifier(0.75 * mono, sampling_rate=16000, top_k=None)
        np.testing.assert_allclose([r["score"] for r in result], [r["score"] for r in reference], atol=1e-6)
        np.testing.assert_allclose(embedder(layout, sampling_rate=16000), embedder(0.75 * mono, sampling_rate=16000), atol=1e-5)


def test_inference_patchout_cuts_tokens_n_fold():
    for n, columns in ((1, 62), (2, 31), (3, 21)):
        model = tiny_model(max_length=626, window_hop=625, inference_patchout_time=n)
        tokens, _ = model.audio_spectrogram_transformer.embeddings(torch.randn(1, 626, 96))
        assert tokens.shape[1] == 2 + 9 * columns


def test_classification_pipeline_defaults(classifier, flac_path):
    results = classifier(str(flac_path))
    assert len(results) == 5
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    assert all(0.0 <= r["score"] <= 1.0 for r in results)
    assert len(classifier(str(flac_path), top_k=None)) == 400
    assert len(classifier(str(flac_path), top_k=1000)) == 400
    logits = classifier(str(flac_path), top_k=3, function_to_apply="none")
    assert len(logits) == 3
    with pytest.raises(ValueError, match="top_k must be a positive int or None"):
        classifier(str(flac_path), top_k=0)


def test_classifier_returns_the_embedding_from_the_same_pass():
    model = tiny_model(seed=8)
    lengths = [30, 76, 260]
    x = torch.randn(len(lengths), max(lengths), 96)
    mask = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    with torch.no_grad():
        out = model(x, attention_mask=mask, embedding_block=0)
        windows, window_mask = model.embed(x, attention_mask=mask, block=0, per_window=True)
        torch.testing.assert_close(out.embedding, model.embed(x, attention_mask=mask, block=0), atol=1e-6, rtol=0)
        torch.testing.assert_close(out.window_embeddings, windows, atol=1e-6, rtol=0)
        single = model(x[:1, :30], embedding_block=-1)
        torch.testing.assert_close(single.embedding, model.embed(x[:1, :30], block=1), atol=1e-6, rtol=0)
        assert model(x[:1, :30]).embedding is None
