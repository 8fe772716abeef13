"""Word lists and organisation profiles behind the synthetic private-records corpus.

The lists live in the packaged data file ``fedpriv/data/vocab.json``, read once
at import (through :mod:`importlib.resources`, so it works from a wheel or a
zip as well as from a source tree); this module only gives them the names and
immutable types :mod:`fedpriv.data.synthetic` reads. Names, cities and
organisations are invented. The person-name lists are split into disjoint
private (client) and public halves by :mod:`fedpriv.data.synthetic`, so the
public pretraining corpus never contains a name that any client holds.

The file holds one object: ``first_names``, ``last_names``, ``cities``,
``streets``, ``street_types``, ``email_domains`` and ``months`` (lists of
strings); ``shared_vocab`` (vocabulary every organisation uses: list name ->
words); and ``profiles``, one entry per kind of organisation with ``name``,
``kinds`` (document kind -> weight), ``orgs`` (name patterns, ``{city}`` filled
in), ``id_prefixes`` and its own vocabulary lists. Order matters everywhere
(the generator draws indices into these lists and walks the vocabularies in
file order), so editing the file changes the generated corpus.

Profile vocabularies follow one grammar so that every template can use any of
them: ``issues`` are lower-case noun phrases, ``details`` and ``*_notes`` are
capitalised sentences without the final full stop, ``actions`` are lower-case
verb phrases in the base form ("start a ..."), ``services`` and ``products`` are
lower-case noun phrases without an article.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any, Final, cast

_RESOURCE: Final = "vocab.json"


def _frozen(value: Any) -> Any:
    """Turn lists into tuples, recursively (dicts keep their order); keep scalars."""
    if isinstance(value, list):
        return tuple(_frozen(item) for item in value)
    if isinstance(value, dict):
        return {key: _frozen(item) for key, item in value.items()}
    return value


def _load() -> dict[str, Any]:
    text = resources.files("fedpriv.data").joinpath(_RESOURCE).read_text(encoding="utf-8")
    return cast("dict[str, Any]", _frozen(json.loads(text)))


_DATA: Final = _load()

FIRST_NAMES: Final[tuple[str, ...]] = _DATA["first_names"]
LAST_NAMES: Final[tuple[str, ...]] = _DATA["last_names"]
#: Invented towns; split into disjoint private (client) and public halves.
CITIES: Final[tuple[str, ...]] = _DATA["cities"]
STREETS: Final[tuple[str, ...]] = _DATA["streets"]
STREET_TYPES: Final[tuple[str, ...]] = _DATA["street_types"]
EMAIL_DOMAINS: Final[tuple[str, ...]] = _DATA["email_domains"]
MONTHS: Final[tuple[str, ...]] = _DATA["months"]
#: Vocabulary shared by every organisation (HR, e-mail requests, ticket and claim states).
SHARED_VOCAB: Final[dict[str, tuple[str, ...]]] = _DATA["shared_vocab"]
#: One entry per kind of organisation. ``kinds`` weights the document kinds it
#: writes; ``orgs`` are name patterns (``{city}`` is filled in, always present so
#: that organisations of different cities never share a name).
PROFILES: Final[tuple[dict[str, object], ...]] = _DATA["profiles"]
