"""``rlkit launch``: start Ray clusters and register them by name.

One subcommand per provider (``local`` here; ``onprem`` and ``kuberay`` join the same app).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from rlkit.cli import options, output, results

if TYPE_CHECKING:
    from rlkit.clusters.launching import LaunchOutcome
    from rlkit.clusters.local import LocalSpec
    from rlkit.clusters.parallel import Outcome

launch_app = typer.Typer(
    name="launch",
    help="Start Ray clusters and register them by name in ~/.ray_address.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


@launch_app.command("local")
def local(
    name: str = typer.Option("local", "--name", "-n", help="Cluster name; with --num-clusters N, NAME-1 ... NAME-N."),
    num_clusters: int = typer.Option(1, "--num-clusters", "-N", max=64,
                                      help="How many independent heads to start (at most 64)."),
    cpus: int | None = typer.Option(None, "--cpus", help="CPUs each head offers (default: all of this machine's).",
                               callback=options.resource),
    gpus: int | None = typer.Option(None, "--gpus", help="GPUs each head offers (default: those Ray detects).",
                               callback=options.resource),
    host: str = typer.Option("127.0.0.1", "--host", help="Address the dashboard listens on; 0.0.0.0 exposes it."),
    no_token: bool = typer.Option(False, "--no-token", help="Turn Ray's token authentication off (not advised)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would be started; start nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print the registered records as JSON."),
) -> int:
    """Start local Ray heads on this machine, each with its own ports, temp dir and token.

    A name that is already up is left as it is. Tokens are stored 0600 under
    $RLKIT_HOME/tokens and never printed.

    Examples:

        rlkit launch local --name dev --cpus 2

        rlkit launch local --name lab --num-clusters 2 --dry-run
    """
    from rlkit.clusters import launching
    from rlkit.clusters import local as provider

    specs = provider.specs_for(name, num_clusters, cpus, gpus, host, token_auth=not no_token)
    launching.check_names(provider.provider, specs)
    for spec in specs:
        if warning := spec.exposure_warning():
            results.warn(warning)
    if dry_run:
        return _dry_run(specs, as_json)
    outcomes = results.launch_with_progress(provider.provider, specs, provider.START_TIMEOUT_S)
    for spec, outcome in zip(specs, outcomes):
        if outcome.value is None:
            results.failed(spec.name, str(outcome.error))
    if as_json:
        output.print_json([o.value.record.to_dict() for o in outcomes if o.value is not None])
    else:
        _report(specs, outcomes)
    return results.exit_code([o.error for o in outcomes])


def _dry_run(specs: list[LocalSpec], as_json: bool) -> int:
    from rlkit.clusters import local as provider

    if as_json:
        plans = [provider.ray_start_plan(spec) for spec in specs]
        output.print_json([
            {"name": p.spec.name, "dashboard_url": p.dashboard_url, "ports": p.ports, "temp_dir": p.temp_dir,
             "command": p.command, "env": p.env, "token_auth": p.spec.token_auth}
            for p in plans
        ])
        return 0
    output.console.print("[bold]Dry run[/]: nothing is started. Ports are chosen again at launch.")
    for spec in specs:
        output.console.print()
        for line in provider.provider.plan(spec):
            output.console.print(line, markup=False, highlight=False, soft_wrap=True)
    return 0


def _report(specs: list[LocalSpec], outcomes: list[Outcome[LaunchOutcome]]) -> None:
    up = []
    for spec, outcome in zip(specs, outcomes):
        if outcome.value is not None:
            up.append(spec.name)
            state = "already up: nothing started" if outcome.value.already_up else "up"
            results.succeeded(spec.name, f"{state} at {outcome.value.record.dashboard_url}")
    if up:
        first = up[0]
        output.console.print("\n[bold]Next steps[/]")
        output.console.print(f"  rlkit submit --cluster {first} -- python train.py     # send a job", markup=False)
        output.console.print(f'  eval "$(rlkit env {first})"; ray job submit -- python x.py   # Ray\'s own CLI',
                             markup=False)
        output.console.print("  rlkit status                               # health and resources", markup=False)
        output.console.print(f"  rlkit teardown {' '.join(up)}", markup=False)


def register(app: typer.Typer) -> None:
    from rlkit.cli import launch_kuberay, launch_onprem

    launch_onprem.register(launch_app)
    launch_kuberay.register(launch_app)
    app.add_typer(launch_app, name="launch")
