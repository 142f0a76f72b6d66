"""Optimizer step time on a BERT-base-shaped parameter set, as ratios to the peers users run.

Peers, timed in the same process: ``torch.optim.AdamW`` (foreach, then fused) and
``torch.optim.SGD(momentum)`` each followed by ``torch.nn.utils.clip_grad_norm_``, and a plain
copy of the parameters (the memory-bandwidth yardstick). Each optimizer's bandwidth floor is
the copy time scaled to the bytes its step must move: read the gradient, read and write the
parameter and every state tensor.

Run: ``make bench`` or ``python benchmarks/optim_step.py [--layers 12] [--steps 20]``;
``--markdown`` prints the table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from tailclip.optim import (
    NSGD,
    ACClip,
    ClipAdaGrad,
    ClipAdam,
    ClipSGD,
    DeltaGClip,
    NoiseInjection,
)


def bert_shaped_params(layers: int, vocab: int, hidden: int = 768, ffn: int = 3072) -> list[torch.Tensor]:
    """Embedding + ``layers`` encoder blocks (attention q/k/v/o, FFN, 2 LayerNorms) in fp32."""
    shapes: list[tuple[int, ...]] = [(vocab, hidden), (512, hidden), (hidden,), (hidden,)]
    for _ in range(layers):
        shapes += [(hidden, hidden), (hidden,)] * 4
        shapes += [(ffn, hidden), (ffn,), (hidden, ffn), (hidden,)]
        shapes += [(hidden,)] * 4
    gen = torch.Generator().manual_seed(0)
    params = []
    for shape in shapes:
        p = torch.nn.Parameter(torch.randn(shape, generator=gen) * 0.02)
        p.grad = torch.randn(shape, generator=gen)
        params.append(p)
    return params


def median_ms(step: Callable[[], None], steps: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    inner = getattr(optimizer, "base_optimizer", None)
    total = sum(
        v.numel() * v.element_size()
        for s in optimizer.state.values()
        for v in s.values()
        if isinstance(v, torch.Tensor) and v.numel() > 1
    )
    return total + (state_bytes(inner) if inner is not None else 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()

    params = bert_shaped_params(args.layers, args.vocab)
    n = sum(p.numel() for p in params)
    clip = lambda: torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)  # noqa: E731

    copies = [torch.empty_like(p) for p in params]
    copy_ms = median_ms(lambda: torch._foreach_copy_(copies, [p.detach() for p in params]), args.steps)
    copy_bytes_per_param = 8  # read 4, write 4

    def peer(factory: Callable[[], torch.optim.Optimizer]) -> float:
        opt = factory()

        def step() -> None:
            clip()
            opt.step()

        return median_ms(step, args.steps)

    adamw_foreach = peer(lambda: torch.optim.AdamW(params, lr=1e-4, foreach=True))
    adamw_fused = peer(lambda: torch.optim.AdamW(params, lr=1e-4, fused=True))
    sgd_foreach = peer(lambda: torch.optim.SGD(params, lr=1e-4, momentum=0.9, foreach=True))

    cases: list[tuple[str, Callable[[], torch.optim.Optimizer]]] = [
        ("ClipSGD(global, momentum=0.9)", lambda: ClipSGD(params, lr=1e-4, momentum=0.9)),
        ("ClipSGD(coord, momentum=0.9)", lambda: ClipSGD(params, lr=1e-4, momentum=0.9, clip="coord")),
        ("NSGD", lambda: NSGD(params, lr=1e-4)),
        ("DeltaGClip", lambda: DeltaGClip(params, lr=1e-4)),
        ("ACClip", lambda: ACClip(params)),
        ("ClipAdaGrad(global)", lambda: ClipAdaGrad(params, lr=1e-2, clip="global")),
        ("ClipAdaGrad(norm, global)", lambda: ClipAdaGrad(params, lr=1e-2, norm=True, clip="global")),
        ("ClipAdam(global)", lambda: ClipAdam(params, clip="global")),
        ("ClipAdam(global, fused)", lambda: ClipAdam(params, clip="global", fused=True)),
        ("ClipAdam(norm, global)", lambda: ClipAdam(params, norm=True, clip="global")),
        ("NoiseInjection(AdamW, ema)",
         lambda: NoiseInjection(torch.optim.AdamW(params, lr=1e-4), variance="ema")),
        ("NoiseInjection(AdamW fused, ema)",
         lambda: NoiseInjection(torch.optim.AdamW(params, lr=1e-4, fused=True), variance="ema")),
    ]
    rows = []
    for label, factory in cases:
        opt = factory()
        ms = median_ms(opt.step, args.steps)
        state = state_bytes(opt) / n
        floor = copy_ms * (4 + 8 + 2 * state) / copy_bytes_per_param
        rows.append((label, ms, state, ms / adamw_foreach, ms / adamw_fused, ms / sgd_foreach, ms / floor))
        del opt

    header = (
        f"{n / 1e6:.1f}M fp32 params, {torch.get_num_threads()} threads, torch {torch.__version__}; "
        f"copy {copy_ms:.1f} ms, AdamW(foreach)+clip {adamw_foreach:.1f} ms, "
        f"AdamW(fused)+clip {adamw_fused:.1f} ms, SGD(momentum)+clip {sgd_foreach:.1f} ms"
    )
    cols = ("optimizer", "ms/step", "state B/param", "/AdamW(foreach)+clip", "/AdamW(fused)+clip",
            "/SGD+clip", "/bandwidth floor")
    if args.markdown:
        print(header + "\n")
        print("| " + " | ".join(cols) + " |")
        print("|" + "---|" * len(cols))
        for r in rows:
            print(f"| {r[0]} | {r[1]:.1f} | {r[2]:.1f} | {r[3]:.2f} | {r[4]:.2f} | {r[5]:.2f} | {r[6]:.2f} |")
    else:
        print(header)
        print(f"{cols[0]:<30}" + "".join(f"{c:>22}" for c in cols[1:]))
        for r in rows:
            print(f"{r[0]:<30}{r[1]:>22.1f}{r[2]:>22.1f}" + "".join(f"{x:>22.2f}" for x in r[3:]))


if __name__ == "__main__":
    main()
