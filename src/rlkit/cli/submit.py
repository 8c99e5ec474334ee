"""``rlkit submit``: send training jobs to one or several clusters at once."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from rlkit.cli import options, output, results
from rlkit.errors import BadInputError

if TYPE_CHECKING:
    from rich.console import RenderableType
    from rich.table import Table

    from rlkit.jobs import JobOutcome, JobRef, SubmissionPlan, SubmitResult
    from rlkit.jobs.package import Shipment


def submit(
    jobs: list[str] | None = typer.Argument(
        None, metavar="JOBS...", show_default=False,
        help="After --, one entrypoint word by word; or quoted entrypoints, one job each; or job spec YAML files.",
    ),
    clusters: list[str] = typer.Option([], "--cluster", "-c", help="Cluster to use (repeatable; default: all, in file order)."),
    everything: bool = typer.Option(False, "--all", help="Send every job to every cluster."),
    working_dir: Path = typer.Option(Path("."), "--working-dir", "-w", help="Directory that travels as the job's working dir."),
    include: list[str] = typer.Option([], "--include", metavar="PATTERN",
                                      help="Send files that match PATTERN although they look like secrets (repeatable)."),
    name: str | None = typer.Option(None, "--name", help="Job name (default: the run's name, or the script's)."),
    cpus: float | None = typer.Option(None, "--cpus", help="CPUs reserved for the job's driver (the learner).", callback=options.resource),
    gpus: float | None = typer.Option(None, "--gpus", help="GPUs reserved for the job's driver (the learner).", callback=options.resource),
    env: list[str] = typer.Option([], "--env", "-e", help="Environment variable for the job: KEY=VALUE (repeatable)."),
    runs_dir: str | None = typer.Option(None, "--runs-dir", help="Absolute directory on the clusters for run directories."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Stream the jobs' logs until they end."),
    fetch: bool = typer.Option(False, "--fetch", help="With --follow: then fetch the jobs' runs into runs/ (as `rlkit fetch`)."),
    as_json: bool = typer.Option(False, "--json", help="Print the submissions as JSON."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would be sent; send nothing."),
    timeout: float = typer.Option(60.0, "--timeout", help="Seconds each cluster has to take its jobs.", callback=options.seconds),
) -> int:
    """Send jobs to Ray clusters through Ray's Job Submission API, in parallel.

    Jobs pair with clusters in the order of ~/.ray_address; more jobs than
    clusters go round-robin; --all sends every job to every cluster. The
    working dir travels with each job (.git, virtual environments, runs/
    and caches excluded, .gitignore honoured; files that look like secrets,
    such as .env, id_rsa, *.pem and .ssh/, stay home unless --include names
    them), and so does rlkit: a leading `rlkit` runs as `python -m rlkit`.
    Exit code 3 when some clusters failed.

    Examples:

        rlkit submit -- rlkit train configs/ppo_cartpole.yaml --set stop.total_steps=100000

        rlkit submit "rlkit train configs/ppo_cartpole.yaml" "rlkit train configs/grpo_cartpole.yaml" --follow

        rlkit submit --all jobs.yaml

        rlkit submit --follow --fetch -- rlkit train configs/ppo_cartpole.yaml
    """
    from rlkit.jobs import package, plan_submissions, submit_plan
    from rlkit.jobs.client import quiet_client_logs
    from rlkit.jobs.spec import parse_env, specs_from_args, with_defaults

    if everything and clusters:
        raise BadInputError("--all and --cluster do not go together", "--all already takes every cluster")
    if follow and as_json:
        raise BadInputError("--follow and --json do not go together")
    if fetch and not follow:
        raise BadInputError("--fetch needs --follow", "it fetches each job once it ends: rlkit submit --follow --fetch ...")
    defaults = {"name": name, "cpus": cpus, "gpus": gpus, "env": parse_env(env)}
    specs = [with_defaults(spec, **defaults) for spec in specs_from_args(list(jobs or []))]
    plan = plan_submissions(specs, clusters or None, broadcast=everything, working_dir=working_dir, runs_dir=runs_dir)
    quiet_client_logs()
    with package.packed(plan.working_dir, tuple(include)) as shipment:
        if shipment.left_out:
            output.note(package.left_out_note(shipment.left_out))
        if dry_run:
            return _dry_run(plan, shipment, as_json)
        if not as_json:
            output.console.print(_plan_table(plan, shipment))
        with output.err_console.status(f"Submitting to {len({a.cluster.name for a in plan.assignments})} cluster(s)..."):
            submitted = submit_plan(plan, shipment, timeout)
    for result in submitted:
        if not result.ok:
            results.failed(result.cluster, result.error or "")
    errors = [None if r.ok else (BadInputError if r.input_error else RuntimeError)(r.error) for r in submitted]
    code = results.exit_code(errors)
    if as_json:
        output.print_json([vars(r) for r in submitted])
        return code
    accepted = [r for r in submitted if r.ok]
    if accepted:
        output.console.print(_results_table(accepted))
    if follow and accepted:
        return _follow(accepted, code, fetch)
    if accepted:
        _next_steps(accepted)
    return code


def _plan_table(plan: SubmissionPlan, shipment: Shipment) -> RenderableType:
    from rich.console import Group
    from rich.text import Text

    from rlkit.jobs.package import describe_size

    table = _table(f"Assignment: {len(plan.assignments)} job(s)")
    for column in ("CLUSTER", "JOB", "ENTRYPOINT"):
        table.add_column(column, no_wrap=column != "ENTRYPOINT")
    for a in plan.assignments:
        table.add_row(a.cluster.name, a.job.name, Text(a.job.entrypoint))
    work, modules = shipment.working_dir, shipment.modules
    others = [name for name in shipment.module_names if name != "rlkit"]
    lines: list[RenderableType] = [table, Text(
        f"working dir {shipment.source}: {work.files} files, {describe_size(work.size)} packed; "
        f"rlkit travels with each job ({describe_size(modules.size)} with {', '.join(others)}): "
        "a leading `rlkit` runs as `python -m rlkit`", style="dim")]
    if plan.idle:
        lines.append(Text(f"no job for {', '.join(plan.idle)} (--all sends every job to every cluster)", style="dim"))
    return Group(*lines)


def _results_table(accepted: list[SubmitResult]) -> RenderableType:
    table = _table("Submitted")
    for column in ("CLUSTER", "JOB", "SUBMISSION ID", "RUNS DIR"):
        table.add_column(column, no_wrap=column != "RUNS DIR")
    for r in accepted:
        table.add_row(r.cluster, r.name, r.submission_id, r.runs_dir)
    return table


def _table(title: str) -> Table:
    from rich import box
    from rich.table import Table

    return Table(title=title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD,
                 show_edge=False, padding=(0, 1, 0, 0))


def _dry_run(plan: SubmissionPlan, shipment: Shipment, as_json: bool) -> int:
    if as_json:
        output.print_json({
            "working_dir": str(shipment.source), "packed_bytes": shipment.working_dir.size,
            "files": shipment.working_dir.files, "modules": shipment.module_names,
            "modules_bytes": shipment.modules.size, "left_out": shipment.left_out, "idle": plan.idle,
            "jobs": [{"cluster": a.cluster.name, "name": a.job.name, "submission_id": a.submission_id,
                      "entrypoint": a.job.entrypoint, "runs_dir": a.runs_dir, "env_vars": a.env_vars(),
                      "cpus": a.job.spec.cpus, "gpus": a.job.spec.gpus, "metadata": a.metadata()}
                     for a in plan.assignments],
        })
        return 0
    output.console.print("[bold]Dry run[/]: nothing is sent. Submission ids are drawn again at submission.")
    output.console.print(_plan_table(plan, shipment))
    for a in plan.assignments:
        output.console.print(f"\n[bold]{a.cluster.name}[/] {a.submission_id} at {a.cluster.dashboard_url}",
                             highlight=False)
        details = [("entrypoint", a.job.entrypoint), ("runs dir", a.runs_dir),
                   ("env", " ".join(f"{k}={v}" for k, v in a.env_vars().items()))]
        details += [(label, f"{value:g}") for label, value in (("cpus", a.job.spec.cpus), ("gpus", a.job.spec.gpus))
                    if value is not None]
        for label, value in details:
            output.console.print(f"  {label}: {value}", markup=False, highlight=False, soft_wrap=True)
    return 0


def _next_steps(accepted: list[SubmitResult]) -> None:
    first = accepted[0].submission_id
    ids = " ".join(r.submission_id for r in accepted)
    output.console.print("\n[bold]Next steps[/]")
    output.console.print(f"  rlkit logs {first} --follow     # stream a job's logs", markup=False)
    output.console.print("  rlkit status                 # clusters and jobs", markup=False)
    output.console.print(f"  rlkit stop {ids} -y", markup=False, soft_wrap=True)


def _follow(accepted: list[SubmitResult], submit_code: int, fetch: bool) -> int:
    from rlkit.cli.fetch import fetch_with_progress
    from rlkit.clusters.registry import get_cluster, select_clusters
    from rlkit.jobs.fetch import DEFAULT_DEST
    from rlkit.jobs import JobRef

    labels = [f"{r.cluster} {r.name}" for r in accepted]
    # A name repeated on one cluster (round-robin) is told apart by its id.
    labels = [f"{r.cluster} {r.submission_id}" if labels.count(label) > 1 else label
              for r, label in zip(accepted, labels)]
    refs = [JobRef(get_cluster(r.cluster), r.submission_id, label) for r, label in zip(accepted, labels)]
    outcomes = follow_with_prefixes(refs)
    if outcomes is None:
        return 130
    fetched = []
    if fetch:
        # A failed job's run (its metrics, its last checkpoint) is worth having too.
        clusters = select_clusters(list(dict.fromkeys(r.cluster for r in accepted)))
        fetched = fetch_with_progress([r.submission_id for r in accepted], DEFAULT_DEST, "latest", False, clusters)
    # A job that did not succeed is the worst outcome: the work failed.
    return 1 if any(not o.ok for o in outcomes) or any(not f.ok for f in fetched) else submit_code


def follow_with_prefixes(refs: list[JobRef]) -> list[JobOutcome] | None:
    """Stream ``refs``' logs, each line after its job's label, then one
    line per job saying how it ended; None when interrupted (Ctrl-C)."""
    from rlkit.jobs import follow

    width = max(len(ref.label) for ref in refs)
    styles = ("cyan", "magenta", "green", "yellow", "blue", "bright_cyan", "bright_magenta")
    style = {ref.label: styles[i % len(styles)] for i, ref in enumerate(refs)}

    def on_line(ref: JobRef, line: str) -> None:
        output.console.print(f"[{style[ref.label]}]{ref.label:<{width}}[/] │ ", end="", highlight=False)
        output.console.print(line, markup=False, highlight=False, soft_wrap=True)

    try:
        outcomes = follow(refs, on_line)
    except KeyboardInterrupt:
        output.note("Stopped following; the jobs run on (`rlkit stop ID` stops one).")
        return None
    for outcome in outcomes:
        (results.succeeded if outcome.ok else results.failed)(outcome.label, outcome.describe())
    return outcomes


def register(app: typer.Typer) -> None:
    app.command("submit")(submit)
