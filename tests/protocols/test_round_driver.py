"""The driver: input checks, and a toy two-phase protocol proving multi-phase support."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pytest

from fedpriv.errors import ConfigError, ProtocolError
from fedpriv.protocols import (
    SERVER_ID,
    AggregationProtocol,
    ClientId,
    ClientInput,
    ClientSession,
    Message,
    RoundContext,
    ServerSession,
    ServerView,
    create,
    run_round,
)
from fedpriv.protocols.base import MESSAGE_HEADER_NBYTES

# ---------------------------------------------------------------- a toy two-phase protocol
# Phase 0: each client sends update + mask; the server acks each client with a
# client-specific token.  Phase 1: the client answers its own token with its mask.
# The server unmasks only clients that completed both phases.


@dataclass(frozen=True, eq=False)
class Masked(Message):
    masked: np.ndarray
    weight: float

    def nbytes(self) -> int:
        return MESSAGE_HEADER_NBYTES + self.masked.nbytes + 8


@dataclass(frozen=True)
class Ack(Message):
    recipient: ClientId
    token: int

    def nbytes(self) -> int:
        return MESSAGE_HEADER_NBYTES + 16


@dataclass(frozen=True, eq=False)
class Unmask(Message):
    mask: np.ndarray
    token: int

    def nbytes(self) -> int:
        return MESSAGE_HEADER_NBYTES + self.mask.nbytes + 8


def token_for(client: ClientId) -> int:
    return 1000 + client


class ToyClient(ClientSession):
    def __init__(self, cid: ClientId, data: ClientInput, log: list[tuple[Any, ...]]) -> None:
        self.cid, self.data, self.log = cid, data, log
        self.mask = np.random.default_rng(cid).normal(size=data.update.shape)  # not secret: a test

    def handle(self, phase: int, inbox: Message | None) -> Message | None:
        self.log.append(("client", self.cid, phase, inbox))
        if phase == 0:
            return Masked(self.cid, self.data.update + self.mask, self.data.weight)
        if not isinstance(inbox, Ack) or inbox.recipient != self.cid:
            raise ProtocolError(f"client {self.cid} got someone else's reply: {inbox!r}")
        return Unmask(self.cid, self.mask, inbox.token)


class ToyServer(ServerSession):
    num_phases = 2

    def __init__(self, ctx: RoundContext, log: list[tuple[Any, ...]]) -> None:
        self.ctx, self.log = ctx, log
        self.masked: dict[ClientId, Masked] = {}
        self.masks: dict[ClientId, np.ndarray] = {}
        self.transcript: list[Message] = []

    def collect(
        self, phase: int, messages: Mapping[ClientId, Message]
    ) -> Mapping[ClientId, Message]:
        self.log.append(("server", phase, tuple(messages)))
        self.transcript.extend(messages.values())
        if phase == 0:
            self.masked = {c: m for c, m in messages.items() if isinstance(m, Masked)}
            return {c: Ack(SERVER_ID, recipient=c, token=token_for(c)) for c in messages}
        for c, m in messages.items():
            if not isinstance(m, Unmask) or m.token != token_for(c):
                raise ProtocolError(f"bad unmask from {c}")
            self.masks[c] = m.mask
        return {}

    def finish(self) -> tuple[np.ndarray, float, tuple[ClientId, ...]]:
        survivors = tuple(sorted(set(self.masked) & set(self.masks)))
        if not survivors:
            raise ProtocolError("no survivor")
        total = sum(self.masked[c].weight for c in survivors)
        acc = sum(
            self.masked[c].weight * (self.masked[c].masked - self.masks[c]) for c in survivors
        )
        return np.asarray(acc) / total, total, survivors

    def view(self) -> ServerView:
        aggregate, total, survivors = self.finish()
        return ServerView(
            protocol="toy",
            round=self.ctx.round,
            participants=self.ctx.participants,
            survivors=survivors,
            aggregate=aggregate,
            total_weight=total,
            individual_updates=None,
            individual_weights=None,
            transcript=tuple(self.transcript),
        )


class ToyProtocol(AggregationProtocol):
    name: ClassVar[str] = "toy"
    reveals_individual_updates: ClassVar[bool] = False
    dropout_tolerant: ClassVar[bool] = True
    num_phases: ClassVar[int] = 2

    def __init__(self) -> None:
        self.log: list[tuple[Any, ...]] = []

    def client(self, client_id: ClientId, ctx: RoundContext, data: ClientInput) -> ClientSession:
        return ToyClient(client_id, data, self.log)

    def server(self, ctx: RoundContext) -> ServerSession:
        return ToyServer(ctx, self.log)


def toy_round(n: int = 4, size: int = 3) -> tuple[RoundContext, dict[int, ClientInput]]:
    ctx = RoundContext(round=2, participants=tuple(range(n)), vector_size=size)
    inputs = {c: ClientInput(np.arange(size, dtype=np.float64) + c, weight=c + 1) for c in range(n)}
    return ctx, inputs


def expected_mean(inputs: dict[int, ClientInput], clients: list[int]) -> np.ndarray:
    return np.average(
        [inputs[c].update for c in clients], axis=0, weights=[inputs[c].weight for c in clients]
    )


def test_phases_run_in_order_and_replies_reach_their_client() -> None:
    proto = ToyProtocol()
    ctx, inputs = toy_round()
    res = run_round(proto, ctx, inputs)
    assert proto.log[:4] == [("client", c, 0, None) for c in range(4)]
    assert proto.log[4] == ("server", 0, (0, 1, 2, 3))
    for c, entry in zip(range(4), proto.log[5:9], strict=True):
        assert entry[:3] == ("client", c, 1)
        assert entry[3] == Ack(SERVER_ID, recipient=c, token=token_for(c))
    assert proto.log[9:] == [("server", 1, (0, 1, 2, 3))]
    assert res.survivors == (0, 1, 2, 3)
    np.testing.assert_allclose(res.aggregate, expected_mean(inputs, [0, 1, 2, 3]))
    assert [type(m).__name__ for m in res.view.transcript] == ["Masked"] * 4 + ["Unmask"] * 4
    assert not res.view.observes_individual_updates


def test_dropout_at_phase_one_excludes_the_client() -> None:
    proto = ToyProtocol()
    ctx, inputs = toy_round()
    res = run_round(proto, ctx, inputs, dropouts={2: 1, 3: 0})
    assert res.survivors == (0, 1)
    np.testing.assert_allclose(res.aggregate, expected_mean(inputs, [0, 1]))
    assert res.total_weight == 3.0
    # client 2 sent in phase 0 only and never received its ack; client 3 never took part
    client_calls = [e[1:3] for e in proto.log if e[0] == "client"]
    assert client_calls == [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1)]
    masked, unmask, ack = MESSAGE_HEADER_NBYTES + 24 + 8, MESSAGE_HEADER_NBYTES + 24 + 8, 32
    assert res.cost.bytes_up == {0: masked + unmask, 1: masked + unmask, 2: masked, 3: 0}
    assert res.cost.bytes_down == {0: ack, 1: ack, 2: 0, 3: 0}
    assert [m.sender for m in res.view.transcript] == [0, 1, 2, 0, 1]


def test_dropout_phase_out_of_range() -> None:
    ctx, inputs = toy_round()
    with pytest.raises(ProtocolError, match=r"dropouts\[1\] = 2 is out of range.* 0\.\.1"):
        run_round(ToyProtocol(), ctx, inputs, dropouts={1: 2})
    with pytest.raises(ProtocolError, match=r"dropouts\[1\] = -1 is out of range"):
        run_round(ToyProtocol(), ctx, inputs, dropouts={1: -1})
    with pytest.raises(ProtocolError, match="dropouts names client 9, which is not a participant"):
        run_round(ToyProtocol(), ctx, inputs, dropouts={9: 0})


def test_inputs_must_match_participants() -> None:
    ctx = RoundContext(round=0, participants=(0, 1, 2), vector_size=2)
    inputs = {c: ClientInput(np.ones(2), 1.0) for c in (0, 1, 7)}
    with pytest.raises(ProtocolError, match=r"missing \[2\], unexpected \[7\]"):
        run_round(create("plain"), ctx, inputs)
    with pytest.raises(ProtocolError, match="input of client 0 must be a ClientInput"):
        run_round(create("plain"), ctx, {0: np.ones(2), 1: inputs[1], 2: inputs[0]})  # type: ignore[dict-item]


def test_wrong_vector_size_names_client_and_sizes() -> None:
    ctx = RoundContext(round=0, participants=(0, 1), vector_size=4)
    inputs = {0: ClientInput(np.ones(4), 1.0), 1: ClientInput(np.ones(5), 1.0)}
    with pytest.raises(ProtocolError, match=r"client 1's update has 5 entries .* vector_size=4"):
        run_round(create("plain"), ctx, inputs)


# ---------------------------------------------------------------- buggy protocols are caught


class RepliesAfterLastPhase(ToyServer):
    def collect(
        self, phase: int, messages: Mapping[ClientId, Message]
    ) -> Mapping[ClientId, Message]:
        super().collect(phase, messages)
        return {c: Ack(SERVER_ID, recipient=c, token=token_for(c)) for c in messages}


class ForgetsTranscript(ToyServer):
    def view(self) -> ServerView:
        self.transcript = self.transcript[:-1]
        return super().view()


class InventsSurvivors(ToyServer):
    def finish(self) -> tuple[np.ndarray, float, tuple[ClientId, ...]]:
        aggregate, total, _ = super().finish()
        return aggregate, total, tuple(self.ctx.participants)

    def view(self) -> ServerView:
        view = super().view()
        return dataclasses.replace(view, survivors=self.ctx.participants)


class ImpersonatingClient(ToyClient):
    def handle(self, phase: int, inbox: Message | None) -> Message | None:
        message = super().handle(phase, inbox)
        return Masked(self.cid + 1, self.data.update, 1.0) if phase == 0 else message


@pytest.mark.parametrize(
    ("server_type", "client_type", "match"),
    [
        (RepliesAfterLastPhase, ToyClient, "after the last phase"),
        (ForgetsTranscript, ToyClient, "3 messages in the transcript vs 4 received"),
        (InventsSurvivors, ToyClient, r"counts clients \[2\] as survivors, but they never sent"),
    ],
)
def test_driver_catches_protocol_bugs(
    server_type: type[ToyServer], client_type: type[ToyClient], match: str
) -> None:
    class Buggy(ToyProtocol):
        def client(
            self, client_id: ClientId, ctx: RoundContext, data: ClientInput
        ) -> ClientSession:
            return client_type(client_id, data, self.log)

        def server(self, ctx: RoundContext) -> ServerSession:
            return server_type(ctx, self.log)

    ctx, inputs = toy_round(n=3)
    with pytest.raises(ProtocolError, match=match):
        run_round(Buggy(), ctx, inputs, dropouts={2: 0})


def test_an_impersonating_client_is_dropped_not_the_round() -> None:
    """A client whose message claims another sender is hostile input: it drops, the round runs."""

    class OneImpersonator(ToyProtocol):
        def client(
            self, client_id: ClientId, ctx: RoundContext, data: ClientInput
        ) -> ClientSession:
            kind = ImpersonatingClient if client_id == 1 else ToyClient
            return kind(client_id, data, self.log)

    ctx, inputs = toy_round(n=3)
    result = run_round(OneImpersonator(), ctx, inputs)
    assert result.survivors == (0, 2)
    assert set(result.rejected_clients) == {1}
    assert "claims sender 2" in result.rejected_clients[1]
    np.testing.assert_allclose(result.aggregate, expected_mean(inputs, [0, 2]))


def test_a_message_the_server_session_refuses_drops_its_sender() -> None:
    """ServerSession.check_message: a refusal drops that client, at that phase, nothing else."""

    class Picky(ToyServer):
        def check_message(self, phase: int, client_id: ClientId, message: Message) -> None:
            if phase == 1 and client_id == 2:
                raise ProtocolError("this unmask does not fit the session's state")
            if phase == 1 and client_id == 3:
                raise KeyError("a bug in check_message is the client's failure too")

    class PickyProtocol(ToyProtocol):
        def server(self, ctx: RoundContext) -> ServerSession:
            return Picky(ctx, self.log)

    ctx, inputs = toy_round(n=4)
    result = run_round(PickyProtocol(), ctx, inputs)
    assert result.survivors == (0, 1)
    assert sorted(result.rejected_clients) == [2, 3]
    assert "does not fit the session's state" in result.rejected_clients[2]
    assert "phase 1" in result.rejected_clients[3] and "KeyError" in result.rejected_clients[3]
    np.testing.assert_allclose(result.aggregate, expected_mean(inputs, [0, 1]))
    assert all(m.sender in (0, 1) for m in result.view.transcript[4:])  # phase 1: only 0, 1


def test_protocol_must_declare_its_phases() -> None:
    class Undeclared(ToyProtocol):
        num_phases: ClassVar[int] = 1

    ctx = RoundContext(round=0, participants=(0, 1), vector_size=2)
    inputs = {i: ClientInput(np.zeros(2), weight=1.0) for i in (0, 1)}
    with pytest.raises(ProtocolError, match="declares num_phases=1"):
        run_round(Undeclared(), ctx, inputs)


def test_draw_dropouts() -> None:
    from fedpriv.protocols.driver import draw_dropouts

    parts = tuple(range(10))
    rng = np.random.default_rng(0)
    drops = draw_dropouts(parts, 0.3, 4, rng)
    assert len(drops) == 3 and set(drops) <= set(parts)
    assert all(0 <= p < 4 for p in drops.values())
    assert draw_dropouts(parts, 0.0, 4, rng) == {}
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        draw_dropouts(parts, 1.0, 4, rng)
