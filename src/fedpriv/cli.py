"""The ``fedpriv`` command line (Typer): ``audit``, ``presets``, ``protocols``.

The CLI owns the terminal: progress bars go to stderr, tables and ``--json``
output to stdout.  Exit codes: 0 ok, 2 bad input (one line on stderr, no
traceback), 1 a run failed (the report still holds the runs that finished).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedpriv import __version__
from fedpriv.audits.progress import AuditProgress
from fedpriv.errors import FedprivError

if TYPE_CHECKING:
    from fedpriv.audits.config import RunConfig
    from fedpriv.audits.runner import RunOutcome
    from fedpriv.train.loop import RoundRecord

app = typer.Typer(
    name="fedpriv",
    help="Private federated fine-tuning of language models, with measured leakage.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
# Piped output is not wrapped at 80 columns: the run table is wider than that.
out_console = Console(width=None if sys.stdout.isatty() else 120)
err_console = Console(stderr=True)


def _fail(message: str, code: int = 2) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        out_console.print(f"fedpriv {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Private federated fine-tuning of language models, with measured leakage."""


class _RichProgress(AuditProgress):
    """Draws one progress bar per run on stderr."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, Any] = {}

    def run_started(self, run: RunConfig, total_rounds: int, first_round: int) -> None:
        label = f"{run.name} ({run.protocol})" + (f" resumed@{first_round}" if first_round else "")
        self.tasks[run.name] = self.progress.add_task(label, total=total_rounds,
                                                      completed=first_round, ppl="")

    def round_finished(self, run: RunConfig, record: RoundRecord) -> None:
        ppl = "" if record.perplexity is None else f"ppl {record.perplexity:.2f}"
        self.progress.update(self.tasks[run.name], advance=1, ppl=ppl)

    def run_finished(self, run: RunConfig, outcome: RunOutcome) -> None:
        if outcome.status != "ok":
            self.progress.console.print(f"[red]run {run.name} failed:[/] {outcome.error}")


def _summary_table(report: dict[str, Any]) -> Table:
    from fedpriv.audits.report import COLUMNS, summary_rows

    shown = [c for c in COLUMNS if c[0] != "status"]  # failed runs are shown in red instead
    table = Table(title=f"fedpriv audit — {report['config']['name']}", box=box.SIMPLE_HEAD)
    rows = summary_rows(report)
    for key, title, _ in shown:
        table.add_column(title, justify="left" if key in ("run", "protocol") else "right",
                         no_wrap=True, min_width=max(len(title), *(len(r[key]) for r in rows)))
    for row in rows:
        style = None if row["status"] == "ok" else "red"
        table.add_row(*(row[key] for key, _, _ in shown), style=style)
    return table


@app.command()
def audit(
    config: Annotated[
        Optional[Path], typer.Argument(help="Audit config (TOML). Default: the 'default' preset.")
    ] = None,
    preset: Annotated[
        Optional[str], typer.Option(help="Run a shipped preset by name (see `fedpriv presets`).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("fedpriv-out"),
    rounds: Annotated[Optional[int], typer.Option(help="Federated rounds.")] = None,
    clients: Annotated[Optional[int], typer.Option(help="Number of clients.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed.")] = None,
    device: Annotated[
        Optional[str], typer.Option(help="auto (cuda when present), cpu, cuda, cuda:N.")
    ] = None,
    model: Annotated[
        Optional[str], typer.Option(help="Base causal LM: builtin:tiny-llama, local dir or hub id.")
    ] = None,
    data: Annotated[
        Optional[str],
        typer.Option(help="Your JSONL/CSV/text file instead of the built-in corpus "
                          "(hf:NAME_OR_DIR for a Hugging Face dataset)."),
    ] = None,
    text_field: Annotated[
        Optional[str], typer.Option(help="Field holding the text in --data.")
    ] = None,
    partition: Annotated[
        Optional[str],
        typer.Option(help="iid, dirichlet or natural (default: iid with --data, else natural)."),
    ] = None,
    protocol: Annotated[
        Optional[str], typer.Option(help="Run a single configuration with this protocol.")
    ] = None,
    dp: Annotated[
        Optional[str],
        typer.Option(help="Differential privacy for every run: none, sample (DP-SGD on each "
                          "client's examples), user (DP-FedAvg, central noise) or distributed "
                          "(DP-FedAvg, noise added by the clients under secagg/secagg+)."),
    ] = None,
    epsilon: Annotated[
        Optional[float],
        typer.Option(help="Target ε of each DP run (δ from the config, default 1e-5); the "
                          "noise multiplier is solved from it."),
    ] = None,
    dropout: Annotated[
        Optional[float],
        typer.Option(help="Share of each round's clients that drop, each at a random phase."),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the runs checkpointed in --out.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Start again runs left unfinished in --out.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print report.json to stdout.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars or table.")] = False,
) -> None:
    """Fine-tune and measure each configuration; write OUT/report.json and OUT/report.md."""
    from fedpriv.audits.config import apply_overrides, load_config, load_preset, override_runs

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import transformers

    transformers.utils.logging.disable_progress_bar()  # our own bars own the terminal
    try:
        if config is not None and preset is not None:
            raise _fail("give a config file or --preset, not both")
        if resume and overwrite:
            raise _fail("--resume and --overwrite contradict each other; pick one")
        cfg = load_config(config) if config is not None else load_preset(preset or "default")
        overrides: dict[str, Any] = {
            "federation__rounds": rounds,
            "federation__clients": clients,
            "seed": seed,
            "device": device,
            "model__name": model,
            "data__source": data,
            "data__text_field": text_field,
            "data__partition": partition or ("iid" if data is not None else None),
            "federation__dropout": dropout,
        }
        cfg = override_runs(apply_overrides(cfg, **overrides), protocol=protocol, dp=dp,
                            epsilon=epsilon)
        from fedpriv.audits.runner import preflight, run_audit

        preflight(cfg)  # run_audit checks again; here so bad input fails before any output
        show = not (quiet or as_json)
        if show:
            with Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[ppl]}"), TimeElapsedColumn(),
                console=err_console, transient=False,
            ) as bars:
                err_console.print(f"fedpriv audit '{cfg.name}': {len(cfg.runs)} run(s), "
                                  f"{cfg.federation.rounds} rounds, {cfg.federation.clients} "
                                  f"clients → {out}/", highlight=False)
                report = run_audit(cfg, out, resume=resume, overwrite=overwrite,
                                   progress=_RichProgress(bars))
        else:
            report = run_audit(cfg, out, resume=resume, overwrite=overwrite)
    except FedprivError as err:
        raise _fail(str(err)) from None
    except KeyboardInterrupt:
        raise _fail(f"interrupted; finished rounds are checkpointed in {out}/ — rerun with "
                    "--resume to continue", code=130) from None
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    elif not quiet:
        out_console.print(_summary_table(report))
        out_console.print(f"report: {out / 'report.json'}, {out / 'report.md'}", highlight=False)
    if any(r["status"] != "ok" for r in report["runs"]):
        raise typer.Exit(1)


@app.command()
def presets() -> None:
    """List the shipped audit presets."""
    from fedpriv.audits.config import available_presets, preset_dirs

    for name in available_presets():
        out_console.print(name, highlight=False)
    if not available_presets():
        raise _fail(f"no presets found (searched {', '.join(map(str, preset_dirs()))})", 1)


@app.command()
def protocols(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List the aggregation protocols and their threat models."""
    from dataclasses import asdict

    from fedpriv.protocols import available, describe

    infos = [describe(name) for name in available()]
    if as_json:
        sys.stdout.write(json.dumps([asdict(i) for i in infos], indent=2) + "\n")
        return
    table = Table(title="fedpriv protocols")
    for col in ("name", "threat model", "reveals individual updates", "dropouts"):
        table.add_column(col)
    for i in infos:
        d = asdict(i)
        table.add_row(d["name"], d["threat_model"], str(d["reveals_individual_updates"]),
                      d["dropout_tolerance"])
    out_console.print(table)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
