"""Data for fedpriv audits: corpora, partitions across clients, canaries.

* :mod:`~fedpriv.data.records` — the :class:`Record` every corpus is made of;
* :mod:`~fedpriv.data.synthetic` — the built-in private-records generator
  (non-IID organisations with personal fields, and a public pretraining split);
* :mod:`~fedpriv.data.population` — the built-in populations of clients:
  organisations (cross-silo) or users (cross-device: one client per user, a few
  records each about that user);
* :mod:`~fedpriv.data.loaders` — JSONL / CSV / text files and Hugging Face datasets;
* :mod:`~fedpriv.data.partition` — IID, Dirichlet and natural (by key) partitions;
* :mod:`~fedpriv.data.canaries` — planted secrets for exposure measurements;
* :mod:`~fedpriv.data.federated` — per-client member / non-member splits with
  canaries planted, the input of the training loop and the attacks.
"""

from __future__ import annotations

from fedpriv.data.canaries import (
    BUILTIN_CANARY_FORMATS,
    AuditCanaries,
    Canary,
    CanaryFormat,
    corpus_words,
    get_canary_format,
    make_audit_canaries,
    make_canaries,
    rare_token_words,
)
from fedpriv.data.federated import (
    ClientData,
    FederatedDataset,
    build_federated_dataset,
    partition_records,
    split_members,
)
from fedpriv.data.loaders import load_hf_dataset, load_records
from fedpriv.data.partition import partition_by_key, partition_dirichlet, partition_iid
from fedpriv.data.population import (
    POPULATIONS,
    generate_population,
    generate_user_records,
)
from fedpriv.data.records import PII_KINDS, PiiSpan, Record
from fedpriv.data.synthetic import (
    DOCUMENT_KINDS,
    generate_client_records,
    generate_public_corpus,
)

__all__ = [
    "BUILTIN_CANARY_FORMATS",
    "DOCUMENT_KINDS",
    "PII_KINDS",
    "POPULATIONS",
    "AuditCanaries",
    "Canary",
    "CanaryFormat",
    "ClientData",
    "FederatedDataset",
    "PiiSpan",
    "Record",
    "build_federated_dataset",
    "corpus_words",
    "generate_client_records",
    "generate_population",
    "generate_public_corpus",
    "generate_user_records",
    "get_canary_format",
    "load_hf_dataset",
    "load_records",
    "make_audit_canaries",
    "make_canaries",
    "partition_by_key",
    "partition_dirichlet",
    "partition_iid",
    "partition_records",
    "rare_token_words",
    "split_members",
]
