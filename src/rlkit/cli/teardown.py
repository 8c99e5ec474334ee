"""``rlkit teardown``: stop clusters that rlkit launched, and forget them."""

from __future__ import annotations

import sys

import typer

from rlkit.cli import output, results
from rlkit.errors import BadInputError


def teardown(
    names: list[str] | None = typer.Argument(None, help="Clusters to stop."),
    everything: bool = typer.Option(False, "--all", help="Stop every cluster that rlkit launched."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    keep_entry: bool = typer.Option(False, "--keep-entry", help="Keep the name registered (relaunch it later)."),
    force: bool = typer.Option(False, "--force", help="Stop the clusters' running rlkit jobs first, then the clusters."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> int:
    """Stop clusters that rlkit launched and remove their entries.

    A local cluster is stopped by its own processes only (never `ray stop`,
    which would stop every cluster on the machine); an on-prem one by its
    own processes on every node, and its SSH tunnel. Entries written by hand are never touched. A cluster that
    runs rlkit jobs is stopped only with --force, its jobs first. Several
    clusters stop in parallel; exit code 3 when some of them failed.

    Examples:

        rlkit teardown dev

        rlkit teardown --all -y
    """
    from rlkit.views.teardown import plan_teardown
    from rlkit.views.teardown import teardown as run_teardown

    items = plan_teardown(names or None, everything, force)
    if not items:
        output.note("No clusters launched by rlkit: nothing to stop.")
        if as_json:
            output.print_json([])
        return 0
    if not yes:
        if not sys.stdin.isatty():
            raise BadInputError("teardown asks for confirmation", "pass -y to stop without asking")
        output.err_console.print("[bold]This will stop:[/]")
        for item in items:
            output.err_console.print(f"  [bold]{item.cluster.name}[/]", highlight=False)
            for line in item.stops:
                output.err_console.print(f"    {line}", markup=False, highlight=False)
        if not typer.confirm("Proceed?", default=False, err=True):
            output.note("Nothing stopped.")
            return 0
    with output.err_console.status(f"Stopping {len(items)} cluster(s)..."):
        outcomes = run_teardown(items, keep_entry=keep_entry)
    for result in outcomes:
        if not result.ok:
            results.failed(result.name, result.message)
        elif not as_json:
            results.succeeded(result.name, result.message)
    if as_json:
        output.print_json([vars(r) for r in outcomes])
    return results.exit_code([None if r.ok else RuntimeError(r.message) for r in outcomes])


def register(app: typer.Typer) -> None:
    app.command("teardown")(teardown)
