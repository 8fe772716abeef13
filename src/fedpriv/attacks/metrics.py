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
    "MIAResult",
    "SkewNormalFit",
    "evaluate_mia",
    "exposure_exact",
    "exposure_from_rank",
    "exposure_sampled",
    "fit_skew_normal",
    "mia_report",
    "redact",
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
        fewer than ``1 / fpr`` non-members that is the TPR at FPR 0.

    Raises:
        DataError: As :func:`roc_curve`, or if ``fpr`` is outside ``[0, 1]``.
    """
    if not 0.0 <= float(fpr) <= 1.0:
        raise DataError(f"target FPR must be in [0, 1], got {fpr!r}.")
    fps, tps, _, negatives, positives = _roc_counts(scores, labels)
    allowed = math.floor(float(fpr) * negatives + 1e-9)  # largest false-positive count allowed
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


@dataclass(frozen=True)
class MIAResult:
    """How well one membership-inference attack separated members from non-members.

    Attributes:
        attack: Name of the score, e.g. ``"loss"``, ``"min_k[0.2]"``, ``"reference[base]"``.
        observation: What the adversary observed, e.g. ``"final global model"``
            or ``"client 3 update (plain)"``.
        auc: ROC AUC.
        tpr_at_1pct_fpr: TPR at FPR <= 1% (see :func:`tpr_at_fpr`).
        tpr_at_0_1pct_fpr: TPR at FPR <= 0.1%.
        n_members: Number of members scored.
        n_nonmembers: Number of non-members scored (1 / n_nonmembers is the
            smallest FPR that can be resolved).
        roc: ROC vertices for plots (:func:`roc_points`).
    """

    attack: str
    observation: str
    auc: float
    tpr_at_1pct_fpr: float
    tpr_at_0_1pct_fpr: float
    n_members: int
    n_nonmembers: int
    roc: tuple[tuple[float, float], ...]

    def to_report(self, *, include_roc: bool = False) -> dict[str, Any]:
        """Return the ``leakage.mia`` entry of report.json (naming the attack and the observation).

        Args:
            include_roc: Also include the ROC points as ``[[fpr, tpr], ...]``.

        Returns:
            A JSON-serialisable dict.
        """
        entry: dict[str, Any] = {
            "attack": self.attack,
            "observed": self.observation,
            "auc": self.auc,
            "tpr_at_1pct_fpr": self.tpr_at_1pct_fpr,
            "tpr_at_0_1pct_fpr": self.tpr_at_0_1pct_fpr,
            "n_members": self.n_members,
            "n_nonmembers": self.n_nonmembers,
        }
        if include_roc:
            entry["roc"] = [list(point) for point in self.roc]
        return entry


def evaluate_mia(
    attack: str, observation: str, scores: Any, labels: Any, *, max_roc_points: int = 200
) -> MIAResult:
    """Compare one attack's scores with the true membership labels.

    Args:
        attack: Name of the score.
        observation: What the adversary observed to compute it.
        scores: One score per example, higher = more likely a member.
        labels: True membership per example (bool or 0/1).
        max_roc_points: Points kept for plots.

    Returns:
        The metrics of the attack.

    Raises:
        DataError: As :func:`roc_curve`.
    """
    label_arr = np.asarray(labels).astype(bool)
    return MIAResult(
        attack=attack,
        observation=observation,
        auc=roc_auc(scores, labels),
        tpr_at_1pct_fpr=tpr_at_fpr(scores, labels, 0.01),
        tpr_at_0_1pct_fpr=tpr_at_fpr(scores, labels, 0.001),
        n_members=int(label_arr.sum()),
        n_nonmembers=int((~label_arr).sum()),
        roc=tuple(roc_points(scores, labels, max_roc_points)),
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
        A JSON-serialisable dict with ``auc``, ``tpr_at_1pct_fpr``, ``attack``,
        ``observed``, ... and ``attacks``.

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
