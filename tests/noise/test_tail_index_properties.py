"""Property tests: finite data through ``tail_index`` raises ValueError or gives a finite alpha in range."""

from __future__ import annotations

import math
import warnings

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tailclip.noise import tail_index

_FINITE = st.floats(allow_nan=False, allow_infinity=False, width=64)
_SHAPES = st.one_of(
    st.tuples(st.integers(0, 120)),
    st.tuples(st.integers(0, 60), st.integers(1, 4)),
)
_SAMPLES = _SHAPES.flatmap(lambda shape: arrays(np.float64, shape, elements=_FINITE))
# heavy, light, tiny and huge scales and repeated values, beyond what uniform floats give
_STRUCTURED = st.tuples(
    st.integers(0, 2**32 - 1),
    st.sampled_from(["normal", "cauchy", "pareto", "rounded", "two-valued"]),
    st.integers(20, 200),
    st.sampled_from([1e-300, 1e-150, 1.0, 1e150, 1e300]),
).map(lambda args: _structured(*args))


def _structured(seed: int, law: str, n: int, scale: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if law == "normal":
        x = rng.standard_normal(n)
    elif law == "cauchy":
        x = rng.standard_cauchy(n)
    elif law == "pareto":
        x = rng.pareto(0.8, n) + 1.0
    elif law == "rounded":
        x = np.round(rng.standard_normal(n))
    else:
        x = rng.choice([-1.0, 1.0], n)
    return np.clip(x * scale, -1.7e308, 1.7e308)


def _check(x: np.ndarray, method: str, k1: int, center: bool) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow warning would be a silent NaN in the making
        try:
            est = tail_index(x, method, k1=k1, n_boot=20, center=center)
        except ValueError:
            return
    assert math.isfinite(est.alpha) and est.alpha > 0
    if method == "mohammadi":
        assert est.alpha <= 2.0 and 0 < est.low <= est.high <= 2.0
    else:
        assert 0 < est.low <= est.alpha <= est.high


_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(
    x=_SAMPLES,
    method=st.sampled_from(["mohammadi", "hill"]),
    k1=st.integers(2, 12),
    center=st.booleans(),
)
def test_arbitrary_finite_data_raises_value_error_or_gives_alpha_in_range(
    x: np.ndarray, method: str, k1: int, center: bool
) -> None:
    _check(x, method, k1, center)


@_SETTINGS
@given(x=_STRUCTURED, method=st.sampled_from(["mohammadi", "hill"]), center=st.booleans())
def test_laws_at_extreme_scales_raise_value_error_or_give_alpha_in_range(
    x: np.ndarray, method: str, center: bool
) -> None:
    _check(x, method, 10, center)
