from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fedpriv.errors import CheckpointError
from fedpriv.train.batching import collate, training_batches
from fedpriv.train.checkpoint import Checkpoint, load_checkpoint, save_checkpoint


def test_collate_pads_right_and_masks_labels() -> None:
    b = collate([[5, 6, 7], [8]], pad_id=0, device=torch.device("cpu"))
    assert b.input_ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert b.attention_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert b.labels.tolist() == [[5, 6, 7], [8, -100, -100]]


@given(n=st.integers(1, 40), bs=st.integers(1, 10), steps=st.integers(1, 30))
def test_training_batches_cover_every_example_before_repeating(n: int, bs: int, steps: int) -> None:
    examples = [[i, i] for i in range(n)]
    batches = list(training_batches(examples, batch_size=bs, steps=steps, epochs=None,
                                    rng=np.random.default_rng(0)))
    assert len(batches) == steps
    seen = [ex[0] for b in batches for ex in b]
    per_epoch = -(-n // bs)
    full_epochs = steps // per_epoch
    counts = Counter(seen)
    assert all(counts[i] >= full_epochs for i in range(n))
    assert max(counts.values()) <= full_epochs + 1


def test_training_batches_epochs() -> None:
    examples = [[i, i] for i in range(10)]
    batches = list(training_batches(examples, batch_size=4, steps=None, epochs=2,
                                    rng=np.random.default_rng(1)))
    assert len(batches) == 6
    assert Counter(ex[0] for b in batches for ex in b) == Counter({i: 2 for i in range(10)})


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "run" / "checkpoint.pt"
    assert load_checkpoint(path) is None
    vec = np.random.default_rng(0).normal(size=50).astype(np.float32)
    save_checkpoint(path, Checkpoint("abc", 3, vec, [{"round": 0}], {"loss": 1.0}, 2.5, False))
    ck = load_checkpoint(path)
    assert ck is not None
    assert ck.fingerprint == "abc" and ck.completed_rounds == 3 and not ck.finished
    np.testing.assert_array_equal(ck.global_vector, vec)
    assert ck.history == [{"round": 0}] and ck.base_eval == {"loss": 1.0}
    assert not path.with_name("checkpoint.pt.tmp").exists()


def test_corrupt_checkpoint_says_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="delete it"):
        load_checkpoint(path)
