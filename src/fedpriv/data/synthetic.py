"""Built-in synthetic private-records corpus: per-client documents and a public split.

fedpriv needs data on which memorisation is *measurable* without shipping real
personal data, so this module writes short, templated, realistic documents
(clinical notes, support tickets, e-mails, bank statements, HR notes,
appointment reminders, insurance claims) that carry personal fields: names,
dates, phone numbers, e-mail addresses, account numbers, ids and street
addresses. Every inserted personal field is recorded as a
:class:`~fedpriv.data.records.PiiSpan` with exact character offsets.

The client corpus is strongly non-IID, like real cross-silo federations:

* each client is one organisation (its own name and town) of one kind
  (a cardiology clinic, a building society, a broadband provider, ...), which
  decides the vocabulary of its documents;
* each client has its own mix of document kinds (Dirichlet-weighted around the
  organisation's usual kinds, so one or two kinds dominate), its own preferred
  templates, its own subset of the vocabulary and its own formatting habits
  (date and phone formats, id prefixes, currency);
* each client has its own pool of people, disjoint from every other client's
  pool (as long as there are fewer than ~290 clients), and reuses them across
  records: a patient appears in several notes with the same phone number and
  address, which is what makes memorisation measurable.

The public corpus (what a base model is pretrained on) uses the same document
kinds and general language, but people and towns from disjoint halves of the
name lists (so no public name is ever a client's), one document-specific
organisation per record, and partly different templates (see
:mod:`fedpriv.data._templates`), so client fine-tuning has something to learn.

The word lists come from the packaged ``vocab.json`` (see
:mod:`fedpriv.data._vocab`). The cross-device population (many users, a few
documents each, one client per user) is built from the same machinery in
:mod:`fedpriv.data.population`.

Everything is deterministic under ``seed``. Client ``i``'s documents depend only
on ``(seed, i)``: adding clients or records does not change existing ones
(records are generated in order, so a shorter run is a prefix of a longer one).
"""

from __future__ import annotations

import bisect
import functools
import logging
import math
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Final, cast

import numpy as np

from fedpriv.data import _templates, _vocab
from fedpriv.data.records import PiiSpan, Record
from fedpriv.errors import DataError

__all__ = ["DOCUMENT_KINDS", "generate_client_records", "generate_public_corpus"]

logger = logging.getLogger(__name__)

#: Every document kind the generator writes, in a fixed order.
DOCUMENT_KINDS: Final[tuple[str, ...]] = tuple(_templates.TEMPLATES)

# Template slots holding a personal field, and the PiiSpan kind they record.
_PII_SLOTS: Final[dict[str, str]] = {
    "name": "name",
    "first": "name",
    "staff": "name",
    "staff_first": "name",
    "dob": "date",
    "date": "date",
    "date2": "date",
    "phone": "phone",
    "email": "email",
    "account": "account",
    "pid": "id",
    "emp_id": "id",
    "ticket": "id",
    "claim_ref": "id",
    "address": "address",
}

# Template slots filled from a vocabulary list (profile-specific or shared).
_VOCAB_SLOTS: Final[dict[str, str]] = {
    "issue": "issues",
    "detail": "details",
    "action": "actions",
    "service": "services",
    "product": "products",
    "merchant": "merchants",
    "merchant2": "merchants",
    "claim_event": "claim_events",
    "role": "roles",
    "dept": "depts",
    "request": "requests",
    "status": "statuses",
    "priority": "priorities",
    "claim_status": "claim_statuses",
    "claim_note": "claim_notes",
    "bank_note": "bank_notes",
    "hr_event": "hr_events",
    "hr_followup": "hr_followups",
    "hr_detail": "hr_details",
    "hr_topic": "hr_topics",
    "hr_action": "hr_actions",
}

_PEOPLE_PER_CLIENT: Final = 32  # customers / patients / employees a client writes about
_STAFF_PER_CLIENT: Final = 4  # clinicians / agents / managers who sign the documents
_KIND_CONCENTRATION: Final = 2.0  # Dirichlet concentration around a profile's kind weights
_VOCAB_KEEP: Final = 0.75  # share of each vocabulary list a client uses

# Independent random streams, as SeedSequence spawn keys.
_STREAM_NAMES: Final = 0
_STREAM_ORGS: Final = 1
_STREAM_CLIENT: Final = 2
_STREAM_PUBLIC: Final = 3

# Private (client) and public halves of the word lists: disjoint by construction.
_PRIVATE_FIRST: Final = _vocab.FIRST_NAMES[0::2]
_PUBLIC_FIRST: Final = _vocab.FIRST_NAMES[1::2]
_PRIVATE_LAST: Final = _vocab.LAST_NAMES[0::2]
_PUBLIC_LAST: Final = _vocab.LAST_NAMES[1::2]
_PRIVATE_CITIES: Final = _vocab.CITIES[0::2]
_PUBLIC_CITIES: Final = _vocab.CITIES[1::2]

_DATE_FORMATS: Final = 4
_PHONE_FORMATS: Final = 4
_ACCOUNT_FORMATS: Final = ("dddd-dddd-dddd", "dddd dddd dddd", "dddddddddddd", "dd-dddddd-dddd")
_CURRENCIES: Final = ("$", "£", "€")
_EMP_PREFIXES: Final = ("EMP-", "E", "STAFF-", "HR")
_TICKET_PREFIXES: Final = ("TKT-", "CASE-", "INC-", "REQ-")
_CLAIM_PREFIXES: Final = ("CLM-", "CL", "CLAIM-")
_FIRST_DAY: Final = date(2023, 1, 1)
_FIRST_DOB: Final = date(1940, 1, 1)

_Pieces = tuple[tuple[str, "str | None"], ...]


def _parse(template: str) -> _Pieces:
    """Split a template into ``(literal, slot or None)`` pieces, checking every slot."""
    pieces: list[tuple[str, str | None]] = []
    for literal, field, _spec, _conv in string.Formatter().parse(template):
        if field is not None and field not in _SLOT_FILLERS and field not in _VOCAB_SLOTS:
            raise RuntimeError(f"template slot {{{field}}} has no filler: {template!r}")
        pieces.append((literal, field))
    return tuple(pieces)


class _Draws:
    """Uniform draws from a numpy Generator, fetched in blocks for speed."""

    __slots__ = ("_block", "_buffer", "_position", "_rng")

    def __init__(self, rng: np.random.Generator, block: int = 1024) -> None:
        # The block size changes the speed only: the draws are the Generator's
        # uniform sequence, however it is cut into blocks.
        self._rng = rng
        self._block = block
        self._buffer: list[float] = []
        self._position = 0

    def uniform(self) -> float:
        if self._position == len(self._buffer):
            self._buffer = self._rng.random(self._block).tolist()
            self._position = 0
        value = self._buffer[self._position]
        self._position += 1
        return value

    def index(self, n: int) -> int:
        return min(int(self.uniform() * n), n - 1)

    def pick(self, items: Sequence[str]) -> str:
        return items[self.index(len(items))]

    def weighted(self, cumulative: Sequence[float]) -> int:
        """Index drawn with probabilities given by a cumulative weight list."""
        position = bisect.bisect_right(cumulative, self.uniform() * cumulative[-1])
        return min(position, len(cumulative) - 1)

    def digits(self, n: int) -> str:
        return f"{self.index(10**n):0{n}d}"


@dataclass(frozen=True)
class _Person:
    first: str
    last: str
    dob: date
    phone: str  # ten digits, formatted by the client's style
    email: str
    address: str
    pid: str  # seven digits behind the organisation's id prefix
    account: str  # twelve digits, formatted by the client's style
    emp: str  # five digits behind the employee-id prefix


@dataclass(frozen=True)
class _Style:
    date_format: int
    phone_format: int
    account_format: str
    currency: str
    id_prefix: str
    emp_prefix: str
    ticket_prefix: str
    claim_prefix: str


@dataclass(frozen=True)
class _Profile:
    name: str
    orgs: tuple[str, ...]
    id_prefixes: tuple[str, ...]
    kinds: tuple[str, ...]
    kind_weights: tuple[float, ...]
    kind_cumulative: tuple[float, ...]
    vocab: dict[str, tuple[str, ...]]


def _load_profile(raw: dict[str, object]) -> _Profile:
    kind_weights = cast("dict[str, float]", raw["kinds"])
    kinds = tuple(kind for kind in DOCUMENT_KINDS if kind_weights.get(kind, 0.0) > 0.0)
    weights = tuple(kind_weights[kind] for kind in kinds)
    vocab = dict(_vocab.SHARED_VOCAB)
    for key, value in raw.items():
        if key not in {"name", "kinds", "orgs", "id_prefixes"}:
            vocab[key] = cast("tuple[str, ...]", value)
    return _Profile(
        name=cast(str, raw["name"]),
        orgs=cast("tuple[str, ...]", raw["orgs"]),
        id_prefixes=cast("tuple[str, ...]", raw["id_prefixes"]),
        kinds=kinds,
        kind_weights=weights,
        kind_cumulative=tuple(np.cumsum(weights).tolist()),
        vocab=vocab,
    )


class _Doc:
    """Everything the slot fillers of one document need."""

    __slots__ = ("city", "draws", "org", "person", "staff", "style", "vocab", "when")

    def __init__(
        self,
        *,
        person: _Person,
        staff: _Person,
        org: str,
        city: str,
        vocab: dict[str, tuple[str, ...]],
        style: _Style,
        draws: _Draws,
    ) -> None:
        self.person = person
        self.staff = staff
        self.org = org
        self.city = city
        self.vocab = vocab
        self.style = style
        self.draws = draws
        self.when = _FIRST_DAY + timedelta(days=draws.index(730))


def _format_date(day: date, style: int) -> str:
    month = _vocab.MONTHS[day.month - 1]
    if style == 0:
        return f"{day.day} {month} {day.year}"
    if style == 1:
        return f"{day.year}-{day.month:02d}-{day.day:02d}"
    if style == 2:
        return f"{day.month:02d}/{day.day:02d}/{day.year}"
    return f"{month} {day.day}, {day.year}"


def _format_phone(digits: str, style: int) -> str:
    area, exchange, line = digits[:3], digits[3:6], digits[6:]
    if style == 0:
        return f"({area}) {exchange}-{line}"
    if style == 1:
        return f"{area}-{exchange}-{line}"
    if style == 2:
        return f"+1 {area} {exchange} {line}"
    return f"{area}.{exchange}.{line}"


def _format_digits(pattern: str, digits: str) -> str:
    out: list[str] = []
    position = 0
    for char in pattern:
        if char == "d":
            out.append(digits[position])
            position += 1
        else:
            out.append(char)
    return "".join(out)


def _format_amount(doc: _Doc) -> str:
    value = 5.0 + doc.draws.uniform() * 2495.0
    return f"{doc.style.currency}{value:,.2f}"


def _format_time(doc: _Doc) -> str:
    hour = 8 + doc.draws.index(10)
    minute = 15 * doc.draws.index(4)
    hour12 = hour if hour <= 12 else hour - 12
    return f"{hour12}:{minute:02d} {'am' if hour < 12 else 'pm'}"


def _later_date(doc: _Doc) -> str:
    return _format_date(doc.when + timedelta(days=7 + doc.draws.index(60)), doc.style.date_format)


_SLOT_FILLERS: Final[dict[str, Callable[[_Doc], str]]] = {
    "name": lambda d: f"{d.person.first} {d.person.last}",
    "first": lambda d: d.person.first,
    "staff": lambda d: f"{d.staff.first} {d.staff.last}",
    "staff_first": lambda d: d.staff.first,
    "dob": lambda d: _format_date(d.person.dob, d.style.date_format),
    "date": lambda d: _format_date(d.when, d.style.date_format),
    "date2": _later_date,
    "phone": lambda d: _format_phone(d.person.phone, d.style.phone_format),
    "email": lambda d: d.person.email,
    "account": lambda d: _format_digits(d.style.account_format, d.person.account),
    "pid": lambda d: d.style.id_prefix + d.person.pid,
    "emp_id": lambda d: d.style.emp_prefix + d.person.emp,
    "ticket": lambda d: d.style.ticket_prefix + d.draws.digits(6),
    "claim_ref": lambda d: d.style.claim_prefix + d.draws.digits(7),
    "address": lambda d: d.person.address,
    "org": lambda d: d.org,
    "city": lambda d: d.city,
    "amount": _format_amount,
    "amount2": _format_amount,
    "amount3": _format_amount,
    "amount4": _format_amount,
    "weeks": lambda d: str(2 + d.draws.index(11)),
    "days": lambda d: str(2 + d.draws.index(9)),
    "time": _format_time,
}

_PROFILES: Final[tuple[_Profile, ...]] = tuple(_load_profile(raw) for raw in _vocab.PROFILES)

# kind -> parsed templates usable by the clients / by the public corpus.
_PRIVATE_TEMPLATES: Final[dict[str, tuple[_Pieces, ...]]] = {
    kind: tuple(_parse(text) for scope, text in entries if scope in {"shared", "private"})
    for kind, entries in _templates.TEMPLATES.items()
}
_PUBLIC_TEMPLATES: Final[dict[str, tuple[_Pieces, ...]]] = {
    kind: tuple(_parse(text) for scope, text in entries if scope in {"shared", "public"})
    for kind, entries in _templates.TEMPLATES.items()
}


def _render(pieces: _Pieces, doc: _Doc, *, with_spans: bool) -> tuple[str, tuple[PiiSpan, ...]]:
    """Fill a template; a slot used twice gets the same value both times."""
    parts: list[str] = []
    spans: list[PiiSpan] = []
    filled: dict[str, str] = {}
    position = 0
    for literal, field in pieces:
        if literal:
            parts.append(literal)
            position += len(literal)
        if field is None:
            continue
        value = filled.get(field)
        if value is None:
            filler = _SLOT_FILLERS.get(field)
            if filler is None:
                words = doc.vocab[_VOCAB_SLOTS[field]]
                if field == "merchant2":  # a second, different merchant on the statement
                    words = tuple(word for word in words if word != filled.get("merchant"))
                value = doc.draws.pick(words)
            else:
                value = filler(doc)
            filled[field] = value
        if with_spans and field in _PII_SLOTS:
            spans.append(PiiSpan(position, position + len(value), _PII_SLOTS[field]))
        parts.append(value)
        position += len(value)
    return "".join(parts), tuple(spans)


def _make_person(first: str, last: str, city: str, draws: _Draws) -> _Person:
    local_style = draws.index(5)
    if local_style == 0:
        local = f"{first}.{last}"
    elif local_style == 1:
        local = f"{first[0]}{last}"
    elif local_style == 2:
        local = f"{first}{last}{draws.index(90) + 10}"
    elif local_style == 3:
        local = f"{first}_{last}"
    else:
        local = f"{last}.{first}"
    phone = f"{201 + draws.index(788)}{201 + draws.index(788)}{draws.digits(4)}"
    street = f"{draws.pick(_vocab.STREETS)} {draws.pick(_vocab.STREET_TYPES)}"
    return _Person(
        first=first,
        last=last,
        dob=_FIRST_DOB + timedelta(days=draws.index(65 * 365)),
        phone=phone,
        email=f"{local.lower()}@{draws.pick(_vocab.EMAIL_DOMAINS)}",
        address=f"{1 + draws.index(240)} {street}, {city}",
        pid=draws.digits(7),
        account=draws.digits(12),
        emp=draws.digits(5),
    )


def _random_style(profile: _Profile, draws: _Draws) -> _Style:
    return _Style(
        date_format=draws.index(_DATE_FORMATS),
        phone_format=draws.index(_PHONE_FORMATS),
        account_format=draws.pick(_ACCOUNT_FORMATS),
        currency=draws.pick(_CURRENCIES),
        id_prefix=draws.pick(profile.id_prefixes),
        emp_prefix=draws.pick(_EMP_PREFIXES),
        ticket_prefix=draws.pick(_TICKET_PREFIXES),
        claim_prefix=draws.pick(_CLAIM_PREFIXES),
    )


def _stream(seed: int, *key: int) -> np.random.Generator:
    """Return an independent Generator for one purpose, derived from ``seed`` and ``key``."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _check_count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise DataError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise DataError(f"seed must be a non-negative integer, got {seed!r}.")
    return int(seed)


@dataclass(frozen=True)
class _Client:
    key: str
    org: str
    city: str
    profile: _Profile
    style: _Style
    vocab: dict[str, tuple[str, ...]]
    people: tuple[_Person, ...]
    staff: tuple[_Person, ...]
    kinds: tuple[str, ...]
    kind_cumulative: tuple[float, ...]
    templates: dict[str, tuple[tuple[_Pieces, ...], tuple[float, ...]]]


@functools.lru_cache(maxsize=8)
def _name_order(seed: int) -> np.ndarray:
    """One seed-wide permutation of the codes of all private full names (first x last)."""
    order = _stream(seed, _STREAM_NAMES).permutation(len(_PRIVATE_FIRST) * len(_PRIVATE_LAST))
    order.flags.writeable = False
    return order


@functools.lru_cache(maxsize=8)
def _org_orders(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seed-wide permutations of the profiles and of the private towns, dealt to clients."""
    org_rng = _stream(seed, _STREAM_ORGS)
    profile_order = org_rng.permutation(len(_PROFILES))
    city_order = org_rng.permutation(len(_PRIVATE_CITIES))
    profile_order.flags.writeable = False
    city_order.flags.writeable = False
    return profile_order, city_order


def _full_name(code: int) -> tuple[str, str]:
    """Return the private ``(first, last)`` name with code ``code`` (index into first x last)."""
    num_last = len(_PRIVATE_LAST)
    return _PRIVATE_FIRST[code // num_last], _PRIVATE_LAST[code % num_last]


def _client_names(seed: int, index: int) -> list[tuple[str, str]]:
    """Client ``index``'s slice of one seed-wide permutation of all private full names."""
    order = _name_order(seed)
    total = len(order)
    per_client = _PEOPLE_PER_CLIENT + _STAFF_PER_CLIENT
    start = index * per_client
    return [_full_name(int(order[(start + offset) % total])) for offset in range(per_client)]


def _make_client(seed: int, index: int) -> _Client:
    profile_order, city_order = _org_orders(seed)
    profile = _PROFILES[int(profile_order[index % len(_PROFILES)])]
    city = _PRIVATE_CITIES[int(city_order[index % len(_PRIVATE_CITIES)])]

    rng = _stream(seed, _STREAM_CLIENT, index)
    draws = _Draws(rng)
    org = draws.pick(profile.orgs).format(city=city)
    cycle = index // len(_PRIVATE_CITIES)
    if cycle > 0:  # more clients than towns: keep organisation names distinct
        org = f"{org} (branch {cycle + 1})"

    kind_weights = rng.dirichlet(_KIND_CONCENTRATION * np.asarray(profile.kind_weights))
    templates: dict[str, tuple[tuple[_Pieces, ...], tuple[float, ...]]] = {}
    for kind in profile.kinds:
        options = _PRIVATE_TEMPLATES[kind]
        weights = rng.dirichlet(np.ones(len(options)))
        templates[kind] = (options, tuple(np.cumsum(weights).tolist()))
    vocab: dict[str, tuple[str, ...]] = {}
    for key, words in profile.vocab.items():
        keep = max(3, math.ceil(_VOCAB_KEEP * len(words)))
        chosen = np.sort(rng.choice(len(words), size=min(keep, len(words)), replace=False))
        vocab[key] = tuple(words[int(i)] for i in chosen)

    names = _client_names(seed, index)
    people = tuple(_make_person(first, last, city, draws) for first, last in names)
    return _Client(
        key=f"client-{index:03d}",
        org=org,
        city=city,
        profile=profile,
        style=_random_style(profile, draws),
        vocab=vocab,
        people=people[:_PEOPLE_PER_CLIENT],
        staff=people[_PEOPLE_PER_CLIENT:],
        kinds=profile.kinds,
        kind_cumulative=tuple(np.cumsum(kind_weights).tolist()),
        templates=templates,
    )


def _client_records(client: _Client, seed: int, index: int, count: int) -> list[Record]:
    # A stream apart from the one that built the client, so that records are a
    # prefix-stable sequence whatever the client set-up consumed.
    draws = _Draws(_stream(seed, _STREAM_CLIENT, index, 1))
    records: list[Record] = []
    for _ in range(count):
        kind = client.kinds[draws.weighted(client.kind_cumulative)]
        options, cumulative = client.templates[kind]
        pieces = options[draws.weighted(cumulative)]
        doc = _Doc(
            person=client.people[draws.index(len(client.people))],
            staff=client.staff[draws.index(len(client.staff))],
            org=client.org,
            city=client.city,
            vocab=client.vocab,
            style=client.style,
            draws=draws,
        )
        text, spans = _render(pieces, doc, with_spans=True)
        records.append(Record(text=text, key=client.key, label=kind, pii=spans))
    return records


def generate_client_records(
    num_clients: int, records_per_client: int, *, seed: int
) -> list[list[Record]]:
    """Generate the private records of ``num_clients`` organisations.

    Args:
        num_clients: Number of clients (organisations), at least 1.
        records_per_client: Number of documents per client, at least 1.
        seed: Non-negative seed; the same seed gives the same records.

    Returns:
        One list per client (outer index = client index). Every record has
        ``key == f"client-{i:03d}"``, ``label`` = its document kind (one of
        :data:`DOCUMENT_KINDS`) and ``pii`` = the spans of every personal field.

    Raises:
        DataError: If a count is not a positive integer or the seed is negative.
    """
    num_clients = _check_count(num_clients, "num_clients")
    records_per_client = _check_count(records_per_client, "records_per_client")
    seed = _check_seed(seed)
    names = len(_name_order(seed))
    per_client = _PEOPLE_PER_CLIENT + _STAFF_PER_CLIENT
    if num_clients * per_client > names:
        logger.warning(
            "clients %d and later reuse full names of earlier clients: only %d private names "
            "exist (%d per client)",
            names // per_client,
            names,
            per_client,
        )
    corpus: list[list[Record]] = []
    for index in range(num_clients):
        client = _make_client(seed, index)
        corpus.append(_client_records(client, seed, index, records_per_client))
    return corpus


def generate_public_corpus(num_records: int, *, seed: int) -> list[str]:
    """Generate the public corpus a base model is pretrained on.

    The documents are of the same kinds and general language as the client
    records, but with people and towns no client uses (disjoint halves of the
    name lists), a fresh organisation for every document, formatting chosen per
    document, and some templates that no client uses (while clients use some
    that never appear here).

    Args:
        num_records: Number of documents, at least 1.
        seed: Non-negative seed; the same seed gives the same corpus. The public
            stream is independent of the client streams of the same seed.

    Returns:
        The documents, as plain strings.

    Raises:
        DataError: If ``num_records`` is not a positive integer or the seed is negative.
    """
    num_records = _check_count(num_records, "num_records")
    seed = _check_seed(seed)
    draws = _Draws(_stream(seed, _STREAM_PUBLIC))
    texts: list[str] = []
    for _ in range(num_records):
        profile = _PROFILES[draws.index(len(_PROFILES))]
        kind = profile.kinds[draws.weighted(profile.kind_cumulative)]
        pieces = _PUBLIC_TEMPLATES[kind][draws.index(len(_PUBLIC_TEMPLATES[kind]))]
        city = draws.pick(_PUBLIC_CITIES)
        person = _make_person(draws.pick(_PUBLIC_FIRST), draws.pick(_PUBLIC_LAST), city, draws)
        staff = _make_person(draws.pick(_PUBLIC_FIRST), draws.pick(_PUBLIC_LAST), city, draws)
        doc = _Doc(
            person=person,
            staff=staff,
            org=draws.pick(profile.orgs).format(city=city),
            city=city,
            vocab=profile.vocab,
            style=_random_style(profile, draws),
            draws=draws,
        )
        text, _ = _render(pieces, doc, with_spans=False)
        texts.append(text)
    return texts
