"""Config schema: validation messages, resolution, identity, overrides, sweep expansion."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tailclip.engine.config import ConfigError, parse_config
from tailclip.engine.grid import expand_sweep, sweep_points
from tailclip.engine.identity import config_hash, group_key, run_config_dict
from tailclip.engine.yaml_loading import apply_overrides, builtin_configs, load_config

BASE: dict[str, Any] = {
    "name": "t",
    "task": {"name": "noisy-quadratic", "options": {"dim": 5}},
    "optimizer": {"name": "clip_sgd", "lr": 0.1},
    "train": {"steps": 100},
}


def mutated(**sections: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


def write(tmp_path: Path, data: Any, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


# (config, the field the message must name, a fragment of what is wrong)
ERROR_CASES = [
    pytest.param(mutated(extra=1), "extra", "unknown key; allowed: name, task", id="unknown-top-key"),
    pytest.param(
        mutated(train={"stepz": 3}), "train.stepz", "allowed: steps, epochs", id="unknown-train-key"
    ),
    pytest.param(mutated(train={"steps": "100"}), "train.steps", "wrong type", id="wrong-type-str"),
    pytest.param(mutated(train={"steps": 1.5}), "train.steps", "wrong type", id="wrong-type-float"),
    pytest.param(mutated(train={"steps": True}), "train.steps", "wrong type", id="wrong-type-bool"),
    pytest.param(
        mutated(train={"steps": 0}), "train.steps", "out of range; allowed: >= 1", id="out-of-range"
    ),
    pytest.param(mutated(train={"seed": -1}), "train.seed", "out of range", id="negative-seed"),
    pytest.param(mutated(task={"name": "nope"}), "task.name", "allowed: ", id="unknown-task"),
    pytest.param(
        mutated(task={"name": "noisy-quadratic", "options": {"dimm": 3}}),
        "task.options.dimm",
        "allowed: dim, condition_number",
        id="unknown-task-option",
    ),
    pytest.param(
        mutated(task={"name": "noisy-quadratic", "options": {"noise": "cauchy"}}),
        "task.options.noise",
        "'student_t'",
        id="bad-literal",
    ),
    pytest.param(
        mutated(task={"name": "noisy-quadratic", "options": {"condition_number": 0.5}}),
        "task.options.condition_number",
        "allowed: >= 1",
        id="task-option-range",
    ),
    pytest.param(
        mutated(optimizer={"name": "sgdd"}), "optimizer.name", "allowed: clip_sgd", id="unknown-optimizer"
    ),
    pytest.param(
        mutated(optimizer={"lrr": 0.1}),
        "optimizer.lrr",
        "allowed: lr, momentum, clip",
        id="unknown-hyperparameter",
    ),
    pytest.param(
        mutated(optimizer={"lr": -0.1}), "optimizer.lr", "Invalid learning rate", id="optimizer-range"
    ),
    pytest.param(mutated(optimizer={"lr": "fast"}), "optimizer.lr", "allowed: a number", id="optimizer-type"),
    pytest.param(
        mutated(optimizer={"momentum": 1.5}), "optimizer.momentum", "0 <= momentum < 1", id="momentum"
    ),
    pytest.param(
        mutated(optimizer={"clip": "bad"}), "optimizer.clip", "'global', 'group', 'layer'", id="clip-mode"
    ),
    pytest.param(
        {**mutated(), "optimizer": {"name": "nsgd"}}, "optimizer.lr", "missing required", id="no-lr"
    ),
    pytest.param(
        mutated(optimizer={"max_norm": {"policy": "autoclip", "percentile": 1000}}),
        "optimizer.max_norm",
        "percentile",
        id="policy-range",
    ),
    pytest.param(
        {**mutated(), "optimizer": {"name": "adam", "betas": [0.9, 1.5]}},
        "optimizer.betas",
        "index 1",
        id="betas",
    ),
    pytest.param(
        {
            **mutated(),
            "optimizer": {"name": "noise_injection", "base_optimizer": {"name": "adamw", "lr": -1.0}},
        },
        "optimizer.base_optimizer.lr",
        "Invalid learning rate",
        id="wrapped-optimizer",
    ),
    pytest.param(mutated(schedule={"kind": "bogus"}), "schedule.kind", "'cosine'", id="schedule-kind"),
    pytest.param(
        mutated(schedule={"kind": "cosine", "milestones": [3]}),
        "schedule.milestones",
        "not used by kind 'cosine'",
        id="schedule-field-for-other-kind",
    ),
    pytest.param(
        mutated(schedule={"kind": "step", "milestones": [50, 20]}),
        "schedule.milestones",
        "strictly increasing",
        id="milestones-order",
    ),
    pytest.param(
        mutated(schedule={"kind": "step", "milestones": [100]}),
        "schedule.milestones",
        "< train.steps",
        id="milestone",
    ),
    pytest.param(
        mutated(schedule={"kind": "cosine", "warmup_steps": 500}),
        "schedule.warmup_steps",
        "<= train.steps",
        id="wu",
    ),
    pytest.param(mutated(train={"epochs": 2, "steps": None}), "train.epochs", "no finite data", id="epochs"),
    pytest.param({**mutated(), "train": {}}, "train.steps", "missing", id="no-length"),
    pytest.param(mutated(train={"device": "gpu"}), "train.device", "allowed: auto, cpu, cuda", id="device"),
    pytest.param(
        mutated(train={"accumulation_steps": 0}), "train.accumulation_steps", ">= 1", id="accumulation"
    ),
    pytest.param(
        mutated(task={"name": "stochastic-quadratic", "options": {}}, train={"accumulation_steps": 2}),
        "train.accumulation_steps", "not a model task; allowed: 1", id="accumulation-vectorized",
    ),
    pytest.param(
        mutated(sweep={"grid": {"optimizer.lr": []}}), "sweep.grid.optimizer.lr", "empty", id="empty-grid"
    ),
    pytest.param(
        mutated(sweep={"grid": {"output.store": ["a"]}}), "sweep.grid.output.store", "not a sweepable", id="g"
    ),
    pytest.param(mutated(sweep={"seeds": [1, 1]}), "sweep.seeds", "distinct", id="duplicate-seeds"),
    pytest.param(mutated(sweep={"seeds": []}), "sweep.seeds", "non-empty", id="no-seeds"),
    pytest.param(mutated(name=""), "name", "non-empty", id="empty-name"),
    pytest.param(
        {k: v for k, v in BASE.items() if k != "name"}, "name", "missing required key", id="missing-name"
    ),
    pytest.param(mutated(task="x"), "task", "allowed: a mapping", id="section-not-mapping"),
    pytest.param(mutated(monitor={"every": 0}), "monitor.every", "allowed: >= 1", id="monitor"),
    pytest.param(["a", "list"], "(top level)", "allowed: a mapping", id="top-level-list"),
]


@pytest.mark.parametrize(("data", "field", "fragment"), ERROR_CASES)
def test_each_error_is_one_line_naming_file_and_field(
    tmp_path: Path, data: Any, field: str, fragment: str
) -> None:
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: {field}: "), message
    assert fragment in message, message


def test_invalid_yaml_names_the_position(tmp_path: Path) -> None:
    path = write(tmp_path, "name: t\ntask: [unclosed\n")
    with pytest.raises(ConfigError, match=r"invalid YAML: line 3, column 1"):
        load_config(path)


def test_missing_file_lists_builtin_configs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: file not found; allowed: .*demo"):
        load_config(tmp_path / "nope.yaml")


def test_builtin_configs_load_and_expand() -> None:
    configs = builtin_configs()
    assert {"demo", "quadratic-clip-grid"} <= set(configs)
    demo = load_config("demo")
    points = sweep_points(demo)
    assert len(points) == 4 * 3
    assert [p.assignment["optimizer"]["name"] for p in points[::3]] == [
        "sgd",
        "clip_sgd",
        "clip_sgd",
        "clip_adam",
    ]
    assert [p.config.train.seed for p in points[:3]] == [0, 1, 2]
    grid = load_config("quadratic-clip-grid")
    assert len(expand_sweep(grid)) == 3 * 3 * 5


def test_resolution_fills_defaults_and_identity_ignores_spelling() -> None:
    explicit = mutated(optimizer={"lr": 1, "momentum": 0.0, "clip": "global"})
    implicit = mutated(optimizer={"lr": 1.0})
    a, b = parse_config(explicit), parse_config(implicit)
    assert a.optimizer.hyperparameters["lr"] == 1.0 and isinstance(a.optimizer.hyperparameters["lr"], float)
    assert a.optimizer.hyperparameters["max_norm"] == 1.0
    assert a.task.options["condition_number"] == 10.0
    assert config_hash(a) == config_hash(b)
    assert len(config_hash(a)) == 16 and int(config_hash(a), 16) >= 0


def test_hash_identity_rules() -> None:
    base = parse_config(mutated())
    other_seed = parse_config(mutated(train={"seed": 7}))
    other_store = parse_config(mutated(output={"store": "elsewhere.sqlite"}))
    other_lr = parse_config(mutated(optimizer={"lr": 0.2}))
    with_sweep = parse_config(mutated(sweep={"seeds": [0, 1]}))
    assert config_hash(base) != config_hash(other_seed)
    assert group_key(base) == group_key(other_seed)
    assert config_hash(base) == config_hash(other_store) == config_hash(with_sweep)
    assert group_key(base) != group_key(other_lr)


def test_resolved_configs_round_trip() -> None:
    for name in builtin_configs():
        for config in expand_sweep(load_config(name)):
            again = parse_config(json.loads(json.dumps(run_config_dict(config))))
            assert config_hash(again) == config_hash(config)
            assert run_config_dict(again) == run_config_dict(config)


def test_yaml_exponent_floats(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "name: t\ntask: {name: noisy-quadratic}\noptimizer: {name: sgd, lr: 1e-3}\ntrain: {steps: 5}\n",
    )
    assert load_config(path).optimizer.hyperparameters["lr"] == 1e-3


def test_threshold_policy_and_wrapped_optimizer() -> None:
    config = parse_config(mutated(optimizer={"max_norm": {"policy": "zclip", "z_thresh": 3}}))
    assert config.optimizer.hyperparameters["max_norm"] == {
        "policy": "zclip",
        "alpha": 0.97,
        "z_thresh": 3.0,
        "warmup": 25,
    }
    wrapped = parse_config(
        {
            **mutated(),
            "optimizer": {"name": "noise_injection", "base_optimizer": {"name": "adamw", "lr": 0.01}},
        }
    )
    base = wrapped.optimizer.hyperparameters["base_optimizer"]
    assert base["name"] == "adamw" and base["lr"] == 0.01 and base["betas"] == [0.9, 0.999]


def test_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, mutated())
    config = load_config(
        path,
        [
            "optimizer.lr=0.5",
            "schedule.kind=cosine",
            "schedule.warmup_steps=10",
            "sweep.grid.optimizer.lr=[0.1, 0.2]",
        ],
    )
    assert config.optimizer.hyperparameters["lr"] == 0.5
    assert config.schedule.kind == "cosine" and config.schedule.warmup_steps == 10
    assert config.sweep is not None and config.sweep.grid == {"optimizer.lr": [0.1, 0.2]}
    with pytest.raises(ConfigError, match=r"^--set: 'optimizer': not key=value"):
        load_config(path, ["optimizer"])
    with pytest.raises(ConfigError, match=r"^--set: name.x: name is not a mapping"):
        load_config(path, ["name.x=1"])
    with pytest.raises(ConfigError, match=rf"^{path}: optimizer.lr: wrong type"):
        load_config(path, ["optimizer.lr=fast"])
    with pytest.raises(ConfigError, match=rf"^{path}: train.stepz: unknown key"):
        load_config(path, ["train.stepz=3"])
    assert apply_overrides({"a": {"b": 1}}, ["a.c=[1, 2]"]) == {"a": {"b": 1, "c": [1, 2]}}


def test_sweep_expansion_order_dedup_and_replacement() -> None:
    config = parse_config(
        mutated(
            sweep={
                "grid": {"optimizer.lr": [0.1, 0.2, 0.1], "optimizer.clip": ["global", "coord"]},
                "seeds": [3, 4],
            }
        )
    )
    points = sweep_points(config)
    # 3 x 2 grid points x 2 seeds, minus the repeated lr = 0.1 row
    assert len(points) == 2 * 2 * 2
    seen = [
        (p.assignment["optimizer.lr"], p.assignment["optimizer.clip"], p.config.train.seed) for p in points
    ]
    assert seen == [
        (0.1, "global", 3), (0.1, "global", 4), (0.1, "coord", 3), (0.1, "coord", 4),
        (0.2, "global", 3), (0.2, "global", 4), (0.2, "coord", 3), (0.2, "coord", 4),
    ]  # fmt: skip
    assert len({p.config.run_id for p in points}) == 8
    assert all(p.config.sweep is None for p in points)
    # whole-section values swap optimizers, including ones with other hyperparameters
    swapped = parse_config(
        mutated(sweep={"grid": {"optimizer": [{"name": "sgd", "lr": 0.1}, {"name": "adam"}]}})
    )
    names = [c.optimizer.name for c in expand_sweep(swapped)]
    assert names == ["sgd", "adam"]
    no_sweep = parse_config(mutated())
    assert [config_hash(c) for c in expand_sweep(no_sweep)] == [config_hash(no_sweep)]


def test_invalid_sweep_point_names_field_and_point() -> None:
    config = parse_config(mutated(sweep={"grid": {"optimizer.lr": [0.1, -1.0]}}), "exp.yaml")
    with pytest.raises(ConfigError) as info:
        expand_sweep(config)
    message = str(info.value)
    assert message.startswith("exp.yaml: optimizer.lr: ValueError: Invalid learning rate: -1.0")
    assert "(in sweep point optimizer.lr=-1.0, seed=0)" in message


# ----------------------------------------------------------------------------- no traceback escapes

_KEYS = st.sampled_from(
    ["name", "task", "optimizer", "schedule", "train", "sweep", "monitor", "output", "options", "lr",
     "kind", "steps", "seed", "grid", "seeds", "max_norm", "policy", "dim", "noise", "clip", "betas",
     "base_optimizer", "warmup_steps", "milestones", "epochs", "device", "every", "store", "df",
     "noisy-quadratic", "clip_sgd"]
)  # fmt: skip
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.sampled_from(["noisy-quadratic", "clip_sgd", "sgd", "adam", "cosine", "step", "student_t", "global"])
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(_KEYS | st.text(max_size=5), inner, max_size=5)
    ),
    max_leaves=25,
)


@st.composite
def _configs(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly-plausible configs: the valid base with random sections replaced or merged."""
    data = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(0, 4))):
        section = draw(_KEYS)
        value = draw(_VALUES)
        if isinstance(data.get(section), dict) and isinstance(value, dict) and draw(st.booleans()):
            data[section].update(value)
        else:
            data[section] = value
    return data


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_configs())
def test_random_configs_raise_only_config_errors(data: dict[str, Any]) -> None:
    try:
        config = parse_config(data)
    except ConfigError as exc:
        assert "\n" not in str(exc)
        return
    assert len(config_hash(config)) == 16
    try:
        expand_sweep(config)
    except ConfigError as exc:
        assert "\n" not in str(exc)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200) | _VALUES.map(lambda v: yaml.safe_dump(v)))
def test_random_yaml_files_raise_only_config_errors(tmp_path: Path, text: str) -> None:
    path = tmp_path / "random.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_config(path)
    except ConfigError as exc:
        assert "\n" not in str(exc)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    overrides=st.lists(st.text(max_size=30) | st.sampled_from(["optimizer.lr=", "train.steps=x", "a.b.c=1"]))
)
def test_random_overrides_raise_only_config_errors(tmp_path: Path, overrides: list[str]) -> None:
    path = write(tmp_path, mutated())
    try:
        load_config(path, overrides)
    except ConfigError as exc:
        assert "\n" not in str(exc)


def test_task_check_config_hook_becomes_a_config_error() -> None:
    from tailclip.problems import TASKS, register_task
    from tailclip.problems.quadratic import NoisyQuadratic

    class OnlyClipSGD(NoisyQuadratic):
        @classmethod
        def check_config(cls, options: Any, context: Any) -> None:
            if context.optimizer["name"] != "clip_sgd":
                raise ValueError(f"optimizer.name: got {context.optimizer['name']!r}; allowed: clip_sgd")

    register_task("test-only-clip-sgd")(OnlyClipSGD)
    try:
        assert parse_config(mutated(task={"name": "test-only-clip-sgd"})).task.name == "test-only-clip-sgd"
        with pytest.raises(ConfigError, match=r"^x.yaml: optimizer.name: got 'sgd'; allowed: clip_sgd$"):
            data = {**mutated(task={"name": "test-only-clip-sgd"}), "optimizer": {"name": "sgd"}}
            parse_config(data, "x.yaml")
    finally:
        TASKS.pop("test-only-clip-sgd")


def test_a_sweep_resolves_each_grid_point_once_not_once_per_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each grid point's optimizer is constructed once to validate it; its seeds reuse that resolution."""
    import tailclip.engine.optimizer_spec as optimizer_spec

    config = parse_config(mutated(sweep={"grid": {"optimizer.lr": [0.1, 0.2]}, "seeds": [0, 1, 2, 3]}))
    built: list[str] = []
    original = optimizer_spec.build_optimizer
    def counting(spec: Any, params: Any) -> Any:
        built.append(spec["name"])
        return original(spec, params)

    monkeypatch.setattr(optimizer_spec, "build_optimizer", counting)
    points = sweep_points(config)
    assert len(points) == 8 and built == ["clip_sgd", "clip_sgd"]
    assert [p.config.train.seed for p in points] == [0, 1, 2, 3] * 2
    for point in points:  # a reused resolution equals a fresh one
        again = parse_config(json.loads(json.dumps(run_config_dict(point.config))))
        assert config_hash(again) == config_hash(point.config)


def test_hyperparameters_come_from_the_signature_with_real_types() -> None:
    import torch

    from tailclip.engine.optimizer_spec import hyperparameters
    from tailclip.optim import ClipAdam, ClipSGD

    sgd = hyperparameters(ClipSGD)
    assert "params" not in sgd and sgd["lr"].default == 1e-3 and sgd["lr"].takes_float  # torch's SGD default
    assert sgd["max_norm"].takes_policy and sgd["max_norm"].takes_float and not sgd["clip"].takes_float
    assert hyperparameters(ClipAdam)["betas"].float_items
    torch_sgd = hyperparameters(torch.optim.SGD)
    assert torch_sgd["momentum"].default == 0 and torch_sgd["momentum"].takes_float
    config = parse_config({**mutated(), "optimizer": {"name": "sgd", "lr": 1, "momentum": 0}})
    resolved = config.optimizer.hyperparameters
    assert resolved["momentum"] == 0.0 and isinstance(resolved["momentum"], float)
    # a default filled from the signature gets the parameter's type too
    assert resolved["dampening"] == 0.0 and isinstance(resolved["dampening"], float)
