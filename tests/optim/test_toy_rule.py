"""Adding an optimizer takes one module: a toy rule registered from ``_toy_rule.py`` alone runs
through the generic battery and the vectorized suite.

The toy is loaded as a pytest plugin (``-p _toy_rule``) in a separate pytest run, so that it
registers before collection and the registry of this run keeps its seven optimizers. The run
selects the toy's tests (``-k toy_sign_sgd``) of ``test_battery.py`` and ``test_vectorized.py``;
its JUnit report must list the battery's and the vectorized suite's tests for the toy, all passed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from tailclip.optim import OPTIMIZERS, VECTORIZED_RULES, register_optimizer

TESTS = Path(__file__).resolve().parents[1]
SRC = TESTS.parent / "src"

# Tests parametrized by battery case (test_battery.py) or vectorized case (test_vectorized.py).
BATTERY_TESTS = {
    "test_foreach_matches_loop",
    "test_state_dict_round_trip",
    "test_step_with_closure_returns_loss_and_updates",
    "test_none_grads_are_skipped",
    "test_step_leaves_grads_untouched",
    "test_sparse_grad_raises",
    "test_dtypes",
    "test_bfloat16_close_to_float32",
    "test_nonfinite_raises_naming_the_parameter",
    "test_nonfinite_skip_leaves_everything_untouched",
    "test_nonfinite_skip_property",
    "test_step_stats",
    "test_global_clipping_bounds_the_clipped_norm",
    "test_invalid_hyperparameter_raises_naming_it",
}
VECTORIZED_TESTS = {"test_run_r_equals_a_single_run_of_the_optimizer_class"}


def test_a_rule_registered_from_one_module_runs_through_the_battery_and_the_vectorized_suite(
    tmp_path: Path,
) -> None:
    report = tmp_path / "toy.xml"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS / "optim"), str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "_toy_rule",
         "-k", "toy_sign_sgd", f"--junitxml={report}",
         str(TESTS / "optim" / "test_battery.py"), str(TESTS / "problems" / "test_vectorized.py")],
        cwd=TESTS.parent, env=env, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    cases = list(ElementTree.parse(report).getroot().iter("testcase"))
    ran = {(c.get("classname", "").rsplit(".", 1)[-1], c.get("name", "").split("[")[0]) for c in cases}
    assert {("test_battery", name) for name in BATTERY_TESTS} <= ran
    assert {("test_vectorized", name) for name in VECTORIZED_TESTS} <= ran
    assert all("toy_sign_sgd" in c.get("name", "") for c in cases)
    assert not any(c.find(tag) is not None for c in cases for tag in ("failure", "error", "skipped"))


def test_registering_a_taken_name_raises_and_leaves_the_registry_unchanged() -> None:
    before, before_vectorized = dict(OPTIMIZERS), dict(VECTORIZED_RULES)
    with pytest.raises(ValueError, match="Invalid name: 'clip_sgd' is already registered") as info:
        register_optimizer("clip_sgd", object)
    assert "\n" not in str(info.value)
    assert OPTIMIZERS == before and VECTORIZED_RULES == before_vectorized
