"""The real Hugging Face Trainer on a tiny random GPT-2 (built from a config, no download):
tailclip metrics logged through Trainer.log (TensorBoard included) and equal to an independent
norm, bitwise resume for every registered optimizer (AGNI included) under a schedule, the
double-clipping warning, and AGNI's micro-batch noise under gradient accumulation."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers  # noqa: E402  (the tasks extra; a hard import: never skipped)
from integration_cases import AGNI_CASES, RESUME_CASES  # noqa: E402

from tailclip.integrations._common import find_tailclip_optimizer  # noqa: E402
from tailclip.integrations.transformers import (  # noqa: E402
    TailclipTrainerCallback,
    attach,
    decay_parameter_names,
    make_optimizer,
)
from tailclip.optim import OPTIMIZERS, ClipAdam, NoiseInjection  # noqa: E402


class TokenData(torch.utils.data.Dataset):
    def __init__(self, n: int, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, 32, (n, 8), generator=gen)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def tiny_gpt2() -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=32,
        n_positions=8,
        n_embd=16,
        n_layer=1,
        n_head=2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
    )
    return transformers.GPT2LMHeadModel(config)


def training_args(tmp: Path, **overrides: Any) -> Any:
    kwargs = dict(
        output_dir=str(tmp),
        per_device_train_batch_size=4,
        max_steps=4,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        seed=0,
        learning_rate=1e-3,
        max_grad_norm=0.0,
        disable_tqdm=True,
        lr_scheduler_type="linear",
        warmup_steps=2,
        weight_decay=0.1,
        dataloader_num_workers=0,
    )
    return transformers.TrainingArguments(**{**kwargs, **overrides})


class GradNorms(transformers.TrainerCallback):
    """The model-wide norm of the gradients the optimizer is about to step on, computed apart."""

    def __init__(self) -> None:
        self.norms: list[float] = []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        self.norms.append(float(torch.nn.utils.get_total_norm(grads)))


class UsedLR(transformers.TrainerCallback):
    """The learning rate the update really uses: that of the innermost optimizer's first group."""

    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        inner = find_tailclip_optimizer(optimizer)
        inner = inner.base_optimizer if isinstance(inner, NoiseInjection) else inner
        self.lrs.append(inner.param_groups[0]["lr"])


def logged(trainer: Any, key: str) -> list[float]:
    return [entry[key] for entry in trainer.state.log_history if key in entry]


def test_make_optimizer_builds_trainers_decay_groups(tmp_path: Path) -> None:
    model, args = tiny_gpt2(), training_args(tmp_path)
    opt = make_optimizer(model, args, "clip_adam", clip="global", max_norm=1.0)
    names = {p: n for n, p in model.named_parameters()}
    decayed, plain = ([names[p] for p in g["params"]] for g in opt.param_groups)
    assert set(decayed) == set(decay_parameter_names(model)) & set(names.values())  # lm_head is tied
    assert set(decayed) | set(plain) == set(names.values())
    assert any("ln_" in n for n in plain) and any(n.endswith("bias") for n in plain)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert opt.param_groups[0]["lr"] == 1e-3 and opt.param_groups[0]["betas"] == (0.9, 0.999)
    agni = make_optimizer(model, args, torch.optim.AdamW, agni={"eta": 0.01, "variance": "ema"})
    assert isinstance(agni, NoiseInjection) and isinstance(agni.base_optimizer, torch.optim.AdamW)
    assert len(agni.param_groups) == 2
    with pytest.raises(ValueError, match="Invalid optimizer: 'adamx'"):
        make_optimizer(model, args, "adamx")


def test_metrics_logged_through_trainer_equal_the_model_wide_norm(tmp_path: Path, monkeypatch: Any) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    model = tiny_gpt2()
    args = training_args(tmp_path, report_to="tensorboard")
    opt = make_optimizer(model, args, "clip_adam", clip="global", max_norm=0.05)
    grads = GradNorms()
    trainer = transformers.Trainer(
        model=model, args=args, train_dataset=TokenData(16), optimizers=(opt, None), callbacks=[grads]
    )
    attach(trainer)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no double clipping: max_grad_norm=0
        trainer.train()
    grad_norm, clipped = logged(trainer, "tailclip/grad_norm"), logged(trainer, "tailclip/clipped_norm")
    factor = logged(trainer, "tailclip/clip_factor")
    assert len(grad_norm) == len(grads.norms) == 4
    for ours, theirs in zip(grad_norm, grads.norms, strict=True):
        assert ours == pytest.approx(theirs, rel=1e-5)
    assert all(c < g and f == pytest.approx(c / g, rel=1e-5) for g, c, f in zip(grad_norm, clipped, factor))
    events = EventAccumulator(str(tmp_path / "tb")).Reload()
    scalars = [e.value for e in events.Scalars("train/tailclip/grad_norm")]
    assert scalars == pytest.approx(grad_norm, rel=1e-6)


def test_callback_finds_the_optimizer_under_accelerate_and_warns_once_on_double_clipping(
    tmp_path: Path,
) -> None:
    model = tiny_gpt2()
    args = training_args(tmp_path, max_grad_norm=1.0)
    opt = ClipAdam(model.parameters(), lr=1e-3, clip="global", max_norm=0.5)
    callback = TailclipTrainerCallback()
    trainer = transformers.Trainer(
        model=model, args=args, train_dataset=TokenData(16), optimizers=(opt, None), callbacks=[callback]
    )
    with pytest.warns(UserWarning, match="max_grad_norm=1.0") as record:
        trainer.train()
    assert sum("max_grad_norm" in str(w.message) for w in record) == 1
    assert type(trainer.optimizer).__name__ == "AcceleratedOptimizer" and callback.optimizer is opt
    assert len(logged(trainer, "tailclip/grad_norm")) == 4  # in log_history, also when not attached first


def test_agni_gets_its_microbatches_under_gradient_accumulation(tmp_path: Path) -> None:
    model = tiny_gpt2()
    args = training_args(
        tmp_path, gradient_accumulation_steps=2, per_device_train_batch_size=2, max_grad_norm=1.0
    )
    opt = make_optimizer(model, args, torch.optim.AdamW, agni={"eta": 0.01, "variance": "microbatch"})
    trainer = transformers.Trainer(
        model=model, args=args, train_dataset=TokenData(16), optimizers=(opt, None)
    )
    attach(trainer)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # neither "1 micro-batch" nor double clipping (AdamW)
        trainer.train()
    noise = logged(trainer, "tailclip/noise_norm")
    assert len(noise) == 4 and all(n > 0 for n in noise)

    model = tiny_gpt2()
    one = make_optimizer(model, args, torch.optim.AdamW, agni={"variance": "microbatch"})
    single = transformers.Trainer(
        model=model, args=training_args(tmp_path / "one"), train_dataset=TokenData(16), optimizers=(one, None)
    )
    attach(single)
    with pytest.warns(UserWarning, match="1 micro-batch"):
        single.train()


def _resume_factory(case: str):
    if case in AGNI_CASES:
        return lambda model, args: make_optimizer(
            model, args, torch.optim.AdamW, agni={"eta": 0.05, **AGNI_CASES[case]}
        )
    return lambda model, args: make_optimizer(model, args, case, **RESUME_CASES[case])


def test_every_registered_optimizer_has_a_resume_case() -> None:
    assert set(OPTIMIZERS) - {"noise_injection"} == set(RESUME_CASES)


@pytest.mark.parametrize("case", [*RESUME_CASES, *AGNI_CASES])
def test_resume_from_checkpoint_is_bitwise(case: str, tmp_path: Path) -> None:
    factory = _resume_factory(case)
    accumulation = 2 if case == "noise_injection-microbatch" else 1
    overrides = dict(
        max_steps=6,
        save_strategy="steps",
        save_steps=3,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=accumulation,
    )
    data = TokenData(24)

    def run(out: Path, resume: str | None = None) -> list[torch.Tensor]:
        model = tiny_gpt2()
        args = training_args(out, **overrides)
        trainer = transformers.Trainer(
            model=model,
            args=args,
            train_dataset=data,
            optimizers=(factory(model, args), None),
            callbacks=[used := UsedLR()],
        )
        attach(trainer)
        trainer.train(resume_from_checkpoint=resume)
        assert all(math.isfinite(v) for v in logged(trainer, "tailclip/grad_norm"))
        scheduled = logged(trainer, "learning_rate")
        assert used.lrs == scheduled[-len(used.lrs) :] and len(set(used.lrs)) >= 3  # the schedule is applied
        return [p.detach().clone() for p in model.parameters()]

    full = run(tmp_path / "full")
    resumed = run(tmp_path / "resumed", resume=str(tmp_path / "full" / "checkpoint-3"))
    assert any(not torch.equal(a, b) for a, b in zip(full, tiny_gpt2().parameters()))
    for a, b in zip(full, resumed, strict=True):
        assert torch.equal(a, b)


class Regression(torch.nn.Module):
    """A plain module Trainer can train: ``forward(x, labels)`` returns the loss."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": torch.nn.functional.mse_loss(self.net(x), labels)}


def test_tail_monitor_records_are_logged_under_tailclip_noise(tmp_path: Path) -> None:
    from tailclip.noise import TailMonitor

    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 6, generator=gen), torch.randn(64, 1, generator=gen) ** 3
    rows = [{"x": a, "labels": b} for a, b in zip(x, y)]
    model = Regression()
    monitor = TailMonitor(
        model.net,
        torch.nn.functional.mse_loss,
        (x, y),
        batch_size=2,
        every=2,
        mean_batches=2,
        noise_batches=20,
        k1=5,
        n_boot=10,
    )
    args = training_args(tmp_path, max_steps=4)
    opt = make_optimizer(model, args, "clip_sgd", lr=0.05, clip="global", max_norm=0.5)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=rows, optimizers=(opt, None))
    attach(trainer, monitor)
    trainer.train()
    assert len(monitor.history) == 2
    assert logged(trainer, "tailclip/noise/alpha") == pytest.approx([r["alpha"] for r in monitor.history])


def test_records_of_a_skipped_step_are_discarded_at_step_end() -> None:
    """Trainer zeroes gradients through the model, never through the optimizer: the callback
    discards AGNI's records of a step that did not consume them (a non-finite gradient)."""
    model = Regression()
    opt = NoiseInjection(torch.optim.AdamW(model.parameters(), lr=1e-2), variance="microbatch")
    callback = TailclipTrainerCallback()
    callback.optimizer = opt
    for _ in range(2):
        model(torch.randn(4, 6), torch.full((4, 1), float("nan")))["loss"].backward()
        opt.accumulate()
    with pytest.warns(UserWarning, match="non-finite"):
        opt.step()
    assert opt.microbatches == 2
    callback.on_step_end(None, None, None)
    assert opt.microbatches == 0 and opt.state_dict()["noise_injection"]["state"] == {}
