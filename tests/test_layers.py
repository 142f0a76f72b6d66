"""Imports run one way, down the layers: no module of tailclip imports a layer above its own.

The layers, top to bottom (``docs/architecture.md``)::

    cli  ->  advise  ->  engine, claims, integrations  ->  problems  ->  noise  ->  optim  ->  clip  ->  torch

A module may import its own layer and any layer below it. ``problems`` sits above ``noise``:
the task contract (``problems/task.py``) hands the noise diagnostics a ``BatchLoss``, and no
module of ``noise`` imports ``problems``. Every import statement counts, function-local and
``TYPE_CHECKING`` ones included: a lazy upward import is still a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tailclip

PACKAGE = Path(tailclip.__file__).resolve().parent

# rank of each layer; a module may import modules of equal or lower rank
LAYERS: dict[str, int] = {
    "cli": 7,
    "advise": 6,
    "engine": 5,
    "claims": 5,
    "integrations": 5,
    "problems": 4,
    "noise": 3,
    "optim": 2,
    "clip": 1,
}
ROOT_RANK = 0  # the package itself (``tailclip/__init__.py``: the version) is below everything


def layer_rank(module: str) -> int:
    """The rank of ``tailclip.<layer>...`` (``module`` is a dotted name inside tailclip)."""
    parts = module.split(".")
    if parts[0] != "tailclip":
        raise ValueError(f"not a tailclip module: {module}")
    if len(parts) == 1:
        return ROOT_RANK
    if parts[1] not in LAYERS:
        raise AssertionError(f"{module}: no layer assigned; add tailclip.{parts[1]} to LAYERS")
    return LAYERS[parts[1]]


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """``(line, dotted name)`` of every tailclip module that ``source`` imports, anywhere in it."""
    found: list[tuple[int, str]] = []
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            # ``from tailclip import noise`` imports the submodule tailclip.noise
            found.extend(
                (node.lineno, f"{target}.{alias.name}") for alias in node.names if target == "tailclip"
            )
    return [(line, name) for line, name in found if name == "tailclip" or name.startswith("tailclip.")]


def upward_imports(source: str, module: str, is_package: bool = False) -> list[str]:
    """The imports of ``source`` (the text of ``module``) that reach a higher layer."""
    own = layer_rank(module)
    return [
        f"{module}:{line} imports {target}"
        for line, target in imported_modules(source, module, is_package)
        if layer_rank(target) > own
    ]


def package_modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_the_walk_sees_every_layer() -> None:
    layers = {module_name(p).split(".")[1] for p in package_modules() if module_name(p) != "tailclip"}
    assert {"cli", "engine", "claims", "problems", "noise", "optim", "clip"} <= layers
    assert layers <= set(LAYERS)


@pytest.mark.parametrize("path", package_modules(), ids=lambda p: module_name(p))
def test_no_module_imports_a_higher_layer(path: Path) -> None:
    module = module_name(path)
    assert upward_imports(path.read_text(encoding="utf-8"), module, path.name == "__init__.py") == []


SELF_CHECK = [
    pytest.param(
        "tailclip.problems.synthetic", "from tailclip.engine.config import ExperimentConfig\n", id="top"
    ),
    pytest.param(
        "tailclip.optim.sgd",
        "def f():\n    import tailclip.noise.estimators\n    return tailclip.noise\n",
        id="function-local",
    ),
    pytest.param(
        "tailclip.noise.monitor",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from tailclip.problems import TASKS\n",
        id="type-checking",
    ),
    pytest.param("tailclip.clip", "from tailclip import optim\n", id="from-package"),
    pytest.param("tailclip.noise.collect", "from ..problems.task import Task\n", id="relative"),
]


@pytest.mark.parametrize(("module", "source"), SELF_CHECK)
def test_an_upward_import_is_caught(module: str, source: str) -> None:
    assert len(upward_imports(source, module)) == 1


def test_downward_and_sibling_imports_pass() -> None:
    source = (
        "import torch\nfrom tailclip.clip import clip_tensors\nfrom tailclip.noise import BatchLoss\n"
        "from tailclip.problems.samplers import sample_noise\nfrom . import datasets\nimport tailclip\n"
    )
    assert upward_imports(source, "tailclip.problems.quadratic") == []
