#!/usr/bin/env python
# Copyright 2026 The MAEST for transformers authors. Licensed under the Apache License, Version 2.0.
"""MAEST in the browser: a Gradio app (the Hugging Face Space of this repository runs this file).

    pip install -r requirements-app.txt && python app.py        # then open http://127.0.0.1:7860

Drop in an audio file (any format ffmpeg decodes, any length) or record one; the page shows the track's top Discogs
styles as a bar chart, the genre summary, the styles over time (the library's timeline heatmap, and a hoverable
chart of the same window scores), and offers the track embedding (.npy) and the per-window results (.json).

Environment:

* ``MAEST_MODEL``: a model folder or a Hugging Face repo id (default `DEFAULT_MODEL`), loaded once per process.
* ``MAEST_DTYPE``: ``auto`` (default: bfloat16 on a GPU, float32 on the CPU), ``float32`` or ``bfloat16``.
* ``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT``: where `python app.py` listens (Gradio's own variables).

The app is thin: decoding and the front end are `MaestFeatureExtractor`'s (as in the pipeline), the windows and the
track score are `MaestForAudioClassification`'s (`pool_window_logits`), the embedding comes from the same forward pass
(``embedding_block``), and genres, timeline and picture are `maest_tools`'. `analyse` is the whole analysis without
Gradio (tests call it directly); `build_demo` lays out the page. Importing this module loads no model and no Gradio.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np


ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_MODEL = "mtg-upf/discogs-maest-10s-fs-129e"
"""Model used when ``MAEST_MODEL`` is not set: the published 10 s MAEST (400 Discogs styles)."""

DTYPES = ("auto", "float32", "bfloat16")
"""Values of ``MAEST_DTYPE``: ``auto`` is bfloat16 on a GPU and float32 on the CPU."""

TOP_K = 10
"""Styles shown in the bar chart, the timeline and each window of the JSON."""

SCORES_EXPLAINED = (
    "Each score is MAEST's independent (sigmoid) probability that the style is present, between 0 and 1: the "
    "scores are not a distribution, so they do not add up to 1 and several styles can score high together. "
    "The track score is the mean of the 10-second window scores, and a genre's score is the highest score among "
    "its styles."
)
"""The two sentences under the results (shown in the page)."""


class AnalysisError(ValueError):
    """A problem with the input the user can fix (no file, an undecodable file, a clip shorter than one patch)."""


# ---------------------------------------------------------------------------------------------------------------------
# The model, loaded once per process
# ---------------------------------------------------------------------------------------------------------------------


class MaestAnalyser:
    """One MAEST model and its feature extractor, on the GPU in bfloat16 when there is one, else on the CPU in float32.

    Args:
        model: a loaded `MaestForAudioClassification`, or a folder / Hub repo id to load (``None``: ``MAEST_MODEL``,
            else `DEFAULT_MODEL`).
        feature_extractor: a `MaestFeatureExtractor` (default: the model folder's, else the standard one).
        device (`str`, *optional*): torch device; default ``"cuda"`` when available, else ``"cpu"``.
        dtype (`str`, *optional*): ``"auto"`` (bfloat16 on a GPU, float32 on the CPU), ``"float32"`` or
            ``"bfloat16"``; default ``MAEST_DTYPE``, else ``"auto"``. bfloat16 on a CPU with AVX-512 BF16 ran 2.7x
            faster than float32 in the README's Speed section, with track scores within 0.004 of float32's.
    """

    def __init__(self, model=None, feature_extractor=None, device: str | None = None, dtype: str | None = None):
        import torch

        from feature_extraction_maest import MaestFeatureExtractor
        from modeling_maest import MaestForAudioClassification

        self.source = "(a model object)"
        if model is None or isinstance(model, (str, os.PathLike)):
            self.source = os.fspath(model) if model is not None else os.environ.get("MAEST_MODEL") or DEFAULT_MODEL
            try:
                model = MaestForAudioClassification.from_pretrained(self.source, use_safetensors=True)
            except (OSError, ValueError) as error:
                first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
                raise RuntimeError(
                    f"Could not load the MAEST model {self.source!r} ({first_line}). Set MAEST_MODEL to a folder "
                    "holding config.json and model.safetensors, or to a Hugging Face repo id such as "
                    f"{DEFAULT_MODEL!r} (downloaded once, which needs network access)."
                ) from None
            if feature_extractor is None:
                try:
                    feature_extractor = MaestFeatureExtractor.from_pretrained(self.source)
                except OSError:  # a folder without preprocessor_config.json: the front end is fixed anyway
                    feature_extractor = MaestFeatureExtractor()
        self.feature_extractor = feature_extractor if feature_extractor is not None else MaestFeatureExtractor()
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = dtype or os.environ.get("MAEST_DTYPE") or "auto"
        if dtype not in DTYPES:
            raise RuntimeError(f"MAEST_DTYPE={dtype!r} is not one of {', '.join(DTYPES)}; unset it for 'auto'.")
        if dtype == "auto":  # bfloat16 on GPUs (fast, half the memory); float32 on CPUs, the exact numbers
            dtype = "bfloat16" if self.device.type == "cuda" else "float32"
        self.dtype = getattr(torch, dtype)
        self.model = model.to(self.device, self.dtype).eval()
        self.config = self.model.config
        self.labels = [self.config.id2label[i] for i in range(self.config.num_labels)]
        # One analysis at a time: the progress hook is attached to the shared model, and one track at a time keeps
        # the memory of a long track bounded.
        self._lock = threading.Lock()

    @property
    def num_blocks(self) -> int:
        return self.config.num_hidden_layers

    @property
    def default_block(self) -> int:
        """The middle block, ``num_hidden_layers // 2`` (the agreed default of every tool's ``--block``)."""
        return self.config.num_hidden_layers // 2

    def analyse(self, audio, block: int | None = None, top_k: int = TOP_K, sampling_rate: int | None = None,
                progress: Callable[[float, str], None] | None = None) -> "AnalysisResult":
        """See the module-level `analyse`."""
        import torch

        from configuration_maest import FRAMES_PER_SECOND
        from maest_tools.genres import genre_scores
        from maest_tools.timeline import select_labels, timeline, window_times
        from modeling_maest import window_starts

        report = progress or (lambda fraction, description: None)
        name = _display_name(audio)
        if audio is None or (isinstance(audio, (str, os.PathLike)) and not os.fspath(audio)):
            raise AnalysisError("No audio: upload an audio file or record a clip, then press Analyse.")
        if isinstance(audio, (str, os.PathLike)) and os.path.isfile(audio) and os.path.getsize(audio) == 0:
            raise AnalysisError(f"{name} is empty (0 bytes): upload an audio file with sound in it.")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a whole number >= 1, got {top_k!r}")
        block = self.default_block if block is None else block
        if isinstance(block, float) and block.is_integer():
            block = int(block)  # a Gradio slider sends floats
        if isinstance(block, bool) or not isinstance(block, int) or not 0 <= block < self.num_blocks:
            raise AnalysisError(
                f"Embedding block {block!r} does not exist: this model has blocks 0 to {self.num_blocks - 1} "
                f"(default {self.default_block}, the middle one)."
            )

        report(0.0, "Decoding the audio and computing its spectrogram")
        try:  # the pipeline's own preprocessing: ffmpeg decoding, mean downmix, soxr, the Essentia-exact front end
            features = self.feature_extractor(
                audio, sampling_rate=sampling_rate, return_tensors="pt", return_attention_mask=True
            )
        except (ValueError, OSError, RuntimeError) as error:
            raise AnalysisError(_user_message(error, audio, name)) from None
        input_values = features["input_values"].to(self.device, self.dtype)
        attention_mask = features["attention_mask"].to(self.device)
        num_frames = int(attention_mask[0].sum())
        total = len(window_starts(num_frames, self.config.max_length, self.config.window_hop))
        done = [0]

        def count_windows(_module, _inputs, output):
            # The head runs once per chunk of windows (config.max_windows_per_batch), so this ticks per chunk.
            done[0] += output.shape[0]
            report(min(done[0], total) / total, f"Analysed {min(done[0], total)} of {total} windows")

        report(0.0, f"Analysing {total} window{'s' if total != 1 else ''} of {self.config.window_seconds:.0f} s")
        with self._lock:
            hook = self.model.classifier.register_forward_hook(count_windows)
            try:
                with torch.inference_mode():
                    output = self.model(input_values, attention_mask=attention_mask, embedding_block=block)
            finally:
                hook.remove()
        report(1.0, "Drawing the timeline")

        problem_type = self.config.problem_type
        scores = _activation(output.logits[0], problem_type).numpy()
        mask = output.window_mask[0].cpu()
        window_scores = _activation(output.window_logits[0].cpu()[mask], problem_type).numpy()
        starts = [int(start) for start in output.window_starts[0].cpu()[mask]]
        embedding = output.embedding[0].float().cpu().numpy()
        if not (np.isfinite(scores).all() and np.isfinite(window_scores).all() and np.isfinite(embedding).all()):
            raise AnalysisError(
                f"The model produced non-finite scores for {name}; check the model weights (MAEST_MODEL={self.source!r})."
            )
        try:
            genres = genre_scores(scores, self.labels)
        except ValueError:  # labels that are not Discogs "Genre---Style" names have no genres
            genres = {}
        return AnalysisResult(
            name=name,
            labels=self.labels,
            scores=scores,
            top=select_labels(scores, self.labels, top_k=top_k),
            genres=genres,
            window_scores=window_scores,
            window_starts=starts,
            window_times=window_times(starts, self.config.max_length, num_frames),
            windows=timeline(window_scores, starts, self.config.max_length, num_frames, self.labels, top_k=top_k),
            duration_s=(num_frames - 1) / FRAMES_PER_SECOND,  # N samples make ceil(N / 256) + 1 frames
            embedding=embedding,
            block=block,
            top_k=top_k,
            model=self.source,
        )


def _activation(logits, problem_type):
    """Scores from logits as the pipeline's postprocess: sigmoid (multi-label, MAEST), softmax (single-label) or none."""
    logits = logits.float().cpu()
    if problem_type == "single_label_classification":
        return logits.softmax(-1)
    if problem_type == "regression":
        return logits
    return logits.sigmoid()


def _display_name(audio) -> str:
    if isinstance(audio, (str, os.PathLike)) and os.fspath(audio):
        return repr(os.path.basename(os.fspath(audio)))
    return "the audio"


def _user_message(error: BaseException, audio, name: str) -> str:
    """The extractor's message with the server's temporary path replaced by the file name."""
    text = str(error.args[1]) if isinstance(error, OSError) and len(error.args) > 1 else str(error)
    if isinstance(audio, (str, os.PathLike)):
        text = text.replace(repr(os.fspath(audio)), name).replace(os.fspath(audio), name.strip("'"))
    if "too short" in text:
        return f"{name[0].upper()}{name[1:]} is too short to analyse. {text}"
    if isinstance(error, FileNotFoundError):
        return f"{name} was not found on the server: upload it again."
    return f"Could not read {name} as audio: {text}"


# ---------------------------------------------------------------------------------------------------------------------
# The result
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class AnalysisResult:
    """Everything the page shows for one track.

    Attributes:
        name: the file name shown (quoted), or ``"the audio"`` for arrays.
        labels: every label of the model, in score order (``config.id2label``).
        scores: track scores ``(labels,)``: the pipeline's scores (sigmoid of the pooled logits for MAEST).
        top: the `top_k` best track labels, ``[{"label", "score"}, ...]`` best first (`select_labels`).
        genres: ``{genre: score}`` best first (`maest_tools.genres.genre_scores`; empty for non-Discogs labels).
        window_scores: scores of every window ``(windows, labels)``, in time order.
        window_starts: first mel frame of every window; window_times: ``(start_s, end_s)`` of every window.
        windows: `maest_tools.timeline.timeline` of the track (each window with its `top_k` labels).
        duration_s: length of the audio in seconds, rounded up to the 16 ms frame hop ((mel frames - 1) / 62.5).
        embedding: the paper's track embedding after block `block` ``(3 * hidden_size,)`` float32, from the same pass.
        block: the embedding's block (0-based); top_k: labels per list; model: the model's folder or repo id.
    """

    name: str
    labels: list[str]
    scores: np.ndarray
    top: list[dict]
    genres: dict[str, float]
    window_scores: np.ndarray
    window_starts: list[int]
    window_times: list[tuple[float, float]]
    windows: list[dict]
    duration_s: float
    embedding: np.ndarray
    block: int
    top_k: int
    model: str

    def to_json(self) -> dict:
        """The downloadable per-window results: track labels, genres, and each window's top labels and all scores."""
        return {
            "model": self.model,
            "file": self.name.strip("'"),
            "duration_s": self.duration_s,
            "scores": "independent sigmoid probabilities in [0, 1] per style (not a distribution); track = mean of the "
                      "window scores; genre = highest score among its styles",
            "labels": self.labels,
            "track": self.top,
            "genres": self.genres,
            "embedding_block": self.block,
            "windows": [
                dict(window, scores=[round(float(value), 6) for value in row])
                for window, row in zip(self.windows, self.window_scores)
            ],
        }

    def save_files(self, folder) -> dict[str, str]:
        """Write ``timeline.png``, ``<name>-embedding-block<k>.npy`` and ``<name>-windows.json`` into `folder`."""
        from maest_tools.plot import save_timeline_png

        folder = Path(folder)
        stem = Path(self.name.strip("'")).stem or "audio"
        paths = {
            "timeline": str(folder / f"{stem}-timeline.png"),
            "embedding": str(folder / f"{stem}-embedding-block{self.block}.npy"),
            "json": str(folder / f"{stem}-windows.json"),
        }
        save_timeline_png(paths["timeline"], self.window_scores, self.window_times, self.labels, self.scores,
                          top_k=self.top_k, title=self.name.strip("'"))
        np.save(paths["embedding"], self.embedding.astype(np.float32, copy=False))
        Path(paths["json"]).write_text(json.dumps(self.to_json(), ensure_ascii=False, indent=1))
        return paths


_ANALYSER: MaestAnalyser | None = None
_ANALYSER_LOCK = threading.Lock()


def get_analyser(model=None) -> MaestAnalyser:
    """The process's `MaestAnalyser`, created on first use (from `model`, else ``MAEST_MODEL``) and then reused."""
    global _ANALYSER
    if isinstance(model, MaestAnalyser):
        return model
    with _ANALYSER_LOCK:
        if model is not None and not isinstance(model, (str, os.PathLike)):
            return MaestAnalyser(model)  # a model object given by the caller: theirs, not the process's
        if _ANALYSER is None or (model is not None and _ANALYSER.source != os.fspath(model)):
            _ANALYSER = MaestAnalyser(model)
        return _ANALYSER


def analyse(path_or_array, block: int | None = None, top_k: int = TOP_K, sampling_rate: int | None = None,
            model=None, progress: Callable[[float, str], None] | None = None) -> AnalysisResult:
    """Analyse one track as the page does, without Gradio.

    Args:
        path_or_array: an audio file (any format ffmpeg decodes) or anything `MaestFeatureExtractor` takes (an array
            with `sampling_rate`, a ``{"array", "sampling_rate"}`` dict...).
        block (`int`, *optional*): 0-based block of the embedding; default the middle block (layers // 2).
        top_k (`int`): labels kept in `AnalysisResult.top` and in each window.
        sampling_rate (`int`, *optional*): rate in Hz of a raw array.
        model: a `MaestAnalyser`, a `MaestForAudioClassification`, a folder or repo id; default the process's model
            (``MAEST_MODEL``), loaded once.
        progress: called as ``progress(fraction, description)`` while the windows are analysed.

    Raises:
        `AnalysisError`: no audio, an undecodable or empty file, a clip shorter than one patch (0.224 s), a block that
            does not exist. The message says what is wrong and what to do.
    """
    return get_analyser(model).analyse(path_or_array, block=block, top_k=top_k, sampling_rate=sampling_rate,
                                       progress=progress)


# ---------------------------------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------------------------------


def _model_name(source: str) -> str:
    """A repo id as it is, a local folder by its name (the server's paths are not the visitor's business)."""
    return os.path.basename(os.path.normpath(source)) if os.path.isdir(source) else source


def _style_text(label: str) -> str:
    genre, separator, style = label.partition("---")
    return f"{style} ({genre})" if separator else label


def page_values(result: AnalysisResult, folder) -> tuple:
    """The outputs of the page for one result: bar chart, summary, genres, timeline PNG, hover chart, .npy, .json."""
    import pandas as pd

    files = result.save_files(folder)
    bars = pd.DataFrame({"style": [_style_text(item["label"]) for item in result.top],
                         "score": [round(item["score"], 4) for item in result.top]})
    rows = [f"{rank}. **{_style_text(item['label'])}**: {item['score']:.3f}" for rank, item in enumerate(result.top, 1)]
    minutes, seconds = divmod(int(result.duration_s), 60)
    summary = (
        f"**{result.name.strip(chr(39))}**: {minutes}:{seconds:02d}, {len(result.windows)} window"
        f"{'s' if len(result.windows) != 1 else ''}. Top styles:\n\n" + "\n".join(rows)
    )
    index = {label: i for i, label in enumerate(result.labels)}
    hover = pd.DataFrame(
        [
            {"time (s)": round(start, 2), "style": _style_text(item["label"]),
             "score": round(float(result.window_scores[w, index[item["label"]]]), 4)}
            for w, (start, _end) in enumerate(result.window_times)
            for item in result.top
        ]
    )
    return bars, summary, result.genres, files["timeline"], hover, files["embedding"], files["json"]


def build_demo(model=None):
    """The Gradio page (`gr.Blocks`) on `model` (see `analyse`; default the process's ``MAEST_MODEL``, loaded now)."""
    import gradio as gr

    analyser = get_analyser(model)
    blocks = analyser.num_blocks

    def run(audio_path, block, progress=gr.Progress()):
        def report(fraction, description):
            progress(fraction, desc=description)

        try:
            result = analyser.analyse(audio_path, block=block, top_k=TOP_K, progress=report)
            return page_values(result, tempfile.mkdtemp(prefix="maest-demo-"))
        except AnalysisError as error:
            raise gr.Error(str(error), duration=None) from None
        except Exception as error:  # never a traceback in the page; the server log keeps it
            print(f"analysis failed: {error!r}", file=sys.stderr, flush=True)
            raise gr.Error(f"The analysis failed: {type(error).__name__}: {error}", duration=None) from None

    with gr.Blocks(title="MAEST: music styles over time") as demo:
        gr.Markdown(
            "# MAEST: Discogs music styles over time\n"
            "Upload or record a track (any format, any length). MAEST analyses it in "
            f"{analyser.config.window_seconds:.0f}-second windows and scores "
            f"{len(analyser.labels)} Discogs styles. Model: `{_model_name(analyser.source)}` on "
            f"{analyser.device.type} ({str(analyser.dtype).removeprefix('torch.')})."
        )
        with gr.Row():
            with gr.Column(scale=1):
                audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Audio", elem_id="audio")
                block = gr.Slider(0, blocks - 1, value=analyser.default_block, step=1, elem_id="block",
                                  label=f"Embedding block (0-based; default {analyser.default_block}, the middle one)")
                button = gr.Button("Analyse", variant="primary", elem_id="analyse")
                gr.Markdown(SCORES_EXPLAINED, elem_id="explanation")
            with gr.Column(scale=2):
                bars = gr.BarPlot(x="style", y="score", y_lim=[0, 1], sort="-y", x_label_angle=-30,
                                  label="Top styles (track scores)", elem_id="top-styles", tooltip="all")
                summary = gr.Markdown(elem_id="summary")
                genres = gr.Label(num_top_classes=8, label="Genres (highest style score per genre)", elem_id="genres")
        timeline = gr.Image(type="filepath", label="Styles over time", elem_id="timeline", interactive=False,
                            format="png")
        hover = gr.ScatterPlot(x="time (s)", y="style", color="score", tooltip="all", elem_id="timeline-hover",
                               label="Styles over time, hover for a window's score (window start in seconds)")
        with gr.Row():
            embedding = gr.File(label="Track embedding (.npy, float32, 3 x hidden size)", elem_id="embedding")
            windows = gr.File(label="Per-window results (.json)", elem_id="windows")
        button.click(run, inputs=[audio, block],
                     outputs=[bars, summary, genres, timeline, hover, embedding, windows], api_name="analyse")
    return demo


def main() -> None:
    """`python app.py`: load the model, then serve the page (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT apply)."""
    try:
        demo = build_demo()
    except RuntimeError as error:
        print(error, file=sys.stderr)
        raise SystemExit(2) from None
    demo.queue(default_concurrency_limit=1).launch(show_error=True, ssr_mode=False)


if __name__ == "__main__":
    main()
