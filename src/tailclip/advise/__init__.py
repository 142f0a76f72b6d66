"""``tailclip advise CONFIG``: from the user's measured noise to a recommended optimizer, with evidence.

Five steps, one module each:

1. :mod:`~tailclip.advise.measure`: the noise diagnostics of ``tails`` at initialisation and after a
   warm-up, the warm-up's gradient-norm quantiles, the (L0, L1)-smoothness probe, the step time;
2. :mod:`~tailclip.advise.candidates`: the optimizers worth trying, each with its reason;
3. :mod:`~tailclip.advise.bakeoff`: a budgeted bake-off (:mod:`~tailclip.advise.plan` sizes it) with
   Optuna's successive-halving pruner, every trial a run in a results store; the finalists over
   several seeds;
4. :mod:`~tailclip.advise.control`: the comparison rerun at a much larger batch: is the gain
   caused by the noise?
5. :mod:`~tailclip.advise.answer`: the recommendation, its reason, what would change it, and the
   JSON contract; :mod:`~tailclip.advise.render` draws it in the terminal.

:func:`advise` (in :mod:`~tailclip.advise.pipeline`) runs them in order; a vectorized config
(the synthetic suite) runs them on its task's model twin (:mod:`~tailclip.advise.twin`).
"""

from tailclip.advise.answer import Answer
from tailclip.advise.pipeline import advice_paths, advise

__all__ = ["Answer", "advice_paths", "advise"]
