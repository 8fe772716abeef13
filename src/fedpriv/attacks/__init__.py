"""Attacks on what an adversary observed: membership inference and canary exposure.

Every attack is a function of an observation — a model the adversary can
query (the released global model) or what an honest-but-curious server saw
in a round (:class:`~fedpriv.protocols.ServerView`) — and never of ground
truth. Attacks return scores; :mod:`fedpriv.attacks.metrics` (pure numpy)
compares them with the truth.

* :mod:`~fedpriv.attacks.metrics` — ROC, AUC, TPR at low FPR (where the
  non-members resolve it) with confidence intervals, exposure;
* :mod:`~fedpriv.attacks.mia` — loss, zlib, Min-K%, reference-calibrated,
  offline LiRA / RMIA scores, and the loss change of one client's update;
* :mod:`~fedpriv.attacks.canary` — canary exposure and greedy extraction;
* :mod:`~fedpriv.attacks.dirac` — signed basis-vector canaries, the base of
  :mod:`~fedpriv.attacks.client_canaries` (canary clients of user-level and
  distributed DP) and :mod:`~fedpriv.attacks.gradient_canaries` (gradient
  canary records of sample-level DP).

The model-facing modules import torch; import them directly
(``from fedpriv.attacks.mia import run_mia``). This package re-exports only
the pure metrics.
"""

from __future__ import annotations

from fedpriv.attacks.metrics import (
    ExposureEstimate,
    MIAResult,
    evaluate_mia,
    fpr_resolvable,
    mia_confidence_intervals,
    mia_report,
    roc_auc,
    roc_curve,
    tpr_at_fpr,
)

__all__ = [
    "ExposureEstimate",
    "MIAResult",
    "evaluate_mia",
    "fpr_resolvable",
    "mia_confidence_intervals",
    "mia_report",
    "roc_auc",
    "roc_curve",
    "tpr_at_fpr",
]
