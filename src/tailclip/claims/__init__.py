"""The papers' claims, checked by code on the synthetic suite.

* :mod:`~tailclip.claims.registry`: the claims (paper, experiment, threshold, sizes) and
  :func:`run_claims`;
* :mod:`~tailclip.claims.experiments`: the runs of an experiment in a results store;
* :mod:`~tailclip.claims.evaluations`: how each claim's figure is computed from its runs;
* :mod:`~tailclip.claims.rendering`: the claims table (console, Markdown, HTML, files);
* :mod:`~tailclip.claims.commands`: ``tailclip reproduce`` and ``tailclip demo``.
"""

from tailclip.claims.commands import reproduce, run_demo
from tailclip.claims.evaluations import method_label, power_law_exponent
from tailclip.claims.experiments import ExperimentRuns
from tailclip.claims.registry import CLAIMS, DEMO_CLAIMS, Claim, ClaimResult, run_claims
from tailclip.claims.rendering import claims_html, claims_markdown, print_claims

__all__ = [
    "CLAIMS",
    "DEMO_CLAIMS",
    "Claim",
    "ClaimResult",
    "ExperimentRuns",
    "claims_html",
    "claims_markdown",
    "method_label",
    "power_law_exponent",
    "print_claims",
    "reproduce",
    "run_claims",
    "run_demo",
]
