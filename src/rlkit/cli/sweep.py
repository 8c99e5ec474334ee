"""``rlkit sweep``: Ray Tune hyperparameter sweeps over rlkit training."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from rlkit.cli import output
from rlkit.errors import BadInputError

if TYPE_CHECKING:
    from rich.console import RenderableType

    from rlkit.sweep.run import SweepPlan, SweepResult
    from rlkit.sweep.state import SweepProgress

_STATUS_STYLE = {"RUNNING": "cyan", "TERMINATED": "green", "ERROR": "red", "PAUSED": "yellow", "PENDING": "dim"}


def sweep(
    sweep_files: Optional[list[Path]] = typer.Argument(None, help="Sweep file(s) (configs/sweeps/*.yaml)."),
    set_: list[str] = typer.Option([], "--set", help="Override a sweep key (--set num_samples=4) or a base config key (--set base.stop.total_steps=20000); repeatable."),
    cluster: list[str] = typer.Option([], "--cluster", "-c", help="Run the sweep driver as a job on this cluster (repeatable)."),
    all_: bool = typer.Option(False, "--all", help="Run on every registered cluster."),
    include: list[str] = typer.Option([], "--include", metavar="PATTERN",
                                      help="With --cluster: send files that match PATTERN even if they look like secrets (repeatable)."),
    name: Optional[str] = typer.Option(None, "--name", help="Sweep name (default: the sweep file's name)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue this interrupted sweep directory."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and show what would run; start nothing."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No live table."),
    json_: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> int:
    """Run a Ray Tune hyperparameter sweep over rlkit training.

    Each trial is rlkit's training loop reporting to Tune every iteration;
    ASHA stops bad trials early, PBT clones and perturbs good ones. At the
    end the best trial's config is written as a ready-to-train YAML.

    Examples:

        rlkit sweep configs/sweeps/ppo_cartpole_asha.yaml --set num_samples=4

        rlkit sweep configs/sweeps/ppo_cartpole_pbt.yaml --cluster lab-a

        rlkit sweep --resume runs/sweeps/ppo_cartpole_asha-20261123-101500
    """
    # Before Ray is imported: an embedded sweep's Ray listens on loopback alone, as rlkit train's does.
    from rlkit.train.session import prepare_process

    prepare_process(None)
    files = list(sweep_files or [])
    overrides = list(set_) + ([f"name={name}"] if name is not None else [])
    if resume is not None:
        from rlkit.sweep.run import check_resumable

        if files or cluster or all_:
            raise BadInputError("--resume takes no sweep file and no --cluster", "rlkit sweep --resume SWEEP_DIR")
        check_resumable(resume, overrides)
        return _run_local(None, resume, dry_run, quiet, json_)
    if not files:
        raise BadInputError("missing SWEEP_FILE", "e.g. rlkit sweep configs/sweeps/ppo_cartpole_asha.yaml")
    if include and not (cluster or all_):
        raise BadInputError("--include goes with --cluster or --all: a local sweep ships no working dir",
                            "drop --include, or send the sweep with --cluster NAME")
    if cluster or all_:
        return _run_on_clusters(files, overrides, cluster, all_, include, dry_run, json_)
    if len(files) > 1:
        raise BadInputError(f"{len(files)} sweep files but no clusters: locally, one sweep runs at a time",
                            "pass one file, or pair several with --cluster A --cluster B")
    from rlkit.sweep.spec import load_sweep

    return _run_local(load_sweep(files[0], overrides), None, dry_run, quiet, json_)


def _run_local(spec: Any, resume: Path | None, dry_run: bool, quiet: bool, json_: bool) -> int:
    import os

    from rich.live import Live

    from rlkit.sweep.remote import JOB_ENV
    from rlkit.sweep.run import plan_sweep, resume_sweep, run_sweep

    if dry_run:
        if resume is not None:
            raise BadInputError("--dry-run does not go with --resume")
        plan = plan_sweep(spec)
        if json_:
            output.print_json(plan.to_dict())
        else:
            output.console.print(render_plan(plan))
        return 0
    # Transient: the summary table that follows replaces it.
    live = None if quiet else Live(console=output.err_console, auto_refresh=False, transient=True)

    def show(progress: SweepProgress) -> None:
        if live is not None:
            live.update(render_progress(progress), refresh=True)

    register = JOB_ENV not in os.environ
    if live is not None:
        live.start()
    try:
        if resume is not None:
            result = resume_sweep(resume, on_progress=show, register=register)
        else:
            result = run_sweep(spec, on_progress=show, register=register)
    finally:
        if live is not None:
            live.stop()
    return report(result, json_)


def report(result: SweepResult, json_: bool) -> int:
    """Print the result; the exit code: 0 finished, 1 no trial finished, 130 interrupted."""
    if json_:
        output.print_json(result.to_dict())
    else:
        table, lines = render_result(result)
        output.console.print(table)
        for line in lines:
            output.console.print(line, markup=False, highlight=False, soft_wrap=True)
    if result.state == "interrupted":
        output.note(f"interrupted: continue with rlkit sweep --resume {result.path}")
        return 130
    return 1 if result.state == "failed" else 0


def _run_on_clusters(files: list[Path], overrides: list[str], cluster: list[str], all_: bool,
                     include: list[str], dry_run: bool, json_: bool) -> int:
    from dataclasses import asdict

    from rlkit.cli import results
    from rlkit.sweep.remote import submit_sweeps

    if all_ and cluster:
        raise BadInputError("--all and --cluster do not go together", "--all already takes every cluster")
    sweeps = submit_sweeps(files, overrides, cluster or None, broadcast=all_, dry_run=dry_run,
                           include=tuple(include), notice=output.note)
    if json_:
        output.print_json([asdict(s) for s in sweeps])
    for sweep in sweeps:
        if not json_:
            line = f"{sweep.name} as job {sweep.submission_id}: sweep directory under {sweep.storage}"
            if dry_run:
                output.console.print(f"[bold]{sweep.cluster}[/] would run: {sweep.entrypoint}", highlight=False)
            elif sweep.ok:
                results.succeeded(sweep.cluster, line)
        if not sweep.ok:
            results.failed(sweep.cluster, sweep.error or "")
    accepted = [s for s in sweeps if s.ok and not dry_run]
    if accepted and not json_:
        output.note(f"follow: rlkit logs {accepted[0].submission_id} --follow   |   progress: rlkit status")
    errors = [None if s.ok else (BadInputError if s.input_error else RuntimeError)(s.error) for s in sweeps]
    return results.exit_code(errors)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def _short(keys: list[str]) -> dict[str, str]:
    """Column headers: a key's last part (algo.lr -> lr) unless two keys share it."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (tail if last.count(tail) == 1 else k) for k, tail in zip(keys, last)}


def _trials_table(rows: list[Any], metric: str, keys: list[str], title: str, notes: bool = False) -> RenderableType:
    from rich import box
    from rich.table import Table

    table = Table(title=title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD,
                  show_edge=False, padding=(0, 1, 0, 0))
    cells = []
    for row in rows:
        iteration = getattr(row, "iteration", None)
        cells.append([row.trial_id, row.status, str(row.iterations if iteration is None else iteration),
                      f"{row.global_step:,}", _fmt(row.metric), *(_fmt(row.params.get(k)) for k in keys),
                      str(row.failures)] + ([_note(row)] if notes else []))
    headers = ["TRIAL", "STATE", "ITER", "STEPS", metric.rsplit("/", 1)[-1].upper(), *_short(keys).values(), "FAIL"]
    for i, header in enumerate(headers):
        # The trial, its state and its score never give way on a narrow terminal.
        fixed = max([len(header), *(len(c[i]) for c in cells)]) if i < 5 else None
        table.add_column(header, no_wrap=True, min_width=fixed, justify="right" if header in ("ITER", "STEPS", "FAIL") else "left")
    if notes:
        table.add_column("NOTE", overflow="fold")
    for row_cells in cells:
        status = row_cells[1]
        row_cells[1] = f"[{_STATUS_STYLE.get(status, 'white')}]{status}[/]"
        table.add_row(*row_cells)
    return table


def _note(trial: Any) -> str:
    if trial.error:
        return trial.error
    parts = []
    if trial.stopped_early:
        parts.append("stopped early")
    if trial.cloned_from:
        parts.append(f"cloned from {', '.join(trial.cloned_from)}")
    return "; ".join(parts)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {state.lower()}" for state, n in sorted(counts.items())) or "no trials yet"


def _keys(params_rows: list[Any]) -> list[str]:
    return list(dict.fromkeys(k for row in params_rows for k in row.params))


def render_progress(progress: SweepProgress) -> RenderableType:
    best = progress.best()
    best_text = "-" if best is None else f"{best.metric:.4g} ({best.trial_id})"
    title = f"sweep {progress.name}: {_counts(progress.counts())}; best {progress.metric} {best_text}"
    return _trials_table(progress.trials, progress.metric, _keys(progress.trials), title)


def render_result(result: SweepResult) -> tuple[RenderableType, list[str]]:
    """The trials table, and the lines after it (paths: printed unwrapped, to copy)."""
    title = f"sweep {result.name} {result.state} in {result.wall_s:.0f} s: {_counts(result.counts())}"
    lines = []
    if result.best_trial is not None:
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in result.best_params.items())
        lines.append(f"best {result.best_trial}: {result.metric} = {_fmt(result.best_metric)}"
                     + (f" ({params})" if params else ""))
        lines.append(f"best config: {result.best_config}   (rlkit train {result.best_config})")
        lines.append(f"checkpoint:  {result.best_checkpoint or '-'}   (rlkit eval CHECKPOINT)")
    lines.append(f"sweep:       {result.path}   (tensorboard --logdir {result.path})")
    return _trials_table(result.trials, result.metric, _keys(result.trials), title, notes=True), lines


def render_plan(plan: SweepPlan) -> RenderableType:
    from rich.console import Group
    from rich.text import Text

    bundles = " + ".join("{" + ", ".join(f"{k}: {v:g}" for k, v in b.items()) + "}" for b in plan.bundles)
    lines = [
        f"sweep {plan.name}: {plan.trials} trial(s), {plan.search} search, scheduler {plan.scheduler}, "
        f"{plan.mode} {plan.metric}",
        f"per trial: {bundles} ({plan.placement}); at most {plan.max_concurrent_trials or 'as many as fit'} at once; "
        f"{plan.max_failures} retr{'y' if plan.max_failures == 1 else 'ies'} per trial",
        *(f"  {k}: {v}" for k, v in plan.space.items()),
        f"would write {plan.sweep_dir}",
    ]
    return Group(*(Text(line) for line in lines))


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep)
