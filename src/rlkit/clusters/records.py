"""rlkit's own record of each cluster it launched: ``$RLKIT_HOME/clusters/NAME.json``.

The address file says where a cluster is; the record says how to stop it and
how to talk to it (provider, ports, processes, token file, ssh settings).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rlkit import paths
from rlkit.errors import BadInputError, WorkFailedError
from rlkit.files import atomic_write

NAME_RULE = "letters, digits, '.', '_' and '-', starting with a letter or digit, at most 40 characters"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")


def is_valid_name(name: str) -> bool:
    return bool(_NAME.match(name))


def check_name(name: str) -> str:
    """Return ``name`` if rlkit can launch a cluster under it, else raise."""
    if not is_valid_name(name):
        raise BadInputError(f"invalid cluster name {name!r}", f"use {NAME_RULE}")
    return name


@dataclass(frozen=True)
class ProcessRef:
    """A process, told apart from a later one that reuses its pid by its
    start time (clock ticks after boot, field 22 of /proc/PID/stat)."""

    pid: int
    start_ticks: int


@dataclass
class ClusterRecord:
    """What rlkit knows about a cluster it launched.

    ``provider`` is ``"local"``, ``"onprem"`` or ``"kuberay"``;
    ``address`` is the line written to the address file and ``dashboard_url``
    the Job Submission API it resolves to. ``token_path`` is None when token
    authentication is off. ``state`` is ``"starting"`` while launch runs, so
    that concurrent launches see the ports it has taken.
    """

    name: str
    provider: str
    address: str
    dashboard_url: str
    launched_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    state: str = "up"
    token_path: str | None = None
    gcs_address: str | None = None
    ports: dict[str, int] = field(default_factory=dict)
    resources: dict[str, float] = field(default_factory=dict)
    temp_dir: str | None = None
    # Set in the environment of `ray start`: every process of the cluster
    # inherits it, which tells them apart from other clusters' processes.
    process_marker: str | None = None
    pids: list[ProcessRef] = field(default_factory=list)
    # The process that carries the way to the dashboard (its local port is
    # ports["tunnel"]): an SSH tunnel to an on-prem head, `kubectl proxy` for KubeRay.
    tunnel: ProcessRef | None = None
    ssh: dict[str, str] | None = None
    config_path: str | None = None
    # KubeRay: context, namespace, kubeconfig, launch id, RayCluster UID, head service.
    kube: dict[str, str] | None = None
    # The header that carries the token (None: Authorization); behind kubectl
    # proxy, Authorization is the API server's credential.
    auth_header: str | None = None
    # Why the record file could not be read (``state`` is then "broken"):
    # the cluster is still listed, and `rlkit teardown` still stops it.
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClusterRecord:
        known = {f.name for f in fields(cls)}
        # Keys written by a newer rlkit are ignored rather than fatal.
        values = {k: v for k, v in data.items() if k in known}
        values["pids"] = [ProcessRef(**p) for p in values.get("pids", [])]
        if values.get("tunnel"):
            values["tunnel"] = ProcessRef(**values["tunnel"])
        return cls(**values)

    @classmethod
    def broken(cls, name: str, problem: str, text: str = "") -> ClusterRecord:
        """What is left of an unreadable record: its name (the file's), and
        its provider if the text still says it (local otherwise: only a
        local cluster can be found without its record)."""
        provider = re.search(r'"provider"\s*:\s*"([a-z]+)"', text)
        return cls(name=name, provider=provider[1] if provider else "local", address="", dashboard_url="",
                   state="broken", problem=problem)


def record_path(name: str) -> Path:
    return paths.clusters_dir() / f"{check_name(name)}.json"


def save_record(record: ClusterRecord) -> Path:
    """Write (or replace) the record atomically."""
    path = record_path(record.name)
    paths.private_dir(path.parent)
    atomic_write(path, json.dumps(record.to_dict(), indent=2) + "\n", mode=0o600)
    return path


def load_record(name: str) -> ClusterRecord | None:
    """The record of ``name``, or None when rlkit did not launch it. An
    unreadable record (truncated, not a JSON object, a directory) comes
    back as ``ClusterRecord.broken``: it must block no other cluster's
    commands, and teardown still finds the cluster by its name."""
    if not is_valid_name(name):
        return None
    path = record_path(name)
    if path.is_dir():
        return ClusterRecord.broken(name, _not_a_record(name))
    fix = f"`rlkit teardown {name}` stops the cluster and removes the record"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        return ClusterRecord.broken(name, f"{path}: rlkit's record of {name!r} cannot be read ({reason}); {fix}")
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise TypeError(f"a JSON {type(data).__name__}, not an object")
        return ClusterRecord.from_dict(data)
    except (ValueError, TypeError) as err:
        return ClusterRecord.broken(name, f"{path}: rlkit's record of {name!r} is unreadable ({err}); {fix}", text)


def _not_a_record(name: str) -> str:
    return f"{record_path(name)} is a directory, not rlkit's record of {name!r}: remove it (rlkit never makes one)"


def check_record_path(name: str) -> None:
    """Raise ``BadInputError`` when rlkit could not write the record of ``name``."""
    if record_path(name).is_dir():
        raise BadInputError(_not_a_record(name))


def list_records() -> list[ClusterRecord]:
    """Every record, sorted by name."""
    directory = paths.clusters_dir()
    if not directory.is_dir():
        return []
    names = sorted(p.stem for p in directory.glob("*.json"))
    return [r for r in (load_record(n) for n in names) if r is not None]


def delete_record(name: str) -> None:
    check_record_path(name)
    record_path(name).unlink(missing_ok=True)
