"""Tests of the canary formats (fedpriv.data.canaries)."""

from __future__ import annotations

import collections
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedpriv.data.canaries import (
    BUILTIN_CANARY_FORMATS,
    CanaryFormat,
    get_canary_format,
    make_canaries,
)
from fedpriv.errors import DataError


def _regex(pattern: str) -> re.Pattern[str]:
    """Build an independent reference regex for the pattern language."""
    classes = {"d": "[0-9]", "a": "[a-z]", "A": "[A-Z]"}
    return re.compile("".join(classes.get(char, re.escape(char)) for char in pattern))


def test_builtin_formats() -> None:
    assert {"account", "phone", "ssn", "pin"} <= set(BUILTIN_CANARY_FORMATS)
    account = BUILTIN_CANARY_FORMATS["account"]
    assert account.template == "my account number is {secret}"
    assert account.pattern == "dddd-dddd-dddd"
    assert account.candidate_space_size == 10**12
    assert BUILTIN_CANARY_FORMATS["pin"].candidate_space_size == 10**4
    assert BUILTIN_CANARY_FORMATS["ssn"].candidate_space_size == 10**9
    for name, fmt in BUILTIN_CANARY_FORMATS.items():
        assert fmt.name == name
        assert get_canary_format(name) is fmt


@pytest.mark.parametrize("name", ["pin", "passcode"])
def test_small_builtin_spaces_enumerate_exactly(name: str) -> None:
    fmt = get_canary_format(name)
    candidates = list(fmt.enumerate_candidates(limit=10**5))
    assert len(candidates) == fmt.candidate_space_size
    assert len(set(candidates)) == len(candidates)
    assert candidates == sorted(candidates)
    assert all(_regex(fmt.pattern).fullmatch(c) for c in candidates)


@settings(max_examples=80, deadline=None)
@given(
    st.text(alphabet="daA-x ", min_size=1, max_size=3).filter(lambda p: any(c in "daA" for c in p))
)
def test_space_size_matches_enumeration(pattern: str) -> None:
    fmt = CanaryFormat("t", "s={secret}", pattern)
    candidates = list(fmt.enumerate_candidates(limit=26**3))
    assert len(candidates) == fmt.candidate_space_size == len(set(candidates))
    reference = _regex(pattern)
    assert all(reference.fullmatch(c) and fmt.matches(c) for c in candidates)


def test_enumeration_refuses_large_spaces_before_yielding() -> None:
    with pytest.raises(DataError, match="more than the limit"):
        get_canary_format("account").enumerate_candidates(limit=10**6)


@settings(max_examples=50, deadline=None)
@given(st.sampled_from(sorted(BUILTIN_CANARY_FORMATS)), st.integers(0, 2**32 - 1))
def test_sampled_secrets_match_the_pattern(name: str, seed: int) -> None:
    fmt = get_canary_format(name)
    secret = fmt.sample_secret(np.random.default_rng(seed))
    assert _regex(fmt.pattern).fullmatch(secret)
    assert fmt.matches(secret)
    text = fmt.render(secret)
    assert text == fmt.template.replace("{secret}", secret)
    assert text.startswith(fmt.prefix) and text.endswith(secret)


def test_sampling_is_seeded_and_uniform() -> None:
    fmt = CanaryFormat("digit", "d={secret}", "d")
    first = [fmt.sample_secret(np.random.default_rng(4)) for _ in range(3)]
    assert first == [fmt.sample_secret(np.random.default_rng(4)) for _ in range(3)]
    rng = np.random.default_rng(0)
    counts = collections.Counter(fmt.sample_secret(rng) for _ in range(5000))
    assert set(counts) == set("0123456789")
    assert max(counts.values()) < 600 and min(counts.values()) > 400  # expected 500 each


def test_matches_and_render_reject_wrong_shapes() -> None:
    fmt = get_canary_format("account")
    assert fmt.matches("1234-5678-9012")
    for wrong in ("1234-5678-901", "1234 5678 9012", "1234-5678-901a", ""):
        assert not fmt.matches(wrong)
    with pytest.raises(DataError, match="does not match"):
        fmt.render("not-a-number")


@pytest.mark.parametrize(
    ("name", "template", "pattern", "message"),
    [
        ("x", "no slot here", "dd", "exactly once"),
        ("x", "{secret} and {secret}", "dd", "exactly once"),
        ("x", "s={secret}", "--", "no random character"),
        ("", "s={secret}", "dd", "name"),
    ],
)
def test_invalid_formats(name: str, template: str, pattern: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        CanaryFormat(name, template, pattern)


def test_unknown_format_lists_valid_names() -> None:
    with pytest.raises(DataError, match="unknown canary format 'iban'") as info:
        get_canary_format("iban")
    for name in BUILTIN_CANARY_FORMATS:
        assert name in str(info.value)


def test_make_canaries() -> None:
    fmt = get_canary_format("pin")
    canaries = make_canaries(fmt, [0, 3], per_client=5, repetitions=4, rng=np.random.default_rng(1))
    assert [c.client for c in canaries] == [0] * 5 + [3] * 5
    assert len({c.secret for c in canaries}) == 10
    assert len({c.canary_id for c in canaries}) == 10
    for canary in canaries:
        assert canary.format is fmt
        assert canary.repetitions == 4
        assert canary.text == fmt.render(canary.secret)
        assert canary.canary_id.startswith("pin-")
    again = make_canaries(fmt, [0, 3], per_client=5, repetitions=4, rng=np.random.default_rng(1))
    assert again == canaries


def test_make_canaries_can_exhaust_a_small_space() -> None:
    fmt = CanaryFormat("digit", "d={secret}", "d")
    canaries = make_canaries(fmt, [0, 1], per_client=5, repetitions=1, rng=np.random.default_rng(0))
    assert sorted(c.secret for c in canaries) == list("0123456789")
    with pytest.raises(DataError, match="only 10"):
        make_canaries(fmt, [0, 1, 2], per_client=4, repetitions=1, rng=np.random.default_rng(0))


@pytest.mark.parametrize(
    ("clients", "per_client", "repetitions", "message"),
    [
        ([0], 0, 1, "per_client"),
        ([0], 1, 0, "repetitions"),
        ([0, 0], 1, 1, "distinct"),
        ([-1], 1, 1, "non-negative"),
    ],
)
def test_make_canaries_rejects_bad_arguments(
    clients: list[int], per_client: int, repetitions: int, message: str
) -> None:
    with pytest.raises(DataError, match=message):
        make_canaries(
            get_canary_format("pin"), clients, per_client, repetitions, np.random.default_rng(0)
        )
