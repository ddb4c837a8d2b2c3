# Copyright 2026 The MAEST for transformers authors. Licensed under the Apache License, Version 2.0.
"""`--device` and `--dtype`: one resolution for every tool."""

from __future__ import annotations

from .cli import UsageError


DTYPES = ("float32", "bfloat16", "float16")
"""Model weight dtypes a tool accepts (`--dtype`); features stay float32 up to the model."""


def add_device_argument(parser, what: str) -> None:
    """The `--device` option of the training tools: auto, cpu, cuda or mps; `what` says what runs there."""
    parser.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto",
                        help=f"Where {what}; auto picks a GPU when there is one.")  # fmt: skip


def accelerator_available() -> bool:
    """A CUDA GPU or Apple's MPS backend is usable."""
    import torch

    return torch.cuda.is_available() or (hasattr(torch.backends, "mps") and torch.backends.mps.is_available())


def resolve_device(name: str, local_rank: int = 0):
    """The `torch.device` of a `--device` value.

    Args:
        name: `"auto"` (cuda when available, else cpu), `"cpu"`, `"cuda"`, `"cuda:N"` or `"mps"`.
        local_rank: under torchrun, the process's rank on its node: a bare `"cuda"` (or `"auto"` on a GPU machine)
            means GPU `local_rank % device_count`, so the processes of a node share its GPUs.

    Raises:
        UsageError: not a torch device, or a device this machine does not have; the message says which to use.
    """
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {name!r} is not a torch device; use auto, cpu, cuda, cuda:N or mps.") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name!r}: torch sees no CUDA GPU on this machine; use --device cpu or auto.")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
        if device.index >= torch.cuda.device_count():
            raise UsageError(f"--device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s).")
    if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise UsageError(f"--device {name!r}: the MPS backend is not available; use --device cpu or auto.")
    return device


def resolve_dtype(name: str):
    """The `torch.dtype` of a `--dtype` value (one of `DTYPES`)."""
    import torch

    if name not in DTYPES:
        raise UsageError(f"--dtype {name!r}: use one of {', '.join(DTYPES)}.")
    return getattr(torch, name)
