"""The ClientApp: local LoRA training, user-level DP clipping, then fedpriv's secagg+ client.

Every ``train.fedpriv`` message is one protocol phase.  Phase 0 trains (the server's
message carries the global adapter vector and the round's clip bound) and starts the
secagg+ session; the later phases only run the protocol on the session kept in
``Context.state``, so they never load the model.
"""

from __future__ import annotations

from flwr.app import Context, Message

from fedpriv.integrations.flower import (
    LocalUpdate,
    client_protocol_vector,
    fedpriv_client_app,
    read_global,
)
from fedpriv.protocols import AggregationProtocol, ClientInput, RoundContext
from fedpriv_lora.task import build_protocol, build_user_dp, train


def _protocol(context: Context) -> AggregationProtocol:
    return build_protocol(context.run_config)


def _make_input(message: Message, context: Context, client_id: int,
                ctx: RoundContext) -> LocalUpdate:
    # partition-id: the node's data shard (`--node-config partition-id=N` in a deployment;
    # set by the simulation engine). client_id: its protocol id, assigned by the server.
    partition = int(context.node_config.get("partition-id", client_id))
    delta, loss = train(context.run_config, partition, read_global(message), ctx.round)
    user_dp = build_user_dp(context.run_config)  # clipping only: no secret here
    vector = client_protocol_vector(message, delta, client_id=client_id, ctx=ctx,
                                    user_dp=user_dp)
    return LocalUpdate(ClientInput(vector, weight=1.0), {"train_loss": loss})


app = fedpriv_client_app(_protocol, _make_input)
