"""``rlkit launch onprem``: a Ray head and workers on machines reached over SSH."""

from __future__ import annotations

from pathlib import Path

import typer

from rlkit.cli import options, output, results
from rlkit.clusters.onprem import DEFAULT_TEMPLATE


def onprem(
    head: str = typer.Option(..., "--head", help="Host (IP or name) that runs the Ray head."),
    workers: str = typer.Option("", "--workers", help="Worker hosts, comma-separated."),
    ssh_user: str = typer.Option(..., "--ssh-user", help="User that rlkit and Ray log in as on every host."),
    ssh_key: Path = typer.Option(..., "--ssh-key", help="Private key of that user (no passphrase prompt)."),
    name: str = typer.Option("onprem", "--name", "-n", help="Cluster name."),
    config: Path = typer.Option(DEFAULT_TEMPLATE, "--config", help="Cluster template (node commands, in ray up's format)."),
    timeout: float = typer.Option(180.0, "--timeout", help="Seconds to wait for every node to join after its ray start.",
                                  callback=options.seconds),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the rendered config; start nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print the registered record as JSON."),
) -> int:
    """Start Ray on your own machines over SSH, token auth on, the dashboard behind an SSH tunnel.

    Every host must accept SSH logins with the key, and have `ray` (the same
    version as here) on PATH in a login shell. Host keys are checked against
    ~/.ssh/known_hosts and $RLKIT_HOME/known_hosts; a host in neither is
    trusted on first use and its fingerprint shown. The token is made per
    cluster, stored 0600 under $RLKIT_HOME/tokens, copied to the nodes over
    SSH, never printed.

    Examples:

        rlkit launch onprem --head 10.0.0.5 --workers 10.0.0.6,10.0.0.7 --ssh-user ray --ssh-key ~/.ssh/id_ed25519

        rlkit launch onprem --head 10.0.0.5 --ssh-user ray --ssh-key ~/.ssh/id_ed25519 --dry-run
    """
    from rlkit.clusters import onprem as provider

    spec = provider.OnPremSpec(
        name=name,
        head=head,
        ssh_user=ssh_user,
        ssh_key=ssh_key,
        workers=tuple(w.strip() for w in workers.split(",") if w.strip()),
        template=config,
    )
    if dry_run:
        if as_json:
            output.print_json(provider.render_onprem_config(spec, provider.MARKER_AT_LAUNCH))
        else:
            output.note("Dry run: nothing is started. The config rlkit would run:")
            output.console.print("\n".join(provider.provider.plan(spec)), markup=False, highlight=False)
        return 0

    with output.err_console.status(f"{name}: starting") as status:
        launched = provider.launch_onprem(
            spec, lambda n, stage: status.update(f"{n}: {stage}"), output.note, join_timeout_s=timeout
        )
    record = launched.record
    if as_json:
        output.print_json({**record.to_dict(), "nodes_alive": launched.nodes_alive})
        return 0
    state = "already up: nothing started" if launched.already_up else "up"
    results.succeeded(name, f"{state} at {record.dashboard_url}, {launched.nodes_alive} nodes alive")
    output.console.print("\n[bold]Next steps[/]")
    for line in (f"rlkit submit {name} -- python train.py", "rlkit status", f"rlkit teardown {name}"):
        output.console.print(f"  {line}", markup=False, highlight=False)
    return 0


def register(launch_app: typer.Typer) -> None:
    """Add ``onprem`` to the ``rlkit launch`` sub-app."""
    launch_app.command("onprem")(onprem)
