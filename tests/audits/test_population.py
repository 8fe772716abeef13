"""build_dataset with the built-in populations: users (cross-device) and organisations."""

from __future__ import annotations

import numpy as np

from fedpriv.audits.config import AuditConfig, from_mapping
from fedpriv.audits.runner import build_dataset
from fedpriv.data import build_federated_dataset, generate_client_records, partition_records


def _users_config(**attacks: object) -> AuditConfig:
    return from_mapping(AuditConfig, {
        "seed": 5,
        "data": {"population": "users", "records_per_client": 8, "holdout_fraction": 0.25,
                 "canaries": {"per_client": 2, "clients": [3, 41], "repetitions": 3}},
        "federation": {"clients": 60, "clients_per_round": 20},
        "attacks": {"inversion": False, **attacks},
    })


def test_users_population_splits_each_user_and_plants_canaries_in_the_named_users() -> None:
    cfg = _users_config(epsilon_canaries=40)
    dataset = build_dataset(cfg)
    assert len(dataset.clients) == 60
    for index, client in enumerate(dataset.clients):
        assert client.client == index
        records = client.member_records + client.nonmember_records
        assert {record.key for record in records} == {f"user-{index:06d}"}
        assert (len(client.member_records), len(client.nonmember_records)) == (6, 2)
        assert not set(client.members) & set(client.nonmembers)
    assert {canary.client for canary in dataset.canaries} == {3, 41}
    for canary in dataset.canaries:
        for client in dataset.clients:
            expected = canary.repetitions if client.client == canary.client else 0
            assert client.members.count(canary.text) == expected
    audit = dataset.audit_canaries
    assert audit is not None
    for text, included, owner in zip(audit.texts, audit.included, audit.clients, strict=True):
        assert dataset.clients[int(owner)].members.count(text) == int(included)
        assert sum(c.members.count(text) for c in dataset.clients) == int(included)
    assert sum(c.audit_inserted for c in dataset.clients) == int(audit.included.sum())


def test_organisations_dataset_is_the_one_the_key_partition_gave() -> None:
    """The built-in natural partition skips pooling and grouping; the result is unchanged."""
    cfg = from_mapping(AuditConfig, {
        "seed": 2, "data": {"records_per_client": 12,
                            "canaries": {"per_client": 1, "clients": [1]}},
        "federation": {"clients": 4}, "attacks": {"inversion": False}})
    dataset = build_dataset(cfg)
    rng = np.random.default_rng([cfg.seed, 0xDA7A])
    pooled = [r for client in generate_client_records(4, 12, seed=2) for r in client]
    by_key = partition_records(pooled, num_clients=4, scheme="natural", rng=rng, by="key")
    from fedpriv.data import get_canary_format, make_canaries

    canaries = make_canaries(get_canary_format("account"), [1], 1, 1, rng)
    before = build_federated_dataset(by_key, holdout_fraction=cfg.data.holdout_fraction,
                                     rng=rng, canaries=canaries)
    assert dataset == before
