"""``rlkit check``: can these clusters run rlkit's jobs?"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from rlkit.cli import options, output, results
from rlkit.errors import BadInputError, PartialFailureError

if TYPE_CHECKING:
    from rich.console import RenderableType

    from rlkit.jobs.check import ClusterCheck, NodeCheck

_COLUMNS = ("python", "ray", "torch", "gymnasium", "pettingzoo", "rlkit")


def check(
    names: list[str] | None = typer.Argument(None, metavar="NAMES...", show_default=False,
                                             help="Clusters to check (default: all)."),
    everything: bool = typer.Option(False, "--all", help="Check every registered cluster."),
    expect: list[str] = typer.Option([], "--expect", metavar="NAME=VERSION",
                                     help="Compare NAME (python, ray, torch, gymnasium, pettingzoo, rlkit) with "
                                          "VERSION instead of this machine's (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
    timeout: float = typer.Option(60.0, "--timeout", help="Seconds each cluster has to report.",
                                  callback=options.seconds),
) -> int:
    """Send one small job to each cluster, in parallel, that reports per node: Python, Ray, torch, gymnasium, pettingzoo and rlkit versions, CPUs, the CUDA devices torch can use, and whether a rollout actor gets scheduled.

    Versions are compared with this machine's (Python by minor version,
    torch without its +cpu/+cu build tag; rlkit only where a node has it
    installed, since jobs carry their own) or with --expect. A node also
    fails when torch sees fewer GPUs than Ray offers, or when an actor of a
    rollout actor's CPUs is not scheduled on it in time. Exit code 0 when
    every cluster passes, 3 when some cluster fails or cannot be reached.

    Examples:

        rlkit check

        rlkit check lab-a lab-b --json

        rlkit check --all --expect torch=2.13.0 --timeout 120
    """
    from rlkit.jobs.check import check_clusters, expected_versions, parse_expect
    from rlkit.jobs.client import quiet_client_logs

    if everything and names:
        raise BadInputError("--all and cluster names do not go together", "--all already takes every cluster")
    expected = expected_versions(parse_expect(expect))
    quiet_client_logs()
    if as_json:
        checks = check_clusters(names or None, expected=expected, timeout=timeout)
    else:
        with output.err_console.status("Checking clusters..."):
            checks = check_clusters(names or None, expected=expected, timeout=timeout)
    passed = all(c.ok for c in checks)
    if as_json:
        output.print_json({"ok": passed, "expected": expected,
                           "clusters": [_cluster_json(c) for c in checks]})
    else:
        output.console.print(_table(checks, expected))
        for c in checks:
            if c.ok:
                results.succeeded(c.cluster, f"passes ({len(c.nodes)} node(s))")
            else:
                results.failed(c.cluster, "; ".join(_problems(c)))
    return 0 if passed else PartialFailureError.exit_code


def _problems(check: ClusterCheck) -> list[str]:
    found = [check.error] if check.error else []
    return found + [f"{node.address}: {problem}" for node in check.nodes for problem in node.problems]


def _cluster_json(check: ClusterCheck) -> dict[str, object]:
    return {"cluster": check.cluster, "ok": check.ok, "error": check.error,
            "nodes": [{**vars(node), "ok": node.ok} for node in check.nodes]}


def _table(checks: list[ClusterCheck], expected: dict[str, str | None]) -> RenderableType:
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0))
    for column in ("CLUSTER", "NODE", *(c.upper() for c in _COLUMNS), "CPU", "GPU", "ACTOR", "CHECK"):
        table.add_column(column)
    for c in checks:
        if not c.nodes:
            table.add_row(c.cluster, *["-"] * (len(table.columns) - 3), Text("-"), Text("failed", style="red"))
        for node in c.nodes:
            table.add_row(c.cluster, node.address + (" (head)" if node.head else ""),
                          *(_version_cell(node, name) for name in _COLUMNS),
                          f"{node.cpus:g}", _gpu_cell(node), Text(node.actor, style="" if node.actor == "ok" else "yellow"),
                          Text("ok", style="green") if node.ok else Text("failed", style="red"))
    wanted = " · ".join(f"{name} {version or 'not installed'}" for name, version in expected.items())
    return Group(Text(f"expected: {wanted}", style="dim"), table)


def _version_cell(node: NodeCheck, name: str) -> RenderableType:
    from rich.text import Text

    return Text(node.versions.get(name) or "-", style="bold red" if name in node.mismatched else "")


def _gpu_cell(node: NodeCheck) -> str:
    if not node.cuda_devices:
        return "none" if not node.gpus else f"{node.gpus:g} in Ray, none in torch"
    counts: dict[str, int] = {}
    for device in node.cuda_devices:
        counts[device] = counts.get(device, 0) + 1
    return ", ".join(f"{n}× {device}" for device, n in counts.items())


def register(app: typer.Typer) -> None:
    app.command("check")(check)
