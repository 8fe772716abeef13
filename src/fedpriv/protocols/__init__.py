"""Transport-free aggregation protocols: ``plain``, ``secagg``, ``secagg+`` and ``ckks``.

A protocol is a pair of state machines (client and server sessions) exchanging
typed messages over a few phases; :func:`run_round` drives one round in-process,
with dropouts at any phase, and returns the aggregate, the :class:`ServerView`
(what the server observed, which attacks consume) and a :class:`CostRecord`.
Specs live in the repository's top-level ``protocols/`` folder.

Standalone use on numpy arrays, no training loop needed:

>>> import numpy as np
>>> from fedpriv.protocols import ClientInput, RoundContext, create, run_round
>>> proto = create("plain")
>>> ctx = RoundContext(round=0, participants=(0, 1, 2), vector_size=4)
>>> inputs = {i: ClientInput(np.ones(4) * i, weight=1.0) for i in range(3)}
>>> res = run_round(proto, ctx, inputs)
>>> res.aggregate
array([1., 1., 1., 1.])
>>> run_round(proto, ctx, inputs, dropouts={0: 0}).survivors  # client 0 vanishes in phase 0
(1, 2)
>>> res.view.observes_individual_updates  # plain hides nothing from the server
True
"""

from fedpriv.protocols.base import (
    SERVER_ID,
    AggregationProtocol,
    AggregationResult,
    ClientId,
    ClientInput,
    ClientSession,
    CostRecord,
    Message,
    RoundContext,
    ServerSession,
    ServerView,
)
from fedpriv.protocols.ckks import CKKSConfig, CKKSProtocol
from fedpriv.protocols.driver import run_round
from fedpriv.protocols.plain import PlainConfig, PlainProtocol
from fedpriv.protocols.registry import ProtocolInfo, available, create, describe, register
from fedpriv.protocols.secagg import (
    SecAggConfig,
    SecAggPlusConfig,
    SecAggPlusProtocol,
    SecAggProtocol,
    SecAggServerView,
)

register("plain", PlainProtocol)
register("secagg", SecAggProtocol)
register("secagg+", SecAggPlusProtocol)
register("ckks", CKKSProtocol)

__all__ = [
    "SERVER_ID",
    "AggregationProtocol",
    "AggregationResult",
    "CKKSConfig",
    "CKKSProtocol",
    "ClientId",
    "ClientInput",
    "ClientSession",
    "CostRecord",
    "Message",
    "PlainConfig",
    "PlainProtocol",
    "ProtocolInfo",
    "RoundContext",
    "SecAggConfig",
    "SecAggPlusConfig",
    "SecAggPlusProtocol",
    "SecAggProtocol",
    "SecAggServerView",
    "ServerSession",
    "ServerView",
    "available",
    "create",
    "describe",
    "register",
    "run_round",
]
