"""``train.device``: the names a config may give and the torch device each resolves to here."""

from __future__ import annotations

import re

import torch

__all__ = ["DEVICE_NAMES", "resolve_device"]

DEVICE_NAMES = "auto, cpu, cuda, cuda:N, mps"
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:[0-9]+)?)$")


def resolve_device(name: str) -> torch.device:
    """``name`` as a torch device of this machine; ``auto`` is CUDA when available, else the CPU.

    ``ValueError`` (one line naming ``train.device``) for a malformed name or a device this
    machine lacks (no CUDA, no MPS, a CUDA index past the last GPU).
    """
    if not _DEVICE.match(name):
        raise ValueError(f"train.device: got {name!r}; allowed: {DEVICE_NAMES}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    missing = (device.type == "cuda" and not torch.cuda.is_available()) or (
        device.type == "mps" and not torch.backends.mps.is_available()
    )
    if missing:
        raise ValueError(f"train.device: {name!r} is not available on this machine; allowed: cpu, auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise ValueError(
            f"train.device: {name!r} is not available on this machine; allowed: cuda:0 to cuda:{count - 1}"
        )
    return device
