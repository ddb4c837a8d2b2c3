"""Shared command-line helpers of the scripts: argparse value types and the error-to-exit-status wrapper."""

import argparse


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


def run_main(main, argv, prog: str) -> int:
    """Run a script's `main(argv)`; bad input (ValueError, FileNotFoundError) prints one line
    `PROG: error: ...` to stderr and gives exit status 2, success gives 0."""
    import sys

    try:
        main(argv)
    except (ValueError, FileNotFoundError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    return 0
