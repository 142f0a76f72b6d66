"""The control's words for tied finalists follow the measured losses, not the tie-break."""

from __future__ import annotations

from _advice_fakes import finalist

from tailclip.advise.control import no_gain_message, too_short
from tailclip.advise.plan import make_plan
from tailclip.engine.config import parse_config

AT = "at batch 512 (16x, noise scale x0.26)"


def test_a_tie_broken_for_the_second_best_does_not_call_a_kept_order_a_flip() -> None:
    """lm-acclip's advice: Adam recommended on a tie with CClip, CClip lower at both batches."""
    message = no_gain_message(("yours", "cclip"), (2.4535, 2.4432), (3.183, 2.902), AT)
    assert "cclip lower" in message and "cclip is lower as well" in message
    assert "flip" not in message


def test_a_tie_whose_leader_changes_with_the_batch_says_so() -> None:
    message = no_gain_message(("yours", "cclip"), (2.4535, 2.4432), (2.80, 2.90), AT)
    assert "cclip lower" in message and "yours is lower instead" in message
    assert message.endswith("final losses 2.8 and 2.9")


def test_a_control_the_budget_cannot_afford_says_too_short_and_runs_nothing() -> None:
    plan = make_plan(300.0, 100, 0.569, 7, 16, 120_000, eval_seconds=1.55)
    config = parse_config(
        {
            "name": "short",
            "task": {"name": "noisy-quadratic"},
            "optimizer": {"name": "sgd", "lr": 0.1},
            "train": {"steps": 100, "batch_size": 16},
        }
    )
    control = too_short(config, finalist("cclip", (0.5, 0.51)), finalist("yours", (0.6, 0.61)), plan)
    assert control.outcome == "too short" and control.explained_by_noise is None and control.run_ids == ()
    assert control.message.startswith("too short to conclude")
    assert f"--budget-minutes {plan.control_budget_minutes} or more" in control.message
    assert f"{plan.control_steps} steps at batch 64 (4x)" in control.message
