"""The stand-in's object store: kinds, namespaces, resource versions,
label and field selectors, the watch event log and garbage collection.

Everything is behind one condition variable: the HTTP handlers and the
operator thread read and write through ``Store`` only, and watchers wait
on it for new events.
"""

from __future__ import annotations

import copy
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any


@dataclass(frozen=True)
class Kind:
    """One resource type: where it lives in the API and how it is listed."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    # Field selectors this kind supports besides metadata.name/namespace.
    fields: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()


NAMESPACES = Kind("", "v1", "Namespace", "namespaces", namespaced=False, short_names=("ns",), fields=("status.phase",))
PODS = Kind("", "v1", "Pod", "pods", short_names=("po",), categories=("all",),
            fields=("status.phase", "spec.nodeName", "status.podIP"))
SERVICES = Kind("", "v1", "Service", "services", short_names=("svc",), categories=("all",))
SECRETS = Kind("", "v1", "Secret", "secrets", fields=("type",))
EVENTS = Kind("", "v1", "Event", "events", short_names=("ev",),
              fields=("involvedObject.name", "involvedObject.kind", "involvedObject.uid", "reason", "type"))
RAYCLUSTERS = Kind("ray.io", "v1", "RayCluster", "rayclusters", categories=("all",))
# Served read-only from the CRD switch, not stored: the RayCluster CRD when installed.
CRDS = Kind("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", namespaced=False,
            short_names=("crd", "crds"))
CORE_KINDS = (NAMESPACES, PODS, SERVICES, SECRETS, EVENTS)
HISTORY = 10_000


class ApiError(Exception):
    """A failure the API server reports as a ``Status`` object."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                               "message": self.message, "code": self.code}
        if self.reason:
            out["reason"] = self.reason
        if self.details is not None:
            out["details"] = self.details
        return out


def not_found(kind: Kind, name: str) -> ApiError:
    resource = f"{kind.plural}.{kind.group}" if kind.group else kind.plural
    return ApiError(404, "NotFound", f'{resource} "{name}" not found',
                    {"name": name, "group": kind.group, "kind": kind.plural})


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------ selectors

_REQUIREMENT = re.compile(
    r"\s*(?P<neg>!)?\s*(?P<key>[A-Za-z0-9_./-]+)\s*"
    r"(?:(?P<op>==|!=|=|\s+in\s+|\s+notin\s+)\s*(?P<value>\([^)]*\)|[A-Za-z0-9_.-]*))?\s*$"
)


def _split_top(text: str) -> list[str]:
    """Split a selector at the commas outside parentheses."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p for p in parts if p.strip()]


def label_matcher(selector: str) -> Callable[[dict[str, str]], bool]:
    """A predicate for Kubernetes' label selector syntax (=, ==, !=, in,
    notin, exists, !exists); a malformed selector is a 400."""
    checks: list[Callable[[dict[str, str]], bool]] = []
    for part in _split_top(selector):
        match = _REQUIREMENT.match(part)
        if not match or (match["neg"] and match["op"]):
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {part.strip()!r}")
        key, op, raw = match["key"], (match["op"] or "").strip(), match["value"]
        if match["neg"]:
            checks.append(lambda labels, k=key: k not in labels)
        elif not op:
            checks.append(lambda labels, k=key: k in labels)
        elif op in ("in", "notin"):
            if not raw or not raw.startswith("("):
                raise ApiError(400, "BadRequest", f"unable to parse requirement: found '{raw}', expected: '('")
            values = {v.strip() for v in raw[1:-1].split(",") if v.strip()}
            if op == "in":
                checks.append(lambda labels, k=key, vs=values: labels.get(k) in vs)
            else:
                checks.append(lambda labels, k=key, vs=values: labels.get(k) not in vs)
        elif op in ("=", "=="):
            checks.append(lambda labels, k=key, v=raw: labels.get(k) == v)
        else:
            checks.append(lambda labels, k=key, v=raw: labels.get(k) != v)
    return lambda labels: all(check(labels) for check in checks)


def _field_value(obj: dict[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)


def field_matcher(kind: Kind, selector: str) -> Callable[[dict[str, Any]], bool]:
    """A predicate for a field selector; only the fields the real API
    server indexes for ``kind`` are accepted (others are a 400, as there)."""
    checks: list[Callable[[dict[str, Any]], bool]] = []
    allowed = ("metadata.name", "metadata.namespace", *kind.fields)
    for part in _split_top(selector):
        match = re.match(r"^\s*([A-Za-z0-9_.]+)\s*(==|!=|=)\s*(.*?)\s*$", part)
        if not match:
            raise ApiError(400, "BadRequest", f"invalid selector: '{selector}'; can't understand '{part}'")
        path, op, value = match.groups()
        if path not in allowed:
            raise ApiError(400, "BadRequest", f'field label not supported: {path}')
        if op == "!=":
            checks.append(lambda o, p=path, v=value: _field_value(o, p) != v)
        else:
            checks.append(lambda o, p=path, v=value: _field_value(o, p) == v)
    return lambda o: all(check(o) for check in checks)


# ------------------------------------------------------------ the store


@dataclass
class Event:
    rv: int
    type: str
    kind: Kind
    obj: dict[str, Any]


class Store:
    """Objects by (kind, namespace, name), each change an event in a log
    that watches replay from a resource version."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self._objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._log: list[Event] = []
        self._rv = 0
        self.closed = False

    # -- reading

    def resource_version(self) -> int:
        with self.cond:
            return self._rv

    def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any]:
        with self.cond:
            found = self._objects.get((kind.plural, namespace, name))
            if found is None:
                raise not_found(kind, name)
            return copy.deepcopy(found)

    def find(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.get(kind, namespace, name)
        except ApiError:
            return None

    def list(self, kind: Kind, namespace: str | None = None, labels: str = "", fields: str = "") -> list[dict[str, Any]]:
        """Objects of ``kind`` (in ``namespace``, or all) that match both selectors."""
        label_ok, field_ok = label_matcher(labels), field_matcher(kind, fields)
        with self.cond:
            items = [
                copy.deepcopy(o) for (plural, ns, _), o in sorted(self._objects.items())
                if plural == kind.plural and (namespace is None or ns == namespace)
                and label_ok(o["metadata"].get("labels") or {}) and field_ok(o)
            ]
        return items

    def namespace_exists(self, name: str) -> bool:
        with self.cond:
            return ("namespaces", "", name) in self._objects

    # -- writing

    def _bump(self, kind: Kind, event: str, obj: dict[str, Any]) -> None:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self._log.append(Event(self._rv, event, kind, copy.deepcopy(obj)))
        del self._log[:-HISTORY]
        self.cond.notify_all()

    def create(self, kind: Kind, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj.setdefault("metadata", {})
        name = meta.get("name") or ""
        with self.cond:
            if kind.namespaced and not self.namespace_exists(namespace):
                raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found',
                               {"name": namespace, "kind": "namespaces"})
            key = (kind.plural, namespace if kind.namespaced else "", name)
            if key in self._objects:
                resource = f"{kind.plural}.{kind.group}" if kind.group else kind.plural
                raise ApiError(409, "AlreadyExists", f'{resource} "{name}" already exists',
                               {"name": name, "group": kind.group, "kind": kind.plural})
            obj["apiVersion"], obj["kind"] = kind.api_version, kind.kind
            if kind.namespaced:
                meta["namespace"] = namespace
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1)
            self._objects[key] = obj
            self._bump(kind, "ADDED", obj)
            return copy.deepcopy(obj)

    def replace(self, kind: Kind, obj: dict[str, Any], spec_changed: bool = True) -> dict[str, Any]:
        """Store a new version of an existing object (its identity kept)."""
        meta = obj["metadata"]
        key = (kind.plural, meta.get("namespace", "") if kind.namespaced else "", meta["name"])
        with self.cond:
            old = self._objects.get(key)
            if old is None:
                raise not_found(kind, meta["name"])
            for kept in ("uid", "creationTimestamp", "namespace", "deletionTimestamp"):
                if kept in old["metadata"]:
                    meta[kept] = old["metadata"][kept]
            meta["generation"] = old["metadata"].get("generation", 1) + (1 if spec_changed else 0)
            obj["apiVersion"], obj["kind"] = kind.api_version, kind.kind
            self._objects[key] = obj
            self._bump(kind, "MODIFIED", obj)
            return copy.deepcopy(obj)

    def update(self, kind: Kind, namespace: str, name: str, change: Callable[[dict[str, Any]], None]) -> dict[str, Any] | None:
        """Apply ``change`` to the stored object (the operator's status
        writes); None when it is gone."""
        with self.cond:
            current = self._objects.get((kind.plural, namespace, name))
            if current is None:
                return None
            new = copy.deepcopy(current)
            change(new)
            if new == current:
                return copy.deepcopy(current)
            return self.replace(kind, new, spec_changed=new.get("spec") != current.get("spec"))

    def delete(self, kind: Kind, namespace: str, name: str, orphan: bool = False) -> dict[str, Any]:
        """Delete an object; its dependents (ownerReferences) go with it
        unless ``orphan``, when their references to it are dropped."""
        with self.cond:
            key = (kind.plural, namespace if kind.namespaced else "", name)
            obj = self._objects.pop(key, None)
            if obj is None:
                raise not_found(kind, name)
            obj["metadata"]["deletionTimestamp"] = now()
            self._bump(kind, "DELETED", obj)
            self._collect(obj["metadata"]["uid"], orphan)
            if kind is NAMESPACES:
                for (plural, ns, child), _ in list(self._objects.items()):
                    if ns == name:
                        self.delete(KINDS_BY_PLURAL[plural], ns, child)
            return copy.deepcopy(obj)

    def _collect(self, owner_uid: str, orphan: bool) -> None:
        for (plural, ns, name), obj in list(self._objects.items()):
            refs = obj["metadata"].get("ownerReferences") or []
            if not any(r.get("uid") == owner_uid for r in refs):
                continue
            if orphan:
                obj["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != owner_uid]
                self._bump(KINDS_BY_PLURAL[plural], "MODIFIED", obj)
            else:
                self.delete(KINDS_BY_PLURAL[plural], ns, name)

    # -- watching

    def events_after(self, rv: int, kind: Kind, timeout: float) -> Iterator[Event]:
        """Events of ``kind`` newer than ``rv``, waiting up to ``timeout``
        seconds for each; a resource version older than the log is a 410."""
        with self.cond:
            if self._log and rv < self._log[0].rv - 1:
                raise ApiError(410, "Expired", f"too old resource version: {rv} ({self._log[0].rv - 1})")
        last = rv
        while True:
            with self.cond:
                fresh = [e for e in self._log if e.rv > last]
                if not fresh:
                    if self.closed or not self.cond.wait(timeout):
                        return
                    continue
            last = fresh[-1].rv
            for event in fresh:
                if event.kind.plural == kind.plural:
                    yield event

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()


KINDS_BY_PLURAL = {k.plural: k for k in (*CORE_KINDS, RAYCLUSTERS, CRDS)}
