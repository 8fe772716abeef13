"""What the server and the nodes of the test app share: the protocol and the data."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedpriv.protocols import ClientInput, SecAggPlusConfig, SecAggPlusProtocol
from fedpriv.protocols.secagg import DerivedSecrets


def build_protocol(run_config: Mapping[str, object]) -> SecAggPlusProtocol:
    """secagg+ with every secret derived from the run's public master seed (tests only)."""
    master = bytes.fromhex(str(run_config["derived-secrets"]))
    return SecAggPlusProtocol(SecAggPlusConfig(), secret_source=DerivedSecrets(master))


def client_input(seed: int, round_index: int, client_id: int, size: int) -> ClientInput:
    """Client ``client_id``'s update in ``round_index``: small random float32 values."""
    rng = np.random.default_rng([seed, round_index, client_id])
    update = (rng.normal(size=size) * 0.1).astype(np.float32)
    return ClientInput(update, weight=(client_id + 1) / 4)
