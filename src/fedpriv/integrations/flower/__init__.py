"""Run fedpriv's protocols and DP inside Flower (``pip install 'fedpriv[flower]'``, flwr ≥ 1.42).

One Flower message per protocol phase: the server side
(:func:`run_protocol_round`, :class:`FedprivWorkflow`) drives a fedpriv server
session through a Flower ``Grid`` and counts nodes that do not answer as
dropouts; the node side (:class:`FedprivClient`, a ClientApp function for
``train.fedpriv`` messages) runs the client session and keeps it in the node's
``Context.state`` between phases.  For cross-device scale, a node can host a
cohort of many simulated clients instead (:class:`CohortClient`,
``train.fedpriv_cohort`` messages, trained together with the batched trainer)
and :func:`run_cohort_round` runs a plain FedAvg round over such nodes, without
secure aggregation.  The protocol logic stays in
:mod:`fedpriv.protocols`; this package moves messages and maps Flower node ids to
protocol client ids.  Spec and deployment guide: ``protocols/flower.md``.

>>> from fedpriv.integrations.flower import FedprivClient, FedprivWorkflow  # doctest: +SKIP
"""

from __future__ import annotations

try:
    import flwr  # noqa: F401
except ImportError as err:  # pragma: no cover - exercised without the extra
    from fedpriv.errors import MissingDependencyError

    raise MissingDependencyError("flwr", "flower", "fedpriv.integrations.flower") from err

from fedpriv.integrations.flower.client import (
    FedprivClient,
    LocalUpdate,
    client_protocol_vector,
    fedpriv_client_app,
    read_global,
)
from fedpriv.integrations.flower.cohort import (
    COHORT_MESSAGE_TYPE,
    CohortClient,
    CohortNode,
    CohortRound,
    CohortRoundResult,
    UserDPTransform,
    cohort_client_app,
    run_cohort_round,
    split_clients,
)
from fedpriv.integrations.flower.loopback import (
    LoopbackGrid,
    flower_round_runner,
    run_audit_on_flower,
    run_round_over_flower,
)
from fedpriv.integrations.flower.records import MESSAGE_TYPE, protocol_spec
from fedpriv.integrations.flower.server import (
    FedprivWorkflow,
    FlowerRoundResult,
    WorkflowRound,
    assign_client_ids,
    run_protocol_round,
    wait_for_nodes,
)

__all__ = [
    "COHORT_MESSAGE_TYPE",
    "MESSAGE_TYPE",
    "CohortClient",
    "CohortNode",
    "CohortRound",
    "CohortRoundResult",
    "FedprivClient",
    "FedprivWorkflow",
    "FlowerRoundResult",
    "LocalUpdate",
    "LoopbackGrid",
    "UserDPTransform",
    "WorkflowRound",
    "assign_client_ids",
    "client_protocol_vector",
    "cohort_client_app",
    "fedpriv_client_app",
    "flower_round_runner",
    "protocol_spec",
    "read_global",
    "run_audit_on_flower",
    "run_cohort_round",
    "run_protocol_round",
    "run_round_over_flower",
    "split_clients",
    "wait_for_nodes",
]
