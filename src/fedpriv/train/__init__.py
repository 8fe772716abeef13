"""The compact federated LoRA training loop (clients, rounds, checkpoints)."""

from fedpriv.train.batching import encode_texts
from fedpriv.train.local import EvalResult, LocalTrainingSettings, evaluate, train_local
from fedpriv.train.loop import FederatedTrainer, FederationSettings, RoundRecord, TrainingResult

__all__ = [
    "EvalResult",
    "FederatedTrainer",
    "FederationSettings",
    "LocalTrainingSettings",
    "RoundRecord",
    "TrainingResult",
    "encode_texts",
    "evaluate",
    "train_local",
]
