"""Heavy-tail diagnostics: measure the gradient noise of a PyTorch model, at a point and in training.

The methods follow ``../shared/papers.md`` (section Diagnostics):

* :func:`collect_noise` -> :class:`NoiseSample`: noise ``xi_j = g_j - gbar`` at fixed parameters
  (``collect``; the ``data`` contract and :class:`BatchLoss`, a loss of whole batches, are in
  ``batches``; ``per_sample_grads`` uses ``torch.func``).
* :func:`tail_index` -> :class:`TailIndex`: Mohammadi et al. (2015) in scalar or vector mode and
  Hill's estimator (``estimators``).
* :func:`running_variance`, :func:`max_to_sum_ratio`, :func:`outlier_ratios`,
  :func:`gaussian_reference`, :func:`noise_scale` (``statistics``); :func:`smoothness_probe`
  (``smoothness``); :func:`verdict` (``verdict``).
* :class:`TailMonitor` during training (``monitor``); :class:`NoiseReport` and
  :func:`tails_report` for JSON, PNG figures and an HTML section (``report``, ``figures``).

numpy is needed (scipy only by the tests); matplotlib only when figures are drawn.
"""

from tailclip.noise._model import flat_parameters
from tailclip.noise.batches import BatchLoss, BatchSource
from tailclip.noise.collect import (
    NOISE_MODES,
    NoiseSample,
    collect_noise,
    per_sample_grad_norms,
    per_sample_grads,
)
from tailclip.noise.estimators import TAIL_METHODS, TailIndex, hill_curve, tail_index
from tailclip.noise.monitor import TailMonitor
from tailclip.noise.projection import RandomProjection
from tailclip.noise.report import NoiseReport, tails_report
from tailclip.noise.smoothness import SmoothnessProbe, smoothness_probe
from tailclip.noise.statistics import (
    NoiseScale,
    OutlierRatios,
    gaussian_reference,
    larger_batch_noise,
    loglog_slope,
    max_to_sum_ratio,
    max_to_sum_slope,
    noise_scale,
    noise_scale_from_squared_norms,
    outlier_ratios,
    running_variance,
)
from tailclip.noise.verdict import VERDICTS, Verdict, verdict

__all__ = [
    "NOISE_MODES",
    "TAIL_METHODS",
    "VERDICTS",
    "BatchLoss",
    "BatchSource",
    "NoiseReport",
    "NoiseSample",
    "NoiseScale",
    "OutlierRatios",
    "RandomProjection",
    "SmoothnessProbe",
    "TailIndex",
    "TailMonitor",
    "Verdict",
    "collect_noise",
    "flat_parameters",
    "gaussian_reference",
    "hill_curve",
    "larger_batch_noise",
    "loglog_slope",
    "max_to_sum_ratio",
    "max_to_sum_slope",
    "noise_scale",
    "noise_scale_from_squared_norms",
    "outlier_ratios",
    "per_sample_grad_norms",
    "per_sample_grads",
    "running_variance",
    "smoothness_probe",
    "tail_index",
    "tails_report",
    "verdict",
]
