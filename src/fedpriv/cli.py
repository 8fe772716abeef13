"""The ``fedpriv`` command line (Typer): audit, sweep, report, presets, protocols.

The CLI owns the terminal: progress bars go to stderr, tables and ``--json``
output to stdout.  Exit codes: 0 ok, 2 bad input (one line on stderr, no
traceback), 1 a run failed (the report still holds the runs that finished).
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedpriv import __version__
from fedpriv.audits.config import RunConfig
from fedpriv.audits.progress import AuditProgress
from fedpriv.audits.results import RunOutcome
from fedpriv.audits.sweep import SweepProgress
from fedpriv.errors import FedprivError

if TYPE_CHECKING:
    from fedpriv.audits.sweep import SweepCell
    from fedpriv.train.loop import RoundRecord

app = typer.Typer(
    name="fedpriv",
    help="Private federated fine-tuning of language models, with measured leakage.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
# Piped output is not wrapped at 80 columns: the run table is wider than that.
out_console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)


def _fail(message: str, code: int = 2) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


@contextmanager
def _command_errors(interrupted: str) -> Iterator[None]:
    """Turn a FedprivError into one line on stderr (exit 2) and Ctrl-C into ``interrupted`` (130).

    ``interrupted`` says what was kept and how to continue.
    """
    # Ctrl-C is also recorded: a KeyboardInterrupt raised while Python runs a finaliser
    # (``__del__``, a weakref callback) is printed and dropped, and the work would go on.
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, _record_interrupt)
    _INTERRUPTS.clear()
    try:
        yield
    except FedprivError as err:
        raise _fail(str(err)) from None
    except KeyboardInterrupt:
        raise _fail(interrupted, code=130) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if _INTERRUPTS:
        raise _fail(interrupted, code=130)


_INTERRUPTS: list[int] = []
"""SIGINTs received inside :func:`_command_errors` (see there)."""


def _record_interrupt(signum: int, frame: object) -> None:
    _INTERRUPTS.append(signum)
    raise KeyboardInterrupt


def interrupt_requested() -> bool:
    """Whether Ctrl-C reached the running command (even if its KeyboardInterrupt was lost)."""
    return bool(_INTERRUPTS)


@contextmanager
def _live_progress(show: bool, header: str) -> Iterator[Progress | None]:
    """Progress bars on stderr, under the line ``header``, while the body runs (``None``: quiet)."""
    if not show:
        yield None
        return
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[ppl]}"), TimeElapsedColumn(),
        console=err_console, transient=False,
    ) as bars:
        err_console.print(header, highlight=False)
        yield bars


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

    def run_shared(self, run: RunConfig, trained_by: str, total_rounds: int) -> None:
        label = f"{run.name} ({run.protocol}) trained with {trained_by}"
        self.tasks[run.name] = self.progress.add_task(label, total=total_rounds,
                                                      completed=total_rounds, ppl="")

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
    dp_deterministic: Annotated[
        bool,
        typer.Option("--dp-deterministic",
                     help="Debugging only: derive every DP run's noise and sampling from the "
                          "public seed (reproducible by anyone holding the report, so its ε "
                          "holds only against someone who does not know the seed)."),
    ] = False,
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
    engine: Annotated[
        str,
        typer.Option(help="Where each round's protocol messages travel: 'inprocess' (the "
                          "driver) or 'flower' (Flower's Message API; pip install "
                          "'fedpriv[flower]')."),
    ] = "inprocess",
) -> None:
    """Fine-tune and measure each configuration; write OUT/report.json and OUT/report.md."""
    from fedpriv.audits.config import load_config, load_preset, override, override_runs

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import transformers

    transformers.utils.logging.disable_progress_bar()  # our own bars own the terminal
    interrupted = (f"interrupted; finished rounds are checkpointed in {out}/ — rerun with "
                   "--resume to continue")
    with _command_errors(interrupted):
        if config is not None and preset is not None:
            raise _fail("give a config file or --preset, not both")
        if resume and overwrite:
            raise _fail("--resume and --overwrite contradict each other; pick one")
        cfg = load_config(config) if config is not None else load_preset(preset or "default")
        flags: dict[str, Any] = {
            "federation.rounds": rounds,
            "federation.clients": clients,
            "seed": seed,
            "device": device,
            "model.name": model,
            "data.source": data,
            "data.text_field": text_field,
            "data.partition": partition or ("iid" if data is not None else None),
            "federation.dropout": dropout,
        }
        cfg = override(cfg, {key: value for key, value in flags.items() if value is not None})
        cfg = override_runs(cfg, protocol=protocol, dp=dp, epsilon=epsilon,
                            deterministic=dp_deterministic)
        from fedpriv.audits.runner import audit_engine, preflight

        run_audit = audit_engine(engine)

        preflight(cfg)  # run_audit checks again; here so bad input fails before any output
        header = (f"fedpriv audit '{cfg.name}': {len(cfg.runs)} run(s), "
                  f"{cfg.federation.rounds} rounds, {cfg.federation.clients} clients → {out}/")
        with _live_progress(not (quiet or as_json), header) as bars:
            report = run_audit(cfg, out, resume=resume, overwrite=overwrite,
                               progress=None if bars is None else _RichProgress(bars))
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    elif not quiet:
        out_console.print(_summary_table(report))
        out_console.print(f"report: {out / 'report.json'}, {out / 'report.md'}", highlight=False)
    for warning in guarantee_warnings(report):
        err_console.print(f"[bold yellow]warning:[/] {warning}", highlight=False)
    if any(r["status"] != "ok" for r in report["runs"]):
        raise typer.Exit(1)


def guarantee_warnings(report: dict[str, Any]) -> list[str]:
    """Lines on guarantees that do not hold as stated: seed-derived noise, audit violations."""
    from fedpriv.audits.report import CANARY_AUDITS

    lines = []
    for run in report["runs"]:
        privacy = run["privacy"]
        if str(privacy.get("randomness", "")).startswith("deterministic"):
            lines.append(f"run '{run['name']}': deterministic DP mode — its noise and sampling "
                         "follow the public seed in report.json, so ε = "
                         f"{privacy['epsilon']:.2f} holds only against someone who does not "
                         "know the seed")
        audit = run["leakage"].get("epsilon_audit") or {}
        if audit.get("violation"):
            lines.append(f"run '{run['name']}': the one-run audit's lower bound "
                         f"{audit['epsilon_lower_bound']:.2f} exceeds the stated ε "
                         f"{audit['reference_epsilon']:.2f} ({audit['relation']}): the DP "
                         "guarantee does not hold as stated")
        for key, what in CANARY_AUDITS.items():
            block = run["leakage"].get(key) or {}
            for name, obs in (block.get("observations") or {}).items():
                if obs.get("violation"):
                    bound = max(obs["epsilon_lower_bound"], obs["f_dp"]["epsilon_lower_bound"])
                    lines.append(f"run '{run['name']}': the {what} ({name}) bounds ε below by "
                                 f"{bound:.2f}, above the stated ε "
                                 f"{block['reference_epsilon']:.2f} ({block['relation']}): the "
                                 "DP guarantee does not hold as stated")
        if privacy.get("mutation"):
            lines.append(f"run '{run['name']}': mutation test — its noise was deliberately "
                         f"weakened ({privacy['mutation']}) while ε is still stated")
    return lines


@app.command(name="report")
def report_command(
    out: Annotated[Path, typer.Argument(help="An audit's output directory (holds report.json).")],
    redact: Annotated[
        bool, typer.Option("--redact/--no-redact",
                           help="Mask e-mail addresses and digits in the inversion texts.")
    ] = True,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the written paths as a JSON list.")
    ] = False,
) -> None:
    """Redraw OUT/report.md and the plots (frontier, ROC, inversion) from OUT/report.json."""
    import jsonschema

    from fedpriv.audits.plots import PLOT_FILES, write_plots
    from fedpriv.audits.report import validate_report, write_markdown

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    source = out / "report.json"
    if not out.is_dir():
        raise _fail(f"'{out}' is not a directory; give the --out directory of an audit")
    if not source.is_file():
        raise _fail(f"'{source}' does not exist; run `fedpriv audit --out {out}` first")
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
        validate_report(data)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _fail(f"cannot read '{source}': {err}") from None
    except jsonschema.ValidationError as err:
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        raise _fail(f"'{source}' is not a valid fedpriv report: {err.message} at {where}") \
            from None
    written = [write_markdown(out, data), *write_plots(data, out, redact=redact)]
    missing = [name for name in PLOT_FILES if out / name not in written]
    if as_json:
        sys.stdout.write(json.dumps([str(p) for p in written]) + "\n")
    else:
        for path in written:
            out_console.print(str(path), highlight=False, soft_wrap=True)
    if missing:
        err_console.print(f"[yellow]not drawn:[/] {', '.join(missing)} (see the warnings above)",
                          highlight=False)


class _RichSweepProgress(SweepProgress):
    """Draws a bar over the grid's cells and, below it, the bars of the running cell's runs."""

    def __init__(self, bars: Progress, total: int, done: int) -> None:
        self.bars = bars
        self.task = bars.add_task("cells", total=total, completed=done, ppl="")
        self.runs = _RichProgress(bars)

    def cell_started(self, cell: SweepCell, index: int, total: int) -> None:
        self.bars.update(self.task, description=f"cell {cell.label}")
        self.runs = _RichProgress(self.bars)

    def audit_progress(self, cell: SweepCell) -> AuditProgress:
        return self.runs

    def cell_finished(self, cell: SweepCell, record: dict[str, Any]) -> None:
        for task in self.runs.tasks.values():
            self.bars.remove_task(task)
        self.bars.update(self.task, advance=1)
        if record["status"] != "ok" and not record["runs"]:  # failed runs are shown already
            self.bars.console.print(f"[red]cell {cell.label} failed:[/] {record['error']}",
                                    highlight=False)


def _sweep_table(summary: dict[str, Any]) -> Table:
    from fedpriv.audits.report import summary_rows

    table = Table(title=f"fedpriv sweep — {summary['config_name']}", box=box.SIMPLE_HEAD)
    table.add_column("cell", overflow="fold")
    table.add_column("run", no_wrap=True)
    for title in ("ε", "ppl", "MIA AUC"):
        table.add_column(title, justify="right", no_wrap=True)
    for cell in summary["cells"]:
        rows = summary_rows({"runs": cell["runs"]})
        if not rows:
            table.add_row(cell["label"], "—", "—", "—", "—", style="red")
        for row in rows:
            table.add_row(cell["label"], row["run"], row["epsilon"], row["perplexity"],
                          row["mia_auc"], style=None if row["status"] == "ok" else "red")
    return table


@app.command()
def sweep(
    config: Annotated[Path, typer.Argument(help="Audit config (TOML) every cell starts from.")],
    grid: Annotated[
        Optional[list[str]],
        typer.Option("--grid", metavar="KEY=v1,v2",
                     help="A dotted config key and its values, e.g. federation.lr=1e-3,3e-3, "
                          "model.lora.rank=4,8, seed=0,1; runs.KEY sets every run: "
                          "runs.epsilon=1,3,8, runs.dp=none,sample, runs.protocol=plain,secagg+. "
                          "Repeat for more axes: every combination is one cell."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("fedpriv-sweep"),
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Run again the cells recorded as failed.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print sweep.json to stdout.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="Print nothing but errors.")] = False,
    engine: Annotated[
        str, typer.Option("--engine", help="How each cell's rounds are aggregated: 'inprocess' "
                          "(default) or 'flower' (Flower messages on a loopback grid).")
    ] = "inprocess",
) -> None:
    """Audit every combination of the --grid values; write OUT/sweep.json and frontier.png.

    Each cell is an audit in OUT/cells/<id>/.  A finished cell is appended to
    OUT/sweep.jsonl at once, so after Ctrl-C (exit 130) the same command skips
    the finished cells and runs the rest.
    """
    from fedpriv.audits.config import load_config
    from fedpriv.audits.sweep import (
        LEDGER_NAME,
        SUMMARY_NAME,
        parse_grid,
        prepare_sweep,
        run_sweep,
    )

    logging.basicConfig(level=logging.ERROR if quiet else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    ledger = out / LEDGER_NAME
    interrupted = (f"interrupted; the finished cells are kept in {ledger} — re-run the same "
                   "command to continue with the others")
    with _command_errors(interrupted):
        cfg = load_config(config)
        axes = parse_grid(grid or [])
        from fedpriv.audits.runner import audit_engine

        audit_engine(engine)  # an unknown engine fails before any cell runs
        import transformers

        transformers.utils.logging.disable_progress_bar()  # our own bars own the terminal
        plan = prepare_sweep(cfg, axes, out, retry_failed=retry_failed)
        skipped = len(plan.finished)
        if skipped and not quiet:
            err_console.print(f"skipping {skipped} finished cell{'' if skipped == 1 else 's'} "
                              f"(recorded in {ledger})", highlight=False)
        shape = " × ".join(f"{len(a.values)} {a.key}" for a in axes)
        header = (f"fedpriv sweep '{cfg.name}': {len(plan.cells)} cells ({shape}), "
                  f"{len(plan.pending)} to run → {out}/")
        with _live_progress(not (quiet or as_json), header) as bars:
            summary = run_sweep(plan, progress=None if bars is None else _RichSweepProgress(
                bars, total=len(plan.cells), done=skipped), engine=engine,
                stop=interrupt_requested)
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    elif not quiet:
        out_console.print(_sweep_table(summary))
        for cell in summary["cells"]:
            if cell["status"] != "ok":
                out_console.print(f"[red]cell {cell['label']} failed:[/] {cell['error']}",
                                  highlight=False)
        written = [out / SUMMARY_NAME, ledger]
        if summary["frontier"]:
            written.append(out / summary["frontier"])
        out_console.print(f"sweep: {', '.join(map(str, written))}", highlight=False)
    if any(cell["status"] != "ok" for cell in summary["cells"]):
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
    """List the aggregation protocols, their threat models and their measured cost per round."""
    from dataclasses import asdict

    from fedpriv.protocols import available, describe
    from fedpriv.protocols.costs import measured_cost

    infos = [describe(name) for name in available()]
    costs = {i.name: measured_cost(i.name) for i in infos}
    if as_json:
        entries = []
        for i in infos:
            cost = costs[i.name]
            entries.append({**asdict(i), "measured_cost": None if cost is None else cost.to_dict()})
        sys.stdout.write(json.dumps(entries, indent=2) + "\n")
        return
    table = Table(title="fedpriv protocols", caption="cost of one round in the last benchmark "
                  "run (n clients, L float32 coordinates): seconds of one client's and of the "
                  "server's protocol work, and bytes one client uploads (× a float32 upload)")
    for col in ("name", "threat model", "reveals individual updates", "dropouts"):
        table.add_column(col)
    for col in ("client s", "server s", "up / client"):
        table.add_column(col, justify="right")
    table.add_column("measured at")
    for i in infos:
        d = asdict(i)
        cost = costs[i.name]
        measured = ["—"] * 4 if cost is None else [
            f"{cost.client_s:.3g}", f"{cost.server_s:.3g}",
            f"{cost.bytes_up_per_client / 1e6:.1f} MB "
            f"({cost.bytes_up_per_client / (4 * cost.vector_size):.2f}×)",
            f"n={cost.clients}, L={cost.vector_size:,}; {Path(cost.source).name} {cost.date}",
        ]
        table.add_row(d["name"], d["threat_model"], str(d["reveals_individual_updates"]),
                      d["dropout_tolerance"], *measured)
    out_console.print(table)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
