"""Speed and accuracy of the noise diagnostics (``tailclip.noise``), printed as ratios and tables.

Speed (``python benchmarks/noise_bench.py speed``):

* ``tail_index`` (Mohammadi with 200 bootstrap resamples, then Hill) on 1e6 scalars: seconds
  (target < 1 s).
* per-sample gradient norms of a small ``nn.TransformerEncoder`` at batch 64: ``torch.func``
  (``per_sample_grad_norms``) against a per-example loop of backward passes, same run, as a
  speed-up ratio (target >= 5x), for two model sizes.
* ``TailMonitor`` with its default settings: training time with the monitor over training time
  without it, on a small MLP trained with ClipSGD (target overhead <= 10%).

Accuracy (``python benchmarks/noise_bench.py accuracy``): Mohammadi (scalar and vector mode)
and Hill on Student-t and symmetric Pareto samples, the table in ``docs/diagnostics.md``.

Models (``python benchmarks/noise_bench.py models``): the tail index of the gradient noise of
a small attention model and a small CNN on the same data (``docs/diagnostics.md``).

``OMP_NUM_THREADS`` is left as the caller sets it; the numbers in the docs name the setting.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from scipy import stats
from torch import nn

from tailclip.noise import TailMonitor, collect_noise, per_sample_grad_norms, tail_index
from tailclip.noise._model import batch_gradient
from tailclip.optim import ClipSGD


def best_seconds(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_tail_index() -> None:
    x = np.random.default_rng(0).standard_t(3.0, size=1_000_000)
    mohammadi = best_seconds(lambda: tail_index(x, n_boot=200))
    hill = best_seconds(lambda: tail_index(x, method="hill"))
    print(f"tail_index on 1e6 scalars: mohammadi + 200 bootstrap {mohammadi:.3f} s, hill {hill:.3f} s "
          f"(target < 1 s)")


class TinyTransformer(nn.Module):
    def __init__(self, vocab: int, width: int, heads: int, layers: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(width, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(tokens)).mean(1))


def bench_per_sample(width: int, seq: int, batch: int = 64) -> None:
    torch.manual_seed(0)
    model = TinyTransformer(100, width, 4, 2)
    tokens, labels = torch.randint(0, 100, (batch, seq)), torch.randint(0, 2, (batch,))
    loss_fn = nn.CrossEntropyLoss()
    params = [p for p in model.parameters()]

    def loop() -> torch.Tensor:
        return torch.stack([
            batch_gradient(model, loss_fn, (tokens[j:j + 1], labels[j:j + 1]), params).norm() for j in range(batch)
        ])

    def vmapped() -> torch.Tensor:
        return per_sample_grad_norms(model, loss_fn, (tokens, labels), chunk_size=batch)

    error = ((vmapped() - loop().double()).abs() / loop().double()).max().item()
    t_loop, t_vmap = best_seconds(loop), best_seconds(vmapped)
    n_params = sum(p.numel() for p in params)
    print(f"per-sample norms, TransformerEncoder width {width}, seq {seq}, {n_params} params, batch {batch}: "
          f"loop {1e3 * t_loop:.1f} ms, torch.func {1e3 * t_vmap:.1f} ms, speed-up {t_loop / t_vmap:.1f}x "
          f"(target >= 5x); max rel. difference {error:.1e}")


def bench_monitor(steps: int = 2000, batch: int = 64) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(20_000, 64, generator=gen)
    y = (x[:, :10].sum(1) > 0).long() + (x[:, 10:20].sum(1) > 0).long()
    loss_fn = nn.CrossEntropyLoss()

    def train(with_monitor: bool) -> float:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 3))
        optimizer = ClipSGD(model.parameters(), lr=0.05, momentum=0.9, max_norm=1.0)
        monitor = TailMonitor(model, loss_fn, (x, y), batch_size=batch) if with_monitor else None
        order = torch.randint(0, x.shape[0], (steps, batch), generator=torch.Generator().manual_seed(1))
        start = time.perf_counter()
        for step in range(1, steps + 1):
            index = order[step - 1]
            loss = loss_fn(model(x[index]), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if monitor is not None:
                monitor.step(optimizer, step)
        elapsed = time.perf_counter() - start
        if monitor is not None:
            alphas = ", ".join(f"{h['alpha']:.2f}" for h in monitor.history)
            print(f"  monitor records at steps {[h['step'] for h in monitor.history]}: alpha {alphas}")
        return elapsed

    plain = statistics.median(train(False) for _ in range(3))
    monitored = statistics.median(train(True) for _ in range(3))
    print(f"TailMonitor defaults, MLP 64-256-256-3, batch {batch}, {steps} steps: plain {plain:.2f} s, "
          f"monitored {monitored:.2f} s, overhead {100 * (monitored / plain - 1):.1f}% (target <= 10%)")


def symmetric_pareto(alpha: float, size: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Density ``alpha/2 (1 + |x|)^-(1 + alpha)``: Lomax magnitudes with random signs (tail index alpha)."""
    return rng.pareto(alpha, size=size) * rng.choice([-1.0, 1.0], size=size)


def bench_accuracy(seeds: int = 5) -> None:
    print("| law | true alpha | mode | Mohammadi alpha (mean +- sd over seeds) | Hill alpha (k = sqrt(n)) |")
    print("|---|---|---|---|---|")
    cases = [("Student-t", df, lambda df, size, rng: rng.standard_t(df, size=size)) for df in (1.5, 2.5, 4.0)]
    cases += [("sym. Pareto", a, symmetric_pareto) for a in (1.2, 1.5, 1.8, 3.0)]
    cases += [("alpha-stable", a, lambda a, size, rng: stats.levy_stable.rvs(a, 0.0, size=size, random_state=rng))
              for a in (1.5,)]
    for name, alpha, draw in cases:
        for mode, size in (("scalars n=1e5", (100_000,)), ("vectors n=2e4, d=16", (20_000, 16))):
            moh, hill = [], []
            for seed in range(seeds):
                x = draw(alpha, size, np.random.default_rng(seed))
                moh.append(tail_index(x).alpha)
                hill.append(tail_index(x, method="hill").alpha)
            print(f"| {name} | {alpha} | {mode} | {np.mean(moh):.3f} +- {np.std(moh):.3f} | "
                  f"{np.mean(hill):.3f} +- {np.std(hill):.3f} |")


class TinyCNN(nn.Module):
    """Tokens embedded as a 1-D signal, two convolutions, global pooling: no attention."""

    def __init__(self, vocab: int, width: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.conv = nn.Sequential(nn.Conv1d(width, width, 3, padding=1), nn.ReLU(),
                                  nn.Conv1d(width, width, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(width, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(self.embed(tokens).transpose(1, 2)).mean(2))


class TinyAttention(nn.Module):
    def __init__(self, vocab: int, width: int) -> None:
        super().__init__()
        self.body = TinyTransformer(vocab, width, 4, 2)
        self.body.head = nn.Linear(width, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.body(tokens)


def zipf_next_token_data(n: int, vocab: int, seq: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequences of Zipf-distributed tokens (as word frequencies) and a next token to predict."""
    rng = np.random.default_rng(seed)
    ranks = np.minimum(rng.zipf(1.2, size=(n, seq + 1)), vocab) - 1
    tokens = torch.from_numpy(ranks[:, :seq]).long()
    return tokens, torch.from_numpy(ranks[:, seq]).long()


def bench_models(batch: int = 32, noise_batches: int = 300) -> None:
    vocab, seq = 200, 16
    x, y = zipf_next_token_data((noise_batches + 20) * batch, vocab, seq, seed=0)
    print(f"| model | params | alpha (Mohammadi, vector) | interval | Hill alpha | n |")
    print("|---|---|---|---|---|---|")
    for name, build in (("attention (2-layer TransformerEncoder)", lambda: TinyAttention(vocab, 32)),
                        ("CNN (2 conv layers)", lambda: TinyCNN(vocab, 32))):
        torch.manual_seed(0)
        model = build()
        sample = collect_noise(model, nn.CrossEntropyLoss(), (x, y), batch_size=batch, mean_batches=20,
                               noise_batches=noise_batches)
        tail, hill = sample.tail_index(), sample.tail_index("hill")
        print(f"| {name} | {sample.num_params} | {tail.alpha:.2f} | [{tail.low:.2f}, {tail.high:.2f}] | "
              f"{hill.alpha:.2f} | {sample.n} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", default="speed", choices=("speed", "accuracy", "models", "all"))
    args = parser.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    if args.what in ("speed", "all"):
        bench_tail_index()
        bench_per_sample(width=32, seq=16)
        bench_per_sample(width=64, seq=32)
        bench_monitor()
    if args.what in ("accuracy", "all"):
        bench_accuracy()
    if args.what in ("models", "all"):
        bench_models()


if __name__ == "__main__":
    main()
