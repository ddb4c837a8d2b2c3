# Copyright 2026 The MAEST for transformers authors. Licensed under the Apache License, Version 2.0.
"""What every tool's command line shares: the exit-status convention, argparse value types and the `--block` option.

Exit status of every tool: 0 success, 1 the work ran but some of it failed (files that could not be tagged, a
conversion whose check failed), 2 a usage or setup error (bad option or input; one line `PROG: error: ...` on
stderr), 130 interrupted.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence


EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

DEFAULT_MODEL = "mtg-upf/discogs-maest-10s-fs-129e"
"""Model used without --model: the published 10 s MAEST (400 Discogs styles), fetched from the Hugging Face Hub."""


class UsageError(ValueError):
    """A problem with the options, the inputs, the model or the output: one message, exit status 2."""


def positive_int(text: str) -> int:
    """An integer >= 1."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    return _int_at_least(text, 0)


def _int_at_least(text: str, minimum: int) -> int:
    expected = "a positive integer (>= 1)" if minimum == 1 else f"an integer >= {minimum}"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
    return value


def finite_float(text: str) -> float:
    """A finite number (no nan or inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive(name: str, kind: type = float) -> Callable[[str], float | int]:
    """An argparse type: a `kind` (float or int) > 0; the error names the option `name`."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a {kind.__name__}, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{name} must be > 0, got {text!r}")
        return value

    return parse


def add_block_argument(parser: argparse.ArgumentParser, what: str = "the embedding") -> None:
    """The `--block` option of every tool: the 0-based transformer block whose output gives `what`.

    Its default, None, means the model's middle block (`num_hidden_layers // 2`: 6, the 7th of MAEST's 12 blocks,
    the paper's choice); resolve it with `resolve_block` once the model's config is known.
    """
    parser.add_argument(
        "--block",
        type=int,
        default=None,
        metavar="BLOCK",
        help=f"0-based transformer block whose output gives {what}; negative counts from the end (default: the "
        "model's middle block, num_hidden_layers // 2 = 6 for MAEST's 12 blocks)",
    )


def add_model_arguments(parser: argparse.ArgumentParser, when: str = "") -> None:
    """`--model` and `--allow-pickle`, as maest-tag and maest-plot take them; `when` prefixes the help of each
    (for example "for an audio file: ", where the tool can also run without a model)."""
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"{when}local model folder or Hugging Face repo id (default: {DEFAULT_MODEL})",
    )
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help=f"{when}when the model has no model.safetensors, load its pickled pytorch_model.bin (with "
        "torch.load(weights_only=True)); default: model.safetensors only",
    )


def add_hop_argument(parser: argparse.ArgumentParser, when: str = "") -> None:
    """`--hop`, the hop between analysis windows in mel frames (None: the model's `window_hop`)."""
    parser.add_argument(
        "--hop",
        type=positive_int,
        default=None,
        metavar="FRAMES",
        help=f"{when}hop between analysis windows in mel frames (62.5 per second), 1..max_length (default: the "
        "model's window_hop, 625 for the 10 s models)",
    )


def resolve_block(block: int | None, num_hidden_layers: int) -> int:
    """The 0-based block for `--block` (`None`: the middle block, `num_hidden_layers // 2`).

    Raises:
        UsageError: `block` outside `-num_hidden_layers .. num_hidden_layers - 1`.
    """
    if block is None:
        return num_hidden_layers // 2
    if not -num_hidden_layers <= block < num_hidden_layers:
        raise UsageError(
            f"--block {block} is outside the model's {num_hidden_layers} blocks: use 0..{num_hidden_layers - 1} "
            f"(0-based) or -{num_hidden_layers}..-1 to count from the end."
        )
    return block % num_hidden_layers


def parse_arguments(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse a tool's command line and send its log messages (`logging.INFO` and up) to stderr, one per line."""
    import logging

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return args


def run_main(main: Callable, argv: Sequence[str] | None, prog: str) -> int:
    """Run a tool's `main(argv)`; bad input (ValueError, FileNotFoundError) prints one line `PROG: error: ...` to
    stderr and gives exit status 2 (`EXIT_USAGE`); an int returned by `main` is the exit status, anything else 0."""
    try:
        status = main(argv)
    except (ValueError, FileNotFoundError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    return status if isinstance(status, int) and not isinstance(status, bool) else EXIT_OK


def error_message(error: BaseException) -> str:
    """One line for a user: an OSError's reason and file name, else the exception's text (or its type's name)."""
    if isinstance(error, OSError) and error.strerror and error.filename:
        return f"{error.strerror}: {error.filename!r}"
    message = str(error).strip()
    return message if message else type(error).__name__


def progress_bars_on(requested: bool = True) -> bool:
    """Whether progress bars are drawn: `requested` (no `--no-progress`) and stderr is a terminal.

    In a log file or a pipe, tqdm's redraws (carriage returns, and the `ESC[A` cursor moves of nested bars) turn into
    garbage; there the tools print their one-line summaries only. When off, transformers' own bars (loading and
    saving weights, the Trainer's) are switched off too.
    """
    on = requested and sys.stderr.isatty()
    if not on:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    return on
