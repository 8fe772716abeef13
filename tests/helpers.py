"""Test helpers: tiny audit configs that train in a second or two on CPU, a TOML writer."""

from __future__ import annotations

from pathlib import Path

from fedpriv.audits.progress import AuditProgress


class Killed(BaseException):
    """Stands in for the process dying after a round was checkpointed."""


class KillAfter(AuditProgress):
    """Progress that "kills" the audit once ``rounds`` rounds of a run are checkpointed."""

    def __init__(self, rounds: int) -> None:
        self.rounds = rounds

    def round_finished(self, run, record) -> None:  # type: ignore[no-untyped-def]
        if record.round + 1 == self.rounds:
            raise Killed


def tiny_config_dict(**federation: object) -> dict[str, object]:
    fed = {"clients": 3, "rounds": 3, "local_steps": 2, "batch_size": 4, "lr": 5e-3}
    fed.update(federation)
    return {
        "name": "tiny",
        "seed": 0,
        "device": "cpu",
        "model": {"max_length": 48, "lora": {"rank": 2, "alpha": 4.0,
                                             "target_modules": ["q_proj", "v_proj"]}},
        "data": {"records_per_client": 10, "holdout_fraction": 0.3},
        "federation": fed,
        "runs": [{"name": "plain", "protocol": "plain"}],
    }


def write_toml(path: Path, data: dict[str, object]) -> Path:
    """Minimal TOML writer for the nested dicts used in tests."""
    lines: list[str] = []

    def value(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return f'"{v}"'
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + "}"
        return repr(v)

    def table(prefix: str, d: dict[str, object]) -> None:
        scalars = {k: v for k, v in d.items() if not isinstance(v, dict) and k != "runs"}
        if prefix:
            lines.append(f"[{prefix}]")
        lines.extend(f"{k} = {value(v)}" for k, v in scalars.items())
        for k, v in d.items():
            if isinstance(v, dict):
                table(f"{prefix}.{k}" if prefix else k, v)

    table("", data)
    for run in data.get("runs", []):  # type: ignore[union-attr]
        lines.append("[[runs]]")
        lines.extend(f"{k} = {value(v)}" for k, v in run.items())
    path.write_text("\n".join(lines) + "\n")
    return path
