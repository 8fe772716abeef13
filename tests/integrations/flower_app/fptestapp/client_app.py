"""The test app's ClientApp: fedpriv's node handler on a random vector per round."""

from __future__ import annotations

from flwr.app import Context, Message

from fedpriv.integrations.flower import LocalUpdate, fedpriv_client_app
from fedpriv.protocols import AggregationProtocol, RoundContext
from fptestapp.task import build_protocol, client_input


def _protocol(context: Context) -> AggregationProtocol:
    return build_protocol(context.run_config)


def _make_input(message: Message, context: Context, client_id: int,
                ctx: RoundContext) -> LocalUpdate:
    seed = int(context.run_config["seed"])
    return LocalUpdate(client_input(seed, ctx.round, client_id, ctx.vector_size))


app = fedpriv_client_app(_protocol, _make_input)
