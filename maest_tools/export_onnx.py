# Copyright 2026 The MAEST for transformers authors. Licensed under the Apache License, Version 2.0.
"""Export MAEST to ONNX: one analysis window in, the window's logits and the paper's embedding out.

    maest-export-onnx --model path/to/maest-folder --output maest.onnx [--opset 18] [--block 6]

The ONNX graph runs ONE window per batch item:

* input ``input_values``: float32 ``(batch, frames, 96)``, normalised log-mel frames of `MaestFeatureExtractor`,
  ``patch_size`` (16) <= frames <= ``max_length`` (626 for the 10 s models). Both ``batch`` and ``frames`` are
  dynamic axes. A window shorter than ``max_length`` uses the first time positions, as the PyTorch model does.
* output ``logits``: float32 ``(batch, num_labels)``, the head's logits of each window (``sigmoid`` gives MAEST's
  independent style probabilities).
* output ``embedding``: float32 ``(batch, 3 * hidden_size)`` (2304 for MAEST), the paper's embedding of the window:
  ``concat(h_cls, h_dist, mean of the patch tokens)`` of the output of block ``--block`` (0-based, default the middle
  block, before the final LayerNorm), the same values as ``model.embed(window, block=K)``.

Whole tracks stay in Python, as in the PyTorch model: cut the track's frames into windows of ``max_length`` frames
starting at ``modeling_maest.window_starts(frames, max_length, window_hop)`` (a window every ``window_hop`` frames
and one more aligned to the end), run the windows (in batches), then average: the track probability of each label is
the mean of the window probabilities, the track embedding the mean of the window embeddings. `MaestOnnxRunner`
does exactly that (`MaestOnnxRunner.analyse`) and checks inputs with clear errors; the windowing parameters, the
labels and the embedding block are stored in the ONNX file's metadata (``metadata_props``).

After exporting, the script runs the ONNX file with onnxruntime on a full and a shorter random window and checks it
against PyTorch (max abs difference <= 1e-4 on logits and embedding; ``--no-check`` skips it).

The exporter is ``torch.onnx.export(..., dynamo=True)`` (torch.export + onnxscript), which keeps the time axis
symbolic through the slice of the position table; it needs ONNX opset 18 or later.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from modeling_maest import MaestForAudioClassification, pool_window_logits, window_starts

from .cli import EXIT_USAGE, UsageError, add_block_argument, resolve_block


MIN_OPSET = 18
DEFAULT_OPSET = 18
CHECK_TOLERANCE = 1e-4
METADATA_PREFIX = "maest."


class MaestOnnxWindow(nn.Module):
    """One-window MAEST for export: `input_values (batch, frames, mel)` -> `(logits, embedding)`.

    Args:
        model (`MaestForAudioClassification`): the model to export (kept as is; put it in eval mode).
        embedding_block (`int`, *optional*): 0-based block whose output gives the embedding (negative counts from
            the end); default the middle block, `num_hidden_layers // 2`.
    """

    def __init__(self, model: MaestForAudioClassification, embedding_block: int | None = None):
        super().__init__()
        layers = model.config.num_hidden_layers
        if embedding_block is None:
            embedding_block = layers // 2
        if (
            isinstance(embedding_block, bool)
            or not isinstance(embedding_block, int)
            or not -layers <= embedding_block < layers
        ):
            raise ValueError(
                f"embedding_block must be an int in 0..{layers - 1} (or -{layers}..-1 from the end), got "
                f"{embedding_block!r}; the model has {layers} blocks."
            )
        self.model = model
        self.embedding_block = embedding_block % layers

    def forward(self, input_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # The model's own one-window path (embeddings, blocks, final norm of CLS + distillation, head, and the
        # embedding captured after the block) without the input checks of `forward`, whose data-dependent
        # branches (`bool(isfinite(x).all())`, `int(lengths.max())`) torch.export cannot trace. `MaestOnnxRunner`
        # checks the inputs instead.
        outputs = self.model.window_forward(input_values, None, embedding_block=self.embedding_block)
        return outputs[0], outputs[-1]


def _metadata(model: MaestForAudioClassification, embedding_block: int) -> dict[str, str]:
    config = model.config
    id2label = {int(index): label for index, label in config.id2label.items()}
    return {
        METADATA_PREFIX + "max_length": str(config.max_length),
        METADATA_PREFIX + "window_hop": str(config.window_hop),
        METADATA_PREFIX + "patch_size": str(config.patch_size),
        METADATA_PREFIX + "num_mel_bins": str(config.num_mel_bins),
        METADATA_PREFIX + "num_labels": str(config.num_labels),
        METADATA_PREFIX + "hidden_size": str(config.hidden_size),
        METADATA_PREFIX + "max_windows_per_batch": str(config.max_windows_per_batch),
        METADATA_PREFIX + "embedding_block": str(embedding_block),
        METADATA_PREFIX + "problem_type": str(config.problem_type),
        METADATA_PREFIX + "id2label": json.dumps([id2label[i] for i in range(config.num_labels)]),
    }


def export_onnx(
    model: MaestForAudioClassification,
    output: str | Path,
    opset: int = DEFAULT_OPSET,
    embedding_block: int | None = None,
    check: bool = True,
) -> Path:
    """Export `model` to an ONNX file of one-window inference (see the module docstring) and return its path.

    Args:
        model (`MaestForAudioClassification`): the model, on the CPU in float32.
        output (`str` or `Path`): the .onnx file to write (its folder is created).
        opset (`int`, *optional*, defaults to 18): ONNX opset, at least 18 (the dynamo exporter's minimum).
        embedding_block (`int`, *optional*): 0-based block of the embedding output; default the middle block
            (`num_hidden_layers // 2`, 6 for MAEST).
        check (`bool`, *optional*, defaults to `True`): run the file with onnxruntime on a full and a shorter random
            window and raise if logits or embedding differ from PyTorch by more than 1e-4.

    Raises:
        ValueError: bad opset or block, or a configuration the dynamic time axis cannot express (time patchout).
        RuntimeError: the onnxruntime check failed.
    """
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < MIN_OPSET:
        raise ValueError(f"opset must be an int >= {MIN_OPSET} (torch.onnx's dynamo exporter), got {opset!r}.")
    config = model.config
    if config.inference_patchout_time != 1:
        raise ValueError(
            f"The model has inference_patchout_time={config.inference_patchout_time}: the kept time columns depend "
            "on the number of frames, which the exported graph keeps dynamic. Export with "
            "model.config.inference_patchout_time = 1."
        )
    wrapper = MaestOnnxWindow(model.eval(), embedding_block).eval()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    # Batch 2 and a full window as the example, so that neither axis is specialised to the example's size.
    example = torch.randn(2, config.max_length, config.num_mel_bins, generator=torch.Generator().manual_seed(0))
    batch = torch.export.Dim("batch", min=1, max=65536)
    frames = torch.export.Dim("frames", min=config.patch_size, max=config.max_length)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            wrapper,
            (example,),
            dynamo=True,
            input_names=["input_values"],
            output_names=["logits", "embedding"],
            dynamic_shapes=({0: batch, 1: frames},),
            opset_version=opset,
            verbose=False,
        )
    program.model.metadata_props.update(_metadata(model, wrapper.embedding_block))
    program.save(str(output))
    if check:
        check_onnx(output, wrapper)
    return output


def check_onnx(path: str | Path, wrapper: MaestOnnxWindow, tolerance: float = CHECK_TOLERANCE) -> dict[str, float]:
    """Max abs difference between onnxruntime and PyTorch on a full and a shorter random window; raises if too big."""
    runner = MaestOnnxRunner(path)
    config = wrapper.model.config
    generator = torch.Generator().manual_seed(1)
    shorter = max(config.patch_size, config.max_length // 2 + 3)
    differences = {}
    for batch, frames in ((1, config.max_length), (3, shorter)):
        inputs = torch.randn(batch, frames, config.num_mel_bins, generator=generator)
        with torch.no_grad():
            expected = [tensor.numpy() for tensor in wrapper(inputs)]
        produced = runner(inputs.numpy())
        for name, want, got in zip(("logits", "embedding"), expected, produced, strict=True):
            difference = float(np.abs(want - got).max())
            differences[f"{name}_b{batch}_f{frames}"] = difference
            if not difference <= tolerance:
                raise RuntimeError(
                    f"onnxruntime and PyTorch differ by {difference:.3g} (> {tolerance:g}) on {name} for a batch of "
                    f"{batch} windows of {frames} frames; the export is not faithful."
                )
    return differences


class MaestOnnxRunner:
    """Run an ONNX file written by `export_onnx` with onnxruntime, on windows or whole tracks.

    Args:
        path (`str` or `Path`): the .onnx file.
        providers (`list[str]`, *optional*): onnxruntime execution providers (default: CPUExecutionProvider).
    """

    def __init__(self, path: str | Path, providers: list[str] | None = None):
        import onnxruntime

        self.session = onnxruntime.InferenceSession(str(path), providers=providers or ["CPUExecutionProvider"])
        metadata = self.session.get_modelmeta().custom_metadata_map
        missing = [key for key in ("max_length", "window_hop", "num_mel_bins") if METADATA_PREFIX + key not in metadata]
        if missing:
            raise ValueError(f"{path} lacks the MAEST metadata {missing}: export it with maest-export-onnx.")

        def read(key: str) -> int:
            return int(metadata[METADATA_PREFIX + key])

        self.max_length = read("max_length")
        self.window_hop = read("window_hop")
        self.patch_size = read("patch_size")
        self.num_mel_bins = read("num_mel_bins")
        self.max_windows_per_batch = read("max_windows_per_batch")
        self.embedding_block = read("embedding_block")
        self.problem_type = metadata.get(METADATA_PREFIX + "problem_type", "None")
        self.labels = json.loads(metadata.get(METADATA_PREFIX + "id2label", "[]"))

    def __call__(self, input_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Logits `(batch, labels)` and embeddings `(batch, 3 * hidden)` of windows `(batch, frames, mel)`.

        Raises:
            ValueError: not a `(batch, frames, num_mel_bins)` array, or frames outside `patch_size..max_length`.
        """
        input_values = np.asarray(input_values)
        if input_values.ndim != 3 or input_values.shape[-1] != self.num_mel_bins or input_values.shape[0] < 1:
            raise ValueError(
                f"input_values must have shape (batch, frames, {self.num_mel_bins}), got {input_values.shape}."
            )
        frames = input_values.shape[1]
        if frames > self.max_length:
            raise ValueError(
                f"The ONNX model takes one window of at most max_length={self.max_length} frames per item, got "
                f"{frames} frames. Cut longer audio into windows with MaestOnnxRunner.analyse (or "
                f"window_starts(frames, {self.max_length}, {self.window_hop}))."
            )
        if frames < self.patch_size:
            raise ValueError(
                f"A window needs at least patch_size={self.patch_size} frames, got {frames}. Pass longer audio."
            )
        if not np.isfinite(input_values).all():
            raise ValueError("input_values contains NaN or Inf; check the audio and the feature extraction.")
        logits, embedding = self.session.run(None, {"input_values": input_values.astype(np.float32, copy=False)})
        return logits, embedding

    def analyse(self, input_values: np.ndarray) -> dict[str, np.ndarray]:
        """Analyse one track of any length (at least `patch_size` frames) in windows, like the PyTorch model.

        Args:
            input_values (`np.ndarray`): `(frames, mel)` or `(1, frames, mel)` normalised log-mel frames of one
                track (`MaestFeatureExtractor(...)["input_values"]`).

        Returns:
            `dict` with `window_starts` `(windows,)` (first frame of each window), `window_logits`
            `(windows, labels)`, `window_embeddings` `(windows, 3 * hidden)`, `logits` `(labels,)` (track logits:
            for multi-label models the logit of the mean window probability, as `MaestForAudioClassification`)
            and `embedding` `(3 * hidden,)` (the mean of the window embeddings, as `model.embed`).
        """
        features = np.asarray(input_values, dtype=np.float32)
        if features.ndim == 3 and features.shape[0] == 1:
            features = features[0]
        if features.ndim != 2:
            raise ValueError(
                f"analyse takes one track of shape (frames, {self.num_mel_bins}) or (1, frames, {self.num_mel_bins}), "
                f"got {np.asarray(input_values).shape}; call it once per track."
            )
        frames = features.shape[0]
        if frames < self.patch_size:
            raise ValueError(f"The track has {frames} frames, fewer than one patch ({self.patch_size}).")
        starts = window_starts(frames, self.max_length, self.window_hop)
        length = min(self.max_length, frames)
        logits, embeddings = [], []
        for first in range(0, len(starts), self.max_windows_per_batch):
            chunk = starts[first : first + self.max_windows_per_batch]
            windows = np.stack([features[start : start + length] for start in chunk])
            chunk_logits, chunk_embeddings = self(windows)
            logits.append(chunk_logits)
            embeddings.append(chunk_embeddings)
        window_logits = np.concatenate(logits)
        window_embeddings = np.concatenate(embeddings)
        return {
            "window_starts": np.asarray(starts),
            "window_logits": window_logits,
            "window_embeddings": window_embeddings,
            "logits": self._pool(window_logits),
            "embedding": window_embeddings.mean(axis=0),
        }

    def _pool(self, window_logits: np.ndarray) -> np.ndarray:
        """Track logits of one track's window logits `(windows, labels)`: `modeling_maest.pool_window_logits`, the
        PyTorch model's own track score (mean of the window probabilities)."""
        if len(window_logits) == 1:
            return window_logits[0]
        problem_type = None if self.problem_type == "None" else self.problem_type
        logits = torch.from_numpy(np.asarray(window_logits, dtype=np.float32))[None]
        mask = torch.ones(logits.shape[:2], dtype=torch.bool)
        return pool_window_logits(logits, mask, problem_type)[0].numpy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="maest-export-onnx",
        description="Export MAEST (one window: logits + the paper's embedding) to ONNX with dynamic batch and frames.",
        epilog="Whole tracks: cut windows with modeling_maest.window_starts and average in Python (see "
        "MaestOnnxRunner.analyse in maest_tools.export_onnx).",
    )
    add = parser.add_argument
    add("--model", required=True,
        help="folder or Hub id of a MAEST model (MaestForAudioClassification.from_pretrained)")  # fmt: skip
    add("--output", required=True, help="the .onnx file to write")
    add("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (>= {MIN_OPSET}, default {DEFAULT_OPSET})")
    add_block_argument(parser, "the embedding output")
    add("--no-check", action="store_true", help="skip the onnxruntime-vs-PyTorch check after exporting")
    args = parser.parse_args(argv)
    if args.opset < MIN_OPSET:
        parser.error(f"--opset {args.opset}: the dynamo exporter needs opset >= {MIN_OPSET}")
    try:
        model = MaestForAudioClassification.from_pretrained(args.model).eval()
    except (OSError, ValueError) as error:
        print(f"maest-export-onnx: could not load the model from {args.model!r}: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        block = resolve_block(args.block, model.config.num_hidden_layers)
    except UsageError as error:
        parser.error(str(error))
    path = export_onnx(model, args.output, args.opset, block, check=not args.no_check)
    checked = "" if args.no_check else f", checked against PyTorch within {CHECK_TOLERANCE:g}"
    print(f"maest-export-onnx: wrote {path} (opset {args.opset}, embedding block {block}{checked})")
    return 0


def cli(argv: list[str] | None = None) -> int:
    """The `maest-export-onnx` command; returns the exit status (0 exported and checked, 2 bad input)."""
    return main(argv)


if __name__ == "__main__":
    sys.exit(cli())
