"""LoRA adapter settings, free of heavy imports so configs and the CLI can use them.

:mod:`fedpriv.models` applies them (``attach_lora``); audit configs hold them as
``[model.lora]``.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedpriv.errors import ConfigError


@dataclass(frozen=True)
class LoraSettings:
    """LoRA adapter settings, validated at construction.

    ``target_modules=None`` uses peft's default for the architecture (Llama:
    ``q_proj, v_proj``; GPT-2: ``c_attn``).  ``ffa=True`` selects FFA-LoRA (Sun et
    al. 2024): ``A`` stays frozen at its seeded random value, identical on every
    client, and only ``B`` is trained and exchanged, which halves the upload and
    makes FedAvg of the adapters exact.
    """

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] | None = None
    ffa: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ConfigError(
                f"LoRA rank (model.lora.rank) must be an integer >= 1, got {self.rank!r}"
            )
        if not self.alpha > 0:
            raise ConfigError(f"LoRA alpha (model.lora.alpha) must be > 0, got {self.alpha!r}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(
                f"LoRA dropout (model.lora.dropout) must be in [0, 1), got {self.dropout!r}"
            )
        if self.target_modules is not None:
            names = self.target_modules
            targets = (names,) if isinstance(names, str) else tuple(names)
            if not targets or not all(isinstance(t, str) and t for t in targets):
                raise ConfigError(
                    "LoRA target_modules (model.lora.target_modules) must be non-empty module "
                    f"names, got {self.target_modules!r}; leave it unset to use the model's "
                    "default"
                )
            object.__setattr__(self, "target_modules", targets)
