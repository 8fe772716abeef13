r"""Attack metrics: pure functions of attack scores and ground truth.

Nothing here touches a model. Membership-inference metrics take the scores an
attack produced (higher = "member") and the true labels; exposure metrics take
the log-probabilities a model gave to candidate secrets and the rank of the
true one. Keeping them pure keeps the truth out of the attacks (which only ever
get an observation) and makes every number checkable against a naive
reference.

Conventions:

* ROC: a threshold ``t`` predicts "member" for every score ``>= t``; equal
  scores are one point of the curve (they cannot be split by a threshold).
* AUC is the probability that a random member scores above a random
  non-member, ties counting one half (the Mann-Whitney statistic).
* TPR at a target FPR is the largest TPR among the ROC points whose FPR is at
  most the target: an achievable threshold, no interpolation between points
  (the convention of Carlini et al. 2022, "Membership Inference Attacks From
  First Principles", which uses ``<`` where fedpriv uses ``<=``). With fewer
  than ``1 / target`` non-members this is the TPR at FPR 0.
* Resolvability: a target FPR ``f`` can be measured with ``n`` non-members
  iff ``n * f >= 1`` -- the target must allow at least one false positive,
  or every threshold it admits is one that flags no non-member at all, and the
  figure says nothing about ``f`` (:func:`fpr_resolvable`). Reports give
  ``None`` (JSON null) for a target the non-members cannot resolve: with 80
  non-members, TPR at 0.1% FPR is not measured.
* Confidence intervals (:func:`mia_confidence_intervals`): a stratified
  bootstrap (members and non-members resampled separately, so every resample
  has the original class sizes), percentile intervals, 95% by default,
  widened where needed to contain the point estimate. TPR at FPR re-chooses
  its threshold in every resample; the interval does not remove the optimism
  of choosing it on the evaluation data.
* Inversion: ROUGE-1/2/L F1 on lower-cased words (``\w+``), each true text
  matched to one recovered text; token precision/recall on token-id sets.
* Exposure (Carlini et al. 2019, "The Secret Sharer"): ``log2 |R| - log2 rank``
  for a candidate space ``R``; rank 1 = the most likely candidate, so exposure
  runs from 0 to ``log2 |R|``.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedpriv.errors import DataError

__all__ = [
    "ExposureEstimate",
    "InversionScore",
    "MIAConfidence",
    "MIAResult",
    "SkewNormalFit",
    "evaluate_mia",
    "exposure_exact",
    "exposure_from_rank",
    "exposure_sampled",
    "fit_skew_normal",
    "fpr_resolvable",
    "mia_confidence_intervals",
    "mia_report",
    "redact",
    "resampled_mia_metrics",
    "roc_auc",
    "roc_curve",
    "roc_points",
    "rouge_l",
    "rouge_n",
    "score_inversion",
    "tpr_at_fpr",
    "words",
]

_LN2 = math.log(2.0)


# --------------------------------------------------------------------------- ROC


def _check_scores_labels(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    score_arr = np.asarray(scores, dtype=np.float64)
    label_arr = np.asarray(labels)
    if score_arr.ndim != 1 or label_arr.ndim != 1 or score_arr.shape != label_arr.shape:
        raise DataError(
            f"scores and labels must be 1-D arrays of the same length, got shapes "
            f"{score_arr.shape} and {label_arr.shape}."
        )
    if not np.isfinite(score_arr).all():
        bad = int((~np.isfinite(score_arr)).sum())
        raise DataError(
            f"{bad} attack score(s) are NaN or infinite; drop those examples or fix the attack "
            "that produced them."
        )
    if label_arr.dtype != np.bool_:
        if not np.isin(label_arr, (0, 1)).all():
            raise DataError("labels must be booleans or 0/1 (1 = member).")
        label_arr = label_arr.astype(bool)
    members = int(label_arr.sum())
    if members == 0 or members == label_arr.size:
        raise DataError(
            f"ROC needs both members and non-members, got {members} member(s) among "
            f"{label_arr.size} examples; score some examples of each kind."
        )
    return score_arr, label_arr


def _roc_counts(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """Return (false positives, true positives, thresholds, #negatives, #positives), from (0, 0)."""
    score_arr, label_arr = _check_scores_labels(scores, labels)
    order = np.argsort(-score_arr, kind="mergesort")
    sorted_scores = score_arr[order]
    sorted_labels = label_arr[order]
    # Last index of every run of equal scores: one ROC point per distinct threshold.
    ends = np.r_[np.flatnonzero(np.diff(sorted_scores)), sorted_scores.size - 1]
    tps = np.cumsum(sorted_labels, dtype=np.int64)[ends]
    fps = ends.astype(np.int64) + 1 - tps
    zero = np.zeros(1, dtype=np.int64)
    thresholds = np.r_[np.inf, sorted_scores[ends]]
    positives = int(label_arr.sum())
    return np.r_[zero, fps], np.r_[zero, tps], thresholds, label_arr.size - positives, positives


def roc_curve(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the exact ROC curve of a membership score.

    Args:
        scores: One score per example, higher = more likely a member.
        labels: True membership per example (bool or 0/1; 1 = member).

    Returns:
        ``(fpr, tpr, thresholds)``, one entry per distinct score plus the
        starting point ``(0, 0)`` at threshold ``+inf``; ``fpr`` and ``tpr``
        are non-decreasing and end at ``(1, 1)``. Point ``i`` is what the
        rule "member iff score >= thresholds[i]" achieves.

    Raises:
        DataError: If the shapes differ, a score is not finite, or one class is missing.
    """
    fps, tps, thresholds, negatives, positives = _roc_counts(scores, labels)
    return fps / negatives, tps / positives, thresholds


def roc_auc(scores: Any, labels: Any) -> float:
    """Return the area under the ROC curve (ties count one half).

    Computed from integer counts along the exact curve, so it equals the pair
    count ``P(member score > non-member score) + P(equal) / 2``.

    Args:
        scores: One score per example, higher = more likely a member.
        labels: True membership per example (bool or 0/1).

    Returns:
        The AUC in ``[0, 1]``; 0.5 is chance.

    Raises:
        DataError: As :func:`roc_curve`.
    """
    fps, tps, _, negatives, positives = _roc_counts(scores, labels)
    # Trapezoids in integer arithmetic: 2 * area * P * N, exact for any realistic size.
    twice_area = int(np.sum(np.diff(fps) * (tps[1:] + tps[:-1])))
    return twice_area / (2.0 * positives * negatives)


def tpr_at_fpr(scores: Any, labels: Any, fpr: float) -> float:
    """Return the largest TPR whose FPR is at most ``fpr`` (no interpolation).

    Args:
        scores: One score per example, higher = more likely a member.
        labels: True membership per example (bool or 0/1).
        fpr: Target false-positive rate in ``[0, 1]``.

    Returns:
        The TPR of the best achievable threshold with FPR <= ``fpr``; with
        fewer than ``1 / fpr`` non-members that is the TPR at FPR 0 (reports
        give ``None`` then: see :func:`fpr_resolvable`).

    Raises:
        DataError: As :func:`roc_curve`, or if ``fpr`` is outside ``[0, 1]``.
    """
    if not 0.0 <= float(fpr) <= 1.0:
        raise DataError(f"target FPR must be in [0, 1], got {fpr!r}.")
    fps, tps, _, negatives, positives = _roc_counts(scores, labels)
    allowed = _allowed_false_positives(fpr, negatives)
    last = int(np.searchsorted(fps, allowed, side="right")) - 1
    return float(tps[last] / positives)


def roc_points(scores: Any, labels: Any, max_points: int = 200) -> list[tuple[float, float]]:
    """Return at most ``max_points`` vertices of the ROC curve, log-spaced in FPR, for plots.

    The points are vertices of the exact curve (no interpolation). When the
    curve has more than ``max_points`` vertices, it keeps ``(0, 0)`` and, for
    each FPR on a grid of 0 and log-spaced values from ``1 / #non-members``
    to 1, the last vertex whose FPR is not above it (so ``(0, TPR at FPR 0)``
    and ``(1, 1)`` are always there): a log-log plot keeps the low-FPR regime
    that matters for membership inference.

    Args:
        scores: One score per example, higher = more likely a member.
        labels: True membership per example (bool or 0/1).
        max_points: Largest number of points returned (>= 2).

    Returns:
        ``[(fpr, tpr), ...]`` sorted by FPR.

    Raises:
        DataError: As :func:`roc_curve`, or if ``max_points < 2``.
    """
    if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 2:
        raise DataError(f"max_points must be an integer >= 2, got {max_points!r}.")
    fpr, tpr, _ = roc_curve(scores, labels)
    if fpr.size > max_points:
        smallest = float(fpr[fpr > 0].min())
        grid = np.r_[0.0, np.geomspace(smallest, 1.0, max_points - 2)]
        # The last vertex at or left of each grid FPR (the top of a vertical step).
        picks = np.searchsorted(fpr, grid * (1 + 1e-12), side="right") - 1
        picks = np.unique(np.r_[0, picks])
        fpr, tpr = fpr[picks], tpr[picks]
    return [(float(f), float(t)) for f, t in zip(fpr, tpr, strict=True)]


# ------------------------------------------------------ resolvability and intervals

REPORTED_FPRS: tuple[tuple[str, float], ...] = (
    ("tpr_at_1pct_fpr", 0.01),
    ("tpr_at_0_1pct_fpr", 0.001),
)
"""The report keys of TPR at a target FPR, and their targets."""
REPORTED_TARGETS: tuple[float, ...] = tuple(fpr for _, fpr in REPORTED_FPRS)
DEFAULT_RESAMPLES = 400
"""Bootstrap resamples per interval (the percentile ends move by ~0.005 between seeds)."""
MIN_RESAMPLES = 20
DEFAULT_CONFIDENCE = 0.95
DEFAULT_CI_SEED = 0xC1
"""Seed of the bootstrap when no generator is given: the same scores give the same interval."""


def _allowed_false_positives(fpr: float, negatives: int) -> int:
    """Return the most false positives a target FPR admits among ``negatives`` non-members."""
    return math.floor(float(fpr) * negatives + 1e-9)  # 1e-9: 1000 * 0.001 is 1, not 0.999...


def fpr_resolvable(fpr: float, n_nonmembers: int) -> bool:
    """Whether ``n_nonmembers`` non-members can resolve a target false-positive rate ``fpr``.

    The rule: ``fpr`` is resolvable iff ``n_nonmembers * fpr >= 1``, i.e. the
    target allows at least one false positive. Below that, the only threshold
    the target admits is one that flags no non-member at all, so "TPR at
    ``fpr``" is the TPR at FPR 0 whatever ``fpr`` is, and reporting it as the
    TPR at ``fpr`` would claim a precision the data does not have (with 80
    non-members the smallest measurable FPR is 1/80 = 1.25%, so TPR at 0.1%
    FPR cannot be measured). ``fpr = 0`` is never resolvable in this sense.
    Carlini et al. 2022 ("Membership Inference Attacks From First
    Principles", Sec. 4) make the same point: a low-FPR figure needs many
    more than ``1 / fpr`` non-members to be meaningful; this is the floor below
    which it is meaningless.

    Args:
        fpr: Target false-positive rate in ``[0, 1]``.
        n_nonmembers: Number of non-members scored (>= 0).

    Returns:
        True when the target allows at least one false positive.

    Raises:
        DataError: If ``fpr`` is outside ``[0, 1]`` or ``n_nonmembers`` is not a
            non-negative integer.
    """
    if not 0.0 <= float(fpr) <= 1.0:
        raise DataError(f"target FPR must be in [0, 1], got {fpr!r}.")
    if isinstance(n_nonmembers, bool) or int(n_nonmembers) != n_nonmembers or n_nonmembers < 0:
        raise DataError(f"n_nonmembers must be a non-negative integer, got {n_nonmembers!r}.")
    return _allowed_false_positives(fpr, int(n_nonmembers)) >= 1


def _cumulative_at(scores: np.ndarray, counts: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """``out[b, k]`` = total count in row ``b`` of the examples scoring ``>= thresholds[k]``.

    ``thresholds`` are the distinct scores in descending order; a zero column
    for the threshold ``+inf`` comes first.
    """
    order = np.argsort(-scores, kind="stable")
    cum = np.zeros((counts.shape[0], scores.size + 1), dtype=np.float64)
    np.cumsum(counts[:, order], axis=1, out=cum[:, 1:])
    # How many examples score >= each threshold (scores sorted descending).
    at_least = np.searchsorted(-scores[order], -thresholds, side="right")
    return np.concatenate([cum[:, :1], cum[:, at_least]], axis=1)


def resampled_mia_metrics(
    member_scores: Any,
    nonmember_scores: Any,
    member_counts: Any,
    nonmember_counts: Any,
    fprs: Sequence[float] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """AUC and TPR at each target FPR of many weighted copies of one score set, at once.

    Row ``b`` of the counts says how often each member and each non-member is
    taken (a bootstrap resample; all ones is the data itself). Every row's
    ROC is computed exactly, with the conventions of :func:`roc_auc` and
    :func:`tpr_at_fpr` (ties one ROC point, no interpolation), over the
    distinct scores of the whole set: ``O(rows * examples)`` time and memory.

    Args:
        member_scores: The members' scores, shape ``(m,)``.
        nonmember_scores: The non-members' scores, shape ``(n,)``.
        member_counts: Non-negative integer counts, shape ``(rows, m)``, every
            row with a positive total.
        nonmember_counts: The same for the non-members, shape ``(rows, n)``.
        fprs: Target FPRs in ``[0, 1]``.

    Returns:
        ``(auc, tpr)`` of shapes ``(rows,)`` and ``(rows, len(fprs))``.

    Raises:
        DataError: If shapes disagree, a score is not finite, a count is
            negative or a row is empty, or a target FPR is outside ``[0, 1]``.
    """
    x = np.asarray(member_scores, dtype=np.float64)
    y = np.asarray(nonmember_scores, dtype=np.float64)
    w = np.asarray(member_counts, dtype=np.float64)
    v = np.asarray(nonmember_counts, dtype=np.float64)
    if x.ndim != 1 or y.ndim != 1 or w.ndim != 2 or v.ndim != 2 or w.shape[1] != x.size \
            or v.shape[1] != y.size or w.shape[0] != v.shape[0]:
        raise DataError(
            f"counts must have shapes (rows, {x.size}) and (rows, {y.size}) for "
            f"{x.size} member and {y.size} non-member scores, got {w.shape} and {v.shape}."
        )
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise DataError("attack scores must be finite.")
    if (w < 0).any() or (v < 0).any():
        raise DataError("resample counts must be non-negative.")
    positives, negatives = w.sum(axis=1), v.sum(axis=1)
    if (positives <= 0).any() or (negatives <= 0).any():
        raise DataError("every resample needs at least one member and one non-member.")
    targets = [float(f) for f in fprs]
    if not all(0.0 <= f <= 1.0 for f in targets):
        raise DataError(f"target FPRs must be in [0, 1], got {list(fprs)!r}.")
    thresholds = np.unique(np.r_[x, y])[::-1]
    tps = _cumulative_at(x, w, thresholds)
    fps = _cumulative_at(y, v, thresholds)
    twice_area = np.sum(np.diff(fps, axis=1) * (tps[:, 1:] + tps[:, :-1]), axis=1)
    auc = twice_area / (2.0 * positives * negatives)
    tpr = np.empty((w.shape[0], len(targets)), dtype=np.float64)
    rows = np.arange(w.shape[0])
    for j, target in enumerate(targets):
        allowed = np.floor(target * negatives + 1e-9)  # as _allowed_false_positives, per row
        last = (fps <= allowed[:, None]).sum(axis=1) - 1  # fps is non-decreasing along a row
        tpr[:, j] = tps[rows, last] / positives
    return auc, tpr


Interval = tuple[float, float]


@dataclass(frozen=True)
class MIAConfidence:
    """Confidence intervals of one attack's AUC and TPR at target FPRs.

    Attributes:
        auc: ``(low, high)`` for the AUC.
        tpr: ``(low, high)`` per target of ``fprs``, ``None`` where the
            non-members cannot resolve the target (:func:`fpr_resolvable`).
        fprs: The target FPRs.
        confidence: Nominal coverage, e.g. 0.95.
        resamples: Bootstrap resamples behind the intervals.
    """

    auc: Interval
    tpr: tuple[Interval | None, ...]
    fprs: tuple[float, ...]
    confidence: float
    resamples: int

    @property
    def method(self) -> str:
        """How the intervals were computed, in words (the report's ``ci_method``)."""
        return (f"stratified bootstrap, percentile, {self.resamples} resamples; TPR at FPR "
                "re-chooses its threshold in each resample")


def _interval(samples: np.ndarray, point: float, confidence: float) -> Interval:
    low, high = np.quantile(samples, [(1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0])
    # A percentile interval can miss a skewed statistic's own value (TPR near 0 or 1);
    # widening it to the reported number only adds coverage.
    return min(float(low), point), max(float(high), point)


def _resample_counts(size: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """How often each of ``size`` items is drawn in each of ``resamples`` bootstrap resamples."""
    picks = rng.integers(0, size, size=(resamples, size))
    picks += np.arange(resamples)[:, None] * size  # row b counts into bins [b*size, (b+1)*size)
    return np.bincount(picks.ravel(), minlength=resamples * size).reshape(resamples, size)


def mia_confidence_intervals(
    scores: Any,
    labels: Any,
    *,
    fprs: Sequence[float] = REPORTED_TARGETS,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    rng: np.random.Generator | None = None,
) -> MIAConfidence:
    """Stratified-bootstrap confidence intervals of the AUC and of TPR at each target FPR.

    Each resample draws ``m`` members from the ``m`` members and ``n``
    non-members from the ``n`` non-members, with replacement (stratified, so
    every resample has the original class sizes and the same resolvable
    targets); its AUC and TPR at FPR are computed exactly
    (:func:`resampled_mia_metrics`), and the interval is the percentile
    interval of those values, widened where needed to contain the point
    estimate. For TPR at FPR this is a bootstrap percentile interval, not
    Clopper-Pearson at a fixed threshold: the threshold is chosen anew in every
    resample, so the interval includes the threshold's own variability. The
    threshold is still chosen on the evaluation data, so the point value and
    the interval stay optimistic for a threshold the adversary must fix
    beforehand. For AUC the coverage is close to nominal for a few dozen
    examples per class and more (checked by simulation in the tests).

    Args:
        scores: One score per example, higher = more likely a member.
        labels: True membership per example (bool or 0/1).
        fprs: Target FPRs (the report's ``tpr_at_*`` targets by default).
        resamples: Bootstrap resamples (>= :data:`MIN_RESAMPLES`).
        confidence: Nominal coverage in ``(0, 1)``.
        rng: Source of the resamples; ``None`` seeds one with
            :data:`DEFAULT_CI_SEED` (the same scores give the same interval).

    Returns:
        The intervals; a target the non-members cannot resolve gets ``None``.

    Raises:
        DataError: As :func:`roc_curve`, or if ``resamples``, ``confidence`` or
            a target FPR is out of range.
    """
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < MIN_RESAMPLES:
        raise DataError(
            f"resamples must be an integer >= {MIN_RESAMPLES} (a percentile interval from "
            f"fewer is noise), got {resamples!r}."
        )
    if not 0.0 < float(confidence) < 1.0:
        raise DataError(f"confidence must be in (0, 1), e.g. 0.95, got {confidence!r}.")
    score_arr, label_arr = _check_scores_labels(scores, labels)
    targets = tuple(float(f) for f in fprs)
    members, nonmembers = score_arr[label_arr], score_arr[~label_arr]
    m, n = members.size, nonmembers.size
    resolvable = [fpr_resolvable(f, n) for f in targets]
    generator = np.random.default_rng(DEFAULT_CI_SEED) if rng is None else rng
    member_counts = _resample_counts(m, resamples, generator)
    nonmember_counts = _resample_counts(n, resamples, generator)
    # Row 0 is the data itself: the point estimates, computed the same way.
    auc, tpr = resampled_mia_metrics(
        members, nonmembers,
        np.vstack([np.ones((1, m)), member_counts]),
        np.vstack([np.ones((1, n)), nonmember_counts]),
        targets,
    )
    level = float(confidence)
    return MIAConfidence(
        auc=_interval(auc[1:], float(auc[0]), level),
        tpr=tuple(_interval(tpr[1:, j], float(tpr[0, j]), level) if ok else None
                  for j, ok in enumerate(resolvable)),
        fprs=targets,
        confidence=level,
        resamples=resamples,
    )


@dataclass(frozen=True)
class MIAResult:
    """How well one membership-inference attack separated members from non-members.

    Attributes:
        attack: Name of the score, e.g. ``"loss"``, ``"min_k[0.2]"``, ``"reference[base]"``.
        observation: What the adversary observed, e.g. ``"final global model"``
            or ``"client 3 update (plain)"``.
        auc: ROC AUC.
        auc_ci: Its confidence interval ``(low, high)`` (:func:`mia_confidence_intervals`).
        tpr_at_1pct_fpr: TPR at FPR <= 1% (see :func:`tpr_at_fpr`); ``None``
            when the non-members cannot resolve 1% (:func:`fpr_resolvable`).
        tpr_at_1pct_fpr_ci: Its confidence interval, ``None`` with it.
        tpr_at_0_1pct_fpr: TPR at FPR <= 0.1%, ``None`` with fewer than 1000 non-members.
        tpr_at_0_1pct_fpr_ci: Its confidence interval, ``None`` with it.
        n_members: Number of members scored.
        n_nonmembers: Number of non-members scored (1 / n_nonmembers is the
            smallest FPR that can be resolved).
        roc: ROC vertices for plots (:func:`roc_points`).
        ci_confidence: Nominal coverage of the intervals, e.g. 0.95.
        ci_method: How the intervals were computed, in words.
    """

    attack: str
    observation: str
    auc: float
    auc_ci: Interval
    tpr_at_1pct_fpr: float | None
    tpr_at_1pct_fpr_ci: Interval | None
    tpr_at_0_1pct_fpr: float | None
    tpr_at_0_1pct_fpr_ci: Interval | None
    n_members: int
    n_nonmembers: int
    roc: tuple[tuple[float, float], ...]
    ci_confidence: float
    ci_method: str

    def to_report(self, *, include_roc: bool = False) -> dict[str, Any]:
        """Return the ``leakage.mia`` entry of report.json (naming the attack and the observation).

        Every ``auc`` and ``tpr_at_*`` key has a ``*_ci`` sibling ``[low, high]``;
        a ``tpr_at_*`` the non-members cannot resolve is ``None`` (JSON null),
        and so is its interval.

        Args:
            include_roc: Also include the ROC points as ``[[fpr, tpr], ...]``.

        Returns:
            A JSON-serialisable dict.
        """
        def pair(interval: Interval | None) -> list[float] | None:
            return None if interval is None else [interval[0], interval[1]]

        entry: dict[str, Any] = {
            "attack": self.attack,
            "observed": self.observation,
            "auc": self.auc,
            "auc_ci": pair(self.auc_ci),
            "tpr_at_1pct_fpr": self.tpr_at_1pct_fpr,
            "tpr_at_1pct_fpr_ci": pair(self.tpr_at_1pct_fpr_ci),
            "tpr_at_0_1pct_fpr": self.tpr_at_0_1pct_fpr,
            "tpr_at_0_1pct_fpr_ci": pair(self.tpr_at_0_1pct_fpr_ci),
            "n_members": self.n_members,
            "n_nonmembers": self.n_nonmembers,
            "ci_level": self.ci_confidence,
            "ci_method": self.ci_method,
        }
        if include_roc:
            entry["roc"] = [list(point) for point in self.roc]
        return entry


def evaluate_mia(
    attack: str,
    observation: str,
    scores: Any,
    labels: Any,
    *,
    max_roc_points: int = 200,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    rng: np.random.Generator | None = None,
) -> MIAResult:
    """Compare one attack's scores with the true membership labels.

    Args:
        attack: Name of the score.
        observation: What the adversary observed to compute it.
        scores: One score per example, higher = more likely a member.
        labels: True membership per example (bool or 0/1).
        max_roc_points: Points kept for plots.
        resamples: Bootstrap resamples of the confidence intervals.
        confidence: Nominal coverage of the intervals.
        rng: Source of the bootstrap (``None``: a fixed seed, see
            :func:`mia_confidence_intervals`).

    Returns:
        The metrics of the attack; TPR at a target FPR that the non-members
        cannot resolve (:func:`fpr_resolvable`) is ``None``.

    Raises:
        DataError: As :func:`roc_curve` and :func:`mia_confidence_intervals`.
    """
    _, label_arr = _check_scores_labels(scores, labels)
    n_nonmembers = int((~label_arr).sum())
    intervals = mia_confidence_intervals(
        scores, labels, fprs=REPORTED_TARGETS, resamples=resamples,
        confidence=confidence, rng=rng)
    tprs = {key: tpr_at_fpr(scores, labels, fpr) if fpr_resolvable(fpr, n_nonmembers) else None
            for key, fpr in REPORTED_FPRS}
    return MIAResult(
        attack=attack,
        observation=observation,
        auc=roc_auc(scores, labels),
        auc_ci=intervals.auc,
        tpr_at_1pct_fpr=tprs["tpr_at_1pct_fpr"],
        tpr_at_1pct_fpr_ci=intervals.tpr[0],
        tpr_at_0_1pct_fpr=tprs["tpr_at_0_1pct_fpr"],
        tpr_at_0_1pct_fpr_ci=intervals.tpr[1],
        n_members=int(label_arr.sum()),
        n_nonmembers=n_nonmembers,
        roc=tuple(roc_points(scores, labels, max_roc_points)),
        ci_confidence=intervals.confidence,
        ci_method=intervals.method,
    )


def mia_report(results: Sequence[MIAResult], *, include_roc: bool = False) -> dict[str, Any]:
    """Return the ``leakage.mia`` block: the strongest attack on top, every attack listed.

    The top-level figures are those of the attack with the highest AUC (the
    strongest of those run: an upper estimate of what this adversary gets, as
    the choice is made on the evaluation data); ``"attacks"`` keeps all of them.

    Args:
        results: The attacks' metrics (at least one).
        include_roc: Include ROC points in every entry.

    Returns:
        A JSON-serialisable dict with ``auc``, ``auc_ci``, ``tpr_at_1pct_fpr``,
        ``tpr_at_1pct_fpr_ci``, ``attack``, ``observed``, ... and ``attacks``
        (see :meth:`MIAResult.to_report`).

    Raises:
        DataError: If ``results`` is empty.
    """
    if not results:
        raise DataError("no membership-inference results to report; run at least one attack.")
    best = max(results, key=lambda result: result.auc)
    block = best.to_report(include_roc=include_roc)
    block["attacks"] = [result.to_report(include_roc=include_roc) for result in results]
    return block


# --------------------------------------------------------------------- exposure


def exposure_from_rank(rank: float, space_size: int) -> float:
    """Return ``log2(space_size) - log2(rank)`` (Carlini et al. 2019, Definition 3).

    Args:
        rank: Rank of the secret among all candidates (1 = most likely; may be
            fractional for tie-averaged or estimated ranks), in ``[1, space_size]``.
        space_size: Number of candidates ``|R|`` (>= 1).

    Returns:
        The exposure in bits, in ``[0, log2 space_size]``.

    Raises:
        DataError: If an argument is out of range.
    """
    if isinstance(space_size, bool) or int(space_size) != space_size or space_size < 1:
        raise DataError(f"space_size must be a positive integer, got {space_size!r}.")
    if not 1.0 <= float(rank) <= float(space_size):
        raise DataError(f"rank must be in [1, {space_size}], got {rank!r}.")
    return math.log2(space_size) - math.log2(float(rank))


def exposure_exact(candidate_logprobs: Any, canary_index: int) -> float:
    """Return the exact exposure of one secret from the log-probabilities of the whole space.

    The rank is ``1 + #(candidates more likely) + #(other candidates equally
    likely) / 2``.

    Args:
        candidate_logprobs: The model's log-probability of every candidate of
            the space (the true secret included), one per candidate.
        canary_index: Position of the true secret in ``candidate_logprobs``.

    Returns:
        The exposure in bits, ``log2 |R| - log2 rank``.

    Raises:
        DataError: If the array is empty or not finite, or the index is out of range.
    """
    logprobs = np.asarray(candidate_logprobs, dtype=np.float64)
    if logprobs.ndim != 1 or logprobs.size == 0 or not np.isfinite(logprobs).all():
        raise DataError("candidate_logprobs must be a non-empty 1-D array of finite numbers.")
    if not 0 <= int(canary_index) < logprobs.size:
        raise DataError(
            f"canary_index {canary_index} is outside the {logprobs.size} candidates."
        )
    own = logprobs[int(canary_index)]
    higher = int((logprobs > own).sum())
    ties = int((logprobs == own).sum()) - 1
    return exposure_from_rank(1.0 + higher + ties / 2.0, logprobs.size)


@dataclass(frozen=True)
class ExposureEstimate:
    """An exposure value and how it was obtained.

    Attributes:
        exposure: Exposure in bits.
        stderr: Its standard error (0 for an exact value).
        method: ``"exact"``, ``"sampled-rank"`` or ``"extrapolated"``.
        space_size: Number of candidates ``|R|``; ``log2`` of it is the maximum exposure.
        samples: Number of candidates scored to estimate it (``space_size`` when exact).
        rank: The (estimated) rank of the secret.
    """

    exposure: float
    stderr: float
    method: str
    space_size: int
    samples: int
    rank: float


def exposure_sampled(
    canary_logprob: float, sampled_logprobs: Any, space_size: int
) -> ExposureEstimate:
    """Estimate exposure from a uniform sample of the candidate space (rank-based).

    A candidate drawn uniformly from the space beats the secret with
    probability ``(rank - 1) / |R|``, so ``rank ≈ 1 + |R| p``, with ``p``
    estimated by ``(k + 1/2) / (m + 1)`` from ``k`` of ``m`` samples that are
    more likely than the secret (ties count one half). The ``+1/2`` keeps a
    secret that no sample beats from reading as rank 1 with no error: its
    standard error then says that the sample cannot resolve exposures much
    beyond ``log2 m``; use :func:`fit_skew_normal` (Carlini et al.'s
    extrapolation) for those. The standard error is the delta-method error
    of the binomial estimate of ``p``.

    Args:
        canary_logprob: The model's log-probability of the true secret.
        sampled_logprobs: Log-probabilities of candidates drawn uniformly (with
            replacement) from the whole space.
        space_size: Number of candidates ``|R|``.

    Returns:
        The estimate, with method ``"sampled-rank"``.

    Raises:
        DataError: If the sample is empty or not finite, or the space size is invalid.
    """
    samples = _check_sample(sampled_logprobs)
    if isinstance(space_size, bool) or int(space_size) != space_size or space_size < 1:
        raise DataError(f"space_size must be a positive integer, got {space_size!r}.")
    m = samples.size
    beats = float((samples > canary_logprob).sum()) + 0.5 * float((samples == canary_logprob).sum())
    p = (beats + 0.5) / (m + 1.0)
    rank = min(1.0 + space_size * p, float(space_size))
    stderr = space_size * math.sqrt(p * (1.0 - p) / m) / (rank * _LN2)
    return ExposureEstimate(
        exposure=exposure_from_rank(rank, space_size),
        stderr=stderr,
        method="sampled-rank",
        space_size=int(space_size),
        samples=m,
        rank=rank,
    )


def _check_sample(sampled_logprobs: Any) -> np.ndarray:
    samples = np.asarray(sampled_logprobs, dtype=np.float64)
    if samples.ndim != 1 or samples.size == 0 or not np.isfinite(samples).all():
        raise DataError("sampled_logprobs must be a non-empty 1-D array of finite numbers.")
    return samples


@dataclass(frozen=True)
class SkewNormalFit:
    """A skew-normal fit of candidate log-probabilities, for extrapolated exposure.

    Carlini et al. 2019 (Section 4.3) observe that the log-perplexities of
    random candidates are close to skew-normal and read the exposure of a
    secret off the fitted tail: ``exposure = -log2 P(random candidate at
    least as likely as the secret)``, which resolves exposures far beyond
    what a sample can rank. The standard error comes from refitting on
    bootstrap resamples.

    Attributes:
        params: ``(shape, loc, scale)`` of ``scipy.stats.skewnorm`` fitted to the sample.
        bootstrap_params: The same, fitted to each bootstrap resample.
        samples: Sample size.
    """

    params: tuple[float, float, float]
    bootstrap_params: tuple[tuple[float, float, float], ...]
    samples: int

    def exposure(self, canary_logprob: float, space_size: int) -> ExposureEstimate:
        """Return the extrapolated exposure of a secret, capped to ``[0, log2 |R|]``.

        Args:
            canary_logprob: The model's log-probability of the true secret.
            space_size: Number of candidates ``|R|``.

        Returns:
            The estimate, with method ``"extrapolated"``.

        Raises:
            DataError: If the space size is invalid.
        """
        from scipy import stats  # opacus (a dependency) requires scipy

        if isinstance(space_size, bool) or int(space_size) != space_size or space_size < 1:
            raise DataError(f"space_size must be a positive integer, got {space_size!r}.")
        top = math.log2(space_size)

        def one(params: tuple[float, float, float]) -> float:
            log_tail = float(stats.skewnorm.logsf(canary_logprob, *params))
            return min(max(-log_tail / _LN2, 0.0), top)

        value = one(self.params)
        boot = [one(params) for params in self.bootstrap_params]
        stderr = float(np.std(boot, ddof=1)) if len(boot) > 1 else float("nan")
        return ExposureEstimate(
            exposure=value,
            stderr=stderr,
            method="extrapolated",
            space_size=int(space_size),
            samples=self.samples,
            rank=float(2.0 ** (top - value)),
        )


def fit_skew_normal(
    sampled_logprobs: Any, *, bootstrap: int = 30, rng: np.random.Generator
) -> SkewNormalFit:
    """Fit a skew-normal to candidate log-probabilities (and to bootstrap resamples).

    Args:
        sampled_logprobs: Log-probabilities of candidates drawn uniformly from
            the space (at least 10).
        bootstrap: Number of bootstrap refits for the standard error (0 = none).
        rng: Source of the bootstrap resamples.

    Returns:
        The fit; call :meth:`SkewNormalFit.exposure` per secret.

    Raises:
        DataError: If the sample is too small or not finite, or ``bootstrap < 0``.
    """
    from scipy import stats  # opacus (a dependency) requires scipy

    samples = _check_sample(sampled_logprobs)
    if samples.size < 10:
        raise DataError(
            f"a skew-normal fit needs at least 10 sampled candidates, got {samples.size}; "
            "sample more candidates."
        )
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 0:
        raise DataError(f"bootstrap must be a non-negative integer, got {bootstrap!r}.")

    def fit(values: np.ndarray) -> tuple[float, float, float]:
        shape, loc, scale = stats.skewnorm.fit(values)
        return float(shape), float(loc), float(scale)

    boot = tuple(
        fit(samples[rng.integers(0, samples.size, size=samples.size)]) for _ in range(bootstrap)
    )
    return SkewNormalFit(params=fit(samples), bootstrap_params=boot, samples=samples.size)


# --------------------------------------------------------------------------- inversion

_WORD = re.compile(r"\w+")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
_DIGIT = re.compile(r"\d")


def words(text: str) -> list[str]:
    """Lower-cased word tokens of ``text`` (the unit of the ROUGE scores)."""
    return _WORD.findall(text.lower())


def _f1(overlap: float, n_candidate: int, n_reference: int) -> float:
    if overlap == 0 or n_candidate == 0 or n_reference == 0:
        return 0.0
    precision, recall = overlap / n_candidate, overlap / n_reference
    return 2 * precision * recall / (precision + recall)


def rouge_n(candidate: str, reference: str, n: int = 1) -> float:
    """ROUGE-N F1 of ``candidate`` against ``reference`` (clipped n-gram overlap of words)."""
    if n < 1:
        raise DataError(f"ROUGE-N needs n >= 1, got {n}")

    def grams(text: str) -> Counter[tuple[str, ...]]:
        toks = words(text)
        return Counter(tuple(toks[i:i + n]) for i in range(len(toks) - n + 1))

    cand, ref = grams(candidate), grams(reference)
    overlap = sum((cand & ref).values())
    return _f1(overlap, sum(cand.values()), sum(ref.values()))


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1: longest common subsequence of words over each text's length."""
    a, b = words(candidate), words(reference)
    if not a or not b:
        return 0.0
    prev = [0] * (len(b) + 1)
    for x in a:
        row = [0]
        for j, y in enumerate(b):
            row.append(prev[j] + 1 if x == y else max(prev[j + 1], row[j]))
        prev = row
    return _f1(prev[-1], len(a), len(b))


def redact(text: str) -> str:
    """Mask the personal fields of a text for reports: e-mail addresses, then every digit."""
    return _DIGIT.sub("#", _EMAIL.sub("[email]", text))


@dataclass(frozen=True)
class InversionScore:
    """How much of a batch an inversion attack recovered (see :func:`score_inversion`)."""

    rouge1: float
    rouge2: float
    rougeL: float
    token_precision: float
    token_recall: float
    token_f1: float
    exact_rate: float
    n_sequences: int
    n_recovered: int
    examples: tuple[tuple[str, str], ...] = ()
    """``(original, recovered)`` pairs, redacted."""

    def to_report(self) -> dict[str, Any]:
        """JSON-ready dict (the report's ``leakage.inversion`` scores)."""
        out = {k: getattr(self, k) for k in (
            "rouge1", "rouge2", "rougeL", "token_precision", "token_recall", "token_f1",
            "exact_rate", "n_sequences", "n_recovered")}
        out["examples"] = [{"original": o, "recovered": r} for o, r in self.examples]
        return out


def score_inversion(
    recovered: Sequence[str], truth: Sequence[str], *,
    recovered_tokens: Sequence[int] = (), true_tokens: Sequence[int] = (),
    examples: int = 3, redacted: bool = True,
) -> InversionScore:
    """Score recovered texts against the batch's true texts.

    Each true text is matched to at most one recovered text (the assignment that
    maximises the summed ROUGE-1, Hungarian algorithm); ROUGE-1/2/L F1 are
    averaged over the *true* texts, an unmatched one counting 0, so extra guesses
    cost nothing and missing texts count fully.  Token precision/recall/F1 compare
    the recovered and true token-id sets; ``exact_rate`` is the fraction of true
    texts recovered word for word.
    """
    if not truth:
        raise DataError("score_inversion needs at least one true text")
    n, m = len(truth), len(recovered)
    matched: list[tuple[int, int]] = []
    if m:
        from scipy.optimize import linear_sum_assignment

        gain = np.array([[rouge_n(r, t, 1) for r in recovered] for t in truth])
        rows, cols = linear_sum_assignment(-gain)
        matched = list(zip(rows.tolist(), cols.tolist(), strict=True))
    r1 = sum(rouge_n(recovered[j], truth[i], 1) for i, j in matched) / n
    r2 = sum(rouge_n(recovered[j], truth[i], 2) for i, j in matched) / n
    rl = sum(rouge_l(recovered[j], truth[i]) for i, j in matched) / n
    exact = sum(words(recovered[j]) == words(truth[i]) for i, j in matched) / n
    rec_set, true_set = set(recovered_tokens), set(true_tokens)
    tp = len(rec_set & true_set)
    precision = tp / len(rec_set) if rec_set else 0.0
    recall = tp / len(true_set) if true_set else 0.0
    f1 = _f1(tp, len(rec_set), len(true_set))
    show = (lambda s: redact(s)) if redacted else (lambda s: s)
    pairs = tuple((show(truth[i]), show(recovered[j])) for i, j in matched[:examples])
    return InversionScore(
        rouge1=r1, rouge2=r2, rougeL=rl, token_precision=precision, token_recall=recall,
        token_f1=f1, exact_rate=exact, n_sequences=n, n_recovered=m, examples=pairs,
    )
