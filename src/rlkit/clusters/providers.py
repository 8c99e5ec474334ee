"""The seam between the registry and the code that starts and stops clusters.

A provider is a module ``rlkit.clusters.<provider>`` with two functions::

    describe_stop(record: ClusterRecord) -> list[str]   # for the prompt
    stop(record: ClusterRecord) -> StopResult           # idempotent

``local`` is one; ``onprem`` (over SSH) and ``kuberay`` plug in the same way.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from rlkit.clusters.records import ClusterRecord
from rlkit.errors import WorkFailedError

PROVIDERS = ("local", "onprem", "kuberay")


@dataclass
class StopResult:
    """``stopped`` counts what was stopped, in ``unit`` (processes, nodes);
    ``already_gone`` is True when nothing ran any more."""

    name: str
    stopped: int
    already_gone: bool
    unit: str = "processes"
    note: str = ""


def provider_module(record: ClusterRecord) -> ModuleType:
    """The module that stops ``record``'s cluster (imported on demand: only
    the provider in use loads its dependencies)."""
    if record.provider not in PROVIDERS:
        raise WorkFailedError(f"{record.name}: unknown provider {record.provider!r} in rlkit's record")
    try:
        module = importlib.import_module(f"rlkit.clusters.{record.provider}")
    except ModuleNotFoundError:
        module = None
    if module is None or not all(hasattr(module, f) for f in ("describe_stop", "stop")):
        raise WorkFailedError(f"{record.name}: rlkit cannot stop {record.provider} clusters yet")
    return module
