"""Optimizer step time on a BERT-base-shaped parameter set, as ratios to the peers users run.

Peers, timed in the same process: ``torch.optim.AdamW`` (foreach, then fused) and
``torch.optim.SGD(momentum)`` each followed by ``torch.nn.utils.clip_grad_norm_``, and a plain
copy of the parameters (the memory-bandwidth yardstick). Each optimizer's bandwidth floor is
the copy time scaled to the bytes its step must move: read the gradient, read and write the
parameter and every state tensor. ``ClipSGD(coord)`` is also compared with what users of
coordinate clipping run, ``SGD(momentum)`` after ``torch.nn.utils.clip_grad_value_``.

A second table times whole training steps in which autograd writes the gradients (fresh
``.grad`` tensors each step, as after ``zero_grad()``): each optimizer's time over a bare
backward, as a ratio to its peer's.

Run: ``make bench`` or ``python benchmarks/optim_step.py [--layers 12] [--steps 20]``;
``--markdown`` prints the table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import gc
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
    """Bytes of per-element state (0-dim step counters and group scalars excluded); a
    NoiseInjection shares its base optimizer's ``state`` and adds its variance buffers."""
    states = list(optimizer.state.values()) + list(getattr(optimizer, "noise_state", {}).values())
    return sum(
        v.numel() * v.element_size()
        for s in states
        for v in s.values()
        if isinstance(v, torch.Tensor) and v.numel() > 1
    )


def prime(optimizer: torch.optim.Optimizer, params: list[torch.Tensor]) -> None:
    """One step on doubled gradients, so that a running variance of the (otherwise constant)
    benchmark gradients is nonzero, as in training; exact zeros make ``sqrt`` 6x slower."""
    for p in params:
        p.grad.mul_(2.0)
    optimizer.step()
    for p in params:
        p.grad.div_(2.0)


def round_robin(
    entries: dict[str, Callable[[], Callable[[], None]]], rounds: int, steps: int
) -> dict[str, list[float]]:
    """Per entry, the median step time (ms) of each round. In every round each entry is built
    afresh (``entries[name]()`` returns its step function), warmed up and timed, in turn, so
    that drift of the machine over the run spreads evenly over all entries."""
    times: dict[str, list[float]] = {name: [] for name in entries}
    for _ in range(rounds):
        for name, build in entries.items():
            step = build()
            times[name].append(median_ms(step, steps))
            del step
            gc.collect()  # frees the optimizer and its state before the next one
    return times


def ratio(times: dict[str, list[float]], name: str, peer: str, offset: str | None = None) -> float:
    """Median over rounds of ``name``'s time over ``peer``'s (each less ``offset``'s, if given)."""
    base = times[offset] if offset else [0.0] * len(times[name])
    return statistics.median(
        (a - o) / (b - o) for a, b, o in zip(times[name], times[peer], base, strict=True)
    )


def optimizer_step(factory: Callable[[], torch.optim.Optimizer], params: list[torch.Tensor],
                   before: Callable[[], object] | None = None) -> Callable[[], Callable[[], None]]:
    """An entry for :func:`round_robin`: build the optimizer (NoiseInjection primed), then its
    step, after ``before`` (a backward, a clip) if given."""

    def build() -> Callable[[], None]:
        opt = factory()
        if isinstance(opt, NoiseInjection):
            prime(opt, params)
        if before is None:
            return opt.step

        def step() -> None:
            before()
            opt.step()

        return step

    return build


def training_step_rows(
    params: list[torch.Tensor], rounds: int, steps: int
) -> list[tuple[str, float, float, str]]:
    """Whole steps ``zero_grad; backward; [clip]; step`` where autograd writes the gradients.

    The loss ``sum_k <p_k, w_k>`` (fixed random ``w_k``) makes backward write each ``p.grad``
    once. Each row's cost over a bare backward is compared with its peer's: ``ClipAdam(fused)`` with
    ``AdamW(fused)+clip_grad_norm_``, ``ClipSGD`` with ``SGD(momentum)+clip_grad_norm_``.
    """
    gen = torch.Generator().manual_seed(1)
    weights = [torch.randn(p.shape, generator=gen) for p in params]

    def backward() -> None:
        for p in params:
            p.grad = None
        sum((p * w).sum() for p, w in zip(params, weights, strict=True)).backward()

    def backward_and_clip() -> None:
        backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)

    peers = {
        "AdamW(fused)+clip_grad_norm_": lambda: torch.optim.AdamW(params, lr=1e-4, fused=True),
        "SGD(momentum)+clip_grad_norm_": lambda: torch.optim.SGD(params, lr=1e-4, momentum=0.9),
    }
    ours = {
        "ClipAdam(global, fused)": ("AdamW(fused)+clip_grad_norm_",
                                    lambda: ClipAdam(params, clip="global", fused=True)),
        "ClipSGD(global, momentum=0.9)": ("SGD(momentum)+clip_grad_norm_",
                                          lambda: ClipSGD(params, lr=1e-4, momentum=0.9)),
    }
    entries = {"backward alone": lambda: backward}
    entries |= {name: optimizer_step(factory, params, backward_and_clip) for name, factory in peers.items()}
    entries |= {name: optimizer_step(factory, params, backward) for name, (_, factory) in ours.items()}
    times = round_robin(entries, rounds, steps)
    bare = "backward alone"
    rows = []
    for name in entries:
        ms = statistics.median(times[name])
        over = statistics.median(a - b for a, b in zip(times[name], times[bare], strict=True))
        if name == bare:
            rows.append((name, ms, 0.0, ""))
        elif name in peers:
            rows.append((name, ms, over, "1.00"))
        else:
            rows.append((name, ms, over, f"{ratio(times, name, ours[name][0], offset=bare):.2f}"))
    return rows


def copy_time(params: list[torch.Tensor], steps: int) -> float:
    """Median ms of copying every parameter into a preallocated buffer (the bandwidth yardstick)."""
    copies = [torch.empty_like(p) for p in params]
    sources = [p.detach() for p in params]
    return median_ms(lambda: torch._foreach_copy_(copies, sources), steps)


def normal_time(n: int, steps: int) -> float:
    """Median ms of drawing ``n`` standard normals with torch's CPU sampler, block by block as
    NoiseInjection does: the floor of any AGNI step on ``n`` parameters."""
    gen = torch.Generator().manual_seed(0)
    block = torch.empty(1 << 18)

    def draw() -> None:
        for _ in range(n // block.numel()):
            block.normal_(generator=gen)
        block[: n % block.numel()].normal_(generator=gen)

    return median_ms(draw, steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per optimizer and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", nargs="+", metavar="TEXT", default=None,
                        help="time only the optimizers whose label contains one of these texts")
    parser.add_argument("--no-training-step", action="store_true", help="skip the training-step table")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()

    params = bert_shaped_params(args.layers, args.vocab)
    n = sum(p.numel() for p in params)
    clip = lambda: torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)  # noqa: E731
    clip_value = lambda: torch.nn.utils.clip_grad_value_(params, 1.0, foreach=True)  # noqa: E731

    copy_ms = copy_time(params, args.steps)
    normal_ms = normal_time(n, args.steps)
    copy_bytes_per_param = 8  # read 4, write 4

    peers = {
        "AdamW(foreach)+clip": optimizer_step(
            lambda: torch.optim.AdamW(params, lr=1e-4, foreach=True), params, clip),
        "AdamW(fused)+clip": optimizer_step(
            lambda: torch.optim.AdamW(params, lr=1e-4, fused=True), params, clip),
        "SGD+clip": optimizer_step(
            lambda: torch.optim.SGD(params, lr=1e-4, momentum=0.9, foreach=True), params, clip),
        "SGD+clip_grad_value_": optimizer_step(
            lambda: torch.optim.SGD(params, lr=1e-4, momentum=0.9, foreach=True), params, clip_value),
    }
    cases: dict[str, Callable[[], torch.optim.Optimizer]] = {
        "ClipSGD(global, momentum=0.9)": lambda: ClipSGD(params, lr=1e-4, momentum=0.9),
        "ClipSGD(coord, momentum=0.9)": lambda: ClipSGD(params, lr=1e-4, momentum=0.9, clip="coord"),
        "NSGD": lambda: NSGD(params, lr=1e-4),
        "DeltaGClip": lambda: DeltaGClip(params, lr=1e-4),
        "ACClip": lambda: ACClip(params),
        "ClipAdaGrad(global)": lambda: ClipAdaGrad(params, lr=1e-2, clip="global"),
        "ClipAdaGrad(norm, global)": lambda: ClipAdaGrad(params, lr=1e-2, norm=True, clip="global"),
        "ClipAdam(global)": lambda: ClipAdam(params, clip="global"),
        "ClipAdam(global, fused)": lambda: ClipAdam(params, clip="global", fused=True),
        "ClipAdam(norm, global)": lambda: ClipAdam(params, norm=True, clip="global"),
        "NoiseInjection(AdamW, ema)":
            lambda: NoiseInjection(torch.optim.AdamW(params, lr=1e-4), variance="ema"),
        "NoiseInjection(AdamW fused, ema)":
            lambda: NoiseInjection(torch.optim.AdamW(params, lr=1e-4, fused=True), variance="ema"),
    }
    if args.only:
        cases = {k: f for k, f in cases.items() if any(text in k for text in args.only)}
        if not cases:
            parser.error(f"--only {' '.join(args.only)}: no optimizer label contains it")
    states = {}
    for label, factory in cases.items():
        opt = factory()
        opt.step()
        states[label] = state_bytes(opt) / n
        del opt
    entries = peers | {k: optimizer_step(f, params) for k, f in cases.items()}
    times = round_robin(entries, args.rounds, args.steps)
    rows = []
    for label in cases:
        ms = statistics.median(times[label])
        floor = copy_ms * (4 + 8 + 2 * states[label]) / copy_bytes_per_param
        rows.append((label, ms, states[label], ratio(times, label, "AdamW(foreach)+clip"),
                     ratio(times, label, "AdamW(fused)+clip"), ratio(times, label, "SGD+clip"), ms / floor))
    backward_rows = [] if args.no_training_step else training_step_rows(params, args.rounds, args.steps)

    peer_ms = {k: statistics.median(v) for k, v in times.items() if k in peers}
    header = (
        f"{n / 1e6:.1f}M fp32 params, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"{args.rounds} rounds x {args.steps} steps; copy {copy_ms:.1f} ms, "
        + ", ".join(f"{k} {v:.1f} ms" for k, v in peer_ms.items())
        + f"; {n / 1e6:.1f}M N(0, 1) draws (torch CPU sampler) {normal_ms:.1f} ms"
    )
    if "ClipSGD(coord, momentum=0.9)" in times:
        coord = ratio(times, "ClipSGD(coord, momentum=0.9)", "SGD+clip_grad_value_")
        header += f"; ClipSGD(coord) / SGD+clip_grad_value_: {coord:.2f}"
    per_round = []
    if args.only:  # a focused run: show the spread of the ratio to the fused peer over the rounds
        for label in cases:
            values = sorted(a / b for a, b in zip(times[label], times["AdamW(fused)+clip"], strict=True))
            per_round.append(f"{label} / AdamW(fused)+clip per round, sorted: "
                             + ", ".join(f"{v:.3f}" for v in values))
    cols = ("optimizer", "ms/step", "state B/param", "/AdamW(foreach)+clip", "/AdamW(fused)+clip",
            "/SGD+clip", "/bandwidth floor")
    step_cols = ("training step", "ms", "ms over backward", "/peer (over backward)")
    if args.markdown:
        print(header + "\n")
        print("| " + " | ".join(cols) + " |")
        print("|" + "---|" * len(cols))
        for r in rows:
            print(f"| {r[0]} | {r[1]:.1f} | {r[2]:.1f} | {r[3]:.2f} | {r[4]:.2f} | {r[5]:.2f} | {r[6]:.2f} |")
        if per_round:
            print("\n".join([""] + per_round))
        if backward_rows:
            print("\n| " + " | ".join(step_cols) + " |")
            print("|" + "---|" * len(step_cols))
        for label, ms, over, rel in backward_rows:
            print(f"| {label} | {ms:.1f} | {over:.1f} | {rel} |")
    else:
        print(header)
        print(f"{cols[0]:<34}" + "".join(f"{c:>22}" for c in cols[1:]))
        for r in rows:
            print(f"{r[0]:<34}{r[1]:>22.1f}{r[2]:>22.1f}" + "".join(f"{x:>22.2f}" for x in r[3:]))
        if per_round:
            print("\n".join(per_round))
        print(f"\n{step_cols[0]:<44}" + "".join(f"{c:>22}" for c in step_cols[1:]))
        for label, ms, over, rel in backward_rows:
            print(f"{label:<44}{ms:>22.1f}{over:>22.1f}{rel:>22}")


if __name__ == "__main__":
    main()
