"""Probes behind the optimizer-step choices in docs/benchmarks.md: what torch's CPU kernels cost.

* ``samplers``: ns per value of torch's CPU random samplers (2^24 values), a full-size
  ``torch.randn`` against ``normal_`` into an existing tensor, block-wise ``normal_`` on one
  generator against two generators in two threads (AGNI's draw floor).
* ``sqrt``: ``sqrt_`` of zeros against ``sqrt_`` of ones (2^18 values; a constant benchmark
  gradient gives an EMA variance of exact zeros).
* ``norms``: the norm of one flat tensor against its 16 rows; the BERT-shaped parameter set
  through ``torch._foreach_norm`` and through ``tailclip.clip.tensor_norms``; a plain ``sum``
  of the same bytes; ns per element from memory against from cache (2^18 values, repeated).
* ``fused``: ``torch._fused_adamw_`` on the BERT-shaped set with and without a ``grad_scale``
  (with one, the kernel writes the scaled gradient back into the gradients).
* ``compiled`` (slow: about 90 s of compilation): an inductor-compiled noise step
  ``g + randn_like(g) * sigma * f`` against eager, and a compiled Adam update with a folded
  clip factor against the fused kernel.

Run: ``python benchmarks/optim_probes.py [samplers sqrt norms fused compiled]`` (default: all
but ``compiled``). Times are medians of repeated calls in one process.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Callable

import torch
from optim_step import bert_shaped_params, median_ms

from tailclip.clip import tensor_norms

N = 91_600_000
BLOCK = 1 << 18


def ns_per_value(fn: Callable[[], object], values: int, repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e9 * statistics.median(times) / values


def samplers() -> None:
    n = 1 << 24
    gen = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        x = torch.empty(n, dtype=dtype)
        print(f"normal_ {dtype}: {ns_per_value(lambda x=x: x.normal_(generator=gen), n):.2f} ns/value")
    ints = torch.empty(n, dtype=torch.int32)
    print(f"random_ int32: {ns_per_value(lambda: ints.random_(generator=gen), n):.2f} ns/value")
    x = torch.empty(n)
    print(f"exponential_ float32: {ns_per_value(lambda: x.exponential_(generator=gen), n):.2f} ns/value")
    _full_draws(gen)
    blocks = [torch.empty(BLOCK), torch.empty(BLOCK)]
    gens = [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)]

    def draw(block: torch.Tensor, g: torch.Generator, count: int) -> None:
        for _ in range(count):
            block.normal_(generator=g)

    def two_threads() -> None:
        threads = [threading.Thread(target=draw, args=(b, g, N // BLOCK // 2)) for b, g in zip(blocks, gens)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    print(f"{N} values in blocks of {BLOCK}: one generator "
          f"{median_ms(lambda: draw(blocks[0], gens[0], N // BLOCK), 5):.1f} ms, "
          f"two generators in two threads {median_ms(two_threads, 5):.1f} ms")


def _full_draws(gen: torch.Generator) -> None:
    big = torch.empty(N)
    fresh = median_ms(lambda: torch.randn(N, generator=gen), 5)
    existing = median_ms(lambda: big.normal_(generator=gen), 5)
    print(f"torch.randn({N}): {fresh:.1f} ms; normal_ into an existing tensor: {existing:.1f} ms")


def sqrt() -> None:
    zeros, ones = torch.zeros(BLOCK), torch.ones(BLOCK)
    print(f"sqrt_ of 2^18 zeros {1e3 * median_ms(zeros.sqrt_, 20):.0f} us, "
          f"of 2^18 ones {1e3 * median_ms(ones.sqrt_, 20):.0f} us")


def _flat_norms() -> None:
    flat = torch.randn(N)
    rows = flat.view(16, -1)
    whole = median_ms(lambda: torch.linalg.vector_norm(flat), 15)
    by_rows = median_ms(lambda: torch.linalg.vector_norm(rows, dim=1), 15)
    summed = median_ms(lambda: rows.sum(dim=1), 15)
    print(f"norm of one {N}-element tensor: flat {whole:.1f} ms, as 16 rows {by_rows:.1f} ms, "
          f"plain sum {summed:.1f} ms")
    small = torch.randn(BLOCK)
    repeats = N // BLOCK
    in_cache = ns_per_value(
        lambda: [torch.linalg.vector_norm(small) for _ in range(repeats)], repeats * BLOCK
    )
    from_memory = ns_per_value(lambda: torch.linalg.vector_norm(flat), N)
    print(f"flat norm per element: from memory {from_memory:.3f} ns, in cache {in_cache:.3f} ns")


def norms() -> None:
    _flat_norms()
    grads = [p.grad for p in bert_shaped_params(12, 8000)]
    print(f"BERT-shaped set ({sum(g.numel() for g in grads) / 1e6:.1f}M): _foreach_norm "
          f"{median_ms(lambda: torch._foreach_norm(grads), 15):.1f} ms, tensor_norms "
          f"{median_ms(lambda: tensor_norms(grads), 15):.1f} ms")


def fused() -> None:
    params = bert_shaped_params(12, 8000)
    p = [q.detach() for q in params]
    g = [q.grad for q in params]
    m, v = [torch.zeros_like(t) for t in p], [torch.zeros_like(t) for t in p]
    steps = [torch.tensor(1.0) for _ in p]
    one = torch.tensor(1.0)

    def step(grad_scale: torch.Tensor | None) -> None:
        torch._foreach_add_(steps, 1.0)
        torch._fused_adamw_(p, g, m, v, [], steps, amsgrad=False, lr=1e-4, beta1=0.9, beta2=0.999,
                            weight_decay=0.01, eps=1e-8, maximize=False, grad_scale=grad_scale,
                            found_inf=None)

    for _ in range(3):  # alternated: the machine's speed drifts
        plain, scaled = median_ms(lambda: step(None), 10), median_ms(lambda: step(one), 10)
        print(f"_fused_adamw_ on {sum(t.numel() for t in p) / 1e6:.1f}M: without grad_scale "
              f"{plain:.1f} ms, with grad_scale {scaled:.1f} ms")


def _compiled_noise() -> None:
    g, sigma, f = torch.randn(N), torch.rand(N), torch.tensor(0.1)

    def noise(g: torch.Tensor, sigma: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        return g + torch.randn_like(g) * sigma * f

    compiled_noise = torch.compile(noise, dynamic=False)
    start = time.perf_counter()
    compiled_noise(g, sigma, f)
    compile_s = time.perf_counter() - start
    fast = median_ms(lambda: compiled_noise(g, sigma, f), 5)
    eager = median_ms(lambda: noise(g, sigma, f), 5)
    print(f"noise step: compile {compile_s:.0f} s, compiled {fast:.0f} ms, eager {eager:.0f} ms")


def compiled() -> None:
    _compiled_noise()
    params = bert_shaped_params(12, 8000)
    ps, gs = [q.detach() for q in params], [q.grad for q in params]
    ms, vs = [torch.zeros_like(t) for t in ps], [torch.zeros_like(t) for t in ps]

    def update(coef: torch.Tensor) -> None:
        for p, grad, m, v in zip(ps, gs, ms, vs, strict=True):
            u = grad * coef
            p.mul_(1 - 1e-3 * 0.01)
            m.lerp_(u, 0.1)
            v.mul_(0.999).addcmul_(u, u, value=0.001)
            p.addcdiv_(m, (v.sqrt() / 0.03).add_(1e-8), value=-1e-3 / 0.1)

    compiled_update = torch.compile(update, dynamic=False)
    coef = torch.tensor(0.5)
    start = time.perf_counter()
    compiled_update(coef)
    compile_s = time.perf_counter() - start
    adamw = torch.optim.AdamW(params, lr=1e-3, fused=True)
    print(f"Adam update with the clip factor folded in: compile {compile_s:.0f} s; "
          f"compiled {median_ms(lambda: compiled_update(coef), 8):.1f} ms, "
          f"AdamW(fused) {median_ms(adamw.step, 8):.1f} ms")


PROBES = {"samplers": samplers, "sqrt": sqrt, "norms": norms, "fused": fused, "compiled": compiled}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("probes", nargs="*", metavar="PROBE", help=f"any of {', '.join(PROBES)}")
    args = parser.parse_args()
    unknown = [name for name in args.probes if name not in PROBES]
    if unknown:
        parser.error(f"unknown probe {unknown[0]!r}; allowed: {', '.join(PROBES)}")
    args.probes = args.probes or ["samplers", "sqrt", "norms", "fused"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in args.probes:
        print(f"-- {name}")
        PROBES[name]()


if __name__ == "__main__":
    main()
