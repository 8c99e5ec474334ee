"""``rlkit status``: clusters, jobs and sweeps, live."""

from __future__ import annotations

import signal
import threading
import time
from typing import TYPE_CHECKING

import typer

from rlkit.cli import options, output
from rlkit.errors import BadInputError

if TYPE_CHECKING:
    from rich.console import RenderableType

    from rlkit.clusters.status import ClusterStatus
    from rlkit.views.status import StatusReport

_STATE_STYLE = {"UP": "green", "STARTING": "yellow", "STOPPED": "yellow"}
_SWEEP_STYLE = {"running": "cyan", "finished": "green", "interrupted": "yellow", "unknown": "dim"}
_TRIAL_WORD = {"TERMINATED": "done", "RUNNING": "running", "PENDING": "pending", "PAUSED": "paused", "ERROR": "failed"}
_JOB_STYLE = {"SUCCEEDED": "green", "RUNNING": "cyan", "PENDING": "yellow", "STOPPED": "yellow"}


def status(
    names: list[str] | None = typer.Argument(None, help="Clusters to show (default: all)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    watch: bool = typer.Option(False, "--watch", "-w", help="Refresh until Ctrl-C."),
    interval: float = typer.Option(2.0, "--interval", help="Seconds between refreshes with --watch.", callback=options.seconds),
    timeout: float = typer.Option(3.0, "--timeout", help="Seconds to wait for each cluster's answer.", callback=options.seconds),
    all_jobs: bool = typer.Option(False, "--all-jobs", help="List every job, not only those rlkit submitted."),
) -> int:
    """Show every registered cluster: state, nodes, CPUs and GPUs used/total, Ray version, token auth; then their jobs and the sweeps rlkit knows of.

    Clusters are asked in parallel: a dead one costs at most --timeout.
    Exit code 0 when all shown clusters are UP, 1 when none is (2 when the
    address is wrong or a token missing), 3 when some are.

    Examples:

        rlkit status

        rlkit status lab-a lab-b --json

        rlkit status --all-jobs
    """
    from rlkit.views.status import collect_status

    if watch and as_json:
        raise BadInputError("--watch and --json do not go together", "run `rlkit status --json` in a loop instead")
    if watch:
        return _watch(names, interval, timeout, all_jobs)
    report = collect_status(names or None, timeout, all_jobs)
    if as_json:
        output.print_json(report.to_dict())
    else:
        output.console.print(render(report))
    return _exit_code(report.clusters)


def render(report: StatusReport) -> RenderableType:
    """The report as rich renderables, one section after another."""
    from rich.console import Group

    from rlkit import paths

    if not report.clusters:
        return Group(f"No clusters in {paths.address_file()}. Start one with `rlkit launch local`.",
                     *_sweeps_section(report))
    return Group(_clusters_table(report.clusters), *_notes(report.clusters), *_jobs_section(report),
                 *_sweeps_section(report))


def _clusters_table(statuses: list[ClusterStatus]) -> RenderableType:
    from rich import box
    from rich.table import Table

    # No borders and two spaces apart, so that a row fits 80 columns.
    table = Table(title="Clusters", title_justify="left", title_style="bold", box=box.SIMPLE_HEAD,
                  show_edge=False, padding=(0, 1, 0, 0))
    for column in ("NAME", "PROVIDER", "ADDRESS", "STATE", "NODES", "CPU", "GPU", "RAY", "AUTH"):
        # On a narrow terminal the address gives way, not the short columns.
        table.add_column(column, no_wrap=True, min_width=None if column == "ADDRESS" else len(column))
    for s in statuses:
        auth = "-" if s.token_auth is None else ("token" if s.token_auth else "[yellow]off[/]")
        table.add_row(
            s.name, s.provider, s.dashboard_url.removeprefix("http://"),
            f"[{_STATE_STYLE.get(s.state, 'red')}]{s.state}[/]",
            _number(s.nodes_alive), _used_total(s.cpus_used, s.cpus_total), _used_total(s.gpus_used, s.gpus_total),
            s.ray_version or "-", auth,
        )
    return table


def _notes(statuses: list[ClusterStatus]) -> list[RenderableType]:
    from rich.text import Text

    notes = [Text.assemble((s.name, "red"), ": ", s.detail) for s in statuses if s.detail]
    # A KubeRay cluster's Kubernetes view, beside its Ray view in the table.
    notes += [Text.assemble((s.name, "cyan"), ": ", s.kube.get("summary") or f"kubernetes: {s.kube.get('error')}")
              for s in statuses if s.kube]
    notes += [Text.assemble((s.name, "yellow"), ": ", s.warning) for s in statuses if s.warning]
    return notes


def _jobs_section(report: StatusReport) -> list[RenderableType]:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    notes: list[RenderableType] = [Text.assemble((name, "red"), ": jobs not listed: ", why)
                                   for name, why in report.job_errors.items()]
    if not report.jobs:
        return [Text("\nNo jobs submitted by rlkit (--all-jobs lists every job).", style="dim"), *notes]
    table = Table(title="Jobs", title_justify="left", title_style="bold", box=box.SIMPLE_HEAD,
                  show_edge=False, padding=(0, 1, 0, 0))
    for column in ("CLUSTER", "SUBMISSION ID", "NAME", "STATUS", "START", "DURATION", "ENTRYPOINT"):
        table.add_column(column, no_wrap=column != "ENTRYPOINT", min_width=len(column))
    for job in report.jobs:
        table.add_row(job.cluster, job.id, job.name, f"[{_JOB_STYLE.get(job.status, 'red')}]{job.status}[/]",
                      _clock(job.start_time), _duration(job.duration_s),
                      # Cut short at the edge of the screen rather than wrapped.
                      Text(job.entrypoint, no_wrap=True, overflow="ellipsis"))
    return [Text(""), table, *notes]


def _sweeps_section(report: StatusReport) -> list[RenderableType]:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    if not report.sweeps:
        return []
    table = Table(title="Sweeps", title_justify="left", title_style="bold", box=box.SIMPLE_HEAD,
                  show_edge=False, padding=(0, 1, 0, 0))
    rows = []
    for s in report.sweeps:
        trials = " ".join(f"{n} {_TRIAL_WORD.get(state, state.lower())}" for state, n in sorted(s.trials.items()))
        best = "-" if s.best_metric is None else f"{s.best_metric:.4g} ({s.best_trial})"
        rows.append((s.name, s.cluster, s.state, trials or "-", best, s.started.replace("T", " ")[5:16]))
    for i, column in enumerate(("NAME", "CLUSTER", "STATE", "TRIALS", "BEST", "STARTED")):
        # On a narrow terminal the path gives way, not these.
        table.add_column(column, no_wrap=True, min_width=max(len(column), *(len(r[i]) for r in rows)))
    table.add_column("PATH", no_wrap=True, overflow="ellipsis")
    for row, sweep in zip(rows, report.sweeps):
        state = f"[{_SWEEP_STYLE.get(row[2], 'red')}]{row[2]}[/]"
        table.add_row(*row[:2], state, *row[3:], sweep.path)
    return [Text(""), table]


def _clock(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    when = time.localtime(epoch)
    return time.strftime("%H:%M:%S" if when[:3] == time.localtime()[:3] else "%Y-%m-%d %H:%M", when)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else (f"{minutes}m{secs:02d}s" if minutes else f"{secs}s")


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _used_total(used: float | None, total: float | None) -> str:
    if total is None:
        return "-"
    return f"{'?' if used is None else f'{used:g}'}/{total:g}"


def _exit_code(statuses: list[ClusterStatus]) -> int:
    down = [s for s in statuses if not s.is_up]
    if not down:
        return 0
    if len(down) < len(statuses):
        return 3
    return BadInputError.exit_code if all(s.input_error for s in down) else 1


def _watch(names: list[str] | None, interval: float, timeout: float, all_jobs: bool) -> int:
    from rich.live import Live

    from rlkit.views.status import collect_status

    # Ctrl-C sets a flag rather than raising: a KeyboardInterrupt that lands in a weakref
    # callback or a __del__ (the status threads' clean-up) is printed and dropped by Python,
    # and the watch went on forever. A shell that ignores SIGINT (a background job) keeps it so.
    stop = threading.Event()
    previous = signal.getsignal(signal.SIGINT)
    if previous is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, lambda _signum, _frame: stop.set())
    try:
        with Live(console=output.console, auto_refresh=False) as live:
            while not stop.is_set():
                live.update(render(collect_status(names or None, timeout, all_jobs)), refresh=True)
                stop.wait(interval)
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)
    return 0


def register(app: typer.Typer) -> None:
    app.command("status")(status)
