"""SecAgg (Bonawitz et al. 2017) and SecAgg+ (Bell et al. 2020): the server learns only the sum.

Five phases, driven by :func:`fedpriv.protocols.driver.run_round` (spec, threat
models and message flow: ``protocols/secagg.md``):

0. **AdvertiseKeys** — each client draws two X25519 pairs, ``c`` (share
   encryption) and ``s`` (pairwise masks), signed with its session id when
   signing keys are configured; the server answers every client with all the
   accepted advertisements (:class:`KeyDirectory`), from which each client
   recomputes the SecAgg+ graph seed (their hash).
1. **ShareKeys** — each client Shamir-splits ``s_i^SK`` and a fresh self-mask seed
   ``b_i`` among its neighbourhood (threshold ``t``), encrypts each neighbour's
   shares under the pairwise key, and commits to ``b_i``; the server routes the
   ciphertexts (:class:`RoutedShares`).
2. **MaskedInput** — each client sends ``y_i = x_i + PRG(b_i) + Σ_j ±PRG(s_ij)``
   mod ``2^bits``, where ``x_i`` is the fixed-point encoding of ``w_i·Δ_i`` followed
   by the encoded weight ``w_i``; the server announces the survivor set U3
   (:class:`SurvivorList`), after checking it is connected in the masking graph.
3. **ConsistencyCheck** — each survivor checks U3 (itself in it, ``t`` of its
   neighbourhood, connected) and signs it (:class:`ConsistencySignature`); the
   server forwards each client its neighbourhood's signatures
   (:class:`ConsistencyProof`).
4. **Unmasking** — a client with ``t`` valid signatures over the set it signed
   reveals, per neighbour, a share of ``b_j`` (the neighbour survived) *or* of
   ``s_j^SK`` (it dropped after sharing), never both; the server reconstructs
   (dropping holders of bad shares), removes the masks and decodes ``Σ w·Δ`` and ``Σ w``.

SecAgg masks every pair of clients; SecAgg+ only the pairs joined in a random
``k``-regular graph (:mod:`fedpriv.protocols.secagg_graph`) whose seed is the hash
of the advertised keys.  Sessions never see the network: they take and return
typed messages.

The package is split by concern: :mod:`~fedpriv.protocols.secagg.config`
(configs and the round plan), :mod:`~fedpriv.protocols.secagg.stages` (wire
constants and pure stage functions), :mod:`~fedpriv.protocols.secagg.messages`
(the typed messages), :mod:`~fedpriv.protocols.secagg.client` and
:mod:`~fedpriv.protocols.secagg.server` (the two sessions and the server view)
and :mod:`~fedpriv.protocols.secagg.protocol` (the protocol classes and secret
sources).  Everything the former single module exposed is re-exported here:
the names in ``__all__`` are its public API, the ``name as name`` imports its
other public names (wire constants and helpers that tests and the vector script use).
"""

from fedpriv.protocols.secagg.client import SecAggClient
from fedpriv.protocols.secagg.config import RoundPlan, SecAggConfig, SecAggPlusConfig, encode_weight
from fedpriv.protocols.secagg.config import weight_fraction_bits as weight_fraction_bits
from fedpriv.protocols.secagg.messages import ID_NBYTES as ID_NBYTES
from fedpriv.protocols.secagg.messages import ROUND_NBYTES as ROUND_NBYTES
from fedpriv.protocols.secagg.messages import (
    AdvertiseKeys,
    ConsistencyProof,
    ConsistencySignature,
    KeyDirectory,
    MaskedInput,
    RoutedShares,
    ShareKeys,
    SurvivorList,
    UnmaskShares,
)
from fedpriv.protocols.secagg.protocol import (
    DerivedSecrets,
    SecAggFamily,
    SecAggPlusProtocol,
    SecAggProtocol,
    SecretSource,
    SystemSecrets,
)
from fedpriv.protocols.secagg.protocol import EncodeObserver as EncodeObserver
from fedpriv.protocols.secagg.server import SecAggServer, SecAggServerView
from fedpriv.protocols.secagg.stages import ADVERTISE_DOMAIN as ADVERTISE_DOMAIN
from fedpriv.protocols.secagg.stages import COMMITMENT_DOMAIN as COMMITMENT_DOMAIN
from fedpriv.protocols.secagg.stages import CONSISTENCY_DOMAIN as CONSISTENCY_DOMAIN
from fedpriv.protocols.secagg.stages import ENCRYPTION_INFO as ENCRYPTION_INFO
from fedpriv.protocols.secagg.stages import KEY_NBYTES as KEY_NBYTES
from fedpriv.protocols.secagg.stages import MASK_INFO as MASK_INFO
from fedpriv.protocols.secagg.stages import NUM_PHASES as NUM_PHASES
from fedpriv.protocols.secagg.stages import advertise_payload as advertise_payload
from fedpriv.protocols.secagg.stages import (
    apply_masks,
    mask_input,
    pack_shares,
    self_mask_commitment,
    unpack_shares,
)
from fedpriv.protocols.secagg.stages import consistency_payload as consistency_payload
from fedpriv.protocols.secagg.stages import pairwise_sign as pairwise_sign
from fedpriv.protocols.secagg.stages import round_binding as round_binding
from fedpriv.protocols.secagg.stages import x25519_public as x25519_public

__all__ = [
    "AdvertiseKeys",
    "ConsistencyProof",
    "ConsistencySignature",
    "DerivedSecrets",
    "KeyDirectory",
    "MaskedInput",
    "RoundPlan",
    "RoutedShares",
    "SecAggClient",
    "SecAggConfig",
    "SecAggFamily",
    "SecAggPlusConfig",
    "SecAggPlusProtocol",
    "SecAggProtocol",
    "SecAggServer",
    "SecAggServerView",
    "SecretSource",
    "ShareKeys",
    "SurvivorList",
    "SystemSecrets",
    "UnmaskShares",
    "apply_masks",
    "encode_weight",
    "mask_input",
    "pack_shares",
    "self_mask_commitment",
    "unpack_shares",
]
