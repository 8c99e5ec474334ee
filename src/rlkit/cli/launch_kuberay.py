"""``rlkit launch kuberay``: RayClusters on Kubernetes through the KubeRay operator."""

from __future__ import annotations

from pathlib import Path
import typer

from rlkit.cli import options, output, results


def kuberay(
    name: str = typer.Option("kuberay", "--name", "-n", help="Cluster name; with --num-clusters K, NAME-1 ... NAME-K."),
    num_clusters: int = typer.Option(1, "--num-clusters", "-N", min=1, max=64, help="How many RayClusters (at most 64)."),
    namespace: str | None = typer.Option(None, "--namespace", help="Namespace (default: the context's, else default)."),
    context: str | None = typer.Option(None, "--context", help="kubeconfig context (default: the current one)."),
    image: str | None = typer.Option(None, "--image", help="Ray image for head and workers (default: rayproject/ray "
                                     "of the Ray version installed here)."),
    workers: int = typer.Option(1, "--workers", min=0, max=1000, help="Worker pods per cluster."),
    worker_cpus: float = typer.Option(1.0, "--worker-cpus", help="CPUs of each worker pod.", callback=options.resource),
    worker_gpus: int = typer.Option(0, "--worker-gpus", min=0, max=64, help="GPUs (nvidia.com/gpu) of each worker pod."),
    worker_memory: str = typer.Option("2Gi", "--worker-memory", help="Memory of each worker pod (a Kubernetes quantity)."),
    head_cpus: float = typer.Option(1.0, "--head-cpus", help="CPUs of the head pod.", callback=options.resource),
    config: Path | None = typer.Option(None, "--config", help="RayCluster template (default: rlkit's kuberay.yaml)."),
    timeout: float = typer.Option(600.0, "--timeout", help="Seconds to wait for each cluster to be ready.",
                                  callback=options.seconds),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the manifests; create nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print the registered records (or, with --dry-run, the manifests) as JSON."),
    keep_on_failure: bool = typer.Option(False, "--keep-on-failure",
                                         help="Leave a cluster that failed to start in place, to inspect it."),
) -> int:
    """Start RayClusters on Kubernetes (KubeRay operator 1.5.1+), token auth on, the dashboard behind kubectl proxy.

    The manifest is applied server-side with kubectl (field manager rlkit),
    every object labelled app.kubernetes.io/managed-by=rlkit. The operator
    keeps the Ray token in a Secret named after the cluster; rlkit copies it
    0600 to $RLKIT_HOME/tokens and never prints it. The head service stays
    ClusterIP: rlkit keeps a `kubectl proxy` on 127.0.0.1 to reach it.

    Examples:

        rlkit launch kuberay --name gpu --context lab --namespace rl --workers 2 --worker-gpus 1

        rlkit launch kuberay --name lab --num-clusters 2 --dry-run
    """
    from rlkit.clusters import kuberay as provider
    from rlkit.clusters import launching
    from rlkit.errors import BadInputError

    chosen: dict[str, object] = {
        "context": context, "namespace": namespace, "workers": workers, "worker_cpus": worker_cpus,
        "worker_gpus": worker_gpus, "worker_memory": worker_memory, "head_cpus": head_cpus,
        "keep_on_failure": keep_on_failure,
    }
    if image is not None:
        if not image.strip():
            raise BadInputError("--image is empty", "name an image, e.g. rayproject/ray:2.52.0")
        chosen["image"] = image
    if config is not None:
        chosen["template"] = config
    specs = provider.specs_for(name, num_clusters, **chosen)
    if dry_run:
        return _dry_run([provider.dry_run_manifest(s) for s in specs], as_json)
    launching.check_names(provider.provider, specs)
    outcomes = results.launch_with_progress(provider.provider, specs, timeout)
    for spec, outcome in zip(specs, outcomes):
        if outcome.value is None:
            results.failed(spec.name, str(outcome.error or f"not ready within {timeout:g} s"))
    if as_json:
        output.print_json([o.value.record.to_dict() for o in outcomes if o.value is not None])
    else:
        for spec, outcome in zip(specs, outcomes):
            if outcome.value is not None:
                state = "already up: nothing started" if outcome.value.already_up else "up"
                results.succeeded(spec.name, f"{state}, dashboard through kubectl proxy at {outcome.value.record.dashboard_url}")
        up = [s.name for s, o in zip(specs, outcomes) if o.value is not None]
        if up:
            output.console.print("\n[bold]Next steps[/]")
            for line in (f"rlkit submit --cluster {up[0]} -- python train.py", f'eval "$(rlkit env {up[0]})"; ray job submit -- python x.py',
                         "rlkit status", f"rlkit teardown {' '.join(up)}"):
                output.console.print(f"  {line}", markup=False, highlight=False)
    return results.exit_code([o.error if o.value is None else None for o in outcomes])


def _dry_run(manifests: list[dict[str, object]], as_json: bool) -> int:
    import yaml

    if as_json:
        output.print_json(manifests)
        return 0
    output.note("Dry run: nothing is created. The token is made by the operator and appears in no manifest.")
    output.console.print(yaml.safe_dump_all(manifests, sort_keys=False), markup=False, highlight=False, end="")
    return 0


def register(launch_app: typer.Typer) -> None:
    """Add ``kuberay`` to the ``rlkit launch`` sub-app."""
    launch_app.command("kuberay")(kuberay)
