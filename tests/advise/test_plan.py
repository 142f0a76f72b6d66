"""How ``advise`` sizes its runs for a budget."""

from __future__ import annotations

import pytest

from tailclip.advise.plan import MAX_BUDGET, MIN_BUDGET, Plan, default_budget_seconds, make_plan


def test_full_length_when_the_budget_allows() -> None:
    plan = make_plan(600.0, 300, 0.001, 7, 1, None)
    assert plan.trial_steps == 300 and plan.lr_points == 5 and not plan.over_budget
    assert plan.eval_every == 100 and plan.seeds == 3


def test_shorter_runs_and_a_smaller_grid_for_a_small_budget() -> None:
    plan = make_plan(600.0, 10_000, 0.01, 7, 32, None)
    assert plan.lr_points == 3
    assert 20 <= plan.trial_steps < 10_000 / 5
    run = plan.trial_steps * 0.01 + 1.0
    assert (7 * 3 * 0.6 + 3 * 2 + 6) * run <= 600.0


def test_evaluation_time_shortens_the_runs() -> None:
    quick = make_plan(600.0, 10_000, 0.01, 7, 32, None)
    slow = make_plan(600.0, 10_000, 0.01, 7, 32, None, eval_seconds=2.0)
    assert slow.trial_steps < quick.trial_steps
    run = slow.trial_steps * 0.01 + 4 * 2.0 + 1.0  # four evaluations per bake-off run
    assert (7 * 3 * 0.6 + 3 * 2) * run <= 0.8 * 600.0 + 1e-9


def test_floor_of_twenty_steps_is_flagged_as_over_budget() -> None:
    plan = make_plan(5.0, 10_000, 1.0, 7, 32, None)
    assert plan.trial_steps == 20 and plan.over_budget


def test_control_uses_the_full_batch_for_small_finite_data() -> None:
    plan = make_plan(600.0, 640, 0.001, 5, 64, 4096)
    assert plan.control_batch == 4096
    # at least the same number of epochs (10 steps), more as the control's share affords: 0.2 x 600 / 6 runs
    assert plan.control_steps == int((600.0 * 0.2 / 6 - 1.0) / (0.001 * 64))


def test_control_uses_sixteen_batches_for_large_data() -> None:
    plan = make_plan(600.0, 600, 0.01, 5, 128, 60_000)
    assert plan.control_batch == 2048 and plan.control_steps == int((20.0 - 1.0) / 0.16)
    tight = make_plan(60.0, 600, 0.01, 5, 128, 60_000)
    # 16 B affords 6 steps in its share (2 s), the same examples 7: too few, so 8 B (12 affordable)
    assert tight.control_batch == 1024 and not tight.control_too_short
    assert tight.control_steps == max(-(-tight.trial_steps // 8), 12)  # never fewer than the same examples


def test_stream_control_keeps_the_steps_when_the_large_batch_is_cheap() -> None:
    cheap = make_plan(600.0, 300, 0.001, 7, 1, None, control_step_seconds=0.002)
    assert cheap.control_batch == 16 and cheap.control_steps == 300
    dear = make_plan(600.0, 300, 0.001, 7, 1, None, control_step_seconds=1.0)
    assert dear.control_steps == 19


def test_control_falls_back_to_four_batches_for_ten_steps() -> None:
    """text-agni's measured speed (0.569 s a step at batch 16, 1.55 s an evaluation): 16 B affords
    3 steps and 8 B 6 in the control's share; 4 B affords 13."""
    plan = make_plan(1064.0, 100, 0.569, 7, 16, 120_000, eval_seconds=1.55)
    share = 1064.0 * 0.2 / 6 - 2 * 1.55 - 1.0
    assert int(share / (0.569 * 16)) < 10 and int(share / (0.569 * 8)) < 10
    assert plan.control_batch == 64 and plan.control_steps == int(share / (0.569 * 4)) >= 10
    assert not plan.control_too_short and plan.control_budget_minutes is None


def test_control_too_short_names_a_budget_that_affords_one() -> None:
    plan = make_plan(300.0, 100, 0.569, 7, 16, 120_000, eval_seconds=1.55)
    assert plan.control_too_short and plan.control_batch == 64 and plan.control_steps < 10
    assert plan.control_budget_seconds is not None
    assert plan.control_budget_minutes == -(-plan.control_budget_seconds // 60)
    enough = make_plan(plan.control_budget_seconds, 100, 0.569, 7, 16, 120_000, eval_seconds=1.55)
    assert not enough.control_too_short and enough.control_steps >= 10


def test_stream_control_step_time_scales_with_the_fallback_batch() -> None:
    """On a stream the step time is measured at 16 B; at 4 B it is taken as a quarter of it."""
    plan = make_plan(600.0, 60, 0.001, 7, 1, None, control_step_seconds=4.0)
    spare = 600.0 * 0.2 / 6 - 1.0
    assert max(int(spare / 4.0), 60 // 16 + 1) < 10 and max(int(spare / 2.0), 60 // 8 + 1) < 10
    assert plan.control_batch == 4 and plan.control_steps == int(spare / 1.0)


def test_a_measured_large_batch_step_shortens_the_runs_to_keep_the_control_in_its_share() -> None:
    """resnet-delta-gclip's measured times: 0.105 s a step at batch 128, 1.9 s an evaluation, and
    3.1 s a step at the control's batch 2,048 (not 16 x 0.105 = 1.68 s). Planned with the linear
    guess, the control's six runs cost 401 s of a 231 s share (they took 406 s)."""
    linear = make_plan(1157.0, 600, 0.105, 6, 128, 50_000, eval_seconds=1.9)
    measured = make_plan(1157.0, 600, 0.105, 6, 128, 50_000, eval_seconds=1.9, control_step_seconds=3.1)

    def control_cost(plan: Plan) -> float:
        return 6 * (plan.control_steps * 3.1 + 2 * 1.9 + 1.0)

    share = 0.2 * 1157.0
    assert control_cost(linear) > 1.7 * share
    assert measured.control_batch == 2048 and measured.control_steps >= -(-measured.trial_steps // 16)
    assert control_cost(measured) <= share * 1.02  # the same-examples floor rounds up
    assert measured.trial_steps < linear.trial_steps


def test_fixed_run_length_does_not_depend_on_speed() -> None:
    fast = make_plan(60.0, 640, 1e-6, 5, 64, 4096, trial_steps=640)
    slow = make_plan(60.0, 640, 10.0, 5, 64, 4096, trial_steps=640)
    assert fast == slow
    assert fast.trial_steps == 640 and fast.lr_points == 5 and fast.control_steps == 10
    short = make_plan(60.0, 640, 1.0, 5, 64, 4096, trial_steps=64)
    assert short.control_batch == 4096 and short.control_steps == 10  # one epoch is one step: 10 at least
    stream = make_plan(60.0, 300, 10.0, 7, 1, None, trial_steps=300)
    assert stream.control_batch == 16 and stream.control_steps == 300


def test_default_budget_is_clamped() -> None:
    assert default_budget_seconds(10, 1e-4, 0.0, 5) == MIN_BUDGET
    assert default_budget_seconds(100_000, 1.0, 0.0, 5) == MAX_BUDGET
    assert default_budget_seconds(300, 0.001, 0.5, 7) == pytest.approx(
        (7 * 5 * 0.6 + 3 * 2 + 6) * (0.3 + 2.0 + 1.0)
    )
