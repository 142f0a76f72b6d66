"""Speed and accuracy of the noise diagnostics (``tailclip.noise``), printed as ratios and tables.

Speed (``python benchmarks/noise_bench.py speed``):

* ``tail_index`` (Mohammadi with 200 bootstrap resamples, then Hill) on 1e6 scalars: seconds
  (target < 1 s).
* per-sample gradient norms of a small ``nn.TransformerEncoder`` at batch 64: ``torch.func``
  (``per_sample_grad_norms``) against a per-example loop of backward passes, same run, as a
  speed-up ratio (target >= 5x), for two model sizes.
* ``TailMonitor`` with its default settings: training time with the monitor over training time
  without it, on a small MLP trained with ClipSGD (target overhead <= 10%).

Accuracy (``python benchmarks/noise_bench.py accuracy``): Mohammadi (scalar and vector mode, at
``B`` and at ``4B``), Hill and the verdict on Student-t, symmetric Pareto, alpha-stable and
Gaussian samples, the table in ``docs/diagnostics.md``.

Models (``python benchmarks/noise_bench.py models``): the tail index of the gradient noise of
a small attention model and a small CNN on the same Shakespeare text (characters, then words),
at initialization and after training (``docs/diagnostics.md``; needs the Shakespeare texts of
``tailclip.problems.datasets``).

Timings are process CPU seconds with torch limited to one thread (``torch.set_num_threads(1)``):
on a machine shared with other jobs, wall-clock time measures the neighbours as much as the
code, CPU time of a single-threaded process does not. Comparisons are ratios within one run.
"""

from __future__ import annotations

import argparse
import collections
import re
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from scipy import stats
from torch import nn

from tailclip.noise import (
    VERDICTS,
    NoiseReport,
    TailMonitor,
    collect_noise,
    larger_batch_noise,
    max_to_sum_slope,
    per_sample_grad_norms,
    tail_index,
    verdict,
)
from tailclip.noise._model import batch_gradient
from tailclip.optim import ClipSGD


def best_seconds(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Least process CPU time over ``repeats`` calls (single-threaded: robust to a shared machine)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return min(times)


def bench_tail_index() -> None:
    x = np.random.default_rng(0).standard_t(3.0, size=1_000_000)
    mohammadi = best_seconds(lambda: tail_index(x, n_boot=200))
    hill = best_seconds(lambda: tail_index(x, method="hill"))
    print(
        f"tail_index on 1e6 scalars: mohammadi + 200 bootstrap {mohammadi:.3f} s, hill {hill:.3f} s "
        f"(target < 1 s)"
    )


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
        return torch.stack(
            [
                batch_gradient(model, loss_fn, (tokens[j : j + 1], labels[j : j + 1]), params).norm()
                for j in range(batch)
            ]
        )

    def vmapped() -> torch.Tensor:
        return per_sample_grad_norms(model, loss_fn, (tokens, labels), chunk_size=batch)

    error = ((vmapped() - loop().double()).abs() / loop().double()).max().item()
    t_loop, t_vmap = best_seconds(loop), best_seconds(vmapped)
    t_loop, t_vmap = min(t_loop, best_seconds(loop)), min(t_vmap, best_seconds(vmapped))
    n_params = sum(p.numel() for p in params)
    print(
        f"per-sample norms, TransformerEncoder width {width}, seq {seq}, {n_params} params, batch {batch}: "
        f"loop {1e3 * t_loop:.1f} ms, torch.func {1e3 * t_vmap:.1f} ms, speed-up {t_loop / t_vmap:.1f}x "
        f"(target >= 5x); max rel. difference {error:.1e}"
    )


def bench_monitor(steps: int = 3000, batch: int = 64, repeats: int = 3) -> None:
    """Process CPU time (robust to other processes on a shared machine; run single-threaded)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(20_000, 64, generator=gen)
    y = (x[:, :10].sum(1) > 0).long() + (x[:, 10:20].sum(1) > 0).long()
    loss_fn = nn.CrossEntropyLoss()
    order = torch.randint(0, x.shape[0], (steps, batch), generator=torch.Generator().manual_seed(1))

    def train(with_monitor: bool) -> tuple[float, float, TailMonitor | None]:
        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 3)
        )
        optimizer = ClipSGD(model.parameters(), lr=0.05, momentum=0.9, max_norm=1.0)
        monitor = TailMonitor(model, loss_fn, (x, y), batch_size=batch) if with_monitor else None
        in_monitor = 0.0
        start = time.process_time()
        for step in range(1, steps + 1):
            index = order[step - 1]
            loss = loss_fn(model(x[index]), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if monitor is not None:
                before = time.process_time()
                monitor.step(optimizer, step)
                in_monitor += time.process_time() - before
        return time.process_time() - start, in_monitor, monitor

    plain, monitored, shares = [], [], []
    for _ in range(repeats):  # interleaved, so a busy machine slows both alike
        plain.append(train(False)[0])
        total, in_monitor, monitor = train(True)
        monitored.append(total)
        shares.append(in_monitor / (total - in_monitor))
    assert monitor is not None
    records = ", ".join(
        f"{h['step']}: {h['alpha']:.2f} [{h['alpha_low']:.2f}, {h['alpha_high']:.2f}], "
        f"clipped {h['clip_fraction']:.2f}"
        for h in monitor.history
    )
    print(f"  monitor records (step: alpha [interval], clipped fraction): {records}")
    print(
        f"TailMonitor defaults, MLP 64-256-256-3, batch {batch}, {steps} steps, "
        f"CPU seconds (best of {repeats}): plain {min(plain):.2f} s, monitored {min(monitored):.2f} s, "
        f"ratio {min(monitored) / min(plain):.3f}; "
        f"time inside monitor.step / training time of the same run: {100 * statistics.median(shares):.1f}% "
        f"(target <= 10%)"
    )


def symmetric_pareto(alpha: float, size: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Density ``alpha/2 (1 + |x|)^-(1 + alpha)``: Lomax magnitudes with random signs (tail index alpha)."""
    return rng.pareto(alpha, size=size) * rng.choice([-1.0, 1.0], size=size)


def gaussian_spread(_: float, size: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Gaussian with log-normally spread coordinate scales (vectors) or plain (scalars)."""
    scales = np.exp(rng.normal(0.0, 1.5, size=size[1:])) if len(size) == 2 else 1.0
    return rng.standard_normal(size) * scales


def bench_stable_coverage(seeds: int = 40) -> None:
    """Bias, spread and interval coverage of Mohammadi on symmetric stable scalars (n = 1e5)."""
    print("| alpha | mean estimate | sd | max abs. error | 95% interval covers alpha |")
    print("|---|---|---|---|---|")
    for alpha in (1.2, 1.5, 1.8):
        estimates, covered = [], 0
        for seed in range(seeds):
            x = stats.levy_stable.rvs(
                alpha, 0.0, size=100_000, random_state=np.random.default_rng(1000 + seed)
            )
            est = tail_index(x)
            estimates.append(est.alpha)
            covered += est.low <= alpha <= est.high
        errors = np.abs(np.array(estimates) - alpha)
        print(
            f"| {alpha} | {np.mean(estimates):.4f} | {np.std(estimates):.4f} | {errors.max():.3f} | "
            f"{covered}/{seeds} |"
        )


def bench_accuracy(seeds: int = 5) -> None:
    """Mohammadi at B and at 4B (means of 4), Hill, and the verdict, over ``seeds`` seeds per case."""
    print(
        "| law | true alpha | mode | Mohammadi alpha | Mohammadi at 4B | Hill (k = sqrt n) | verdicts |\n"
        "|---|---|---|---|---|---|---|"
    )
    cases: list[tuple[str, float, Callable]] = [
        ("Student-t", df, lambda df, size, rng: rng.standard_t(df, size=size)) for df in (1.5, 2.5, 4.0)
    ]
    cases += [("sym. Pareto", a, symmetric_pareto) for a in (1.2, 1.5, 1.8, 3.0)]
    cases += [
        ("alpha-stable", 1.5, lambda a, size, rng: stats.levy_stable.rvs(a, 0.0, size=size, random_state=rng))
    ]
    cases += [("Gaussian (spread scales)", 2.0, gaussian_spread)]
    for name, alpha, draw in cases:
        for mode, size in (("scalars n=1e5", (100_000,)), ("vectors n=2e4, d=16", (20_000, 16))):
            moh, moh_4b, hill, labels = [], [], [], []
            for seed in range(seeds):
                x = draw(alpha, size, np.random.default_rng(seed))
                tail = tail_index(x, center=True)
                tail_4b = tail_index(larger_batch_noise(x, 4), center=True)
                moh.append(tail.alpha)
                moh_4b.append(tail_4b.alpha)
                hill.append(tail_index(x, method="hill").alpha)
                labels.append(verdict(tail, tail_4b=tail_4b, ratio_slope=max_to_sum_slope(x)).label)
            counts = ", ".join(f"{labels.count(v)} {v}" for v in VERDICTS if v in labels)
            print(
                f"| {name} | {alpha} | {mode} | {np.mean(moh):.3f} +- {np.std(moh):.3f} | "
                f"{np.mean(moh_4b):.3f} +- {np.std(moh_4b):.3f} | "
                f"{np.mean(hill):.3f} +- {np.std(hill):.3f} | {counts} |"
            )


class CharAttention(nn.Module):
    """A causal 2-layer ``nn.TransformerEncoder`` over characters, learned positions, no dropout."""

    def __init__(self, vocab: int, width: int = 64, seq: int = 64, layers: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.position = nn.Parameter(0.02 * torch.randn(seq, width))
        layer = nn.TransformerEncoderLayer(width, 4, 4 * width, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(width, vocab)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(seq), persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens) + self.position[: tokens.shape[1]]
        n = tokens.shape[1]
        return self.head(self.encoder(h, mask=self.mask[:n, :n], is_causal=True))


class CharCNN(nn.Module):
    """A causal 1-D CNN over characters (left padding, kernel 5, two layers): no attention."""

    def __init__(self, vocab: int, width: int = 64, kernel: int = 5, layers: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.convs = nn.ModuleList(nn.Conv1d(width, width, kernel) for _ in range(layers))
        self.pad = kernel - 1
        self.head = nn.Linear(width, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens).transpose(1, 2)
        for conv in self.convs:
            h = h + torch.relu(conv(nn.functional.pad(h, (self.pad, 0))))
        return self.head(h.transpose(1, 2))


def char_windows(codes: torch.Tensor, seq: int) -> Callable[[int, torch.Generator], tuple]:
    """A batch sampler of random windows: inputs ``(B, seq)``, next-character targets ``(B, seq)``."""
    offsets = torch.arange(seq + 1)

    def sample(batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(0, codes.numel() - seq - 1, (batch_size, 1), generator=generator)
        windows = codes[starts + offsets]
        return windows[:, :-1], windows[:, 1:]

    return sample


def sequence_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))


def shakespeare_codes(level: str) -> tuple[torch.Tensor, int]:
    """Shakespeare as integer codes: characters (84 symbols) or words (the 4,999 most frequent
    lower-cased words and punctuation marks, the rest as one unknown code; Zipf-distributed)."""
    from tailclip.problems.datasets import shakespeare

    text = shakespeare()
    if level == "chars":
        alphabet = sorted(set(text))
        lookup = np.zeros(max(map(ord, alphabet)) + 1, dtype=np.int64)
        lookup[[ord(c) for c in alphabet]] = np.arange(len(alphabet))
        return torch.from_numpy(lookup[np.frombuffer(text.encode("latin-1"), dtype=np.uint8)]), len(alphabet)
    words = re.findall(r"[A-Za-z']+|[.,;:!?]", text.lower())
    index = {w: i + 1 for i, (w, _) in enumerate(collections.Counter(words).most_common(4999))}
    return torch.tensor([index.get(w, 0) for w in words]), 5000


def bench_models(level: str, batch: int, seq: int, train_steps: int = 300, noise_batches: int = 400) -> None:
    """Noise of a small attention model and a small CNN on the same Shakespeare text.

    At initialization and after ``train_steps`` AdamW steps, as Zhang et al. (NeurIPS 2020, Fig. 1
    and 4) measure BERT and ResNet: minibatch noise at batch ``batch`` (sequences of ``seq``
    tokens) around a mean of 16 batches, in training mode.
    """
    codes, vocab = shakespeare_codes(level)
    data = char_windows(codes, seq)
    print(
        f"\nShakespeare {level}: {codes.numel()} tokens, vocabulary {vocab}, windows of {seq}, batch {batch}"
    )
    print("| model | params | step | alpha (Mohammadi, vector) | alpha at 4B | Hill | verdict |")
    print("|---|---|---|---|---|---|---|")
    for name, build in (
        ("attention (2-layer TransformerEncoder, width 64)", lambda: CharAttention(vocab, 64, seq)),
        ("CNN (2 causal conv layers, width 64)", lambda: CharCNN(vocab, 64)),
    ):
        torch.manual_seed(0)
        model = build()
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        generator = torch.Generator().manual_seed(1)
        trained = 0
        for step in (0, train_steps):
            for _ in range(step - trained):
                inputs, target = data(batch, generator)
                optimizer.zero_grad()
                sequence_loss(model(inputs), target).backward()
                optimizer.step()
            trained = step
            sample = collect_noise(
                model,
                sequence_loss,
                data,
                batch_size=batch,
                mean_batches=16,
                noise_batches=noise_batches,
                step=step,
            )
            report = NoiseReport.from_sample(sample, n_boot=200)
            t, t4 = report.tail, report.tail_4b
            assert t4 is not None
            print(
                f"| {name} | {sample.num_params} | {step} | {t.alpha:.2f} [{t.low:.2f}, {t.high:.2f}] | "
                f"{t4.alpha:.2f} [{t4.low:.2f}, {t4.high:.2f}] | {report.hill.alpha:.1f} | "
                f"{report.verdict.label} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", default="speed", choices=("speed", "accuracy", "models", "all"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, timings in process CPU seconds")
    if args.what in ("speed", "all"):
        bench_tail_index()
        bench_per_sample(width=32, seq=16)
        bench_per_sample(width=64, seq=32)
        bench_monitor()
    if args.what in ("accuracy", "all"):
        bench_stable_coverage()
        bench_accuracy()
    if args.what in ("models", "all"):
        bench_models("chars", batch=32, seq=64)
        bench_models("words", batch=8, seq=32)


if __name__ == "__main__":
    main()
