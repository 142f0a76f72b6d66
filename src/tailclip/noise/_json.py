"""Strict JSON for diagnostics: numpy scalars and arrays to Python, non-finite floats to ``None``."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np


def jsonable(obj: Any) -> Any:
    """``obj`` with numpy values converted and NaN/Inf replaced by ``None`` (valid strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    return obj


def dumps(obj: Any) -> str:
    """Strict JSON text of ``obj`` (see :func:`jsonable`), indented."""
    return json.dumps(jsonable(obj), indent=2, allow_nan=False)
