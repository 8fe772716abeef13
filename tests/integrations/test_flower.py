"""fedpriv inside Flower: codec, in-process equivalence with run_round, and a real deployment.

The deployment tests start a real SuperLink and three SuperNodes as separate
processes on 127.0.0.1 (insecure mode), submit the protocol-only app in
``flower_app/`` with ``flwr run``, and compare its aggregates with the in-process
driver's on the same seed and data.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("flwr")

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedpriv.dp.distributed import DistributedDP, DistributedDPSettings
from fedpriv.dp.rounds import protocol_vector, server_mean
from fedpriv.dp.user import UserDPSettings, UserLevelDP
from fedpriv.errors import ConfigError, ProtocolError
from fedpriv.integrations import codec
from fedpriv.integrations.flower import (
    FedprivClient,
    FedprivWorkflow,
    LocalUpdate,
    LoopbackGrid,
    assign_client_ids,
    client_protocol_vector,
    read_global,
    run_protocol_round,
    run_round_over_flower,
)
from fedpriv.integrations.flower.state import resume, suspend
from fedpriv.protocols import (
    SERVER_ID,
    ClientInput,
    Message,
    RoundContext,
    create,
    run_round,
)
from fedpriv.protocols.ckks import CKKSProtocol
from fedpriv.protocols.ckks.messages import (
    DecryptRequest,
    EncryptedUpdate,
    ReleasedSum,
)
from fedpriv.protocols.plain import PlainUpdate
from fedpriv.protocols.secagg import (
    AdvertiseKeys,
    ConsistencyProof,
    ConsistencySignature,
    DerivedSecrets,
    KeyDirectory,
    MaskedInput,
    RoutedShares,
    ShareKeys,
    SurvivorList,
    UnmaskShares,
)

APP_DIR = Path(__file__).parent / "flower_app"
MASTER = b"fedpriv flower integration tests"


# ============================================================== codec round trips

ids = st.integers(min_value=0, max_value=2**20)
rounds = st.integers(min_value=0, max_value=2**40)
keys32 = st.binary(min_size=32, max_size=32)
blobs = st.binary(min_size=1, max_size=64)


def _floats(dtype: Any) -> st.SearchStrategy[np.ndarray]:
    return st.lists(st.floats(-1e6, 1e6, allow_nan=False, width=32), min_size=1,
                    max_size=20).map(lambda v: np.array(v, dtype=dtype))


advertise = st.builds(AdvertiseKeys, ids, rounds, keys32, keys32,
                      st.none() | st.binary(min_size=64, max_size=64))
encrypted_update = st.builds(EncryptedUpdate, ids, rounds, st.binary(min_size=16, max_size=16),
                             st.lists(blobs, min_size=1, max_size=3).map(tuple),
                             st.binary(min_size=64, max_size=64))
MESSAGES: dict[type[Message], st.SearchStrategy[Message]] = {
    PlainUpdate: st.builds(PlainUpdate, ids, _floats(np.float32) | _floats(np.float64),
                           st.floats(1e-6, 1e6)),
    AdvertiseKeys: advertise,
    KeyDirectory: st.builds(KeyDirectory, st.just(SERVER_ID), rounds,
                            st.lists(advertise, max_size=4).map(tuple), st.none() | keys32),
    ShareKeys: st.builds(ShareKeys, ids, rounds, st.dictionaries(ids, blobs, max_size=4), keys32),
    RoutedShares: st.builds(RoutedShares, st.just(SERVER_ID), rounds,
                            st.lists(st.tuples(ids, blobs), max_size=4).map(tuple)),
    MaskedInput: st.builds(MaskedInput, ids, rounds, st.lists(
        st.integers(0, 2**64 - 1), min_size=1, max_size=20).map(
            lambda v: np.array(v, dtype=np.uint64))),
    SurvivorList: st.builds(SurvivorList, st.just(SERVER_ID), rounds,
                            st.lists(ids, max_size=6).map(tuple)),
    ConsistencySignature: st.builds(ConsistencySignature, ids, rounds,
                                    st.none() | st.binary(min_size=64, max_size=64)),
    ConsistencyProof: st.builds(ConsistencyProof, st.just(SERVER_ID), rounds, st.lists(
        st.tuples(ids, st.none() | st.binary(min_size=64, max_size=64)), max_size=4).map(tuple)),
    UnmaskShares: st.builds(UnmaskShares, ids, rounds, st.dictionaries(ids, blobs, max_size=3),
                            st.dictionaries(ids, blobs, max_size=3)),
    EncryptedUpdate: encrypted_update,
    DecryptRequest: st.builds(DecryptRequest, st.just(SERVER_ID), rounds,
                              st.binary(min_size=16, max_size=16),
                              st.lists(encrypted_update, min_size=1, max_size=3).map(tuple)),
    ReleasedSum: st.builds(ReleasedSum, ids, rounds, st.binary(min_size=16, max_size=16),
                           st.integers(-60, 10), st.lists(
                               st.integers(-2**62, 2**62), min_size=2, max_size=20).map(
                                   lambda v: np.array(v, dtype=np.int64))),
}


def same(a: Any, b: Any) -> bool:
    """Deep equality of decoded values (arrays by dtype and content, dataclasses by field)."""
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        return type(a) is type(b) and all(
            same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    if hasattr(a, "items"):
        return dict(a).keys() == dict(b).keys() and all(same(v, b[k]) for k, v in a.items())
    return type(a) is type(b) and a == b


def test_every_protocol_message_type_has_a_round_trip_property() -> None:
    registered = {cls for cls in codec.registered_types().values() if issubclass(cls, Message)}
    assert registered == set(MESSAGES)


@pytest.mark.parametrize("cls", list(MESSAGES), ids=lambda c: c.__name__)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_message_round_trip(cls: type[Message], data: st.DataObject) -> None:
    message = data.draw(MESSAGES[cls])
    decoded = codec.decode_message(codec.encode_message(message))
    assert same(message, decoded)
    assert decoded.nbytes() == message.nbytes()


@settings(max_examples=60, deadline=None)
@given(value=st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
    | st.binary(),
    lambda inner: st.lists(inner, max_size=4) | st.lists(inner, max_size=4).map(tuple)
    | st.dictionaries(st.integers() | st.text(), inner, max_size=4),
    max_leaves=20))
def test_value_round_trip(value: Any) -> None:
    assert same(value, codec.decode(codec.encode(value)))


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=200))
def test_garbage_never_decodes_to_anything_but_a_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        codec.decode(data)


def test_codec_refuses_what_it_must_not_carry() -> None:
    with pytest.raises(ProtocolError, match="dtype object"):
        codec.encode(np.array([object()]))
    with pytest.raises(ProtocolError, match="not a registered codec type"):
        codec.encode(dataclasses.make_dataclass("Evil", [("x", int)])(1))
    good = codec.encode(SurvivorList(SERVER_ID, 1, (1, 2)))
    with pytest.raises(ProtocolError, match=r"needs .* more bytes"):
        codec.decode(good[:-3])
    with pytest.raises(ProtocolError, match="trailing"):
        codec.decode(good + b"\0")
    with pytest.raises(ProtocolError, match="not registered"):
        codec.decode(good.replace(b"secagg.SurvivorList", b"secagg.SurvivorLisX"))
    with pytest.raises(ProtocolError, match="not a protocol message"):
        codec.decode_message(codec.encode((1, 2)))


def test_server_views_round_trip() -> None:
    ctx = RoundContext(round=0, participants=range(4), vector_size=8)
    inputs = {c: ClientInput(np.full(8, c / 10), 1.0) for c in range(4)}
    for name in ("plain", "secagg+", "ckks"):
        protocol = create(name)
        view = run_round(protocol, ctx, inputs, dropouts={1: protocol.num_phases - 1}).view
        assert same(view, codec.decode(codec.encode(view)))


# ============================================================== in-process equivalence


def _protocol(name: str) -> Any:
    protocol = create(name)
    if name.startswith("secagg"):
        protocol.secret_source = DerivedSecrets(MASTER)
    return protocol


def _inputs(ctx: RoundContext, seed: int = 0) -> dict[int, ClientInput]:
    return {
        c: ClientInput((np.random.default_rng([seed, ctx.round, c]).normal(size=ctx.vector_size)
                        * 0.1).astype(np.float32), weight=(c + 1) / len(ctx.participants))
        for c in ctx.participants
    }


def _ckks_mean_bound(protocol: Any, survivors: int, total_weight: float) -> float:
    """How far a released CKKS mean may be from the exact one (protocols/ckks.md).

    The weighted sum is within the release bound R of the exact one in every slot,
    and the mean divides by the released weight sum W, itself within R.
    """
    params = protocol.params
    release = params.release_bound(survivors)
    weight_slot = total_weight / protocol.config.max_weight * params.clip
    return float(2 * release * params.clip / (weight_slot - release))


DROPOUT_CASES = [  # (protocol, client → phase at whose start it vanishes)
    (name, dropouts)
    for name in ("plain", "secagg", "secagg+", "ckks")
    for dropouts in ({}, {2: 0}, {2: 1}, {2: 2}, {0: 3}, {1: 2, 4: 3})
    if max(dropouts.values(), default=0) < (1 if name == "plain" else 4)
]


@pytest.mark.parametrize(("name", "dropouts"), DROPOUT_CASES,
                         ids=[f"{n}-{d}" for n, d in DROPOUT_CASES])
def test_flower_path_matches_run_round(name: str, dropouts: dict[int, int]) -> None:
    protocol = _protocol(name)
    ctx = RoundContext(round=2, participants=range(6), vector_size=300)
    inputs = _inputs(ctx)
    reference = run_round(protocol, ctx, inputs, dropouts=dropouts)
    if name == "ckks":  # a CKKS key set signs and releases each round once: fresh keys
        protocol = _protocol(name)
    flower = run_round_over_flower(protocol, ctx, inputs, dropouts=dropouts)
    assert flower.result.survivors == reference.survivors
    assert flower.result.total_weight == pytest.approx(reference.total_weight)
    if name == "ckks":
        # Each release adds its own CSPRNG flooding noise: both are within the release
        # bound of the exact mean, so within twice it of each other.
        bound = 2 * _ckks_mean_bound(protocol, len(reference.survivors), reference.total_weight)
        difference = np.max(np.abs(flower.result.aggregate - reference.aggregate))
        assert 0 < difference <= bound
    else:
        np.testing.assert_array_equal(flower.result.aggregate, reference.aggregate)
    # Only clients the server had something to send drop visibly (as in run_round).
    assert set(flower.dropouts) <= set(dropouts)
    assert flower.result.view.survivors == reference.view.survivors
    assert len(flower.result.view.transcript) == len(reference.view.transcript)


def test_session_state_survives_suspend_and_resume_between_every_phase() -> None:
    protocol = _protocol("secagg+")
    ctx = RoundContext(round=0, participants=range(4), vector_size=16)
    inputs = _inputs(ctx)
    reference = run_round(protocol, ctx, inputs)
    server = protocol.server(ctx)
    clients = {c: protocol.client(c, ctx, inputs[c]) for c in ctx.participants}
    inbox: dict[int, Message] = {}
    for phase in range(protocol.num_phases):
        sent = {}
        for c in ctx.participants:
            clients[c] = resume(suspend(clients[c]), protocol)  # what a new process sees
            message = clients[c].handle(phase, inbox.get(c))
            if message is not None:
                sent[c] = codec.decode_message(codec.encode_message(message))
        inbox = dict(server.collect(phase, sent))
    np.testing.assert_array_equal(server.finish()[0], reference.aggregate)


def test_node_refuses_a_round_under_another_protocol() -> None:
    ctx = RoundContext(round=0, participants=range(3), vector_size=8)
    inputs = _inputs(ctx)

    def make_input(_m: Any, _c: Any, client_id: int, _ctx: RoundContext) -> LocalUpdate:
        return LocalUpdate(inputs[client_id])

    # The nodes are configured for secagg+; a server announcing plain gets only errors.
    grid = LoopbackGrid(FedprivClient(_protocol("secagg+"), make_input), [1, 2, 3])
    with pytest.raises(ProtocolError, match="no client's update"):
        run_protocol_round(grid, create("plain"), ctx, {0: 1, 1: 2, 2: 3})


def test_ckks_server_without_the_secret_key_aggregates_over_flower() -> None:
    """A ServerApp holding only CKKSKeys.public() runs the round with key-holding nodes."""
    nodes_side = create("ckks")
    server_side = CKKSProtocol(nodes_side.config, public=nodes_side.keys.public())
    assert not server_side.has_secret_key
    ctx = RoundContext(round=1, participants=range(4), vector_size=50)
    inputs = _inputs(ctx)

    def make_input(_m: Any, _c: Any, client_id: int, _ctx: RoundContext) -> LocalUpdate:
        return LocalUpdate(inputs[client_id])

    grid = LoopbackGrid(FedprivClient(nodes_side, make_input), [1, 2, 3, 4])
    result = run_protocol_round(grid, server_side, ctx, {c: c + 1 for c in ctx.participants})
    exact = sum(i.weight * i.update.astype(np.float64) for i in inputs.values()) / sum(
        i.weight for i in inputs.values())
    assert result.result.survivors == (0, 1, 2, 3)
    bound = _ckks_mean_bound(nodes_side, 4, sum(i.weight for i in inputs.values()))
    assert np.max(np.abs(result.result.aggregate - exact)) <= bound
    # Nodes under another key set refuse the server's round (the key id is in the spec).
    stranger = LoopbackGrid(FedprivClient(create("ckks"), make_input), [1, 2, 3, 4])
    with pytest.raises(ProtocolError):
        run_protocol_round(stranger, server_side, ctx, {c: c + 1 for c in ctx.participants})


def test_session_is_forgotten_after_the_round() -> None:
    protocol = _protocol("secagg+")
    ctx = RoundContext(round=0, participants=range(3), vector_size=8)
    inputs = _inputs(ctx)
    client = FedprivClient(protocol, lambda _m, _c, cid, _x: LocalUpdate(inputs[cid]))
    grid = LoopbackGrid(client, [1, 2, 3])
    run_protocol_round(grid, protocol, ctx, {0: 1, 1: 2, 2: 3})
    assert grid.delivered.count((1, 0, 3)) == 1
    assert grid.context(1).state.config_records.get("fedpriv.session") is None  # forgotten


def test_assign_client_ids_is_sorted_ranks() -> None:
    assert assign_client_ids([30, 10, 20]) == {0: 10, 1: 20, 2: 30}
    with pytest.raises(ProtocolError):
        assign_client_ids([1, 1])


# ============================================================== DP through the workflow


def _dp_client(protocol: Any, updates: dict[int, np.ndarray], *, user_dp: Any = None,
               dist_dp: Any = None) -> FedprivClient:
    def make_input(message: Any, _context: Any, client_id: int,
                   ctx: RoundContext) -> LocalUpdate:
        delta = updates[client_id] - read_global(message)  # "local training"
        vector = client_protocol_vector(message, delta, client_id=client_id, ctx=ctx,
                                        user_dp=user_dp, dist_dp=dist_dp)
        return LocalUpdate(ClientInput(vector, 1.0), {"norm": float(np.linalg.norm(delta))})

    return FedprivClient(protocol, make_input)


def test_user_level_dp_over_flower_matches_the_loop_steps() -> None:
    size, n = 64, 4
    protocol = _protocol("secagg+")
    settings_ = UserDPSettings(noise_multiplier=0.7, clip=0.5, adaptive_clip=True,
                               count_stddev=1.0)
    secret = bytes(range(32))  # the server's own secret; the reference holds the same
    server_dp = UserLevelDP(settings_, num_clients=n, clients_per_round=n, seed=None,
                            secret=secret)
    client_dp = UserLevelDP(settings_, num_clients=n, clients_per_round=n, seed=None)
    reference_dp = UserLevelDP(settings_, num_clients=n, clients_per_round=n, seed=None,
                               secret=secret)
    rng = np.random.default_rng(0)
    updates = {c: rng.normal(size=size).astype(np.float32) for c in range(n)}
    grid = LoopbackGrid(_dp_client(protocol, updates, user_dp=client_dp), range(1, n + 1))
    node_ids = assign_client_ids(grid.get_node_ids())
    workflow = FedprivWorkflow(protocol, user_dp=server_dp)
    flower_global = reference_global = np.zeros(size, dtype=np.float32)
    for round_index in range(2):
        step = workflow.round(grid, round_index, flower_global, node_ids)
        assert step.flower is not None and step.flower.metrics[0]["norm"] > 0
        flower_global = step.global_vector
        # The in-process loop's steps on the same data and seed:
        ctx = RoundContext(round=round_index, participants=range(n), vector_size=size + 1)
        inputs = {c: ClientInput(protocol_vector(updates[c] - reference_global,
                                                 round_index=round_index, client=c,
                                                 user_dp=reference_dp), 1.0) for c in range(n)}
        result = run_round(protocol, ctx, inputs)
        mean, _ = server_mean(result.aggregate, result.total_weight, update_size=size,
                              round_index=round_index, user_dp=reference_dp)
        reference_global = reference_global + mean.astype(np.float32)
        np.testing.assert_array_equal(flower_global, reference_global)
    assert server_dp.clip == reference_dp.clip != settings_.clip  # adaptive clip moved


def test_distributed_dp_over_flower_matches_the_loop_steps() -> None:
    size, n = 40, 3
    dist_settings = DistributedDPSettings(noise_multiplier=0.8, clip=1.0, bits=18)
    server_dp = DistributedDP(dist_settings, dim=size, expected_clients=n, seed=None)
    client_dp = DistributedDP(dist_settings, dim=size, expected_clients=n, seed=None)
    protocol = create("secagg+", **server_dp.secagg_params())
    protocol.secret_source = DerivedSecrets(MASTER)
    rng = np.random.default_rng(1)
    updates = {c: rng.normal(size=size) * 0.3 for c in range(n)}
    grid = LoopbackGrid(_dp_client(protocol, updates, dist_dp=client_dp), [5, 6, 7])
    workflow = FedprivWorkflow(protocol, dist_dp=server_dp)
    step = workflow.round(grid, 0, np.zeros(size), assign_client_ids(grid.get_node_ids()))
    assert client_dp.rotation_salt == server_dp.rotation_salt
    # Noise is secret (fresh keys): compare with the clipped sum within the noise scale.
    clipped = sum(u * min(1.0, 1.0 / np.linalg.norm(u)) for u in updates.values()) / n
    noise = step.global_vector - clipped  # std σ·C/n ≈ 0.27 per coordinate
    assert 0.05 < np.std(noise) < 0.6


def test_dp_mode_mismatch_is_refused() -> None:
    protocol = _protocol("secagg+")
    updates = {c: np.zeros(8, dtype=np.float32) for c in range(3)}
    grid = LoopbackGrid(_dp_client(protocol, updates), [1, 2, 3])  # nodes without DP
    user_dp = UserLevelDP(UserDPSettings(noise_multiplier=1.0, clip=0.1), num_clients=3,
                          clients_per_round=3, seed=None)
    step = FedprivWorkflow(protocol, user_dp=user_dp).round(
        grid, 0, np.zeros(8, dtype=np.float32), assign_client_ids([1, 2, 3]))
    assert step.flower is None and step.aborted is not None  # every node refused
    with pytest.raises(ConfigError):
        FedprivWorkflow(protocol, user_dp=user_dp).participants(0, {0: 1})


# ============================================================== a real deployment


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(condition: Any, timeout: float, what: str, logs: list[Path]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    tails = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}" for p in logs
                      if p.exists())
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{tails}")


def _stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    """Stop the processes and everything in their sessions (SuperExecs, app processes)."""
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 2
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # stragglers left in the session
        process.wait(timeout=5)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Run the test app on a SuperLink + 3 SuperNodes for two rounds; round 1 loses a node.

    Round 0 runs with all three nodes.  In round 1, after phase 1 (key sharing), the
    ServerApp pauses, the SuperNode of client 1 is stopped (SIGTERM: it leaves the
    federation), and the round goes on without it.  Both scenarios share one SuperLink
    session: each phase costs a SuperNode poll (3 s) and a fresh ``flwr-clientapp``
    process, so the setup dominates the tests' time.
    """
    bindir = Path(sys.executable).parent
    for tool in ("flower-superlink", "flower-supernode", "flwr"):
        if not (bindir / tool).exists():
            pytest.skip(f"{tool} is not installed beside {sys.executable}")
    root = tmp_path_factory.mktemp("flower")
    home, logs, sync = root / "home", root / "logs", root / "sync"
    for folder in (home, logs, sync):
        folder.mkdir()
    env = {**os.environ, "FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0",
           "FLWR_DISABLE_UPDATE_CHECK": "1", "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.25",
           "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    port = _free_port()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "test"\n\n[superlink.test]\naddress = "127.0.0.1:{port}"\n'
        "insecure = true\n")
    processes: list[subprocess.Popen[bytes]] = []

    def start(name: str, *args: str) -> subprocess.Popen[bytes]:
        log = (logs / f"{name}.log").open("wb")
        process = subprocess.Popen([str(bindir / args[0]), *args[1:]], env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True, cwd=root)
        processes.append(process)
        return process

    started = time.perf_counter()
    log_files = [logs / "superlink.log", *(logs / f"node{i}.log" for i in range(3)),
                 logs / "run.log"]
    try:
        start("superlink", "flower-superlink", "--insecure", "--host", "127.0.0.1", "--port",
              str(port), "--disable-runtime-dependency-installation")

        def listening() -> bool:
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", port)) == 0

        _wait(listening, 30, "the SuperLink to listen", log_files)
        nodes = [start(f"node{i}", "flower-supernode", "--insecure", "--superlink",
                       f"127.0.0.1:{port}", "--port", str(_free_port()),
                       "--node-config", f"partition-id={i}") for i in range(3)]

        out = root / "results.json"
        overrides = root / "overrides.toml"
        overrides.write_text(f'out = "{out}"\nsync-dir = "{sync}"\nrounds = 2\npause-round = 1\n')
        run_started = time.perf_counter()  # the ServerApp waits for the nodes to register
        run = start("run", "flwr", "run", str(APP_DIR), "test", "--stream",
                    "--run-config", str(overrides))

        def node_ids() -> dict[int, int] | None:
            found = {}
            for i in range(3):
                for line in (logs / f"node{i}.log").read_text(errors="replace").splitlines():
                    if "SuperNode ID:" in line:
                        found[int(line.rsplit(":", 1)[1])] = i
            return found if len(found) == 3 else None

        process_of_node = _wait(node_ids, 30, "three SuperNodes to register", log_files)
        paused = _wait(lambda: (sync / "paused.json").exists(), 150,
                       "the ServerApp to pause after round 1's key sharing", log_files)
        assert paused
        client_nodes = {int(c): n for c, n in
                        json.loads((sync / "paused.json").read_text()).items()}
        victim = nodes[process_of_node[client_nodes[1]]]
        victim.send_signal(signal.SIGTERM)  # the SuperNode leaves mid-round
        try:
            victim.wait(timeout=10)
        except subprocess.TimeoutExpired:
            victim.kill()
            victim.wait(timeout=5)
        (sync / "resume").touch()
        _wait(lambda: out.exists(), 120, "the run's results", log_files)
        run.wait(timeout=30)
        results = json.loads(out.read_text())
        results["run_s"] = time.perf_counter() - run_started
        results["total_s"] = time.perf_counter() - started
        results["app_config"] = {"seed": 7, "vector-size": 300}
        yield results
    finally:
        _stop_all(processes)


def _reference(round_index: int, dropouts: dict[int, int]) -> Any:
    sys.path.insert(0, str(APP_DIR))
    try:
        from fptestapp.task import build_protocol, client_input
    finally:
        sys.path.remove(str(APP_DIR))
    import tomllib

    config = tomllib.loads((APP_DIR / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    run_config = config["config"]
    protocol = build_protocol(run_config)
    ctx = RoundContext(round=round_index, participants=range(3),
                       vector_size=run_config["vector-size"])
    inputs = {c: client_input(run_config["seed"], round_index, c, ctx.vector_size)
              for c in ctx.participants}
    return run_round(protocol, ctx, inputs, dropouts=dropouts)


@pytest.mark.slow
def test_deployment_rounds_equal_the_in_process_driver(deployment: dict[str, Any]) -> None:
    assert [r["round"] for r in deployment["rounds"]] == [0, 1]
    for record in deployment["rounds"]:
        dropouts = {int(c): p for c, p in record["dropouts"].items()}
        reference = _reference(record["round"], dropouts)
        assert list(reference.survivors) == record["survivors"]
        np.testing.assert_array_equal(np.array(record["aggregate"]),
                                      reference.aggregate.astype(np.float64))
        assert record["total_weight"] == reference.total_weight
    assert deployment["rounds"][0]["dropouts"] == {}
    assert deployment["rounds"][0]["survivors"] == [0, 1, 2]
    print(f"deployment: {deployment['total_s']:.1f} s in all, flwr run {deployment['run_s']:.1f}"
          f" s, phases {[[round(t, 1) for t in r['phase_seconds']] for r in deployment['rounds']]}")


@pytest.mark.slow
def test_deployment_round_survives_a_supernode_leaving(deployment: dict[str, Any]) -> None:
    record = deployment["rounds"][1]
    assert record["dropouts"] == {"1": 2}, record["errors"]  # gone after key sharing
    assert record["survivors"] == [0, 2]
    assert record["mask_keys_reconstructed"] == [1]  # secagg+ removed its pairwise masks
    reference = _reference(1, {1: 2})
    assert reference.survivors == (0, 2)
    np.testing.assert_array_equal(np.array(record["aggregate"]),
                                  reference.aggregate.astype(np.float64))


# ============================================================== the audit path


def _without_timings(value: Any) -> Any:
    """Return the report without what depends on the clock or the engine's bookkeeping."""
    timing = {"wall_s", "train_s", "protocol_s", "client_s", "server_s", "fedpriv_version",
              "bytes_down_per_client", "created", "duration_s"}
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k not in timing}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


@pytest.mark.slow
def test_audit_over_flower_gives_the_same_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fedpriv.audits.config import AuditConfig, from_mapping
    from fedpriv.audits.runner import run_audit
    from fedpriv.integrations.flower import loopback, run_audit_on_flower
    from helpers import tiny_config_dict

    data = tiny_config_dict(rounds=2, clients=3)
    data["attacks"] = {"inversion": False}
    config = from_mapping(AuditConfig, data)
    in_process = run_audit(config, tmp_path / "in-process")
    flower_rounds = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        flower_rounds.append(args[2].round)
        return run_protocol_round(*args, **kwargs)

    monkeypatch.setattr(loopback, "run_protocol_round", counted)
    over_flower = run_audit_on_flower(config, tmp_path / "flower")
    assert flower_rounds == [0, 1]  # every round went through the Flower message path
    assert (tmp_path / "flower" / "report.json").exists()
    run = _without_timings(over_flower)["runs"][0]
    assert run["utility"]["eval_loss"] > 0 and run["leakage"]["mia"]
    assert _without_timings(over_flower) == _without_timings(in_process)


def test_flower_refuses_dp_noise_derived_from_a_seed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A Flower server must never know a client's noise: seeded DP is refused everywhere."""
    from flwr.app import Message as FlowerMessage
    from flwr.app import RecordDict

    from fedpriv.audits.config import AuditConfig, from_mapping
    from fedpriv.integrations.flower import run_audit_on_flower
    from fedpriv.integrations.flower.client import client_protocol_vector
    from helpers import tiny_config_dict

    protocol = _protocol("secagg+")
    seeded = UserLevelDP(UserDPSettings(noise_multiplier=1.0, clip=0.1), num_clients=3,
                         clients_per_round=3, seed=5)
    with pytest.raises(ConfigError, match="server knows"):
        FedprivWorkflow(protocol, user_dp=seeded)
    with_secret = UserLevelDP(UserDPSettings(noise_multiplier=1.0, clip=0.1), num_clients=3,
                              clients_per_round=3, seed=5, secret=bytes(32))
    FedprivWorkflow(protocol, user_dp=with_secret)  # a secret the server holds is fine
    dist = DistributedDP(DistributedDPSettings(1.0, 1.0), dim=8, expected_clients=3, seed=5)
    with pytest.raises(ConfigError, match="server knows"):
        client_protocol_vector(FlowerMessage(RecordDict(), dst_node_id=1,
                                             message_type="train.fedpriv"),
                               np.zeros(8), client_id=0,
                               ctx=RoundContext(round=0, participants=(0, 1, 2), vector_size=8),
                               dist_dp=dist)
    d = tiny_config_dict(rounds=1)
    d["runs"] = [{"name": "udp", "dp": "user", "epsilon": 8.0,
                  "dp_params": {"deterministic": True}}]
    with pytest.raises(ConfigError, match="deterministic"):
        run_audit_on_flower(from_mapping(AuditConfig, d), tmp_path)
