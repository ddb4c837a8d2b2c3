"""Fine-tuning MAEST: the Trainer with both label kinds, new heads, and maest_tools.finetune (maest-finetune)
end to end on tiny models and pieces of the test clips."""

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, tiny_model
from hub_utils import CODE_FILES
from labelled_clips import labelled_fixtures, multi_label_sets, write_csv, write_wav

from feature_extraction_maest import MaestFeatureExtractor, load_audio
from modeling_maest import MaestForAudioClassification


from maest_tools import finetune, labelled
from maest_tools.features import load_feature_extractor
from maest_tools.hub import save_model_folder


TINY_WINDOW = 126  # 2 s windows (12 time patches) keep the tiny models fast on 5 s pieces (313 frames)
MULTI_LABELS = ["electronic", "opening", "orchestral"]


# ---------------------------------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------------------------------


# workdir, 18 five-second WAVs (6 electronic, 12 orchestral, 6 of them decoded from the 44.1 kHz stereo OGG) and a
# tiny MAEST folder with the 400 Discogs labels and 2 s windows.
workdir, pieces, base_repo = labelled_fixtures("finetune", max_length=TINY_WINDOW, window_hop=TINY_WINDOW - 1)


@pytest.fixture(scope="module")
def multi_csv(workdir, pieces):
    rows = [(str(p["path"].relative_to(workdir)), ";".join(multi_label_sets(p))) for p in pieces]
    return write_csv(workdir / "multi.csv", rows)


@pytest.fixture(scope="module")
def genre_folder(workdir, pieces):
    """A folder per label: genres/electronic/*.wav, genres/orchestral/*.wav (links to the pieces)."""
    folder = workdir / "genres"
    for piece in pieces:
        target = folder / piece["genre"] / piece["path"].name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(piece["path"].read_bytes())
    return folder


@pytest.fixture(scope="module")
def features(pieces):
    extractor = MaestFeatureExtractor()
    return [extractor(load_audio(p["path"])[0], sampling_rate=16000)["input_values"][0] for p in pieces]


# ---------------------------------------------------------------------------------------------------------------------
# New heads, gradient checkpointing, the Trainer
# ---------------------------------------------------------------------------------------------------------------------


def test_new_head_for_a_new_label_set(base_repo, caplog, capfd):
    base = MaestForAudioClassification.from_pretrained(base_repo)
    capfd.readouterr()
    with caplog.at_level(logging.INFO):
        model = finetune.build_model(str(base_repo), ["a", "b", "c"], single_label=True,
                                     patchout={"train_patchout_time": 3})  # fmt: skip
    # One line explains the expected new head; transformers' load report (MISMATCH ... Reinit) is not printed.
    printed = capfd.readouterr()
    assert "New classification head for 3 labels (the base model's has 400)" in caplog.text
    assert "MISMATCH" not in caplog.text + printed.out + printed.err
    assert model.config.id2label == {0: "a", 1: "b", 2: "c"} and model.config.label2id == {"a": 0, "b": 1, "c": 2}
    assert model.config.problem_type == "single_label_classification" and model.config.train_patchout_time == 3
    assert model.classifier.dense.weight.shape == (3, 32)
    for (name, ours), (_, theirs) in zip(model.audio_spectrogram_transformer.state_dict().items(),
                                         base.audio_spectrogram_transformer.state_dict().items()):  # fmt: skip
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0, msg=name)
    torch.testing.assert_close(model.classifier.layernorm.weight, base.classifier.layernorm.weight)

    # 400 other names: same shape, but the old rows would mean other styles, so the head is new.
    renamed = finetune.build_model(str(base_repo), [f"mood {i:03d}" for i in range(400)], single_label=False)
    assert renamed.config.problem_type == "multi_label_classification"
    assert not torch.allclose(renamed.classifier.dense.weight, base.classifier.dense.weight)
    # The same 400 labels in the same order: continued training keeps the trained head.
    labels = [base.config.id2label[i] for i in range(400)]
    same = finetune.build_model(str(base_repo), labels, single_label=False)
    torch.testing.assert_close(same.classifier.dense.weight, base.classifier.dense.weight, rtol=0, atol=0)


def published_layout_copy(repo, folder):
    """`repo` rewritten the way the mtg-upf repositories are published: a transformers AST config.json (no auto_map,
    model_type audio-spectrogram-transformer), the same AST-named weights, their MAESTFeatureExtractor config."""
    folder.mkdir()
    config = json.loads((repo / "config.json").read_text())
    keep = ("attention_probs_dropout_prob", "frequency_stride", "hidden_act", "hidden_dropout_prob", "hidden_size",
            "initializer_range", "intermediate_size", "layer_norm_eps", "max_length", "num_attention_heads",
            "num_hidden_layers", "num_mel_bins", "patch_size", "qkv_bias", "time_stride", "id2label", "label2id")
    published = {key: config[key] for key in keep}
    published.update(architectures=["ASTForAudioClassification"], model_type="audio-spectrogram-transformer",
                     torch_dtype="float32", transformers_version="4.33.0.dev0")  # fmt: skip
    (folder / "config.json").write_text(json.dumps(published))
    (folder / "model.safetensors").write_bytes((repo / "model.safetensors").read_bytes())
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "auto_map": {"AutoFeatureExtractor": "feature_extraction_maest.MAESTFeatureExtractor"}, "do_normalize": True,
        "feature_extractor_type": "MAESTFeatureExtractor", "feature_size": 1, "hop_length": 256,
        "log_compression": "logC", "max_length": config["max_length"], "mean": 2.06755686098554, "n_fft": 512,
        "num_mel_bins": 96, "padding_side": "right", "padding_value": 0.0, "return_attention_mask": False,
        "sampling_rate": 16000, "std": 1.268292820667291,
    }))  # fmt: skip
    return folder


def test_published_ast_layout_as_base_model(base_repo, tmp_path):
    folder = published_layout_copy(base_repo, tmp_path / "discogs-maest-published")
    base = MaestForAudioClassification.from_pretrained(base_repo)
    model = finetune.build_model(str(folder), ["calm", "energetic"], single_label=True)
    assert model.config.max_length == TINY_WINDOW and model.classifier.dense.weight.shape == (2, 32)
    torch.testing.assert_close(model.audio_spectrogram_transformer.embeddings.position_embeddings,
                               base.audio_spectrogram_transformer.embeddings.position_embeddings, rtol=0, atol=0)
    extractor = load_feature_extractor(str(folder))
    assert isinstance(extractor, MaestFeatureExtractor) and extractor.mean == 2.06755686098554
    save_model_folder(model, tmp_path / "saved", extractor)
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert saved["model_type"] == "maest" and saved["architectures"] == ["MaestForAudioClassification"]
    assert saved["auto_map"]["AutoModel"] == "modeling_maest.MaestModel"


def test_gradient_checkpointing_recomputes_blocks_and_keeps_gradients():
    x, labels = torch.randn(2, 76, 96), torch.tensor([3, 5])
    gradients, calls = [], []
    for checkpointing in (False, True):
        model = tiny_model(seed=3, problem_type="single_label_classification").train()
        if checkpointing:
            model.activation_checkpointing_enable({"use_reentrant": False})  # gradient_checkpointing_enable before 5.24
        count = [0]
        model.audio_spectrogram_transformer.encoder.layer[0].intermediate.register_forward_hook(
            lambda *_: count.__setitem__(0, count[0] + 1)
        )
        model(x, labels=labels).loss.backward()
        gradients.append({n: p.grad.clone() for n, p in model.named_parameters()})
        calls.append(count[0])
    assert calls == [1, 2]  # the checkpointed block runs again in the backward pass
    for name, grad in gradients[0].items():
        torch.testing.assert_close(gradients[1][name], grad, atol=1e-6, rtol=1e-5, msg=name)


def training_arguments(tmp_path, **overrides):
    from transformers import TrainingArguments

    kwargs = dict(
        output_dir=str(tmp_path / "trainer"), num_train_epochs=8, per_device_train_batch_size=3,
        per_device_eval_batch_size=6, learning_rate=2e-3, lr_scheduler_type="constant", save_strategy="no",
        report_to="none", use_cpu=True, disable_tqdm=True, seed=0, remove_unused_columns=False,
        dataloader_pin_memory=False,
    )  # fmt: skip
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("single_label", [False, True], ids=["multi-hot-float", "int-index"])
def test_trainer_loss_decreases(single_label, base_repo, pieces, features, tmp_path):
    """A few Trainer steps on random 2 s crops (with patchout) lower the whole-track loss of those tracks."""
    chosen = [0, 1, 4, 6, 9, 15]  # electronic and orchestral pieces, openings and later parts
    data = labelled.LabelledData(
        [pieces[i]["path"] for i in chosen],
        [(pieces[i]["genre"],) if single_label else tuple(multi_label_sets(pieces[i])) for i in chosen],
        ["electronic", "orchestral"] if single_label else MULTI_LABELS,
        single_label,
        "test",
    )
    targets = data.targets()
    assert targets.dtype == (np.int64 if single_label else np.float32)
    crops = finetune.RandomCropDataset([features[i] for i in chosen], targets, TINY_WINDOW, crops_per_track=2)
    tracks = finetune.TrackDataset([features[i] for i in chosen], targets)
    from transformers import set_seed

    set_seed(0)  # the new head's initial weights
    model = finetune.build_model(str(base_repo), data.label_names, single_label,
                                 {"train_patchout_time": 2, "train_patchout_freq": 1})  # fmt: skip
    trainer = finetune.make_trainer(model, training_arguments(tmp_path), crops, tracks, single_label)
    batch = trainer.data_collator([crops[0], crops[1], crops[2]])
    assert batch["labels"].dtype == (torch.long if single_label else torch.float32)
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    print(f"\n{'single' if single_label else 'multi'}-label track loss: {before['eval_loss']:.4f} -> "
          f"{after['eval_loss']:.4f}")  # fmt: skip
    assert after["eval_loss"] < 0.75 * before["eval_loss"]
    metric = "accuracy" if single_label else "roc_auc"
    assert after[f"eval_{metric}"] >= before[f"eval_{metric}"]


@pytest.mark.slow
def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    """Two accumulated batches of 2 give the same SGD step as one batch of 4 (the loss is divided by the steps)."""
    rng = np.random.default_rng(0)
    features = [rng.standard_normal((76, 96)).astype(np.float32) for _ in range(4)]
    dataset = finetune.TrackDataset(features, np.array([0, 1, 2, 3]))
    initial = tiny_model(seed=4).classifier.dense.weight.detach().clone()
    updates = []
    for batch_size, accumulation in ((4, 1), (2, 2)):
        model = tiny_model(seed=4, problem_type="single_label_classification").train()
        args = training_arguments(tmp_path, num_train_epochs=1, per_device_train_batch_size=batch_size,
                                  gradient_accumulation_steps=accumulation, optim="sgd", learning_rate=0.1,
                                  max_grad_norm=0.0)  # fmt: skip
        finetune.make_trainer(model, args, dataset, None, True).train()
        updates.append(model.classifier.dense.weight.detach() - initial)
    assert updates[0].abs().max() > 1e-3
    torch.testing.assert_close(updates[1], updates[0], atol=1e-6, rtol=1e-4)


# ---------------------------------------------------------------------------------------------------------------------
# Data handling
# ---------------------------------------------------------------------------------------------------------------------


def test_feature_store_decodes_once_and_matches_the_extractor(pieces, features, tmp_path):
    paths = [p["path"] for p in pieces[:3]]
    store = finetune.FeatureStore(MaestFeatureExtractor(), tmp_path / "cache")
    first = store.load(paths, progress=False)
    assert store.decoded == 3 and len(list((tmp_path / "cache").glob("*.npy"))) == 3
    again = finetune.FeatureStore(MaestFeatureExtractor(), tmp_path / "cache")
    second = again.load(paths, progress=False)
    assert again.decoded == 0
    for a, b, expected in zip(first, second, features[:3]):
        assert a.shape == (314, 96)  # 80000 samples -> ceil(80000 / 256) + 1 frames
        np.testing.assert_array_equal(np.asarray(a), expected)
        np.testing.assert_array_equal(np.asarray(b), expected)
    in_memory = finetune.FeatureStore(MaestFeatureExtractor()).load(paths[:1], progress=False)
    np.testing.assert_array_equal(in_memory[0], features[0])


def test_random_crops_and_padding():
    long_track = np.arange(300 * 96, dtype=np.float32).reshape(300, 96)
    short_track = np.ones((50, 96), dtype=np.float32)
    dataset = finetune.RandomCropDataset([long_track, short_track], np.array([0, 1]), window=126, crops_per_track=3)
    assert len(dataset) == 6
    torch.manual_seed(0)
    starts = set()
    for index in range(0, 6, 2):
        for _ in range(5):
            crop = dataset[index]["input_values"]
            assert crop.shape == (126, 96)
            start = int(crop[0, 0]) // 96
            torch.testing.assert_close(crop, torch.from_numpy(long_track[start : start + 126]))
            starts.add(start)
    assert len(starts) > 5 and min(starts) >= 0 and max(starts) <= 300 - 126
    short = dataset[1]
    assert short["input_values"].shape == (50, 96) and int(short["labels"]) == 1
    batch = finetune.collate([dataset[0], short], padding_value=0.0)
    assert batch["input_values"].shape == (2, 126, 96)
    assert batch["attention_mask"].sum(1).tolist() == [126, 50]
    assert (batch["input_values"][1, 50:] == 0).all() and batch["labels"].tolist() == [0, 1]


def test_split_is_deterministic_and_stratified(genre_folder, multi_csv):
    data = labelled.read_data(genre_folder, single_label=False)
    assert data.single_label and data.label_names == ["electronic", "orchestral"] and len(data) == 18
    train, val = labelled.split_data(data, 0.25, seed=7)
    assert labelled.split_data(data, 0.25, seed=7) == (train, val)
    assert labelled.split_data(data, 0.25, seed=8) != (train, val)
    assert sorted(train + val) == list(range(18))
    val_genres = [data.labels[i][0] for i in val]
    assert val_genres.count("electronic") == 2 and val_genres.count("orchestral") == 3  # round(0.25 * 6), (0.25 * 12)

    multi = labelled.read_data(multi_csv, single_label=False)
    assert not multi.single_label and multi.label_names == MULTI_LABELS
    train, val = labelled.split_data(multi, 0.3, seed=0)
    assert len(val) == 5 and not set(train) & set(val)
    targets = multi.targets()
    assert targets.shape == (18, 3) and targets.dtype == np.float32
    assert targets.sum(1).min() == 1 and targets.sum(1).max() == 2


def pairwise_auc(labels, scores):
    """ROC-AUC as the probability that a positive outranks a negative (ties count 1/2)."""
    positives, negatives = scores[labels == 1], scores[labels == 0]
    wins = (positives[:, None] > negatives[None, :]).sum() + 0.5 * (positives[:, None] == negatives[None, :]).sum()
    return wins / (len(positives) * len(negatives))


def average_precision(labels, scores):
    """Mean over the positives of the precision at their rank (no ties)."""
    order = np.argsort(-scores)
    hits = np.cumsum(labels[order])
    return np.mean([hits[k] / (k + 1) for k in range(len(order)) if labels[order][k] == 1])


def test_classification_metrics_against_a_direct_computation():
    rng = np.random.default_rng(1)
    targets = (rng.random((12, 4)) < 0.4).astype(np.float32)
    targets[:, 3] = 1.0  # a label present everywhere has no ROC-AUC: left out
    logits = rng.standard_normal((12, 4)) + 1.5 * targets
    metrics = labelled.classification_metrics(logits, targets, single_label=False)
    assert metrics["labels_scored"] == 3
    expected_roc = np.mean([pairwise_auc(targets[:, j], logits[:, j]) for j in range(3)])
    expected_pr = np.mean([average_precision(targets[:, j], logits[:, j]) for j in range(3)])
    assert metrics["roc_auc"] == pytest.approx(expected_roc, abs=1e-12)
    assert metrics["pr_auc"] == pytest.approx(expected_pr, abs=1e-12)

    classes = np.array([0, 2, 1, 1, 0])
    logits = np.eye(3)[[0, 2, 0, 1, 1]] * 2.0
    assert labelled.classification_metrics(logits, classes, single_label=True) == {"accuracy": 0.6}
    with pytest.raises(ValueError, match="NaN"):
        labelled.classification_metrics(np.full((2, 2), np.nan), np.array([0, 1]), single_label=True)


# ---------------------------------------------------------------------------------------------------------------------
# maest-finetune end to end
# ---------------------------------------------------------------------------------------------------------------------


def track_logits(model, extractor, path):
    inputs = extractor(load_audio(path)[0], sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        return model(**inputs).logits[0]


@pytest.mark.slow
def test_finetune_multi_label_end_to_end(base_repo, multi_csv, workdir, tmp_path, monkeypatch):
    output = workdir / "maest-multi-finetuned"
    metrics = finetune.main([
        "--data", str(multi_csv), "--model", str(base_repo), "--output-dir", str(output), "--val-fraction", "0.3",
        "--epochs", "3", "--batch-size", "4", "--learning-rate", "1e-3", "--crops-per-track", "2",
        "--patchout-time", "2", "--patchout-freq", "1", "--patchout-unstructured", "3", "--random-time-offset",
        "--gradient-checkpointing", "--feature-cache", str(tmp_path / "features"), "--early-stopping-patience", "2",
        "--no-progress",
    ])  # fmt: skip
    on_disk = json.loads((output / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(metrics))
    assert metrics["task"] == "multi-label" and metrics["labels"] == MULTI_LABELS
    assert (metrics["num_train_files"], metrics["num_val_files"]) == (13, 5)
    assert metrics["metric_for_best_model"] == "roc_auc"
    assert 1 <= metrics["epochs_run"] <= 3 and len(metrics["epochs"]) == metrics["epochs_run"]
    for row in metrics["epochs"]:
        assert {"epoch", "train_loss", "eval_loss", "roc_auc", "pr_auc", "labels_scored"} <= set(row)
    assert metrics["train_steps"] == metrics["epochs_run"] * 7  # 13 tracks x 2 crops / 4 per batch
    best = metrics["epochs"][metrics["best_epoch"] - 1]
    assert best["roc_auc"] == max(row["roc_auc"] for row in metrics["epochs"])
    for key in ("eval_loss", "roc_auc", "pr_auc"):  # the saved model is the best epoch's
        assert metrics["final"][key if key != "eval_loss" else "loss"] == pytest.approx(best[key], abs=1e-6)
    assert len(list((tmp_path / "features").glob("*.npy"))) == 18

    # The folder is a complete model repository; the checkpoints are gone.
    for name in (*CODE_FILES, "config.json", "model.safetensors", "preprocessor_config.json", "README.md"):
        assert (output / name).is_file(), name
    assert not (output / "checkpoints").exists()
    config = json.loads((output / "config.json").read_text())
    assert config["id2label"] == {"0": "electronic", "1": "opening", "2": "orchestral"}
    assert config["problem_type"] == "multi_label_classification"
    assert config["auto_map"]["AutoModelForAudioClassification"] == "modeling_maest.MaestForAudioClassification"
    assert config["custom_pipelines"] == json.loads((ROOT / "config.json").read_text())["custom_pipelines"]
    assert (config["train_patchout_time"], config["train_patchout_freq"], config["train_patchout_unstructured"]) == (2, 1, 3)
    # The card carries the licence of the base weights (the published MAEST ones by default) and no base_model line
    # for a local base folder.
    front_matter = (output / "README.md").read_text().split("---")[1]
    assert "license: cc-by-nc-sa-4.0" in front_matter and "base_model" not in front_matter

    # Reloaded, it reproduces the reported validation metrics (computed here from the model's own predictions).
    model = MaestForAudioClassification.from_pretrained(output).eval()
    extractor = MaestFeatureExtractor.from_pretrained(output)
    labels_by_path = {str(p.resolve()): set(line.split(",")[1].strip().split(";"))
                      for p, line in ((multi_csv.parent / line.split(",")[0], line)
                                      for line in multi_csv.read_text().splitlines()[1:])}  # fmt: skip
    logits = torch.stack([track_logits(model, extractor, path) for path in metrics["val_files"]]).numpy()
    targets = np.array([[label in labels_by_path[path] for label in MULTI_LABELS] for path in metrics["val_files"]])
    scored = [j for j in range(3) if 0 < targets[:, j].sum() < len(targets)]
    assert metrics["final"]["labels_scored"] == len(scored)
    expected = np.mean([pairwise_auc(targets[:, j].astype(float), logits[:, j]) for j in scored])
    assert metrics["final"]["roc_auc"] == pytest.approx(expected, abs=1e-6)

    # The pipeline loads the folder through its remote code and answers with the new labels.
    from transformers import pipeline

    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    pipe = pipeline("audio-classification", model=str(output), trust_remote_code=True)
    assert type(pipe).__name__ == "MaestAudioClassificationPipeline"
    path = metrics["val_files"][0]
    result = pipe(path, top_k=None)
    assert sorted(r["label"] for r in result) == MULTI_LABELS
    expected_scores = torch.sigmoid(torch.from_numpy(logits[0]))
    for r in result:
        assert r["score"] == pytest.approx(float(expected_scores[MULTI_LABELS.index(r["label"])]), abs=1e-5)


class FakeHfApi:
    calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs["repo_id"], kwargs))
        return "https://huggingface.co/me/genres/commit/0"


@pytest.mark.slow
def test_finetune_single_label_folder_frozen_encoder_and_push(base_repo, genre_folder, workdir, tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    FakeHfApi.calls = []
    output = workdir / "maest-genres-finetuned"
    metrics = finetune.main([
        "--data", str(genre_folder), "--model", str(base_repo), "--output-dir", str(output), "--freeze-encoder",
        "--epochs", "2", "--batch-size", "6", "--val-fraction", "0.25", "--early-stopping-patience", "0",
        "--push-to-hub", "me/genres", "--private", "--no-progress",
    ])  # fmt: skip
    assert metrics["task"] == "single-label" and metrics["labels"] == ["electronic", "orchestral"]
    assert metrics["metric_for_best_model"] == "accuracy" and metrics["epochs_run"] == 2
    assert {"accuracy", "eval_loss", "train_loss"} <= set(metrics["epochs"][0])
    assert 0.0 <= metrics["final"]["accuracy"] <= 1.0
    assert metrics["arguments"]["learning_rate"] == 1e-3  # the head-only default

    base = MaestForAudioClassification.from_pretrained(base_repo)
    tuned = MaestForAudioClassification.from_pretrained(output)
    for (name, ours), (_, theirs) in zip(tuned.audio_spectrogram_transformer.state_dict().items(),
                                         base.audio_spectrogram_transformer.state_dict().items()):  # fmt: skip
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0, msg=name)  # frozen
    assert tuned.config.problem_type == "single_label_classification"

    assert [call[0] for call in FakeHfApi.calls] == ["create_repo", "upload_folder"]
    assert FakeHfApi.calls[0][1] == "me/genres" and FakeHfApi.calls[0][2]["private"] is True
    assert Path(FakeHfApi.calls[1][2]["folder_path"]) == output

    from transformers import pipeline

    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    pipe = pipeline("audio-classification", model=str(output), trust_remote_code=True)
    audio = load_audio(genre_folder / "electronic" / "electronic_nexuiz_digital_pursuit_16k_mono_0.wav")[0]
    result = pipe({"array": audio, "sampling_rate": 16000}, top_k=None)
    assert sorted(r["label"] for r in result) == ["electronic", "orchestral"]
    assert sum(r["score"] for r in result) == pytest.approx(1.0, abs=1e-5)  # softmax for single-label
    with torch.no_grad():
        expected = track_logits(tuned.eval(), MaestFeatureExtractor(), genre_folder / "electronic" /
                                "electronic_nexuiz_digital_pursuit_16k_mono_0.wav").softmax(-1)  # fmt: skip
    assert result[0]["score"] == pytest.approx(float(expected.max()), abs=1e-5)


# ---------------------------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def tiny_wavs(tmp_path):
    tone = 0.1 * np.sin(2 * np.pi * 440 * np.arange(8000) / 16000)
    return [write_wav(tmp_path / f"clip{i}.wav", tone) for i in range(4)]


def run_expecting(error, match, argv, tmp_path):
    with pytest.raises(error, match=match):
        finetune.main([*argv, "--output-dir", str(tmp_path / "out"), "--model", "not-loaded", "--no-progress"])


def test_error_missing_audio_file(tiny_wavs, tmp_path):
    data = write_csv(tmp_path / "d.csv", [("clip0.wav", "a"), ("nowhere.wav", "b"), ("clip1.wav", "b")])
    run_expecting(FileNotFoundError, r"(?s)1 of the 3 audio files .*nowhere\.wav", ["--data", str(data)], tmp_path)
    run_expecting(FileNotFoundError, "does not exist", ["--data", str(tmp_path / "none.csv")], tmp_path)


def test_error_empty_label_set(tiny_wavs, tmp_path):
    data = write_csv(tmp_path / "d.csv", [("clip0.wav", "a"), ("clip1.wav", " ; ")])
    run_expecting(ValueError, r"line 3 \('clip1.wav'\) has no labels", ["--data", str(data)], tmp_path)


def test_error_csv_columns(tiny_wavs, tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("file,tags\nclip0.wav,a\n")
    run_expecting(ValueError, r"columns \['file', 'tags'\], but needs 'path' and 'labels'", ["--data", str(data)], tmp_path)
    data.write_text("path,labels\n")
    run_expecting(ValueError, "no rows", ["--data", str(data)], tmp_path)


def test_error_single_class_and_several_labels_in_single_label_mode(tiny_wavs, tmp_path):
    data = write_csv(tmp_path / "d.csv", [("clip0.wav", "rock"), ("clip1.wav", "rock")])
    run_expecting(ValueError, r"single label \['rock'\].*at least 2 different labels",
                  ["--data", str(data), "--single-label"], tmp_path)  # fmt: skip
    data = write_csv(tmp_path / "e.csv", [("clip0.wav", "rock;pop"), ("clip1.wav", "rock")])
    run_expecting(ValueError, r"has 2 labels \['rock', 'pop'\].*exactly one", ["--data", str(data), "--single-label"],
                  tmp_path)  # fmt: skip


def test_error_too_few_files_for_a_split(tiny_wavs, tmp_path):
    data = write_csv(tmp_path / "d.csv", [("clip0.wav", "rock"), ("clip1.wav", "pop")])
    run_expecting(ValueError, "2 files: too few", ["--data", str(data), "--single-label"], tmp_path)
    # Multi-label: the held-out file cannot score any label (each is present in all or none of 1 file).
    data = write_csv(tmp_path / "e.csv", [("clip0.wav", "rock"), ("clip1.wav", "pop"), ("clip2.wav", "pop")])
    run_expecting(ValueError, "No label can be scored", ["--data", str(data)], tmp_path)


def test_error_folders_duplicates_and_output(tiny_wavs, tmp_path):
    (tmp_path / "genres" / "rock").mkdir(parents=True)
    (tmp_path / "genres" / "jazz").mkdir()
    (tmp_path / "genres" / "rock" / "a.wav").write_bytes(tiny_wavs[0].read_bytes())
    run_expecting(ValueError, r"label folder .*jazz' holds no audio files", ["--data", str(tmp_path / "genres")], tmp_path)
    data = write_csv(tmp_path / "d.csv", [("clip0.wav", "a"), ("./clip0.wav", "b"), ("clip1.wav", "b")])
    run_expecting(ValueError, "listed twice", ["--data", str(data)], tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    data = write_csv(tmp_path / "f.csv", [("clip0.wav", "a"), ("clip1.wav", "b")])
    run_expecting(ValueError, "is not empty.*--overwrite", ["--data", str(data)], tmp_path)
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_cli_reports_one_line_errors(tiny_wavs, tmp_path, capsys):
    data = write_csv(tmp_path / "d.csv", [("clip0.wav", "")])
    assert finetune.cli(["--data", str(data), "--output-dir", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("maest-finetune: error:") and "has no labels" in err and "Traceback" not in err
    with pytest.raises(SystemExit):
        finetune.main(["--data", str(data), "--output-dir", str(tmp_path / "o"), "--epochs", "0"])


def test_card_fields_of_a_derived_model(tmp_path):
    """license and base_model of a fine-tuned model's card, from its base."""
    from configuration_maest import MaestConfig

    from maest_tools.hub import derived_card_fields

    plain = MaestConfig()
    assert derived_card_fields("mtg-upf/discogs-maest-10s-fs-129e", plain) == {
        "license": "cc-by-nc-sa-4.0", "base_model": "mtg-upf/discogs-maest-10s-fs-129e", "random_weights": False}
    folder = tmp_path / "converted"
    folder.mkdir()
    assert derived_card_fields(str(folder), plain)["base_model"] is None  # a local folder has no Hub name
    assert derived_card_fields(str(folder), plain)["license"] == "cc-by-nc-sa-4.0"  # no card: MAEST's weights
    (folder / "README.md").write_text("---\nlicense: mit\ntags:\n  - x\n---\n# card\nlicense: ignored\n")
    assert derived_card_fields(str(folder), plain)["license"] == "mit"
    demo = derived_card_fields(str(folder), MaestConfig(random_weights=True))
    assert demo == {"license": "apache-2.0", "base_model": None, "random_weights": True}
