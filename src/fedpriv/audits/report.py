"""report.json (schema 1) and report.md: building, validating, writing atomically.

The JSON layout is the contract in DESIGN.md ("extend, never rename");
``report.schema.json`` beside this module is its JSON Schema and every report
is validated against it before it is written.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from fedpriv import __version__
from fedpriv.audits.config import AuditConfig, to_dict
from fedpriv.audits.plots import PLOT_FILES, best_lower_bound
from fedpriv.audits.results import RunOutcome

SCHEMA_VERSION = 1


@cache
def report_schema() -> dict[str, Any]:
    """Return the JSON Schema of report.json."""
    text = resources.files("fedpriv.audits").joinpath("report.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def validate_report(report: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` when ``report`` does not follow schema 1."""
    jsonschema.validate(report, report_schema())


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


NO_DP_THREAT_MODEL = ("no formal guarantee: the released model and, unless the protocol "
                      "hides them, the clients' updates carry their data")


def participation_hidden(outcome: RunOutcome) -> bool:
    """Whether the report leaves out each round's participants (user DP with q < 1).

    The accountant credits amplification by client sampling only while nobody
    knows who was sampled; the report is public, so it lists counts instead.
    """
    plan = outcome.dp
    return plan is not None and plan.mode == "user" and plan.sample_rate < 1


def _privacy(outcome: RunOutcome) -> dict[str, Any]:
    """Return the run's ``privacy`` block: ε, δ, accountant, who the ε protects against."""
    plan = outcome.dp
    if plan is None:
        return {"epsilon": None, "delta": None, "accountant": "none",
                "threat_model": NO_DP_THREAT_MODEL, "relation": None}
    block: dict[str, Any] = {
        "epsilon": plan.epsilon,
        "delta": plan.config.delta,
        "accountant": plan.accountant,
        "epsilon_by_accountant": dict(plan.epsilon_by_accountant) or None,
        "unit": "example" if plan.mode == "sample" else "client",
        "relation": plan.relation,
        "replace_one_epsilon": plan.replace_one_epsilon,
        "participation_secret": plan.participation_secret,
        "participants_listed": not participation_hidden(outcome),
        "randomness": (
            "deterministic: derived from the public seed (debugging)"
            if plan.config.deterministic else
            "secret: keys from a per-run secret drawn from the OS, kept beside the "
            "checkpoint, never reported" if plan.config.uses_secret else
            "secret: every key fresh from the OS (secure_mode; not resumable bit for bit)"),
        "per_client_epsilon": list(plan.per_client_epsilon) or None,
        "warnings": list(plan.warnings),
        "mutation": plan.mutation,
    }
    block.update(plan.threat_model(outcome.run.protocol))
    return block


def _run_entry(outcome: RunOutcome) -> dict[str, Any]:
    run, training = outcome.run, outcome.training
    entry: dict[str, Any] = {
        "name": run.name,
        "protocol": run.protocol,
        "status": outcome.status,
        "error": outcome.error,
        "dp": {"mode": run.dp} if outcome.dp is None else outcome.dp.to_report(),
        # No DP: ε is unbounded, written as null with accountant "none".
        "privacy": _privacy(outcome),
        "utility": {},
        "leakage": outcome.leakage.to_report(),
        "cost": {},
        "lora": {
            "rank": outcome.lora.rank,
            "alpha": outcome.lora.alpha,
            "ffa": outcome.lora.ffa,
            "adapter_size": outcome.adapter_size,
        },
        "history": [],
        "resumed_from_round": None,
        "artifacts": {"adapter": outcome.adapter_dir},
    }
    if training is None:
        return entry
    base, final = training.base_eval, training.final_eval
    reduction = None
    if math.isfinite(base.perplexity) and math.isfinite(final.perplexity) and base.perplexity:
        reduction = 1.0 - final.perplexity / base.perplexity
    entry["utility"] = {
        "eval_loss": _finite(final.loss),
        "perplexity": _finite(final.perplexity),
        "base_eval_loss": _finite(base.loss),
        "base_perplexity": _finite(base.perplexity),
        "perplexity_reduction": _finite(reduction),
        "eval_tokens": final.tokens,
    }
    hist = training.history
    rounds = max(len(hist), 1)
    entry["cost"] = {
        "wall_s": training.wall_s,
        "train_s": sum(h.train_s for h in hist),
        "protocol_s": sum(h.protocol_s for h in hist),
        "bytes_up_per_client": sum(h.bytes_up_per_client for h in hist) / rounds,
        "bytes_down_per_client": sum(h.bytes_down_per_client for h in hist) / rounds,
        "rounds": len(hist),
    }
    hidden = participation_hidden(outcome)
    entry["history"] = [
        {
            "round": h.round,
            # Under client sampling that the accountant credits, who took part is secret.
            "participants": None if hidden else h.participants,
            "survivors": None if hidden else h.survivors,
            "participants_count": len(h.participants),
            "survivors_count": len(h.survivors),
            "train_loss": _finite(h.train_loss),
            "eval_loss": _finite(h.eval_loss),
            "perplexity": _finite(h.perplexity),
            "update_norm": h.update_norm,
            "wall_s": h.wall_s,
            "clipped_values": h.clipped_values,
            "aborted": h.aborted,
            "rejected_clients": h.rejected_clients,
            "dp_clip": h.dp_clip,
        }
        for h in hist
    ]
    entry["protocol_stats"] = {
        "params": dict(run.protocol_params),
        "clipped_values": sum(h.clipped_values for h in hist),
        "aborted_rounds": sum(h.aborted is not None for h in hist),
        "rejected_clients": sum(h.rejected_clients for h in hist),
        "mean_survivors": sum(len(h.survivors) for h in hist) / rounds,
    }
    entry["resumed_from_round"] = training.resumed_from_round
    companions = sorted(hist[-1].companions) if hist else []
    if outcome.shared_with is not None:
        entry["shared_training"] = {"trained_by": outcome.shared_with,
                                    "max_abs_deviation": outcome.shared_deviation}
    elif companions:
        entry["shared_training"] = {"companions": companions}
    return entry


def build_report(
    config: AuditConfig, outcomes: Sequence[RunOutcome], *, device: str, wall_s: float
) -> dict[str, Any]:
    """Assemble report.json (schema 1) from the finished runs."""
    import torch  # local: keeps `fedpriv report` light

    return {
        "schema": SCHEMA_VERSION,
        "fedpriv_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": to_dict(config),
        "environment": {
            "device": device,
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "wall_s": wall_s,
        "runs": [_run_entry(o) for o in outcomes],
    }


def _fmt(x: Any, spec: str = ".2f") -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return format(x, spec)
    return str(x)


NOT_RESOLVABLE = "n/a"
"""What report.md shows for a TPR at an FPR too small for the non-members to resolve (null)."""


def _with_interval(block: dict[str, Any], key: str) -> str:
    """``block[key]`` with its ``key_ci`` as ``0.620 [0.551, 0.689]``.

    ``—`` when the block has no such figure (not measured); ``n/a`` when the
    figure is null (a TPR at an FPR the non-members cannot resolve). Reports
    written before intervals existed show the value alone.
    """
    if key not in block:
        return "—"
    value = block[key]
    if value is None:
        return NOT_RESOLVABLE
    interval = block.get(f"{key}_ci")
    text = _fmt(float(value), ".3f")
    if isinstance(interval, (list, tuple)) and len(interval) == 2 and None not in interval:
        text += f" [{float(interval[0]):.3f}, {float(interval[1]):.3f}]"
    return text


def _bytes(n: float | None) -> str:
    if n is None:
        return "—"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def summary_rows(report: dict[str, Any]) -> list[dict[str, str]]:
    """One row of display strings per run (used by report.md and the CLI table)."""
    rows = []
    for run in report["runs"]:
        util, cost, priv = run["utility"], run["cost"], run["privacy"]
        red = util.get("perplexity_reduction")
        rows.append({
            "run": run["name"],
            "status": run["status"],
            "protocol": run["protocol"],
            "dp": run["dp"]["mode"],
            "epsilon": "∞" if priv["epsilon"] is None else _fmt(priv["epsilon"]),
            "empirical_epsilon": _fmt(best_lower_bound(run)),
            "perplexity": _fmt(util.get("perplexity")),
            "base_perplexity": _fmt(util.get("base_perplexity")),
            "reduction": "—" if red is None else f"{100 * red:.1f}%",
            "mia_auc": _with_interval(run["leakage"].get("mia") or {}, "auc"),
            "mia_tpr": _with_interval(run["leakage"].get("mia") or {}, "tpr_at_1pct_fpr"),
            "inversion_rouge1": _fmt(run["leakage"].get("inversion", {}).get("rouge1")),
            "exposure": _fmt(run["leakage"].get("canary", {}).get("exposure_mean"), ".1f"),
            "wall_s": _fmt(cost.get("wall_s"), ".1f"),
            "bytes_up": _bytes(cost.get("bytes_up_per_client")),
        })
    return rows


COLUMNS = [
    ("run", "run", "the configuration's name"),
    ("status", "status", "ok, or failed with the error in report.json"),
    ("protocol", "protocol", "how updates reach the server (plain: in the clear)"),
    ("dp", "DP", "differential-privacy mode"),
    ("epsilon", "ε", "theoretical privacy loss (∞: no formal guarantee)"),
    ("empirical_epsilon", "emp. ε", "empirical lower bound on ε from a one-run audit on planted "
     "canaries (Steinke, Nasr & Jagielski 2023), the largest of the run's audits (text "
     "canaries on the released model; canary clients under user-level/distributed DP; "
     "gradient canaries under sample-level DP), at 95% confidence unless "
     "attacks.epsilon_confidence says otherwise; compare with ε: a bound "
     "above ε would mean the guarantee does not hold (—: not measured); each audit, "
     "its relation, f-DP bound, idealized ceiling and estimate are listed below"),
    ("perplexity", "ppl", "held-out perplexity of the fine-tuned model (lower is better)"),
    ("base_perplexity", "base ppl", "the same for the base model before fine-tuning"),
    ("reduction", "ppl ↓", "relative perplexity reduction from fine-tuning"),
    ("mia_auc", "MIA AUC", "membership inference on the released model, the strongest of loss, "
     "zlib, Min-K% and base-reference scores (0.5: no leak, 1: every member found); in "
     "brackets its 95% confidence interval (stratified bootstrap over members and "
     "non-members; `ci_method` in report.json)"),
    ("mia_tpr", "TPR@1%FPR", "the same attack's share of members found while flagging at most "
     "1% of non-members, with its 95% interval (the threshold is chosen on the same data, so "
     "it is optimistic); n/a: fewer than 100 non-members, too few to measure a 1% FPR"),
    ("inversion_rouge1", "inv. ROUGE-1", "gradient inversion (DAGER) on a FedSGD probe round, "
     "run through the run's protocol and DP: ROUGE-1 of the texts recovered from what the "
     "server saw (each client's update under plain, only the aggregate under secure "
     "aggregation) against the true texts (0: nothing recovered, 1: every word)"),
    ("exposure", "exposure", "mean canary exposure in bits (Carlini et al. 2019; ~1.4 for an "
     "unseen secret, log2 of the candidate space when the canary ranks first)"),
    ("wall_s", "wall s", "wall-clock seconds of the run"),
    ("bytes_up", "up/round", "bytes one client uploads per round"),
]


CANARY_AUDITS = {"client_audit": "client-level audit (canary clients)",
                 "gradient_audit": "white-box audit (gradient canaries)"}
"""The leakage blocks of the audits with auditor-controlled canaries, and what each is."""


def threat_model_line(run: dict[str, Any]) -> str:
    """One line on a run's guarantee: its relation, its threat model, the audit's relation."""
    privacy = run["privacy"]
    line = privacy.get("threat_model") or NO_DP_THREAT_MODEL
    if privacy.get("relation"):
        line = f"ε for {privacy['relation']}; {line}"
    audit = run["leakage"].get("epsilon_audit")
    if audit and audit.get("relation"):
        reference = audit.get("reference_epsilon")
        line += f"; emp. ε audits {audit['relation']}" + (
            "" if reference is None else f" (reference ε {reference:.2f})")
        if audit.get("violation"):
            line += " — **the lower bound exceeds it: the stated guarantee does not hold**"
    for key, what in CANARY_AUDITS.items():
        block = run["leakage"].get(key)
        if not block:
            continue
        bounds = ", ".join(
            f"{name.replace('_', ' ')}: ≥ {obs['epsilon_lower_bound']:.2f} (f-DP "
            f"{obs['f_dp']['epsilon_lower_bound']:.2f}, ceiling "
            f"{_fmt(obs.get('idealized_lower_bound'))}"
            + ("" if obs.get("epsilon_estimate") is None
               else f"; estimate {obs['epsilon_estimate']:.2f}") + ")"
            for name, obs in block["observations"].items())
        line += f"; {what} ({block['canaries']} canaries, {block['relation']}): {bounds}"
        if block.get("violation"):
            line += " — **a lower bound exceeds the stated ε: the guarantee does not hold**"
    if privacy.get("mutation"):
        line += f"; **mutation test: noise weakened ({privacy['mutation']})**"
    return line


def render_markdown(report: dict[str, Any]) -> str:
    """report.md: a table a person reads in ten seconds, with what each column means."""
    cfg = report["config"]
    fed = cfg["federation"]
    lines = [
        f"# fedpriv audit — {cfg['name']}",
        "",
        f"{len(report['runs'])} run(s) · model `{cfg['model']['name']}` · "
        f"{fed['clients']} clients · {fed['rounds']} rounds · seed {cfg['seed']} · "
        f"device {report['environment']['device']} · fedpriv {report['fedpriv_version']}",
        "",
        "| " + " | ".join(title for _, title, _ in COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    for row in summary_rows(report):
        lines.append("| " + " | ".join(row[key] for key, _, _ in COLUMNS) + " |")
    lines += ["", "What the columns mean:", ""]
    lines += [f"- **{title}**: {meaning}" for _, title, meaning in COLUMNS]
    lines += ["", "Who each ε protects against (`privacy.threat_model` in report.json):", ""]
    lines += [f"- `{r['name']}`: {threat_model_line(r)}" for r in report["runs"]]
    failed = [r for r in report["runs"] if r["status"] != "ok"]
    if failed:
        lines += ["", "Failed runs:", ""]
        lines += [f"- `{r['name']}`: {r['error']}" for r in failed]
    shared = [r for r in report["runs"] if (r.get("shared_training") or {}).get("trained_by")]
    if shared:
        lines += ["", "Shared training (`federation.share_training`): these runs took another "
                  "run's trajectory — their protocol aggregated the same client updates every "
                  "round and matched it — so their released model, membership and exposure "
                  "figures are that run's; server view, inversion and costs are their own:", ""]
        lines += [f"- `{r['name']}`: trained by `{r['shared_training']['trained_by']}`, "
                  f"largest aggregate difference "
                  f"{r['shared_training']['max_abs_deviation']:.2g}" for r in shared]
    lines += ["", "Membership inference and canary exposure observe the released model; "
              "gradient inversion observes what the server saw (`leakage.inversion` in "
              "report.json).", ""]
    lines += ["## Plots", "", "Written beside this file at the end of the audit "
              "(`fedpriv report OUT` draws them again).", ""]
    for name, what in PLOT_FILES.items():
        lines += [f"**`{name}`** — {what}.", "", f"![{name.removesuffix('.png')}]({name})", ""]
    return "\n".join(lines)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_markdown(out_dir: Path, report: dict[str, Any]) -> Path:
    """Write ``report.md`` of ``report`` into ``out_dir``; return its path."""
    path = out_dir / "report.md"
    _atomic_write(path, render_markdown(report))
    return path


def write_report(out_dir: Path, report: dict[str, Any]) -> None:
    """Validate ``report`` and write ``report.json`` and ``report.md`` into ``out_dir``."""
    validate_report(report)
    out_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write(out_dir / "report.json", json.dumps(report, indent=2, allow_nan=False) + "\n")
    _atomic_write(out_dir / "report.md", render_markdown(report))
