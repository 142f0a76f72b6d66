"""Every Python block of docs/integrations.md runs as written, as its own program (the DDP
recipes spawn processes from ``__main__``), in a fresh directory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "integrations.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", DOC.read_text(), flags=re.S | re.M)
SLOW = ("transformers", "lightning", "mp.spawn", "torch.compile")


def test_the_doc_has_its_recipes() -> None:
    text = DOC.read_text()
    for heading in (
        "Hugging Face Trainer",
        "Lightning",
        "GradScaler",
        "bf16",
        "torch.compile",
        "DDP",
        "split API",
        "Checkpoint and resume",
        "Where tailclip differs",
    ):
        assert heading in text
    assert len(BLOCKS) == 10


@pytest.mark.parametrize(
    "code",
    [
        pytest.param(b, id=f"block{i}", marks=[pytest.mark.slow] if any(s in b for s in SLOW) else [])
        for i, b in enumerate(BLOCKS)
    ],
)
def test_recipe_runs(code: str, tmp_path: Path) -> None:
    script = tmp_path / "recipe.py"
    script.write_text(code)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
