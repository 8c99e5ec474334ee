"""``rlkit env NAME``: shell exports for Ray's own CLI and scripts."""

from __future__ import annotations

import sys

import typer

from rlkit.cli import output


def env(
    name: str = typer.Argument(..., help="The cluster to point Ray's CLI at."),
    as_json: bool = typer.Option(False, "--json", help="Print the variables as JSON (null: unset)."),
) -> int:
    """Print the shell exports with which Ray's own CLI and scripts reach one cluster.

    RAY_ADDRESS (the GCS, for ray.init and ray status), RAY_API_SERVER_ADDRESS
    (the dashboard, for ray job), RAY_AUTH_MODE and RAY_AUTH_TOKEN_PATH. The
    token itself is never printed: only the path of its 0600 file.

    Examples:

        eval "$(rlkit env lab-a)"; ray job submit -- python x.py

        eval "$(rlkit env lab-a)"; python -c "import ray; ray.init(); print(ray.cluster_resources())"
    """
    from rlkit.clusters.registry import get_cluster
    from rlkit.clusters.shell import export_lines, ray_environment

    variables = ray_environment(get_cluster(name))
    if as_json:
        output.print_json(variables)
    else:
        sys.stdout.write(export_lines(variables))
    return 0


def register(app: typer.Typer) -> None:
    app.command("env")(env)
