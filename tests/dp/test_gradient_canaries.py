"""White-box gradient canaries planted in DP-SGD: exact shift, no effect when out, one-run audit.

Every run is checked against a naive reference: the same training without
canaries, with the same batch and noise generators, and the canaries' sampling
replayed from their own seed.  The optimiser is SGD, so a sampled canary moves
its coordinate by exactly ``−lr·C·s/(q·n)`` (Opacus divides the noised clipped
sum by the expected batch size ``q·n``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from peft import PeftModel

from fedpriv.attacks.gradient_canaries import GradientCanaries
from fedpriv.audits.epsilon import one_run_audit
from fedpriv.dp.sample import PrivateModel, SampleDPSettings, poisson_batches, train_local_dp
from fedpriv.errors import ConfigError, DataError
from fedpriv.lora import LoraSettings
from fedpriv.models import (
    BUILTIN_MODEL,
    attach_lora,
    get_adapter_vector,
    load_base_model,
    set_adapter_vector,
    trainable_parameters,
)
from fedpriv.train.batching import TokenIds
from fedpriv.train.local import LocalTrainingSettings

CPU = torch.device("cpu")
CLIP = 0.5
N = 8  # examples of the client


class Client:
    """A tiny peft model with a random adapter and ``N`` short random sequences."""

    def __init__(self) -> None:
        base, tokenizer = load_base_model(BUILTIN_MODEL)
        self.model: PeftModel = attach_lora(
            base, LoraSettings(rank=2, alpha=4.0, target_modules=("q_proj",)), seed=0)
        self.pad_id = int(tokenizer.pad_token_id)
        rng = np.random.default_rng(5)
        self.dim = get_adapter_vector(self.model).size
        self.start = rng.normal(0.0, 0.2, self.dim).astype(np.float32)
        vocab = base.config.vocab_size
        self.examples: list[TokenIds] = [
            [int(t) for t in rng.integers(3, vocab, size=int(n))] for n in rng.integers(4, 9, N)
        ]

    def update(
        self, *, batch_size: int, steps: int, lr: float = 1e-2, sigma: float = 1.0,
        noise_scale: float = 0.0, clipping: str = "per_sample", seed: int = 0,
        canaries: GradientCanaries | None = None, canary_seed: int = 7,
    ) -> np.ndarray:
        """Train from ``start`` with SGD-DP and return ``final − start``."""
        set_adapter_vector(self.model, self.start)
        dp = SampleDPSettings(noise_multiplier=sigma, max_grad_norm=CLIP, clipping=clipping)
        local = LocalTrainingSettings(batch_size=batch_size, lr=lr, steps=steps, optimizer="sgd")
        with PrivateModel(self.model, dp) as private:
            train_local_dp(
                private, trainable_parameters(self.model), self.examples, local, dp,
                pad_id=self.pad_id, device=CPU, rng=np.random.default_rng(seed),
                noise_generator=torch.Generator().manual_seed(0), gradient_canaries=canaries,
                canary_rng=None if canaries is None else np.random.default_rng(canary_seed),
                noise_scale=noise_scale,
            )
        return get_adapter_vector(self.model) - self.start


@pytest.fixture(scope="module")
def client() -> Client:
    return Client()


def times_sampled(canaries: GradientCanaries, q: float, steps: int, canary_seed: int) -> np.ndarray:
    """Naive replay: in how many steps each canary was in and drawn (one uniform each)."""
    draws = np.random.default_rng(canary_seed).random((steps, canaries.count)) < q
    return (draws & canaries.included).sum(axis=0)


# ----------------------------------------------------------------------------- exact effect


@pytest.mark.parametrize("clipping", ["per_sample", "ghost"])
def test_sampled_canaries_shift_their_coordinate_by_lr_c_over_expected_batch(
    client: Client, clipping: str
) -> None:
    lr, batch, steps = 1e-2, 4, 3  # q = 1/2, q·n = 4
    canaries = GradientCanaries.draw(64, client.dim, np.random.default_rng(1))
    plain = client.update(batch_size=batch, steps=steps, lr=lr, clipping=clipping)
    planted = client.update(batch_size=batch, steps=steps, lr=lr, clipping=clipping,
                            canaries=canaries)
    k = times_sampled(canaries, batch / N, steps, 7)
    assert k[canaries.included].min() == 0 < k.max()  # some never drawn, some several times
    shift = -lr * CLIP * canaries.signs * k / batch
    moved = (planted - plain)[canaries.coordinates]
    # The canaries perturb the trajectory, and so later real gradients, only to second order.
    np.testing.assert_allclose(moved, shift, rtol=0, atol=0.01 * lr * CLIP / batch)
    np.testing.assert_allclose(canaries.scores(planted) - canaries.scores(plain),
                               lr * CLIP * k / batch, rtol=0, atol=0.01 * lr * CLIP / batch)


@pytest.mark.parametrize("clipping", ["per_sample", "ghost"])
def test_noise_only_steps_carry_exactly_the_canaries(client: Client, clipping: str) -> None:
    # q = 1/8 and a batch seed whose every batch is empty: without noise the only
    # gradient is the canaries', so the update is −lr·C·s·k/(q·n) on their
    # coordinates (in get_adapter_vector's order) and exactly 0 elsewhere.
    steps, lr = 4, 0.1
    seed = next(s for s in range(500) if all(
        b.size == 0 for b in poisson_batches(N, 1 / N, steps, np.random.default_rng(s))))
    canaries = GradientCanaries.draw(200, client.dim, np.random.default_rng(2))
    update = client.update(batch_size=1, steps=steps, lr=lr, clipping=clipping, seed=seed,
                           canaries=canaries)
    expected = np.zeros(client.dim)
    expected[canaries.coordinates] = -lr * CLIP * canaries.signs * times_sampled(
        canaries, 1 / N, steps, 7)
    assert np.count_nonzero(expected) > 10
    np.testing.assert_allclose(update, expected, rtol=1e-5, atol=0)


def test_canaries_not_sampled_change_nothing(client: Client) -> None:
    canaries = GradientCanaries.draw(64, client.dim, np.random.default_rng(3))
    plain = client.update(batch_size=4, steps=2)
    # every canary out: the whole update is bit for bit the plain run's
    out = dataclasses.replace(canaries, included=np.zeros(64, dtype=bool))
    np.testing.assert_array_equal(client.update(batch_size=4, steps=2, canaries=out), plain)
    # one step: only the included canaries drawn in it move, every other value is as before
    one_plain = client.update(batch_size=4, steps=1)
    one = client.update(batch_size=4, steps=1, canaries=canaries)
    moved = np.zeros(client.dim, dtype=bool)
    moved[canaries.coordinates[times_sampled(canaries, 0.5, 1, 7) > 0]] = True
    assert 0 < moved.sum() < canaries.included.sum()
    np.testing.assert_array_equal(one[~moved], one_plain[~moved])
    assert np.all(one[moved] != one_plain[moved])


# ----------------------------------------------------------------------------- the audit


def test_one_run_audit_sees_noiseless_canaries_and_not_noisy_ones(client: Client) -> None:
    lr, steps, sigma = 0.1, 1, 20.0
    canaries = GradientCanaries.draw(256, client.dim, np.random.default_rng(4))
    # q = 1: every included canary is in every step.
    noiseless = client.update(batch_size=N, steps=steps, lr=lr, sigma=sigma, canaries=canaries)
    leak = one_run_audit(canaries.scores(noiseless), canaries.included, delta=1e-5)
    assert leak.epsilon > 3  # a mutant without noise: the audit sees it at once
    noisy = client.update(batch_size=N, steps=steps, lr=lr, sigma=sigma, noise_scale=1.0,
                          canaries=canaries)
    audit = one_run_audit(canaries.scores(noisy), canaries.included, delta=1e-5)
    assert audit.epsilon < 1  # signal C against noise std 20·C per coordinate
    # the noise really is N(0, (σC)²) per step, divided by q·n: std lr·σ·C·√steps/N
    std = float(np.std(noisy - noiseless))
    assert std == pytest.approx(lr * sigma * CLIP * np.sqrt(steps) / N, rel=0.05)


# ----------------------------------------------------------------------------- bad inputs


def test_bad_inputs_say_what_to_do(client: Client) -> None:
    with pytest.raises(ConfigError, match="between 1 and the adapter's size"):
        GradientCanaries.draw(client.dim + 1, client.dim, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="distinct"):
        GradientCanaries(np.array([3, 3]), np.ones(2), np.ones(2, dtype=bool))
    canaries = GradientCanaries.draw(4, client.dim, np.random.default_rng(0))
    with pytest.raises(DataError, match="get_adapter_vector"):
        canaries.project(np.zeros(int(canaries.coordinates.max())))
    dp = SampleDPSettings(noise_multiplier=1.0, max_grad_norm=CLIP)
    local = LocalTrainingSettings(batch_size=4, lr=1e-2, steps=1, optimizer="sgd")
    kwargs = {"pad_id": client.pad_id, "device": CPU, "rng": np.random.default_rng(0),
              "noise_generator": torch.Generator()}
    bigger = GradientCanaries.draw(4, 10 * client.dim, np.random.default_rng(0))
    params = trainable_parameters(client.model)
    with PrivateModel(client.model, dp) as private:
        with pytest.raises(ConfigError, match="derive it from the run's DP secret"):
            train_local_dp(private, params, client.examples, local, dp, **kwargs,
                           gradient_canaries=canaries)
        with pytest.raises(ConfigError, match="pass both or neither"):
            train_local_dp(private, params, client.examples, local, dp, **kwargs,
                           canary_rng=np.random.default_rng(0))
        with pytest.raises(ConfigError, match="draw the canaries for this adapter"):
            train_local_dp(private, params, client.examples, local, dp, **kwargs,
                           gradient_canaries=bigger, canary_rng=np.random.default_rng(0))
        with pytest.raises(ConfigError, match="noise_scale"):
            train_local_dp(private, params, client.examples, local, dp, **kwargs,
                           noise_scale=-1.0)


def test_sgd_round_ratio_is_the_subsampled_gaussian_likelihood_ratio() -> None:
    """One step at q = 1 is the Gaussian's μy − μ²/2; it grows with y; q → 0 makes it vanish."""
    y = np.linspace(-3.0, 6.0, 10)
    sigma = 2.0
    exact = GradientCanaries.sgd_round_log_ratio(y, steps=1, sample_rate=1.0,
                                                 noise_multiplier=sigma)
    assert np.allclose(exact, y / sigma - 1 / (2 * sigma**2))
    mixed = GradientCanaries.sgd_round_log_ratio(y, steps=4, sample_rate=0.3,
                                                 noise_multiplier=sigma)
    assert np.all(np.diff(mixed) > 0)
    rare = GradientCanaries.sgd_round_log_ratio(y, steps=4, sample_rate=1e-9,
                                                noise_multiplier=sigma)
    assert np.allclose(rare, 0.0, atol=1e-6)
