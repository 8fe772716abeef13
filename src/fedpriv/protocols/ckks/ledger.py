"""What a key-holding party has signed and released under one CKKS key set: the enforced budgets.

Owns :class:`ReleaseLedger` (spec: ``protocols/ckks.md``, "Release budget").
Every release of a decryption is one query against the secret key, and the
flooding is sized for a bounded number of them (Li, Micciancio, Schultz & Sorrell,
CRYPTO 2022); every second sum of the same round's inputs over another set of
contributors hands an active server a difference of sums.  So the party that
holds the secret key refuses, before it signs or decrypts anything:

* to sign a second upload in a session for a round at or below one it already
  signed (a server re-running a round with other survivors gets nothing new);
* to release a second time in a session for a round at or below one it already
  released;
* to release more than ``max_releases`` times under the key set.

The ledger lives with the private key (:class:`~fedpriv.protocols.ckks.keys.CKKSKeys`),
in memory, or in a JSON file (``path``) that it rewrites atomically *before*
each signature or release leaves the party — for a deployment that rebuilds its
protocol object per message (Flower's ClientApp).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fedpriv.errors import ConfigError, ProtocolError
from fedpriv.protocols.base import ClientId, advance_round


class ReleaseLedger:
    """One key set's record of signed uploads and releases, with the budgets it enforces."""

    def __init__(self, key_id: bytes, path: str | os.PathLike[str] | None = None) -> None:
        self.key_id = key_id
        self.path = None if path is None else Path(path)
        self._uploads: dict[str, int] = {}
        """``session hex/client id`` → highest round signed."""
        self._releases: dict[str, int] = {}
        """``session hex`` → highest round released."""
        self._count = 0
        if self.path is not None and self.path.exists():
            self._load()

    def __repr__(self) -> str:
        return (f"ReleaseLedger(key_id={self.key_id.hex()}, releases={self._count}, "
                f"path={self.path})")

    @property
    def releases(self) -> int:
        """How many releases were made under this key set (by the parties sharing this ledger)."""
        return self._count

    def _load(self) -> None:
        path = self.path
        if path is None:
            return
        try:
            data: Any = json.loads(path.read_text())
            owner = str(data["key_id"])
            uploads = {str(k): int(v) for k, v in data["uploads"].items()}
            releases = {str(k): int(v) for k, v in data["releases"].items()}
            count = int(data["count"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise ConfigError(
                f"the release ledger {self.path} cannot be read ({err!r}); restore it from a "
                "backup. Deleting it would reset the key's release budget: make a new key set "
                "instead."
            ) from None
        if owner != self.key_id.hex():
            raise ConfigError(
                f"the release ledger {path} belongs to key set {owner}, not "
                f"{self.key_id.hex()}; give each key set its own ledger file."
            )
        self._uploads, self._releases, self._count = uploads, releases, count

    def _save(self) -> None:
        if self.path is None:
            return
        data = {"key_id": self.key_id.hex(), "uploads": self._uploads,
                "releases": self._releases, "count": self._count}
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(json.dumps(data, sort_keys=True))
        os.replace(temporary, self.path)

    def record_upload(self, session_id: bytes, round_index: int, client_id: ClientId,
                      who: str) -> None:
        """Record that ``client_id`` signs its upload of ``round_index``; refuse a re-run.

        Raises:
            ProtocolError: If it already signed an upload for this or a later round.
        """
        advance_round(self._uploads, f"{session_id.hex()}/{client_id}", round_index, lambda last: (
            f"{who} already signed an upload for round {last} of this session; a second "
            f"upload for round {round_index} is refused (a server re-running a round with "
            "other survivors would learn the difference of two sums)."))
        self._save()

    def record_release(self, session_id: bytes, round_index: int, max_releases: int,
                       who: str) -> None:
        """Record a release for ``round_index``; refuse a repeat or a release over budget.

        Raises:
            ProtocolError: If a release for this or a later round was made in this session,
                or ``max_releases`` releases were made under the key set.
        """
        entry = session_id.hex()
        last = self._releases.get(entry)
        if last is not None and round_index <= last:
            raise ProtocolError(
                f"{who} refuses a second release for round {round_index}: round {last} of this "
                "session was already released under this key set (a second, independently "
                "flooded release of the same round's inputs would weaken the flooding or "
                "expose a difference of sums)."
            )
        if self._count >= max_releases:
            raise ProtocolError(
                f"{who} refuses to release: the key set has made its {self._count} releases, "
                f"max_releases={max_releases} (the flooding's query budget, protocols/ckks.md). "
                "Generate a new CKKS key set for the federation."
            )
        self._releases[entry] = round_index
        self._count += 1
        self._save()


__all__ = ["ReleaseLedger"]
