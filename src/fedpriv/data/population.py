"""Built-in populations of clients: organisations (cross-silo) or users (cross-device).

:func:`generate_population` is what an audit calls: ``data.population`` names
one of :data:`POPULATIONS`.

* ``"organisations"`` — :func:`fedpriv.data.synthetic.generate_client_records`:
  a few organisations with many documents each, every one about the
  organisation's own pool of people (cross-silo).
* ``"users"`` — :func:`generate_user_records`, defined here: many users
  (default 1,000, up to 100,000 and more) with a few documents each, one
  client per user (``Record.key == f"user-{i:06d}"``), as on the devices of a
  cross-device federation.

The users' documents are written with the templates, vocabulary and formatting
of :mod:`fedpriv.data.synthetic`. They come from a handful of *services*: the
first organisations that the organisation generator makes for the same seed,
one per organisation profile (a cardiology clinic, a building society, a
broadband provider, ...), each with its own town, vocabulary subset, template
mix, formatting style and staff. Each user is a customer of one to three
services (the first one, their main service, writes most of their documents and
is in their home town) and has their own personal fields: full name, date of
birth, phone number, e-mail address, street address, customer id, account
number and employee id. Every one of a user's documents reuses them (in the
format of the service that writes it), so a model that memorises one user's
data is measurable, as with the organisations' people.

Users' personal fields are (nearly) unique across users:

* full names follow one seed-wide permutation of the private first x last names
  (the one the organisations deal their people from), after the names that the
  services' staff use; once the plain names run out, the next users get a middle
  initial (``Ada J. Brennan``), which gives about 289,000 distinct names;
* e-mail addresses contain the whole name (middle initial included);
* customer ids and employee ids are a seed-wide bijection of the user index, so
  distinct for up to 10⁷ and 10⁶ users;
* phone and account numbers are random (10 and 12 digits: about one repeated
  phone number among 100,000 users); street addresses may repeat, as households do.

Everything is deterministic under ``seed``, and user ``i``'s documents depend
only on ``(seed, i)``: adding users or records does not change existing ones
(records are generated in order, so a shorter run is a prefix of a longer one).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import string
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Final, Protocol

import numpy as np

from fedpriv.data import _vocab
from fedpriv.data.records import Record
from fedpriv.data.synthetic import (
    _FIRST_DOB,
    _PEOPLE_PER_CLIENT,
    _PROFILES,
    _STAFF_PER_CLIENT,
    _check_count,
    _check_seed,
    _Client,
    _Doc,
    _Draws,
    _full_name,
    _make_client,
    _name_order,
    _Person,
    _render,
    _stream,
    generate_client_records,
)
from fedpriv.errors import DataError

__all__ = [
    "DEFAULT_POPULATION",
    "MAX_USERS",
    "POPULATIONS",
    "generate_population",
    "generate_user_records",
]

logger = logging.getLogger(__name__)

#: Most users :func:`generate_user_records` makes (user keys have six digits,
#: so that sorting the keys keeps the users in index order).
MAX_USERS: Final = 1_000_000

#: Services the users are customers of: the seed's first organisations, one per profile.
_NUM_SERVICES: Final = len(_PROFILES)
# Probabilities of being a customer of 1, 2 or 3 services (cumulative), and how
# a user's documents are shared between their services (main service first).
_SERVICE_COUNT_CUMULATIVE: Final = (0.5, 0.8, 1.0)
_SERVICE_SHARES: Final = (0.6, 0.25, 0.15)
_SHARES_CUMULATIVE: Final = tuple(
    tuple(np.cumsum(_SERVICE_SHARES[:count]).tolist()) for count in (1, 2, 3)
)
_CUSTOMER_ID_MODULUS: Final = 10**7  # seven digits, as the organisations' ids
_EMPLOYEE_ID_MODULUS: Final = 10**6
_DRAW_BLOCK: Final = 256  # a user needs ~15 draws per record: smaller blocks, less waste

# Independent random streams, as SeedSequence spawn keys (0-3: fedpriv.data.synthetic).
_STREAM_USER: Final = 4
_STREAM_USER_IDS: Final = 5


@dataclass(frozen=True)
class _IdMaps:
    """Seed-wide affine bijections ``i -> (a * i + b) mod m`` that give users their ids."""

    customer: tuple[int, int]
    employee: tuple[int, int]


def _coprime_to_ten(rng: np.random.Generator, modulus: int) -> int:
    while True:
        value = int(rng.integers(1, modulus))
        if value % 2 and value % 5:
            return value


@functools.lru_cache(maxsize=8)
def _id_maps(seed: int) -> _IdMaps:
    rng = _stream(seed, _STREAM_USER_IDS)
    customer = (
        _coprime_to_ten(rng, _CUSTOMER_ID_MODULUS),
        int(rng.integers(_CUSTOMER_ID_MODULUS)),
    )
    employee = (
        _coprime_to_ten(rng, _EMPLOYEE_ID_MODULUS),
        int(rng.integers(_EMPLOYEE_ID_MODULUS)),
    )
    return _IdMaps(customer=customer, employee=employee)


@functools.lru_cache(maxsize=8)
def _services(seed: int) -> tuple[_Client, ...]:
    return tuple(_make_client(seed, index) for index in range(_NUM_SERVICES))


def _name_capacity(seed: int) -> int:
    """How many users get distinct full names (plain, then with each middle initial)."""
    names = len(_name_order(seed))
    return names * (1 + len(string.ascii_uppercase)) - _first_user_name()


def _first_user_name() -> int:
    """Position of user 0's name in the name order: after the services' people."""
    return _NUM_SERVICES * (_PEOPLE_PER_CLIENT + _STAFF_PER_CLIENT)


def _user_name(seed: int, index: int) -> tuple[str, str, str]:
    """User ``index``'s ``(first, middle initial or "", last)`` name."""
    order = _name_order(seed)
    position = _first_user_name() + index
    cycle = position // len(order)
    first, last = _full_name(int(order[position % len(order)]))
    initial = "" if cycle == 0 else string.ascii_uppercase[(cycle - 1) % 26]
    return first, initial, last


def _email_local(first: str, initial: str, last: str, draws: _Draws) -> str:
    """Return an e-mail local part holding the whole name, so users' addresses differ."""
    style = draws.index(4)
    if style == 0:
        local = ".".join(part for part in (first, initial, last) if part)
    elif style == 1:
        local = "_".join(part for part in (first, initial, last) if part)
    elif style == 2:
        local = ".".join(part for part in (last, first, initial) if part)
    else:
        local = f"{first}{initial}{last}{draws.index(90) + 10}"
    return local.lower()


def _make_user(seed: int, index: int, city: str, draws: _Draws) -> _Person:
    first, initial, last = _user_name(seed, index)
    maps = _id_maps(seed)
    (customer_a, customer_b), (employee_a, employee_b) = maps.customer, maps.employee
    phone = f"{201 + draws.index(788)}{201 + draws.index(788)}{draws.digits(4)}"
    dob = _FIRST_DOB + timedelta(days=draws.index(65 * 365))
    email = f"{_email_local(first, initial, last, draws)}@{draws.pick(_vocab.EMAIL_DOMAINS)}"
    street = f"{draws.pick(_vocab.STREETS)} {draws.pick(_vocab.STREET_TYPES)}"
    return _Person(
        first=first,
        last=f"{initial}. {last}" if initial else last,  # the name slot is "first last"
        dob=dob,
        phone=phone,
        email=email,
        address=f"{1 + draws.index(240)} {street}, {city}",
        pid=f"{(customer_a * index + customer_b) % _CUSTOMER_ID_MODULUS:07d}",
        account=draws.digits(12),
        emp=f"{(employee_a * index + employee_b) % _EMPLOYEE_ID_MODULUS:06d}",
    )


def _user_records(seed: int, index: int, count: int) -> list[Record]:
    """User ``index``'s first ``count`` documents (one stream: set-up, then records)."""
    services = _services(seed)
    draws = _Draws(_stream(seed, _STREAM_USER, index), block=_DRAW_BLOCK)
    how_many = 1 + draws.weighted(_SERVICE_COUNT_CUMULATIVE)
    remaining = list(range(len(services)))
    mine = [services[remaining.pop(draws.index(len(remaining)))] for _ in range(how_many)]
    shares = _SHARES_CUMULATIVE[how_many - 1]
    person = _make_user(seed, index, mine[0].city, draws)
    key = f"user-{index:06d}"
    records: list[Record] = []
    for _ in range(count):
        service = mine[draws.weighted(shares)]
        kind = service.kinds[draws.weighted(service.kind_cumulative)]
        options, cumulative = service.templates[kind]
        pieces = options[draws.weighted(cumulative)]
        doc = _Doc(
            person=person,
            staff=service.staff[draws.index(len(service.staff))],
            org=service.org,
            city=service.city,
            vocab=service.vocab,
            style=service.style,
            draws=draws,
        )
        text, spans = _render(pieces, doc, with_spans=True)
        records.append(Record(text=text, key=key, label=kind, pii=spans))
    return records


def generate_user_records(
    num_users: int, records_per_user: int, *, seed: int
) -> list[list[Record]]:
    """Generate a cross-device population: ``num_users`` users' own documents.

    Args:
        num_users: Number of users (one client each), from 1 to :data:`MAX_USERS`.
        records_per_user: Number of documents per user, at least 1.
        seed: Non-negative seed; the same seed gives the same records, and user
            ``i``'s records depend only on ``(seed, i)``.

    Returns:
        One list per user (outer index = user index). Every record has
        ``key == f"user-{i:06d}"``, ``label`` = its document kind and ``pii`` =
        the spans of every personal field.

    Raises:
        DataError: If a count is not a positive integer, there are more than
            :data:`MAX_USERS` users, or the seed is negative.
    """
    num_users = _check_count(num_users, "num_users")
    records_per_user = _check_count(records_per_user, "records_per_user")
    seed = _check_seed(seed)
    if num_users > MAX_USERS:
        raise DataError(
            f"num_users must be at most {MAX_USERS:,}, got {num_users:,}; simulate fewer "
            "users or sample clients per round from a population of that size."
        )
    capacity = _name_capacity(seed)
    if num_users > capacity:
        logger.warning(
            "users %d and later reuse full names of earlier users: only %d distinct names exist",
            capacity,
            capacity,
        )
    with _collector_paused():
        return [_user_records(seed, index, records_per_user) for index in range(num_users)]


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while making many acyclic objects.

    Records hold no reference cycles, so the collector finds nothing here, but
    it would scan the growing corpus again and again (about a third of the time
    at 100,000 users).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _PopulationGenerator(Protocol):
    def __call__(self, num_clients: int, per_client: int, /, *, seed: int) -> list[list[Record]]:
        """Return ``num_clients`` clients' records, ``per_client`` each, under ``seed``."""


#: The built-in populations by the name ``data.population`` takes.
POPULATIONS: Final[Mapping[str, _PopulationGenerator]] = {
    "organisations": generate_client_records,
    "users": generate_user_records,
}
DEFAULT_POPULATION: Final = "organisations"


def generate_population(
    population: str, num_clients: int, records_per_client: int, *, seed: int
) -> list[list[Record]]:
    """Generate the built-in population ``population``'s client records.

    Args:
        population: One of :data:`POPULATIONS`: ``"organisations"`` (few
            clients, many records about each organisation's people) or
            ``"users"`` (one client per user, a few records about that user).
        num_clients: Number of clients (organisations or users).
        records_per_client: Documents per client.
        seed: Non-negative seed.

    Returns:
        One list of records per client, in client order.

    Raises:
        DataError: If the population is unknown or the generator rejects a count.
    """
    generator = POPULATIONS.get(population)
    if generator is None:
        raise DataError(
            f"unknown population {population!r}; use one of {sorted(POPULATIONS)}."
        )
    return generator(num_clients, records_per_client, seed=seed)
