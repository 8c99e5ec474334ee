"""Checks against the live Ray cluster before a sweep starts: one trial fits
it, and every node can write to the sweep's storage path."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from rlkit.errors import BadInputError
from rlkit.sweep import tuning
from rlkit.sweep.spec import SweepSpec

_PROBE_TIMEOUT_S = 60.0


def _largest_trial(spec: SweepSpec) -> dict[str, Any]:
    """The hyperparameters that make a trial's placement group largest."""
    params: dict[str, Any] = {}
    for key in ("rollout.num_workers", "rollout.num_cpus_per_worker"):
        dist = spec.file.space.get(key)
        if dist is not None:
            params[key] = max(dist.edges())
    return params


def check_fits(spec: SweepSpec) -> None:
    """A trial whose placement group the cluster can never hold would wait forever."""
    import ray

    group = tuning.placement(spec, _largest_trial(spec))
    need: dict[str, float] = {}
    for bundle in group.bundles:
        for resource, amount in bundle.items():
            need[resource] = need.get(resource, 0.0) + amount
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    total = {r: sum(n.get(r, 0.0) for n in nodes) for r in need}
    res = spec.file.resources
    shape = f"learner {res.learner_cpus:g} CPU"
    if res.learner_gpus:
        shape += f" + {res.learner_gpus:g} GPU"
    workers = len(group.bundles) - (0 if group.head_bundle_is_empty else 1)
    if workers:
        shape += f" + {workers} rollout worker(s) x {group.bundles[-1].get('CPU', 0):g} CPU"
    short = [r for r in need if need[r] > total[r]]
    if short:
        r = short[0]
        raise BadInputError(
            f"one trial needs {need[r]:g} {r} ({shape}); the Ray cluster has {total[r]:g}",
            "lower resources.learner_cpus/learner_gpus or resources.rollout_workers",
        )
    if res.placement == "STRICT_PACK" and not any(all(n.get(r, 0.0) >= need[r] for r in need) for n in nodes):
        raise BadInputError(f"resources.placement STRICT_PACK: no single node holds one trial ({shape})",
                            "use placement PACK, or smaller trials")


def _exists(path: str) -> bool:
    import os

    return os.path.exists(path)


def check_shared_storage(storage: Path) -> None:
    """On a multi-node cluster, trials on other nodes write their logs and
    checkpoints under ``storage``: it must be the same directory there."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    others = [n for n in ray.nodes() if n.get("Alive") and n["NodeID"] != here]
    if not others:
        return
    storage.mkdir(parents=True, exist_ok=True)
    marker = storage / f".rlkit-shared-{uuid.uuid4().hex[:12]}"
    marker.write_text("written by a sweep driver; seen by the trials' nodes if the storage is shared\n")
    probe = ray.remote(num_cpus=0)(_exists)
    try:
        refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(str(marker)) for n in others]
        seen = ray.get(refs, timeout=_PROBE_TIMEOUT_S)
    finally:
        marker.unlink(missing_ok=True)
    blind = [n["NodeManagerAddress"] for n, ok in zip(others, seen) if not ok]
    if blind:
        raise BadInputError(
            f"storage path {storage} exists only on the driver's node: "
            f"{len(blind)} node(s) that run trials ({', '.join(sorted(set(blind)))}) do not see it",
            "set storage_path (--set storage_path=DIR) to a directory that every node mounts "
            "at the same path, such as an NFS share",
        )
