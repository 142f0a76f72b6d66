"""The real Lightning Trainer on a tiny random MLP: tailclip metrics logged through self.log and
equal to an independent model-wide norm, bitwise resume for every registered optimizer (AGNI
included) under a per-step schedule, the double-clipping warning, and AGNI's micro-batch noise
under gradient accumulation."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as L  # noqa: E402  (the integrations extra; a hard import: never skipped)
import pytest
import torch
import torch.nn.functional as F
from integration_cases import AGNI_CASES, RESUME_CASES  # noqa: E402
from lightning.pytorch.loggers.logger import Logger  # noqa: E402
from torch import nn

from tailclip.integrations.lightning import TailclipCallback  # noqa: E402
from tailclip.optim import OPTIMIZERS, NoiseInjection  # noqa: E402


def two_groups(net: nn.Module) -> list[dict[str, Any]]:
    """Decay for matrices, none for biases and LayerNorm (as HF Trainer's groups)."""
    decay = [p for n, p in net.named_parameters() if p.ndim > 1]
    rest = [p for n, p in net.named_parameters() if p.ndim <= 1]
    return [{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}]


def factory_for(case: str):
    if case in AGNI_CASES:
        return lambda net: NoiseInjection(
            torch.optim.AdamW(two_groups(net), lr=1e-2), eta=0.05, **AGNI_CASES[case]
        )
    return lambda net: OPTIMIZERS[case](two_groups(net), **RESUME_CASES[case])


class Regression(L.LightningModule):
    def __init__(self, factory) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.Tanh(), nn.Linear(16, 1))
        self.factory = factory
        self.grad_norms: list[float] = []
        self.lrs: list[float] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.mse_loss(self.net(x), y)

    def on_before_optimizer_step(self, optimizer) -> None:  # after backward, before any clipping
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        self.grad_norms.append(float(torch.nn.utils.get_total_norm(grads)))
        inner = optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer
        inner = inner.base_optimizer if isinstance(inner, NoiseInjection) else inner
        self.lrs.append(inner.param_groups[0]["lr"])

    def configure_optimizers(self):
        opt = self.factory(self.net)
        schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.7**t)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class Capture(Logger):
    """Every metrics dict the Trainer logs."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[int, dict[str, float]]] = []

    @property
    def name(self) -> str:
        return "capture"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.rows.append((step, dict(metrics)))

    def log_hyperparams(self, *args: Any, **kwargs: Any) -> None:
        pass

    def values(self, key: str) -> list[float]:
        return [row[key] for _, row in self.rows if key in row]


def data(n: int = 12) -> torch.utils.data.DataLoader:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, 6, generator=gen)
    y = torch.randn(n, 1, generator=gen) ** 3  # heavy-ish tailed targets
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4, shuffle=False)


def trainer(**overrides: Any) -> Any:
    kwargs = dict(
        accelerator="cpu",
        devices=1,
        max_epochs=2,
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=Capture(),
    )
    return L.Trainer(**{**kwargs, **overrides})


def test_metrics_logged_through_self_log_equal_the_model_wide_norm() -> None:
    module = Regression(
        lambda net: OPTIMIZERS["clip_adam"](two_groups(net), lr=1e-2, clip="global", max_norm=0.2)
    )
    run = trainer(callbacks=[TailclipCallback()])
    run.fit(module, data())
    log = run.logger
    grad_norm = log.values("tailclip/grad_norm")
    clipped, factor = log.values("tailclip/clipped_norm"), log.values("tailclip/clip_factor")
    assert len(grad_norm) == len(module.grad_norms) == 6
    for ours, theirs in zip(grad_norm, module.grad_norms, strict=True):
        assert ours == pytest.approx(theirs, rel=1e-5)
    assert any(c < g for g, c in zip(grad_norm, clipped))
    assert all(f == pytest.approx(c / g, rel=1e-5) for g, c, f in zip(grad_norm, clipped, factor))


def test_double_clipping_warns_once_naming_gradient_clip_val() -> None:
    module = Regression(
        lambda net: OPTIMIZERS["clip_sgd"](net.parameters(), lr=0.05, clip="global", max_norm=0.5)
    )
    with pytest.warns(UserWarning, match="gradient_clip_val=1.0") as record:
        trainer(callbacks=[TailclipCallback()], gradient_clip_val=1.0).fit(module, data())
    assert sum("gradient_clip_val" in str(w.message) for w in record) == 1


def test_agni_gets_its_microbatches_under_gradient_accumulation() -> None:
    module = Regression(factory_for("noise_injection-microbatch"))
    run = trainer(callbacks=[TailclipCallback()], accumulate_grad_batches=2, gradient_clip_val=1.0)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        run.fit(module, data(16))
    assert not [w for w in record if "micro-batch" in str(w.message) or "gradient_clip_val" in str(w.message)]
    noise = run.logger.values("tailclip/noise_norm")
    assert len(noise) == 4 and all(n > 0 for n in noise)

    single = Regression(factory_for("noise_injection-microbatch"))
    with pytest.warns(UserWarning, match="1 micro-batch"):
        trainer(callbacks=[TailclipCallback()]).fit(single, data())


def test_every_registered_optimizer_has_a_resume_case() -> None:
    assert set(OPTIMIZERS) - {"noise_injection"} == set(RESUME_CASES)


@pytest.mark.parametrize("case", [*RESUME_CASES, *AGNI_CASES])
def test_resume_from_checkpoint_is_bitwise(case: str, tmp_path: Path) -> None:
    accumulation = 2 if case == "noise_injection-microbatch" else 1
    n = 12 * accumulation

    def run(resume: str | None = None) -> Regression:
        module = Regression(factory_for(case))
        saver = L.callbacks.ModelCheckpoint(
            dirpath=tmp_path,
            save_top_k=-1,
            every_n_epochs=1,
            save_on_train_epoch_end=True,
            filename="{epoch}",
        )
        fit = trainer(
            callbacks=[TailclipCallback(), saver],
            enable_checkpointing=True,
            accumulate_grad_batches=accumulation,
        )
        fit.fit(module, data(n), ckpt_path=resume)
        return module

    full = run()
    resumed = run(str(tmp_path / "epoch=0.ckpt"))
    assert len(set(full.lrs)) == 6 and resumed.lrs == full.lrs[3:]  # the schedule reaches the update
    for a, b in zip(full.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)
    assert any(not torch.equal(a, b) for a, b in zip(full.parameters(), Regression(None).parameters()))


def test_tail_monitor_records_are_logged_under_tailclip_noise() -> None:
    from tailclip.noise import TailMonitor

    loader = data(16)
    x, y = data(64).dataset.tensors  # the monitor's own draws
    module = Regression(factory_for("clip_adam"))
    monitor = TailMonitor(
        module.net,
        F.mse_loss,
        (x, y),
        batch_size=2,
        every=4,
        mean_batches=2,
        noise_batches=20,
        k1=5,
        n_boot=10,
    )
    run = trainer(callbacks=[TailclipCallback(monitor)], max_epochs=2)
    run.fit(module, loader)
    alphas = run.logger.values("tailclip/noise/alpha")
    assert len(monitor.history) == 2 and alphas == pytest.approx([r["alpha"] for r in monitor.history])
    assert run.logger.values("tailclip/noise/clip_fraction") == [r["clip_fraction"] for r in monitor.history]


def test_the_optimizer_is_found_under_lightnings_wrapper() -> None:
    from lightning.pytorch.core.optimizer import LightningOptimizer

    from tailclip.integrations._common import find_tailclip_optimizer

    net = nn.Linear(2, 1)
    opt = NoiseInjection(torch.optim.AdamW(net.parameters()), variance="ema")
    assert find_tailclip_optimizer(LightningOptimizer(opt)) is opt
    assert find_tailclip_optimizer(LightningOptimizer(torch.optim.AdamW(net.parameters()))) is None
