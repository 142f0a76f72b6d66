"""Shared test setup: ``tests/optim`` on ``sys.path``, so that any test file can import the
optimizer case registry (``cases``) and the shared optimizer fixtures (``optim_fixtures``),
whichever directory pytest is started on."""

import sys
from pathlib import Path

_OPTIM_TESTS = str(Path(__file__).parent / "optim")
if _OPTIM_TESTS not in sys.path:
    sys.path.insert(0, _OPTIM_TESTS)
