"""Writes ``format1_states.pt``: state dicts saved by tailclip before the state format version
(format 1, commit 35d5f9e), read by ``test_battery_torch.py``. Run it against that version:
``git archive 35d5f9e src | tar -x -C /tmp/old && PYTHONPATH=/tmp/old/src python make_format1_states.py``.
"""

from pathlib import Path

import torch

from tailclip.optim import OPTIMIZERS

# name -> constructor kwargs (no adaptive policy: the file holds plain data only)
SAVED = {
    "clip_sgd": {"lr": 0.1, "momentum": 0.9, "clip": "global", "max_norm": 1.0},
    "clip_adam": {"lr": 0.01, "norm": True, "clip": "global", "max_norm": 1.0},
    "clip_adagrad": {"lr": 0.1, "clip": "layer", "max_norm": 1.0, "b0": 0.5},
    "nsgd": {"lr": 0.1, "momentum": 0.9},
    "acclip": {"lr": 0.01},
    "delta_gclip": {"lr": 0.1, "gamma": 0.5},
}
SHAPES = ((3, 2), (2,))
STEPS = 3


def params() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(s, generator=gen, dtype=torch.float64).requires_grad_() for s in SHAPES]


def grads(step: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(100 + step)
    return [torch.randn(s, generator=gen, dtype=torch.float64) * 3 for s in SHAPES]


def main() -> None:
    out = {}
    for name, kwargs in SAVED.items():
        ps = params()
        opt = OPTIMIZERS[name](ps, **kwargs)
        for t in range(STEPS):
            for p, g in zip(ps, grads(t)):
                p.grad = g
            opt.step()
        out[name] = {"kwargs": kwargs, "params": [p.detach().clone() for p in ps], "state": opt.state_dict()}
    torch.save(out, Path(__file__).with_name("format1_states.pt"))


if __name__ == "__main__":
    main()
