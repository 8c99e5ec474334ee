"""``rlkit check``: can these clusters run rlkit's jobs?

One small job per cluster, all clusters at once (``probe`` is the job);
its report is compared here with this machine's versions, or with the
versions the caller expects. A node fails the check when a package that
jobs need is missing or differs, when torch cannot use the GPUs that Ray
offers, or when an actor the size of a rollout actor is not scheduled on
it; a cluster fails when a node does, when no node takes a rollout actor,
or when it cannot be reached or its job gives no report.

rlkit travels with the check job as with every job, so a cluster needs
Ray, torch and the environments, not rlkit: the RLKIT column shows what a
node has installed (nothing, usually) and is compared only when there is
one. A cluster where the shipped rlkit cannot run (a Python too old, a
module missing) fails with the job's last log line.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import rlkit
from rlkit import paths
from rlkit.clusters.parallel import run_parallel
from rlkit.clusters.registry import Cluster, select_clusters
from rlkit.config import RolloutConfig
from rlkit.errors import BadInputError, WorkFailedError
from rlkit.jobs import package
from rlkit.jobs.client import connect, one_line
from rlkit.jobs.probe import ACTOR_LATE, ACTOR_OK, ACTOR_SKIPPED, PACKAGES, REPORT_PREFIX, SHOW_GPUS, local_versions
from rlkit.jobs.submit import new_submission_id

DEFAULT_TIMEOUT_S = 60.0
# What a rollout actor asks for unless a run's config says otherwise.
ROLLOUT_ACTOR_CPUS = RolloutConfig.model_fields["num_cpus_per_worker"].default
# Ray keeps this with the check job, so that it is not taken for a training job.
META_CHECK = "rlkit.check"
# Of the time a cluster has, what its job may spend waiting for the nodes;
# the rest goes to starting the job and reading its report.
_PROBE_SHARE = 0.6
_POLL_S = 0.5
_TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


@dataclass
class NodeCheck:
    """One node as its cluster's job saw it; ``problems`` say why it fails,
    ``mismatched`` names the versions among them."""

    address: str
    head: bool
    cpus: float
    gpus: float
    versions: dict[str, str | None]
    cuda_devices: list[str]
    actor: str
    problems: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class ClusterCheck:
    """One cluster's outcome: its nodes, or ``error`` when it gave no report."""

    cluster: str
    nodes: list[NodeCheck] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and all(node.ok for node in self.nodes)


def expected_versions(overrides: Mapping[str, str] | None = None) -> dict[str, str | None]:
    """This machine's versions, with ``overrides`` (name to version) put in
    their place: what the nodes are compared with."""
    expected = local_versions()
    for name, version in (overrides or {}).items():
        if name not in expected:
            raise BadInputError(f"--expect {name}={version}: no such package to check",
                                f"give one of {', '.join(expected)}")
        if not version.strip():
            raise BadInputError(f"--expect {name}=: give a version, e.g. --expect {name}={expected[name] or '1.0'}")
        expected[name] = version.strip()
    return expected


def parse_expect(items: list[str]) -> dict[str, str]:
    """``NAME=VERSION`` words as a mapping; one line for a word without ``=``."""
    parsed: dict[str, str] = {}
    for item in items:
        name, sep, version = item.partition("=")
        if not sep:
            raise BadInputError(f"--expect {item!r}: write NAME=VERSION", "e.g. --expect torch=2.13.0")
        parsed[name.strip().lower()] = version
    return parsed


def check_clusters(
    names: list[str] | None = None,
    *,
    expected: Mapping[str, str | None] | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    actor_cpus: float = ROLLOUT_ACTOR_CPUS,
) -> list[ClusterCheck]:
    """Check ``names`` (every registered cluster for None), all at once,
    each within about ``timeout`` seconds; results in the order asked.
    ``expected``: the versions to compare with (``expected_versions()``
    for None). Unknown names raise ``UnknownClusterError`` before anything
    is sent."""
    clusters = select_clusters(names)
    if not clusters:
        raise BadInputError(f"no clusters in {paths.address_file()}", "start one with `rlkit launch local`")
    wanted = dict(expected) if expected is not None else expected_versions()
    with package.packed_modules() as modules:
        # The threads stop their own jobs at their deadline; the grace is theirs to do it in.
        outcomes = run_parallel(lambda c: _check_one(c, modules, wanted, timeout, actor_cpus), clusters,
                                timeout=timeout + 10.0)
    checks = []
    for cluster, outcome in zip(clusters, outcomes):
        if outcome.value is not None:
            checks.append(outcome.value)
        elif outcome.error is not None:
            checks.append(ClusterCheck(cluster.name, error=one_line(outcome.error).removeprefix(f"{cluster.name}: ")))
        else:
            checks.append(ClusterCheck(cluster.name, error=f"no answer within {timeout:.0f} s"))
    return checks


def _check_one(cluster: Cluster, modules: package.Package, expected: Mapping[str, str | None],
               timeout: float, actor_cpus: float) -> ClusterCheck:
    deadline = time.monotonic() + timeout
    client = connect(cluster, timeout)
    runtime = {"py_modules": [package.modules_uri(client, modules)], "env_vars": {"PYTHONUNBUFFERED": "1", **SHOW_GPUS}}
    probe_s = max(1.0, _PROBE_SHARE * (deadline - time.monotonic()))
    job_id = new_submission_id("rlkit-check", cluster.name, set())
    try:
        client.submit_job(entrypoint=f"python -m rlkit.jobs.probe --actor-cpus {actor_cpus:g} --timeout {probe_s:.1f}",
                          submission_id=job_id, runtime_env=runtime, metadata={META_CHECK: rlkit.__version__})
    except Exception as err:  # noqa: BLE001 - Ray raises plain exceptions of many kinds
        raise WorkFailedError(f"the check job was refused: {one_line(err)}") from None
    status = str(client.get_job_status(job_id))
    while status not in _TERMINAL and time.monotonic() < deadline:
        time.sleep(_POLL_S)
        status = str(client.get_job_status(job_id))
    if status not in _TERMINAL:
        try:
            client.stop_job(job_id)
        except Exception as err:  # noqa: BLE001 - the timeout is the news; a failed stop is told with it
            raise WorkFailedError(f"check job {job_id} still {status} after {timeout:.0f} s, and stopping it "
                                  f"failed: {one_line(err)}") from None
        raise WorkFailedError(f"check job {job_id} still {status} after {timeout:.0f} s (stopped; "
                              f"`ray job logs {job_id}` after `rlkit env {cluster.name}` shows how far it got)")
    logs = client.get_job_logs(job_id)
    report = _report_in(logs)
    if report is None:
        last = next((line.strip() for line in reversed(logs.splitlines()) if line.strip()), "no output")
        raise WorkFailedError(f"check job {job_id} {status} without a report: {last}")
    # The job stays in Ray's list (tagged META_CHECK, so not among rlkit's
    # jobs): a delete right after it ends races its supervisor, which then
    # records it again as FAILED.
    return _judge(cluster.name, report, expected)


def _report_in(logs: str) -> dict[str, Any] | None:
    for line in reversed(logs.splitlines()):
        if line.startswith(REPORT_PREFIX):
            try:
                report = json.loads(line[len(REPORT_PREFIX):])
            except json.JSONDecodeError:
                return None
            return report if isinstance(report, dict) else None
    return None


def _judge(name: str, report: dict[str, Any], expected: Mapping[str, str | None]) -> ClusterCheck:
    cpus, waited = report.get("actor_cpus", ROLLOUT_ACTOR_CPUS), report.get("timeout", 0)
    nodes = [_judge_node(node, expected, cpus, waited) for node in report.get("nodes", [])]
    check = ClusterCheck(name, nodes)
    if not nodes:
        check.error = "the job saw no alive node"
    elif all(node.actor == ACTOR_SKIPPED for node in nodes):
        check.error = f"no node has CPUs for a rollout actor (num_cpus={cpus:g})"
    return check


def _judge_node(node: dict[str, Any], expected: Mapping[str, str | None], actor_cpus: float,
                waited: float) -> NodeCheck:
    versions = {name: node.get("versions", {}).get(name) for name in ("python", *PACKAGES)}
    checked = NodeCheck(address=str(node.get("address")), head=bool(node.get("head")), cpus=float(node.get("cpus", 0)),
                        gpus=float(node.get("gpus", 0)), versions=versions,
                        cuda_devices=list(node.get("cuda_devices", [])), actor=str(node.get("actor")))
    problems = checked.problems
    if node.get("facts_error"):
        problems.append(f"no facts: {node['facts_error']}")
    else:
        for name, version in versions.items():
            if problem := version_problem(name, version, expected.get(name)):
                problems.append(problem)
                checked.mismatched.append(name)
        if node.get("torch_error"):
            problems.append(f"torch does not import: {node['torch_error']}")
        elif checked.gpus > len(checked.cuda_devices):
            problems.append(f"Ray offers {checked.gpus:g} GPUs, torch sees {len(checked.cuda_devices)}")
    if checked.actor == ACTOR_LATE:
        problems.append(f"a rollout actor (num_cpus={actor_cpus:g}) was not scheduled within {waited:.0f} s "
                        "(are the node's CPUs taken by other jobs?)")
    elif checked.actor not in (ACTOR_OK, ACTOR_SKIPPED):
        problems.append(f"rollout actor {checked.actor}")
    return checked


def version_problem(name: str, found: str | None, wanted: str | None) -> str | None:
    """Why ``found`` on a node does not do for ``wanted``, or None. Python
    is compared by minor version, torch without its build tag (a CUDA
    build on a GPU node is the same torch as the CPU build here); rlkit
    only where a node has it installed, since jobs carry their own."""
    if name == "rlkit" and found is None:
        return None
    if found is None:
        return f"{name} not installed" + (f" (expected {wanted})" if wanted else "")
    if wanted is None:
        return None
    if _comparable(name, found) != _comparable(name, wanted):
        return f"{name} {found}, expected {wanted}"
    return None


def _comparable(name: str, version: str) -> str:
    if name == "python":
        return ".".join(version.split(".")[:2])
    return version.split("+")[0] if name == "torch" else version
