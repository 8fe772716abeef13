"""Federated datasets: per-client member / non-member splits with canaries planted.

This is where a corpus becomes what one audit trains and attacks on. Each
client's records are split into *members* (trained on) and *non-members*
(held out from the same client distribution: the negatives of membership
inference), and each canary is inserted ``repetitions`` times at random
positions into its client's members. The dataset keeps the ground truth
(which records are members, which canaries went where) for the metrics; the
attacks only ever get observations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from fedpriv.data.canaries import AuditCanaries, Canary
from fedpriv.data.partition import partition_by_key, partition_dirichlet, partition_iid
from fedpriv.data.records import Record
from fedpriv.errors import DataError

__all__ = [
    "ClientData",
    "FederatedDataset",
    "build_federated_dataset",
    "partition_records",
    "split_members",
]

PARTITION_SCHEMES: Final = ("iid", "dirichlet", "natural")
PARTITION_FIELDS: Final = ("label", "key")


@dataclass(frozen=True)
class ClientData:
    """One client's data.

    Attributes:
        client: Client index.
        members: Training texts, canary insertions included (each repetition
            is a separate entry, at a random position).
        nonmembers: Held-out texts of the same client (never trained on).
        member_records: The records behind ``members``, canaries excluded.
        nonmember_records: The records behind ``nonmembers``.
        audit_inserted: How many of ``members`` are one-run audit canaries.
    """

    client: int
    members: tuple[str, ...]
    nonmembers: tuple[str, ...]
    member_records: tuple[Record, ...]
    nonmember_records: tuple[Record, ...]
    audit_inserted: int = 0

    @property
    def nominal_size(self) -> int:
        """Training examples without the one-run audit's canaries.

        Public (it follows from the config and the data, not from which audit
        canaries were included): DP-SGD's sample rate derives from it, so the
        report's ``sample_rate`` and ε never reveal how many canaries went in.
        """
        return len(self.members) - self.audit_inserted


@dataclass(frozen=True)
class FederatedDataset:
    """All clients' data and the canaries planted in it.

    Attributes:
        clients: One entry per client, in client order.
        canaries: Every canary planted (ground truth for exposure metrics).
        audit_canaries: The one-run audit's canaries (each included with
            probability ½, once), or ``None``.
    """

    clients: tuple[ClientData, ...]
    canaries: tuple[Canary, ...]
    audit_canaries: AuditCanaries | None = None

    def all_members(self) -> list[str]:
        """Return every client's training texts, client by client (canaries included)."""
        return [text for client in self.clients for text in client.members]

    def all_nonmembers(self) -> list[str]:
        """Return every client's held-out texts, client by client."""
        return [text for client in self.clients for text in client.nonmembers]


def split_members(
    records: Sequence[Record], holdout_fraction: float, rng: np.random.Generator
) -> tuple[list[Record], list[Record]]:
    """Split one client's records into members and held-out non-members.

    ``round(holdout_fraction * n)`` records, clipped to ``[1, n - 1]``, are held
    out at random; both parts keep the input order.

    Args:
        records: The client's records (at least 2).
        holdout_fraction: Share of records to hold out, strictly between 0 and 1.
        rng: Source of randomness.

    Returns:
        ``(members, nonmembers)``, each non-empty.

    Raises:
        DataError: If the fraction is out of range or there are fewer than 2 records.
    """
    if isinstance(holdout_fraction, bool) or not 0.0 < float(holdout_fraction) < 1.0:
        raise DataError(
            f"holdout_fraction must be strictly between 0 and 1, got {holdout_fraction!r}."
        )
    count = len(records)
    if count < 2:
        raise DataError(
            f"a client needs at least 2 records to have both members and non-members, got "
            f"{count}; give every client more data or use fewer clients."
        )
    held_out = min(max(round(float(holdout_fraction) * count), 1), count - 1)
    is_held_out = np.zeros(count, dtype=bool)
    is_held_out[rng.choice(count, size=held_out, replace=False)] = True
    members = [record for record, out in zip(records, is_held_out, strict=True) if not out]
    nonmembers = [record for record, out in zip(records, is_held_out, strict=True) if out]
    return members, nonmembers


def _check_canaries(
    canaries: Sequence[Canary], num_clients: int, client_records: Sequence[Sequence[Record]]
) -> None:
    ids = [canary.canary_id for canary in canaries]
    if len(set(ids)) != len(ids):
        raise DataError("canary ids must be unique; make canaries of each format only once.")
    texts = [canary.text for canary in canaries]
    if len(set(texts)) != len(texts):
        raise DataError("two canaries have the same text; every canary needs its own secret.")
    record_texts = {record.text for records in client_records for record in records}
    for canary in canaries:
        if not 0 <= canary.client < num_clients:
            raise DataError(
                f"canary {canary.canary_id} targets client {canary.client}, but there are "
                f"only {num_clients} clients (0..{num_clients - 1})."
            )
        if canary.text in record_texts:
            raise DataError(
                f"canary {canary.canary_id} has the same text as a corpus record, so its "
                "exposure could not be measured; use another canary format or template."
            )


def build_federated_dataset(
    client_records: Sequence[Sequence[Record]],
    *,
    holdout_fraction: float,
    rng: np.random.Generator,
    canaries: Sequence[Canary] = (),
    audit_canaries: AuditCanaries | None = None,
) -> FederatedDataset:
    """Split every client into members / non-members and plant the canaries.

    Args:
        client_records: Records per client (outer index = client index).
        holdout_fraction: Share of each client's records held out as non-members.
        rng: Source of randomness (splits and canary positions).
        canaries: Canaries to insert; each goes ``repetitions`` times into the
            members of ``canary.client``, at random positions.
        audit_canaries: The one-run audit's canaries: each included one goes
            once into its client's members, at a random position.

    Returns:
        The federated dataset.

    Raises:
        DataError: If there are no clients, a client has fewer than 2 records,
            the fraction is out of range, or a canary is invalid (unknown client,
            duplicate id or text, or text equal to a record).
    """
    num_clients = len(client_records)
    if num_clients == 0:
        raise DataError("cannot build a federated dataset without clients.")
    _check_canaries(canaries, num_clients, client_records)
    # Canaries grouped by client once: a pass over every canary for every client
    # would cost clients x canaries (10^8 at 100,000 users and 1,000 canaries).
    canaries_by_client: dict[int, list[str]] = {}
    for canary in canaries:
        canaries_by_client.setdefault(canary.client, []).extend(
            [canary.text] * canary.repetitions
        )
    audit_by_client = {} if audit_canaries is None else audit_canaries.planted_by_client()
    clients: list[ClientData] = []
    for client, records in enumerate(client_records):
        member_records, nonmember_records = split_members(records, holdout_fraction, rng)
        planted = list(canaries_by_client.get(client, ()))
        audit_planted = audit_by_client.get(client, [])
        audit_inserted = len(audit_planted)
        planted += audit_planted
        total = len(member_records) + len(planted)
        members: list[str] = []
        if planted:
            is_canary = np.zeros(total, dtype=bool)
            is_canary[rng.choice(total, size=len(planted), replace=False)] = True
            planted_order = [planted[int(i)] for i in rng.permutation(len(planted))]
            record_texts = iter(record.text for record in member_records)
            canary_texts = iter(planted_order)
            members = [next(canary_texts) if flag else next(record_texts) for flag in is_canary]
        else:
            members = [record.text for record in member_records]
        clients.append(
            ClientData(
                client=client,
                members=tuple(members),
                nonmembers=tuple(record.text for record in nonmember_records),
                member_records=tuple(member_records),
                nonmember_records=tuple(nonmember_records),
                audit_inserted=audit_inserted,
            )
        )
    return FederatedDataset(clients=tuple(clients), canaries=tuple(canaries),
                            audit_canaries=audit_canaries)


def partition_records(
    records: Sequence[Record],
    *,
    num_clients: int,
    scheme: str,
    rng: np.random.Generator,
    alpha: float = 0.5,
    by: str = "label",
) -> list[list[Record]]:
    """Partition a pooled corpus across clients.

    Args:
        records: The corpus.
        num_clients: Number of clients.
        scheme: ``"iid"`` (uniform random), ``"dirichlet"`` (label skew with
            concentration ``alpha``) or ``"natural"`` (one client per distinct
            value, grouped round-robin when there are more values than clients).
        rng: Source of randomness (unused by ``"natural"``).
        alpha: Dirichlet concentration for ``"dirichlet"``.
        by: Which record attribute ``"dirichlet"`` / ``"natural"`` use:
            ``"label"`` or ``"key"``.

    Returns:
        One list of records per client; each keeps the corpus order.

    Raises:
        DataError: If the scheme or ``by`` is unknown, a record lacks the
            ``by`` attribute, or the records cannot be split as requested.
    """
    if scheme not in PARTITION_SCHEMES:
        raise DataError(
            f"unknown partition scheme {scheme!r}; use one of {list(PARTITION_SCHEMES)}."
        )
    if by not in PARTITION_FIELDS:
        raise DataError(f"cannot partition by {by!r}; use one of {list(PARTITION_FIELDS)}.")
    if scheme == "iid":
        parts = partition_iid(len(records), num_clients, rng)
    else:
        values = [record.label if by == "label" else record.key for record in records]
        missing = [index for index, value in enumerate(values) if value is None]
        if missing:
            raise DataError(
                f"the {scheme} partition uses each record's {by!r}, but {len(missing)} of "
                f"{len(records)} records have none (first: record {missing[0]}); load the data "
                f"with {by}_field set, partition by the other field, or use --partition iid."
            )
        if scheme == "dirichlet":
            parts = partition_dirichlet(values, num_clients, alpha, rng)
        else:
            parts = partition_by_key(values, num_clients)
    return [[records[int(index)] for index in part] for part in parts]
