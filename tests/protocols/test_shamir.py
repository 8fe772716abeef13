"""Shamir secret sharing: any t shares reconstruct, fewer (or forged) ones do not."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fedpriv.errors import ConfigError, ProtocolError
from fedpriv.protocols.shamir import (
    MAX_SECRET_BYTES,
    PRIME,
    SHARE_BYTES,
    reconstruct_secret,
    reconstruct_verified,
    split_secret,
)

SECRETS = st.binary(min_size=32, max_size=32)


@st.composite
def sharing(draw: st.DrawFn) -> tuple[list[int], int]:
    """Draw unique, non-contiguous client ids and a threshold 1 ≤ t ≤ n."""
    ids = draw(st.lists(st.integers(0, 10**6), min_size=1, max_size=12, unique=True))
    threshold = draw(st.integers(1, len(ids)))
    return ids, threshold


def naive_reconstruct(points: dict[int, int], secret_len: int) -> bytes:
    """Lagrange interpolation at 0, the textbook way (one inversion per basis polynomial)."""
    total = 0
    for j, y_j in points.items():
        numerator, denominator = 1, 1
        for k in points:
            if k != j:
                numerator = numerator * (-(k + 1)) % PRIME
                denominator = denominator * ((j + 1) - (k + 1)) % PRIME
        total = (total + y_j * numerator * pow(denominator, -1, PRIME)) % PRIME
    return total.to_bytes(secret_len, "big")


@settings(max_examples=80, deadline=None)
@given(secret=SECRETS, setup=sharing(), data=st.data())
def test_any_threshold_shares_reconstruct(
    secret: bytes, setup: tuple[list[int], int], data: st.DataObject
) -> None:
    ids, threshold = setup
    shares = split_secret(secret, threshold=threshold, share_ids=ids)
    assert sorted(shares) == sorted(ids)
    assert all(len(share) == SHARE_BYTES for share in shares.values())
    subset = data.draw(st.lists(st.sampled_from(ids), min_size=threshold, unique=True))
    chosen = {i: shares[i] for i in subset}
    assert reconstruct_secret(chosen, threshold=threshold) == secret
    exact = dict(list(chosen.items())[:threshold])
    points = {i: int.from_bytes(s, "big") for i, s in exact.items()}
    assert naive_reconstruct(points, 32) == secret


@settings(max_examples=60, deadline=None)
@given(secret=SECRETS, setup=sharing(), forged_value=st.integers(0, PRIME - 1))
def test_a_forged_share_gives_a_wrong_secret_or_raises(
    secret: bytes, setup: tuple[list[int], int], forged_value: int
) -> None:
    ids, threshold = setup
    shares = split_secret(secret, threshold=threshold, share_ids=ids)
    victim = ids[-1]
    forged = forged_value.to_bytes(SHARE_BYTES, "big")  # a well-formed field element
    assume(forged != shares[victim])
    honest = [i for i in ids if i != victim][: threshold - 1]
    tampered = {i: shares[i] for i in honest} | {victim: forged}
    with contextlib.suppress(ProtocolError):  # raising is the other acceptable outcome
        assert reconstruct_secret(tampered, threshold=threshold) != secret


@settings(max_examples=40, deadline=None)
@given(secret=SECRETS, setup=sharing(), data=st.data())
def test_a_forged_share_among_extra_shares_is_detected(
    secret: bytes, setup: tuple[list[int], int], data: st.DataObject
) -> None:
    ids, threshold = setup
    assume(len(ids) > threshold)
    shares = split_secret(secret, threshold=threshold, share_ids=ids)
    victim = data.draw(st.sampled_from(ids))
    y = (int.from_bytes(shares[victim], "big") + data.draw(st.integers(1, PRIME - 1))) % PRIME
    tampered = {**shares, victim: y.to_bytes(SHARE_BYTES, "big")}
    with pytest.raises(ProtocolError, match="inconsistent"):
        reconstruct_secret(tampered, threshold=threshold)


@settings(max_examples=40, deadline=None)
@given(secret=SECRETS, setup=sharing())
def test_fewer_than_threshold_shares_raise(secret: bytes, setup: tuple[list[int], int]) -> None:
    ids, threshold = setup
    shares = split_secret(secret, threshold=threshold, share_ids=ids)
    too_few = {i: shares[i] for i in ids[: threshold - 1]}
    with pytest.raises(ProtocolError, match=f"need {threshold} shares, got {threshold - 1}"):
        reconstruct_secret(too_few, threshold=threshold)


def test_t_minus_one_shares_with_a_lowered_threshold_do_not_reveal_the_secret() -> None:
    secret = bytes(range(32))
    shares = split_secret(secret, threshold=3, share_ids=range(5))
    two = {0: shares[0], 1: shares[1]}
    # Interpolating a degree-2 sharing with 2 points gives a random field element: too big.
    with pytest.raises(ProtocolError, match="does not fit 32 bytes"):
        reconstruct_secret(two, threshold=2)
    with pytest.raises(ProtocolError, match="inconsistent"):
        reconstruct_secret(shares, threshold=2)


@settings(max_examples=40, deadline=None)
@given(secret=SECRETS, threshold=st.integers(2, 6))
def test_two_splits_of_one_secret_differ(secret: bytes, threshold: int) -> None:
    ids = list(range(8))
    first = split_secret(secret, threshold=threshold, share_ids=ids)
    second = split_secret(secret, threshold=threshold, share_ids=ids)
    assert all(first[i] != second[i] for i in ids)


def test_threshold_one_shares_are_the_secret() -> None:
    secret = bytes(range(32))
    shares = split_secret(secret, threshold=1, share_ids=[4, 9])
    assert {int.from_bytes(s, "big") for s in shares.values()} == {int.from_bytes(secret, "big")}
    assert reconstruct_secret({9: shares[9]}, threshold=1) == secret


@pytest.mark.parametrize("length", [1, 16, 32, 64, MAX_SECRET_BYTES])
def test_share_size_is_constant_and_other_lengths_roundtrip(length: int) -> None:
    secret = b"\x00\x01" + bytes([0xAB]) * (length - 2) if length >= 2 else b"\x07"
    shares = split_secret(secret, threshold=3, share_ids=[0, 1, 2, 3])
    assert {len(s) for s in shares.values()} == {SHARE_BYTES}
    assert reconstruct_secret(shares, threshold=3, secret_len=length) == secret


def test_leading_zero_bytes_survive() -> None:
    secret = bytes(31) + b"\x01"
    shares = split_secret(secret, threshold=2, share_ids=[0, 5])
    assert reconstruct_secret(shares, threshold=2) == secret


def test_shares_are_not_the_secret_in_disguise() -> None:
    # Each share of a uniform polynomial is uniform in GF(p): its top bytes are not zero padding.
    secret = bytes(32)
    shares = split_secret(secret, threshold=2, share_ids=list(range(64)))
    top = np.array([s[1] for s in shares.values()])  # byte 1 holds bits 512..519
    assert len(set(top.tolist())) > 16


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"threshold": 0, "share_ids": [0, 1]}, "threshold must be >= 1"),
        ({"threshold": 3, "share_ids": [0, 1]}, "threshold 3 exceeds the number of shareholders 2"),
        ({"threshold": True, "share_ids": [0, 1]}, "threshold must be an integer"),
        ({"threshold": 1, "share_ids": [0, 1, 1]}, r"list \[1\] more than once"),
        ({"threshold": 1, "share_ids": [-1, 1]}, r"client ids in \[0, 2\^63 − 1\]; got -1"),
        ({"threshold": 1, "share_ids": ["a"]}, "integers >= 0"),
        ({"threshold": 1, "share_ids": "01"}, "sequence of client ids"),
    ],
)
def test_split_rejects_bad_parameters(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        split_secret(bytes(32), **kwargs)  # type: ignore[arg-type]


def test_split_rejects_bad_secrets() -> None:
    with pytest.raises(ConfigError, match="at most 65 fit"):
        split_secret(bytes(66), threshold=1, share_ids=[0])
    with pytest.raises(ConfigError, match="secret must be bytes; got str"):
        split_secret("secret", threshold=1, share_ids=[0])  # type: ignore[arg-type]


def test_reconstruct_rejects_malformed_shares() -> None:
    shares = split_secret(bytes(32), threshold=2, share_ids=[0, 1])
    with pytest.raises(ProtocolError, match="share of id 1 must be 66 bytes; got 65"):
        reconstruct_secret({0: shares[0], 1: shares[1][1:]}, threshold=2)
    with pytest.raises(ProtocolError, match="not a field element"):
        reconstruct_secret({0: shares[0], 1: b"\xff" * SHARE_BYTES}, threshold=2)
    with pytest.raises(ProtocolError, match="client ids"):
        reconstruct_secret({-3: shares[0], 1: shares[1]}, threshold=2)
    with pytest.raises(ConfigError, match="secret_len must be an integer in"):
        reconstruct_secret(shares, threshold=2, secret_len=0)
    with pytest.raises(ConfigError, match="threshold must be >= 1"):
        reconstruct_secret(shares, threshold=0)


# ----------------------------------------------------------------- verified reconstruction


def _flip(share: bytes) -> bytes:
    return (int.from_bytes(share, "big") ^ 1).to_bytes(len(share), "big")


@settings(max_examples=60, deadline=None)
@given(
    secret=st.binary(min_size=32, max_size=32),
    threshold=st.integers(2, 6),
    extra=st.integers(1, 5),
    data=st.data(),
)
def test_verified_reconstruction_names_the_bad_shares(
    secret: bytes, threshold: int, extra: int, data: st.DataObject
) -> None:
    """With e ≤ m − t bad shares the secret comes back; no good share is ever named bad.

    Malformed shares are always named; altered ones exactly when unique decoding applies
    (2·altered ≤ well-formed − t + 1).
    """
    ids = list(range(threshold + extra))
    shares = split_secret(secret, threshold=threshold, share_ids=ids)
    bad = data.draw(st.lists(st.sampled_from(ids), max_size=extra, unique=True))
    short = {i for i in bad if data.draw(st.booleans())}
    for i in bad:
        shares[i] = b"short" if i in short else _flip(shares[i])
    found, named = reconstruct_verified(shares, threshold=threshold,
                                        check=lambda s: s == secret)
    assert found == secret
    assert short <= named <= set(bad)
    altered = len(bad) - len(short)
    if 2 * altered <= len(ids) - len(short) - threshold + 1:
        assert named == set(bad)


def test_cancelling_errors_never_frame_an_honest_holder() -> None:
    """±1 on three shares whose Lagrange weights at 0 sum to zero: right secret, no blame.

    Ids 1, 4, 5, 6 (x = 2, 5, 6, 7) have weights 3.5, −14, 17.5, −6 at 0: +1 on x = 2,
    +1 on x = 6 and +1 on x = 5 ... chosen so 3.5·δ₂ − 14·δ₅ + 17.5·δ₆ = 0.
    """
    secret = bytes(range(32))
    shares = split_secret(secret, threshold=4, share_ids=list(range(7)))

    def shift(share: bytes, delta: int) -> bytes:
        return ((int.from_bytes(share, "big") + delta) % PRIME).to_bytes(SHARE_BYTES, "big")

    shares[1], shares[4], shares[5] = shift(shares[1], 1), shift(shares[4], -1), shift(
        shares[5], -1)  # 3.5 + 14 − 17.5 = 0
    found, named = reconstruct_verified({i: shares[i] for i in (1, 4, 5, 6, 0, 2, 3)},
                                        threshold=4, check=lambda s: s == secret)
    assert found == secret
    assert not named & {0, 2, 3, 6}  # the honest holders are never blamed


def test_verified_reconstruction_refuses_when_bad_shares_cannot_be_outvoted() -> None:
    secret = bytes(range(32))
    shares = split_secret(secret, threshold=3, share_ids=[0, 1, 2, 3])
    shares[1] = _flip(shares[1])
    shares[2] = _flip(shares[2])  # 2 bad of 4, t = 3: no good 3-subset exists
    with pytest.raises(ProtocolError, match="no 3 of the 4 well-formed shares"):
        reconstruct_verified(shares, threshold=3, check=lambda s: s == secret)
    with pytest.raises(ProtocolError, match="need 3 well-formed shares, got 2"):
        reconstruct_verified({0: shares[0], 1: b"x", 3: shares[3]}, threshold=3,
                             check=lambda s: s == secret)
    # The search is bounded: with max_subsets=1 only the t smallest ids are tried.
    shares = split_secret(secret, threshold=3, share_ids=[0, 1, 2, 3])
    shares[0] = _flip(shares[0])
    with pytest.raises(ProtocolError, match=r"tried 1 subsets"):
        reconstruct_verified(shares, threshold=3, check=lambda s: s == secret, max_subsets=1)
    assert reconstruct_verified(shares, threshold=3, check=lambda s: s == secret) == (
        secret, frozenset({0}))
