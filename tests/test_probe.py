"""maest_tools.probe (maest-probe): track embeddings of a frozen MAEST block, their on-disk cache, and the MLP probe."""

import json
import os

import numpy as np
import pytest
import torch
from labelled_clips import labelled_fixtures, multi_label_sets, write_csv

from feature_extraction_maest import MaestFeatureExtractor, load_audio
from modeling_maest import MaestModel, window_starts


from maest_tools import probe


TINY_WINDOW = 126


# Three blocks so that --block chooses among several; 2 s windows, hop 100 frames (windows overlap).
workdir, pieces, base_repo = labelled_fixtures("probe", num_hidden_layers=3, max_length=TINY_WINDOW, window_hop=100)


@pytest.fixture(scope="module")
def multi_csv(workdir, pieces):
    rows = [(str(p["path"]), ";".join(multi_label_sets(p))) for p in pieces]
    return write_csv(workdir / "multi.csv", rows)


def pairwise_auc(labels, scores):
    """ROC-AUC as the probability that a positive outranks a negative (ties count 1/2)."""
    positives, negatives = scores[labels == 1], scores[labels == 0]
    wins = (positives[:, None] > negatives[None, :]).sum() + 0.5 * (positives[:, None] == negatives[None, :]).sum()
    return wins / (len(positives) * len(negatives))


def reference_embedding(model, path, block):
    """concat(CLS, dist, mean patch tokens) of block `block`'s output, from MaestModel's hidden states per window,
    averaged over the windows cut by hand (window_starts) -- independent of MaestModel.embed."""
    features = MaestFeatureExtractor()(load_audio(path)[0], sampling_rate=16000, return_tensors="pt")["input_values"]
    rows = []
    with torch.no_grad():
        for start in window_starts(features.shape[1], model.config.max_length, model.config.window_hop):
            hidden = model(features[:, start : start + model.config.max_length], output_hidden_states=True)
            tokens = hidden.hidden_states[block + 1][0]  # hidden_states[0] is the embeddings output
            rows.append(torch.cat([tokens[0], tokens[1], tokens[2:].mean(0)]))
    return torch.stack(rows).mean(0).numpy()


@pytest.mark.slow
def test_probe_end_to_end_and_cache_reuse(base_repo, multi_csv, workdir, pieces, monkeypatch):
    output = workdir / "probe-multi"
    argv = ["--data", str(multi_csv), "--model", str(base_repo), "--output-dir", str(output), "--block", "1",
            "--val-fraction", "0.3", "--epochs", "30", "--patience", "10", "--no-progress"]  # fmt: skip
    first = probe.main(argv)
    assert first["embedding_cache"] == {"folder": str(output / "embedding_cache"), "hits": 0, "computed": 18}
    assert len(list((output / "embedding_cache").glob("*.npy"))) == 18
    assert first["task"] == "multi-label" and first["block"] == 1 and first["embedding_size"] == 3 * 32
    assert first["labels"] == ["electronic", "opening", "orchestral"]
    assert (first["num_train_files"], first["num_val_files"]) == (13, 5)
    assert json.loads((output / "metrics.json").read_text()) == json.loads(json.dumps(first))
    rows = first["epochs"]
    assert len(rows) == first["epochs_run"] <= 30
    for row in rows:
        assert {"epoch", "train_loss", "val_loss", "roc_auc", "pr_auc", "labels_scored"} <= set(row)
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    best = rows[first["best_epoch"] - 1]
    assert best["roc_auc"] == max(row["roc_auc"] for row in rows)
    assert first["final"] == {k: v for k, v in best.items() if k != "epoch"}
    print(f"\nprobe train loss {rows[0]['train_loss']:.4f} -> {rows[-1]['train_loss']:.4f}, "
          f"best epoch {first['best_epoch']}, val ROC-AUC {first['final']['roc_auc']:.3f}")  # fmt: skip

    # The cache holds the paper's embedding of every block (one pass), computed here from the hidden states.
    model = MaestModel.from_pretrained(base_repo).eval()
    identity = probe.embedding_identity(str(base_repo), model.config, MaestFeatureExtractor())
    cache = probe.EmbeddingCache(output / "embedding_cache", identity, 1)
    for piece in (pieces[0], pieces[13]):
        cached = np.load(cache.entry(piece["path"]))
        assert cached.shape == (3, 3 * 32)
        for block in range(3):
            expected = reference_embedding(model, piece["path"], block)
            np.testing.assert_allclose(cached[block], expected, atol=1e-5, rtol=0)

    # The saved probe reproduces the reported validation ROC-AUC from the cached embeddings.
    loaded, config = probe.load_probe(output)
    assert config["labels"] == first["labels"] and config["block"] == 1 and not config["single_label"]
    labels_of = {str(p["path"]): multi_label_sets(p) for p in pieces}
    targets = np.array([[name in labels_of[path] for name in config["labels"]] for path in first["val_files"]])
    with torch.no_grad():
        val_x = np.stack([np.load(cache.entry(path))[1] for path in first["val_files"]])
        scores = loaded(torch.from_numpy(val_x)).numpy()
    scored = [j for j in range(3) if 0 < targets[:, j].sum() < len(targets)]
    expected = np.mean([pairwise_auc(targets[:, j], scores[:, j]) for j in scored])
    assert first["final"]["roc_auc"] == pytest.approx(expected, abs=1e-6)

    # Second run: every embedding from the cache, the model is neither loaded nor run; same split, same probe.
    def forbidden(*args, **kwargs):
        raise AssertionError("the model must not run when every embedding is cached")

    monkeypatch.setattr(MaestModel, "embed", forbidden)
    monkeypatch.setattr(MaestModel, "from_pretrained", forbidden)
    second = probe.main(argv)
    assert second["embedding_cache"]["hits"] == 18 and second["embedding_cache"]["computed"] == 0
    assert second["epochs"] == first["epochs"] and second["final"] == first["final"]


@pytest.mark.slow
def test_cache_keys_follow_block_and_file_changes(base_repo, workdir, pieces, tmp_path):
    csv = write_csv(tmp_path / "few.csv", [(str(p["path"]), p["genre"]) for p in pieces[4:10]])
    cache = tmp_path / "cache"
    argv = ["--data", str(csv), "--single-label", "--model", str(base_repo), "--cache-dir", str(cache),
            "--val-fraction", "0.4", "--epochs", "3", "--no-progress"]  # fmt: skip
    first = probe.main([*argv, "--output-dir", str(tmp_path / "a"), "--block", "0"])
    assert first["embedding_cache"]["computed"] == 6
    # Another block reads the same entries (they hold every block): nothing is computed, and the probe trains on
    # that block's rows, not block 0's.
    other_block = probe.main([*argv, "--output-dir", str(tmp_path / "b"), "--block", "2"])
    assert other_block["embedding_cache"] == {"folder": str(cache), "hits": 6, "computed": 0}
    assert other_block["epochs"][0]["train_loss"] != first["epochs"][0]["train_loss"]
    assert probe.main([*argv, "--output-dir", str(tmp_path / "c"), "--block", "-3"])["embedding_cache"]["hits"] == 6
    # A re-written file (new modification time) is embedded again; the others are read.
    changed = pieces[5]["path"]
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    again = probe.main([*argv, "--output-dir", str(tmp_path / "d"), "--block", "0"])
    assert (again["embedding_cache"]["hits"], again["embedding_cache"]["computed"]) == (5, 1)
    assert len(list(cache.glob("*.npy"))) == 7


@pytest.mark.slow
def test_single_label_probe_and_reload(tmp_path, base_repo, pieces):
    folder = tmp_path / "genres"
    for piece in pieces:
        (folder / piece["genre"]).mkdir(parents=True, exist_ok=True)
        (folder / piece["genre"] / piece["path"].name).symlink_to(piece["path"])
    output = tmp_path / "out"
    metrics = probe.main(["--data", str(folder), "--model", str(base_repo), "--output-dir", str(output),
                          "--cache-dir", str(tmp_path / "cache"), "--block", "-1", "--epochs", "40",
                          "--no-progress"])  # fmt: skip
    assert metrics["task"] == "single-label" and metrics["metric_for_best_model"] == "accuracy"
    assert metrics["labels"] == ["electronic", "orchestral"] and metrics["block"] == 2  # -1: the last of 3
    assert {"accuracy", "val_loss", "train_loss"} <= set(metrics["final"])

    # Recompute the validation accuracy from the saved probe and the cached embeddings.
    loaded, config = probe.load_probe(output)
    model = MaestModel.from_pretrained(base_repo)
    identity = probe.embedding_identity(str(base_repo), model.config, MaestFeatureExtractor())
    cache = probe.EmbeddingCache(tmp_path / "cache", identity, 2)
    data = probe.training_and_validation_data(str(folder), None, True, 0.2, 0)[2]
    embeddings = torch.from_numpy(np.stack([np.load(cache.entry(p))[2] for p in data.paths]))
    with torch.no_grad():
        predicted = loaded(embeddings).argmax(1).numpy()
    assert np.mean(predicted == data.targets(config["labels"])) == pytest.approx(metrics["final"]["accuracy"])


def test_train_probe_separates_clusters():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((3, 40)) * 3
    labels = np.repeat(np.arange(3), 30)
    x = (centres[labels] + rng.standard_normal((90, 40))).astype(np.float32)
    order = rng.permutation(90)
    train, val = order[:60], order[60:]
    model, history, best = probe.train_probe(x[train], labels[train], x[val], labels[val], single_label=True,
                                             hidden_size=16, epochs=100, patience=10, progress=False)  # fmt: skip
    assert history[best - 1]["accuracy"] == 1.0
    assert history[best - 1]["val_loss"] < 0.5 * history[0]["val_loss"]
    with torch.no_grad():
        assert (model(torch.from_numpy(x[val])).argmax(1).numpy() == labels[val]).all()


def test_train_probe_stops_early_and_keeps_the_best_epoch():
    """Random multi-hot labels: the probe overfits, validation stops improving, training ends `patience` later."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((80, 24)).astype(np.float32)
    y = (rng.random((80, 3)) < 0.5).astype(np.float32)
    model, history, best = probe.train_probe(x[:60], y[:60], x[60:], y[60:], single_label=False, hidden_size=64,
                                             dropout=0.0, learning_rate=1e-2, epochs=500, patience=5,
                                             progress=False)  # fmt: skip
    assert len(history) - best == 5 and len(history) < 500
    best_row = history[best - 1]
    assert all((row["roc_auc"], -row["val_loss"]) <= (best_row["roc_auc"], -best_row["val_loss"]) for row in history)
    with torch.no_grad():  # the returned weights are the best epoch's
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(torch.from_numpy(x[60:])), torch.from_numpy(y[60:]))
    assert float(loss) == pytest.approx(best_row["val_loss"], rel=1e-5)


def test_block_out_of_range_fails_before_embedding(base_repo, multi_csv, tmp_path):
    with pytest.raises(ValueError, match=r"--block 3 is outside the model's 3 blocks: use 0\.\.2"):
        probe.main(["--data", str(multi_csv), "--model", str(base_repo), "--output-dir", str(tmp_path / "o"),
                    "--block", "3", "--val-fraction", "0.3"])  # fmt: skip
    assert not (tmp_path / "o").exists()
    with pytest.raises(ValueError, match="--dropout"):
        probe.main(["--data", str(multi_csv), "--model", str(base_repo), "--output-dir", str(tmp_path / "o"),
                    "--dropout", "1.5"])  # fmt: skip
