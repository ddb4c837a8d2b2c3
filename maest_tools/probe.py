# Copyright 2026 The MAEST for transformers authors. Licensed under the Apache License, Version 2.0.
"""Linear-probe-style evaluation of MAEST: a small MLP trained on frozen track embeddings (the paper's protocol).

Each audio file becomes one track embedding: the output of one transformer block (`--block`, 0-based, default the
middle block: 6 = the 7th of MAEST's 12) of the frozen model, `concat(CLS, distillation, mean of the patch tokens)`
(3 x 768 = 2304 values), averaged over the track's analysis windows (`MaestModel.embed`). A probe
`Linear(2304 -> hidden) -> ReLU -> Dropout -> Linear(hidden -> labels)` on standardised embeddings is trained with
Adam on the training files, with early stopping on the validation score (ROC-AUC for multi-label, accuracy for single-label).

Embeddings are cached on disk (`--cache-dir`, default `OUTPUT_DIR/embedding_cache`), one `.npy` per audio file
holding the track embedding of EVERY block (`(num_hidden_layers, 3 * hidden_size)` float32, 110 KB for MAEST),
computed in one pass through the encoder. The key is the model (path or Hub commit, weight files, configuration),
the feature extractor settings and the audio file (path, size, modification time), not the block: a second probe
on the same files and model, for any block, reads them instead of running the model. Entries are written as soon as
they are computed, so an interrupted run resumes.

Data (`--data`, `--val-data`, `--single-label`, `--val-fraction`, `--seed`) work as in `maest-finetune`
(`maest_tools.labelled`): a `path,labels` CSV (labels separated by ';') or a folder with one sub-folder per label.

Output (`--output-dir`): `metrics.json` (per-epoch training loss and validation loss and metrics, the best epoch and
its metrics, cache statistics), `probe.safetensors` + `probe_config.json` (load with `load_probe`).

Example::

    maest-probe --data my_tracks.csv --output-dir probe-block6
    maest-probe --data my_tracks.csv --output-dir probe-block4 --block 4 --cache-dir probe-block6/embedding_cache
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .cli import (
    DEFAULT_MODEL,
    add_block_argument,
    non_negative_int,
    parse_arguments,
    positive,
    progress_bars_on,
    resolve_block,
    run_main,
)
from .devices import add_device_argument, resolve_device
from .features import decode_features, load_feature_extractor
from .files import file_fingerprint, save_npy
from .labelled import (
    BEST_METRIC,
    add_data_arguments,
    classification_metrics,
    data_summary,
    training_and_validation_data,
)


logger = logging.getLogger("maest.probe")

# Configuration fields that do not change the encoder's embeddings (labels, head, training-only options, output
# switches, bookkeeping); every other field is part of the cache key.
_CONFIG_FIELDS_NOT_IN_KEY = frozenset(
    {
        "_name_or_path", "transformers_version", "architectures", "auto_map", "custom_pipelines", "id2label",
        "label2id", "problem_type", "head_layer_norm_eps", "output_attentions", "output_hidden_states", "return_dict",
        "train_patchout_time", "train_patchout_freq", "train_patchout_unstructured", "train_random_time_offset",
        "max_windows_per_batch", "hidden_dropout_prob", "attention_probs_dropout_prob", "initializer_range",
        "chunk_size_feed_forward", "is_encoder_decoder", "_commit_hash", "dtype",
    }
)  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------------
# Embeddings and their cache
# ---------------------------------------------------------------------------------------------------------------------


def model_identity(model_name_or_path: str, config) -> dict:
    """What identifies a model's embeddings: its location (local path, or Hub id + commit), its weight files (name,
    size, modification time) and a hash of its configuration (labels and training-only fields left out)."""
    identity = {"model": model_name_or_path}
    try:
        from transformers.utils import cached_file

        config_file = Path(cached_file(model_name_or_path, "config.json"))
        folder = config_file.parent
        identity["folder"] = str(folder.resolve())  # a Hub snapshot folder is named after the commit
        identity["weights"] = sorted(
            (p.name, p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.iterdir()
            if p.suffix in (".safetensors", ".bin") or p.name.endswith(".safetensors.index.json")
        )
    except (OSError, ValueError):
        pass
    settings = {k: v for k, v in config.to_dict().items() if k not in _CONFIG_FIELDS_NOT_IN_KEY}
    identity["config_sha256"] = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()
    return identity


def embedding_identity(model_name_or_path: str, config, feature_extractor) -> dict:
    """The cache identity of a model's track embeddings (all blocks): the model (see `model_identity`) and the
    feature extractor's normalisation settings."""
    settings = feature_extractor.to_dict()
    identity = model_identity(model_name_or_path, config)
    identity["layout"] = "every block"  # entries hold (num_hidden_layers, dim); older one-block entries never match
    identity["extractor"] = {k: settings.get(k) for k in ("mean", "std", "do_normalize", "sampling_rate")}
    return identity


class EmbeddingCache:
    """Track embeddings of every block on disk: `folder/<key>.npy` (float32, `(num_hidden_layers, 3 * hidden_size)`,
    row b = the embedding after block b), one file per audio file.

    The key hashes `identity` (model, extractor settings) with the audio file's path, size and modification time, so
    a changed file or model is recomputed and everything else is read back, whatever the block. `embeddings` returns
    the rows of `block`. `hits` and `computed` count the files read from the cache and computed by this object.
    """

    def __init__(self, folder: str | os.PathLike, identity: dict, block: int):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.identity = identity
        self.block = block
        self.hits = 0
        self.computed = 0

    def entry(self, path: Path) -> Path:
        blob = json.dumps({"identity": self.identity, "file": file_fingerprint(path)}, sort_keys=True, default=str)
        return self.folder / f"{hashlib.sha256(blob.encode()).hexdigest()[:40]}.npy"

    def embeddings(
        self, paths: Sequence[Path], compute: Callable[[Path], np.ndarray], progress: bool = True
    ) -> np.ndarray:
        """`(files, dim)` embeddings of `self.block` for `paths`; `compute(path)` (every block's embedding,
        `(num_hidden_layers, dim)`) runs only for the files not cached yet."""
        from tqdm.auto import tqdm

        rows = []
        for path in tqdm(paths, desc="Embeddings", unit="file", disable=not progress):
            entry = self.entry(path)
            if entry.exists():
                rows.append(np.load(entry)[self.block])
                self.hits += 1
                continue
            embeddings = np.asarray(compute(path), dtype=np.float32)
            save_npy(entry, embeddings)
            rows.append(embeddings[self.block])
            self.computed += 1
        return np.stack(rows)


class TrackEmbedder:
    """Computes the track embeddings of an audio file after every block, in one pass of a frozen MAEST (loaded on
    first use): `(num_hidden_layers, 3 * hidden_size)`, row b as `MaestModel.embed(..., block=b)` gives it."""

    def __init__(self, model_name_or_path: str, device: str, feature_extractor):
        self.model_name_or_path, self.device = model_name_or_path, device
        self.feature_extractor = feature_extractor
        self._model = None

    @property
    def model(self):
        if self._model is None:
            from modeling_maest import MaestModel

            self._model = MaestModel.from_pretrained(self.model_name_or_path).to(self.device).eval()
        return self._model

    @torch.inference_mode()
    def __call__(self, path: Path) -> np.ndarray:
        from modeling_maest import check_input_values

        features, _info = decode_features(path, self.feature_extractor)
        model = self.model
        blocks = tuple(range(model.config.num_hidden_layers))
        input_values = torch.from_numpy(features)[None].to(self.device)
        lengths = check_input_values(model.config, input_values, None)

        def window_embeddings(windows, window_lengths):  # (n, blocks, dim): every block kept in one pass
            embeddings = model.forward_features(windows, window_lengths, embedding_blocks=blocks).embeddings
            return {"embeddings": torch.stack(embeddings, dim=1)}

        results = model.run_windows(input_values, lengths, window_embeddings)
        embeddings, window_mask = results.values["embeddings"][0], results.window_mask[0]  # (windows, blocks, dim)
        track = embeddings[window_mask].mean(dim=0)  # equal-weight mean of the track's windows, as `embed`
        return track.float().cpu().numpy()


# ---------------------------------------------------------------------------------------------------------------------
# The probe
# ---------------------------------------------------------------------------------------------------------------------


class MLPProbe(nn.Module):
    """`Linear(input -> hidden) -> ReLU -> Dropout -> Linear(hidden -> labels)` on standardised embeddings.

    `mean` and `std` (buffers, `(input_size,)`) standardise the input with the training set's statistics; `forward`
    takes raw embeddings `(batch, input_size)` and returns logits `(batch, num_labels)` (sigmoid scores for
    multi-label probes, softmax for single-label ones).
    """

    def __init__(self, input_size: int, hidden_size: int, num_labels: int, dropout: float = 0.5):
        super().__init__()
        self.register_buffer("mean", torch.zeros(input_size))
        self.register_buffer("std", torch.ones(input_size))
        self.layers = nn.Sequential(
            nn.Linear(input_size, hidden_size), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden_size, num_labels)
        )

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.layers((embeddings - self.mean) / self.std)


def _loss_function(single_label: bool):
    return nn.CrossEntropyLoss() if single_label else nn.BCEWithLogitsLoss()


def train_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    single_label: bool,
    hidden_size: int = 256,
    dropout: float = 0.5,
    learning_rate: float = 1e-3,
    weight_decay: float = 0.0,
    epochs: int = 200,
    batch_size: int = 64,
    patience: int = 20,
    seed: int = 0,
    progress: bool = True,
) -> tuple[MLPProbe, list[dict], int]:
    """Train an `MLPProbe` with Adam; keep the weights of the best validation epoch.

    The best epoch has the highest validation score (ROC-AUC multi-label, accuracy single-label), ties broken by
    the lower validation loss; training stops after `patience` epochs without a better one (0 = run all epochs).

    Returns:
        `(probe, history, best_epoch)`: the probe with the best epoch's weights (eval mode), one dict per epoch
        (`epoch`, `train_loss`, `val_loss` and the metrics of `classification_metrics`) and the 1-based best epoch.
    """
    from tqdm.auto import tqdm

    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x = torch.as_tensor(train_x, dtype=torch.float32)
    y = torch.as_tensor(train_y)
    vx = torch.as_tensor(val_x, dtype=torch.float32)
    vy = torch.as_tensor(val_y)
    num_labels = int(train_y.max()) + 1 if single_label else train_y.shape[1]
    probe = MLPProbe(x.shape[1], hidden_size, num_labels, dropout)
    probe.mean.copy_(x.mean(dim=0))
    # Constant dimensions (std 0) are left unscaled rather than divided by zero.
    std = x.std(dim=0, unbiased=False) if len(x) > 1 else torch.ones(x.shape[1])
    probe.std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))
    optimizer = torch.optim.Adam(probe.parameters(), lr=learning_rate, weight_decay=weight_decay)
    loss_fn = _loss_function(single_label)
    metric = BEST_METRIC[single_label]

    history, best, best_state, best_epoch, waited = [], None, None, 0, 0
    bar = tqdm(range(1, epochs + 1), desc="Probe", unit="epoch", disable=not progress)
    for epoch in bar:
        probe.train()
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for begin in range(0, len(x), batch_size):
            index = order[begin : begin + batch_size]
            loss = loss_fn(probe(x[index]), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(index)
        probe.eval()
        with torch.no_grad():
            val_logits = probe(vx)
            val_loss = float(loss_fn(val_logits, vy))
        row = {"epoch": epoch, "train_loss": total / len(x), "val_loss": val_loss}
        row.update(classification_metrics(val_logits.numpy(), val_y, single_label))
        history.append(row)
        score = (row[metric], -val_loss)
        if best is None or score > best:
            best, best_epoch, waited = score, epoch, 0
            best_state = {k: v.clone() for k, v in probe.state_dict().items()}
        else:
            waited += 1
        bar.set_postfix({metric: f"{row[metric]:.3f}", "best": best_epoch})
        if patience and waited >= patience:
            break
    probe.load_state_dict(best_state)
    return probe.eval(), history, best_epoch


def save_probe(probe: MLPProbe, folder: Path, config: dict) -> None:
    """Write `probe.safetensors` (weights and standardisation) and `probe_config.json` (sizes, labels, task)."""
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in probe.state_dict().items()}, str(folder / "probe.safetensors"))
    (folder / "probe_config.json").write_text(json.dumps(config, indent=2) + "\n")


def load_probe(folder: str | os.PathLike) -> tuple[MLPProbe, dict]:
    """Load a probe written by this script: returns `(probe in eval mode, probe_config)`; the config holds
    `labels` (output order), `single_label`, `model` and `block` (which embeddings it takes)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    config = json.loads((folder / "probe_config.json").read_text())
    probe = MLPProbe(config["input_size"], config["hidden_size"], len(config["labels"]), config["dropout"])
    probe.load_state_dict(load_file(str(folder / "probe.safetensors")))
    return probe.eval(), config


# ---------------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maest-probe",
        description="Train a small MLP probe on frozen MAEST track embeddings of a chosen block.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_data_arguments(parser)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="Frozen MAEST: a Hub repo id or a local folder.")
    add_block_argument(parser)
    parser.add_argument("--output-dir", required=True, help="Folder for metrics.json, probe.safetensors and "
                        "probe_config.json (files from an earlier run there are replaced).")
    parser.add_argument("--cache-dir", help="Embedding cache folder; default OUTPUT_DIR/embedding_cache. It holds "
                        "every block's embedding of each file (one pass), so runs that share it (any --block, other "
                        "probe settings) embed each file once per model.")
    parser.add_argument("--hidden-size", type=positive("--hidden-size", int), default=256,
                        help="Units of the probe's hidden layer.")
    parser.add_argument("--dropout", type=float, default=0.5, help="Dropout probability after the hidden layer.")
    parser.add_argument("--epochs", type=positive("--epochs", int), default=200, help="Most training epochs.")
    parser.add_argument("--batch-size", type=positive("--batch-size", int), default=64, help="Embeddings per step.")
    parser.add_argument("--learning-rate", type=positive("--learning-rate"), default=1e-3, help="Adam learning rate.")
    parser.add_argument("--weight-decay", type=float, default=0.0, help="Adam L2 weight decay.")
    parser.add_argument("--patience", type=non_negative_int, default=20, help="Stop after this many epochs without "
                        "a better validation score; 0 = run all --epochs.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the split, the probe's initial weights and "
                        "the batch order.")
    add_device_argument(parser, "the embeddings are computed (the probe trains on the CPU)")
    parser.add_argument("--no-progress", action="store_true", help="No progress bars (there are none when "
                        "stderr is not a terminal).")
    return parser


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the probe; returns the contents of metrics.json. Raises ValueError / FileNotFoundError on bad input."""
    args = parse_arguments(build_parser(), argv)
    if not 0 <= args.dropout < 1:
        raise ValueError(f"--dropout is a probability in [0, 1), got {args.dropout}.")
    device = resolve_device(args.device)

    data, train_data, val_data = training_and_validation_data(
        args.data, args.val_data, args.single_label, args.val_fraction, args.seed
    )
    single_label, label_names = data.single_label, data.label_names

    from configuration_maest import MaestConfig

    config = MaestConfig.from_pretrained(args.model)
    block = resolve_block(args.block, config.num_hidden_layers)
    feature_extractor = load_feature_extractor(args.model)
    identity = embedding_identity(args.model, config, feature_extractor)
    output_dir = Path(args.output_dir).expanduser()
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"--output-dir {str(output_dir)!r} is a file; give a folder.")
    output_dir.mkdir(parents=True, exist_ok=True)
    cache = EmbeddingCache(args.cache_dir or output_dir / "embedding_cache", identity, block)
    embedder = TrackEmbedder(args.model, device, feature_extractor)
    progress = progress_bars_on(not args.no_progress)  # off in logs and pipes
    train_x = cache.embeddings(train_data.paths, embedder, progress)
    val_x = cache.embeddings(val_data.paths, embedder, progress)
    logger.info("Embeddings: %d read from %s, %d computed.", cache.hits, cache.folder, cache.computed)

    train_y, val_y = train_data.targets(label_names), val_data.targets(label_names)
    probe, history, best_epoch = train_probe(
        train_x, train_y, val_x, val_y, single_label,
        hidden_size=args.hidden_size, dropout=args.dropout, learning_rate=args.learning_rate,
        weight_decay=args.weight_decay, epochs=args.epochs, batch_size=args.batch_size, patience=args.patience,
        seed=args.seed, progress=progress,
    )  # fmt: skip
    final = dict(history[best_epoch - 1])
    final.pop("epoch")
    save_probe(
        probe,
        output_dir,
        {
            "input_size": int(train_x.shape[1]), "hidden_size": args.hidden_size, "dropout": args.dropout,
            "labels": list(label_names), "single_label": single_label, "model": args.model, "block": block,
        },
    )  # fmt: skip
    metrics = {
        "model": args.model,
        "block": block,
        "embedding_size": int(train_x.shape[1]),
        **data_summary(data, train_data, val_data, args),
        "embedding_cache": {"folder": str(cache.folder), "hits": cache.hits, "computed": cache.computed},
        "metric_for_best_model": BEST_METRIC[single_label],
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "stopped_early": len(history) < args.epochs,
        "epochs": history,
        "final": final,
        "arguments": vars(args),
    }
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    logger.info(
        "Probe on block %d: best epoch %d, %s. Saved to %s.", block, best_epoch,
        ", ".join(f"{k} {v:.4f}" for k, v in final.items() if isinstance(v, float)), output_dir,
    )  # fmt: skip
    return metrics


def cli(argv: Sequence[str] | None = None) -> int:
    """The `maest-probe` command: bad input prints one line `maest-probe: error: ...`, exit status 2."""
    return run_main(main, argv, "maest-probe")


if __name__ == "__main__":
    sys.exit(cli())
