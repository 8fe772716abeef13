"""CKKS homomorphic aggregation (TenSEAL): the server adds ciphertexts it cannot decrypt.

Four phases, driven by :func:`fedpriv.protocols.driver.run_round` (spec, key
management, verified sums, precision and flooding: ``protocols/ckks.md``):

0. **EncryptedUpdate** — each client clips its update to ±clip, weights it by
   ``w' = w / max_weight``, streams it into CKKS ciphertexts of N/2 slots each
   (the weight ``w'·clip`` in the slot after the last entry) and signs them with
   Ed25519 over (session, round, key id, its id, L, SHA-256 of the ciphertexts).
   The server checks each upload on its own (a bad one drops its sender only),
   holding only a public context.
1.–3. **DecryptRequest / ReleasedSum** — the server forwards the accepted signed
   uploads to the lowest-id contributor; that key holder verifies every
   signature, recomputes the homomorphic sum itself (it never decrypts a
   ciphertext the server made: Li & Micciancio 2021), decrypts it, floods the
   result with Gaussian noise from the OS CSPRNG, rounds it to a public grid and
   releases it, once per round and within the key set's release budget.  If the
   key holder dropped, the next contributor is asked.

The package is split by concern: :mod:`~fedpriv.protocols.ckks.config` (the
config), :mod:`~fedpriv.protocols.ckks.params` (parameter choice and error
bounds, pure math), :mod:`~fedpriv.protocols.ckks.keys` (key setup, public and
private contexts), :mod:`~fedpriv.protocols.ckks.messages`,
:mod:`~fedpriv.protocols.ckks.signing` (signed uploads),
:mod:`~fedpriv.protocols.ckks.ledger` (release budget),
:mod:`~fedpriv.protocols.ckks.stages` (pure stage functions),
:mod:`~fedpriv.protocols.ckks.client`, :mod:`~fedpriv.protocols.ckks.server`
and :mod:`~fedpriv.protocols.ckks.protocol`.
"""

from fedpriv.protocols.ckks.client import NUM_PHASES, CKKSClient
from fedpriv.protocols.ckks.config import CKKSConfig
from fedpriv.protocols.ckks.keys import CKKSKeys, CKKSPublicContext, load_public_context
from fedpriv.protocols.ckks.ledger import ReleaseLedger
from fedpriv.protocols.ckks.messages import DecryptRequest, EncryptedUpdate, ReleasedSum
from fedpriv.protocols.ckks.params import CKKSParameters, choose_parameters
from fedpriv.protocols.ckks.protocol import CKKSProtocol
from fedpriv.protocols.ckks.server import CKKSServer, CKKSServerView
from fedpriv.protocols.ckks.signing import UploadSigners

__all__ = [
    "NUM_PHASES",
    "CKKSClient",
    "CKKSConfig",
    "CKKSKeys",
    "CKKSParameters",
    "CKKSProtocol",
    "CKKSPublicContext",
    "CKKSServer",
    "CKKSServerView",
    "DecryptRequest",
    "EncryptedUpdate",
    "ReleaseLedger",
    "ReleasedSum",
    "UploadSigners",
    "choose_parameters",
    "load_public_context",
]
