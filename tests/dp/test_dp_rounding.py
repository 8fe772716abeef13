"""User-level DP under SecAgg: what the secure sum holds stays within the accounted clip C.

SecAgg rounds each coordinate of a client's input stochastically to its
fixed-point grid *after* the client clipped; a clipped update of norm C can
come out of rounding r·√d longer.  The client therefore clips to C − r·√d
(:meth:`fedpriv.dp.user.UserLevelDP.set_rounding_margin`).  The property:
for any update, the decoded rounded vector — what the sum really adds — has
norm ≤ C, the sensitivity the accountant assumes.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedpriv.dp.rounds import rounding_l2_bound
from fedpriv.dp.user import UserDPSettings, UserLevelDP
from fedpriv.errors import ConfigError
from fedpriv.protocols import create
from fedpriv.protocols.encoding import decode_sum, encode


def _rounded(protocol, vector: np.ndarray, seed: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Return the update as the secure sum holds it: encoded, decoded, rescaled."""
    spec = protocol.config.fixed_point(2)
    weight = 1.0 / protocol.config.max_weight
    words, _ = encode(vector * weight, spec, np.random.default_rng(seed))
    return decode_sum(words, spec) / weight


@settings(max_examples=40, deadline=None)
@given(
    dim=st.integers(1, 300),
    scale=st.floats(1e-4, 10.0),
    clip=st.sampled_from([0.004, 0.01, 0.5]),
    bits=st.sampled_from([14, 18, 20]),
    max_weight=st.sampled_from([1.0, 4.0]),
    seed=st.integers(0, 2**31),
)
def test_rounded_update_never_exceeds_the_accounted_clip(
    dim: int, scale: float, clip: float, bits: int, max_weight: float, seed: int
) -> None:
    protocol = create("secagg", resolution=2.0**-bits, max_weight=max_weight)
    dp = UserLevelDP(UserDPSettings(noise_multiplier=1.0, clip=clip), num_clients=4,
                     clients_per_round=4, seed=0)
    margin = rounding_l2_bound(protocol, dim)
    if margin >= clip:
        with pytest.raises(ConfigError, match="finer secure-aggregation resolution"):
            dp.set_rounding_margin(margin)
        return
    dp.set_rounding_margin(margin)
    rng = np.random.default_rng(seed)
    update = (rng.standard_normal(dim) * scale).astype(np.float32)
    vector, _ = dp.client_vector(update)
    rounded = _rounded(protocol, vector.astype(np.float64), seed)
    assert np.linalg.norm(rounded) <= clip * (1 + 1e-9)


def test_without_the_margin_rounding_exceeds_the_clip() -> None:
    """The failure the margin prevents: clipped to exactly C, the rounded norm can pass C."""
    protocol = create("secagg", resolution=2.0**-12)
    dim, clip = 2000, 0.05
    dp = UserLevelDP(UserDPSettings(noise_multiplier=1.0, clip=clip), num_clients=4,
                     clients_per_round=4, seed=0)
    update = np.random.default_rng(1).standard_normal(dim)
    vector, _ = dp.client_vector(update)  # no margin set: clipped to exactly C
    norms = [np.linalg.norm(_rounded(protocol, vector, s)) for s in range(5)]
    assert max(norms) > clip  # the accountant assumed C: violated
    dp.set_rounding_margin(rounding_l2_bound(protocol, dim))
    vector, _ = dp.client_vector(update)
    assert max(np.linalg.norm(_rounded(protocol, vector, s)) for s in range(5)) <= clip


def test_protocols_without_per_client_rounding_need_no_margin() -> None:
    assert rounding_l2_bound(create("plain"), 1000) == 0.0
    secagg = create("secagg+", resolution=2.0**-20)
    assert rounding_l2_bound(secagg, 10_000) == pytest.approx(2.0**-20 * 100)
