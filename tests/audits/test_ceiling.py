"""The idealized ceiling of the one-run audits on an exactly calibrated Gaussian run."""

from __future__ import annotations

import time

import pytest

from fedpriv.audits.ceiling import idealized_lower_bound
from fedpriv.errors import DataError

# The figures for the (ε, δ) analysis, m = 1000, δ = 1e-5, 95%:
# about 0.2, 0.7, 1.3-1.4 and 2.5-2.8 (medians over 25 trials: 0.15, 0.59, 1.35, 2.50).
EXPECTED_EPS_DELTA = {1.0: (0.05, 0.4), 2.0: (0.35, 0.95), 4.0: (1.0, 1.7), 8.0: (2.2, 3.1)}


@pytest.mark.parametrize("epsilon", sorted(EXPECTED_EPS_DELTA))
def test_eps_delta_ceiling_at_1000_canaries(epsilon: float) -> None:
    low, high = EXPECTED_EPS_DELTA[epsilon]
    ceiling = idealized_lower_bound(1000, epsilon)
    assert low <= ceiling <= high
    fdp = idealized_lower_bound(1000, epsilon, analysis="f-dp")
    assert ceiling <= fdp <= epsilon  # f-DP is tighter and both stay valid


def test_ceiling_is_fast_at_1000_canaries() -> None:
    # CPU time, best of two uncached runs: other jobs on a shared machine do not count.
    for analysis in ("eps-delta", "f-dp"):
        times = []
        for seed in (1, 2):
            start = time.process_time()
            idealized_lower_bound.__wrapped__(1000, 8.0, analysis=analysis, seed=seed)
            times.append(time.process_time() - start)
        assert min(times) < 2.0


def test_ceiling_grows_with_canaries_and_is_cached() -> None:
    small = idealized_lower_bound(100, 4.0, trials=10)
    assert small < idealized_lower_bound(1000, 4.0, trials=10)
    hits = idealized_lower_bound.cache_info().hits
    assert idealized_lower_bound(100, 4.0, trials=10) == small
    assert idealized_lower_bound.cache_info().hits == hits + 1


def test_ceiling_rejects_bad_arguments() -> None:
    with pytest.raises(DataError, match="unknown analysis"):
        idealized_lower_bound(100, 1.0, analysis="rdp")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="canaries"):
        idealized_lower_bound(1, 1.0)
    with pytest.raises(DataError, match="epsilon"):
        idealized_lower_bound(100, float("inf"))
