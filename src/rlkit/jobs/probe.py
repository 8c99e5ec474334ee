"""The job that ``rlkit check`` sends: ``python -m rlkit.jobs.probe``.

It runs on the cluster (rlkit travels with it, as with every job) and
looks at each alive node: the versions installed there, the CPUs and GPUs
Ray offers, the CUDA devices torch sees, and whether an actor the size of
a rollout actor gets scheduled on it. It prints one line, ``REPORT_PREFIX``
and JSON, that the client finds in the job's logs. Facts only: what
counts as a problem is decided by the client, which knows the local side.

Top-level imports are the standard library only, so that
``local_versions`` is cheap on the client.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from importlib import metadata
from typing import Any

REPORT_PREFIX = "rlkit-check-report: "
# What a job of rlkit's needs on every node, besides Python.
PACKAGES = ("ray", "torch", "gymnasium", "pettingzoo", "rlkit")
# Ray hides every GPU from a task that asks for none. The facts task asks
# for none (the GPUs may be busy), so the job runs with this variable set:
# its workers see the GPUs the node's Ray sees.
SHOW_GPUS = {"RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES": "1"}
# A node's "actor": one of these, or "failed: WHY".
ACTOR_OK = "ok"
ACTOR_SKIPPED = "skipped"
ACTOR_LATE = "not scheduled in time"


def local_versions() -> dict[str, str | None]:
    """Python's version and each of ``PACKAGES``' installed distributions
    (None when not installed): on the client and on each node alike."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def _node_facts() -> dict[str, Any]:
    facts: dict[str, Any] = {"versions": local_versions(), "cuda_devices": [], "torch_error": None}
    try:
        import torch

        if torch.cuda.is_available():
            facts["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception as err:  # noqa: BLE001 - a broken torch (missing CUDA libraries) is a fact to report
        facts["torch_error"] = f"{type(err).__name__}: {' '.join(str(err).split())}"[:300]
    return facts


class _RolloutStandIn:
    """Sized like a rollout actor; being scheduled is all it has to do."""

    def ready(self) -> None:
        """Answers once the actor runs."""


def probe(actor_cpus: float, timeout: float) -> dict[str, Any]:
    """Every alive node's facts, asked all at once and waited for at most
    ``timeout`` seconds; what did not answer in time says so."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    ray.init(logging_level="ERROR", log_to_driver=False)
    deadline = time.monotonic() + timeout
    facts_task = ray.remote(num_cpus=0)(_node_facts)
    actor_cls = ray.remote(_RolloutStandIn)
    nodes, actors, pending = [], [], {}
    for node in sorted((n for n in ray.nodes() if n["Alive"]), key=lambda n: n["NodeManagerAddress"]):
        node_id = node["NodeID"]
        resources = node.get("Resources", {})
        on_node = NodeAffinitySchedulingStrategy(node_id, soft=False)
        report = {"node_id": node_id, "address": node["NodeManagerAddress"],
                  "head": "node:__internal_head__" in resources, "cpus": resources.get("CPU", 0.0),
                  "gpus": resources.get("GPU", 0.0), "actor": None}
        pending[facts_task.options(scheduling_strategy=on_node).remote()] = (report, "facts")
        # A node with fewer CPUs than an actor needs never takes one: not
        # worth waiting for (a head with --num-cpus 0 is meant that way).
        if report["cpus"] >= actor_cpus:
            actor = actor_cls.options(num_cpus=actor_cpus, scheduling_strategy=on_node).remote()
            actors.append(actor)
            pending[actor.ready.remote()] = (report, "actor")
        else:
            report["actor"] = ACTOR_SKIPPED
        nodes.append(report)
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
        if not done:
            break
        report, what = pending.pop(done[0])
        try:
            value = ray.get(done[0])
        except Exception as err:  # noqa: BLE001 - the node's own failure, reported as it is
            error = " ".join(str(err).split())[:300]
            report.update({"facts_error": error} if what == "facts" else {"actor": f"failed: {error}"})
        else:
            report.update(value if what == "facts" else {"actor": ACTOR_OK})
    for report, what in pending.values():
        if what == "facts":
            report["facts_error"] = f"no answer within {timeout:.0f} s"
        else:
            report["actor"] = ACTOR_LATE
    for actor in actors:
        ray.kill(actor)
    return {"actor_cpus": actor_cpus, "timeout": timeout, "nodes": nodes}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rlkit.jobs.probe", description=__doc__.splitlines()[0])
    parser.add_argument("--actor-cpus", type=float, required=True)
    parser.add_argument("--timeout", type=float, required=True)
    args = parser.parse_args(argv)
    report = probe(args.actor_cpus, args.timeout)
    sys.stdout.write(REPORT_PREFIX + json.dumps(report, separators=(",", ":")) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
