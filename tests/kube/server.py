"""The stand-in Kubernetes API server: HTTPS on 127.0.0.1 with a self-signed
certificate of its own (kubectl sends a kubeconfig's bearer token only over
TLS: clientcmd reads a user's credentials only for a TLS transport), bearer
token required, answering kubectl (client versions 1.27 to 1.33) as a real
v1.31 server would for what rlkit uses.

- Discovery: the legacy documents (/api, /apis, /api/v1, /apis/ray.io/v1).
  kubectl asks for aggregated discovery first; a plain APIVersions /
  APIGroupList answer makes it fall back, as against servers before 1.26.
- OpenAPI v3 (/openapi/v3 and one document per group-version) whose PATCH
  operations list the ``fieldValidation`` query parameter: kubectl then
  leaves strict field validation to the server (``fieldValidation=Strict``).
  /openapi/v2 is absent (404), as kubectl needs it only as a fallback.
- Server-side apply (PATCH application/apply-patch+yaml) with field
  managers, conflicts and ``force``; JSON merge patch; create; replace;
  get; list and watch with label and field selectors; delete with
  ownerReference garbage collection (background and foreground delete the
  dependents, orphan keeps them); Table output for ``kubectl get``.
- Errors are ``Status`` objects worded as the real server words them.
- The service proxy path ``/api/v1/namespaces/NS/services/NAME[:PORT]/proxy/...``
  forwards plain HTTP to a ready pod behind the service. As the real server
  does, it drops the ``Authorization`` header it authenticated, so only
  ``X-Ray-Authorization`` carries a Ray token through ``kubectl proxy``.
"""

from __future__ import annotations

import copy
import hashlib
import http.client
import json
import re
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from tests.kube import schema
from tests.kube.store import (
    CORE_KINDS,
    CRDS,
    KINDS_BY_PLURAL,
    NAMESPACES,
    PODS,
    RAYCLUSTERS,
    SERVICES,
    ApiError,
    Kind,
    Store,
    field_matcher,
    label_matcher,
    not_found,
    now,
)

SERVER_VERSION = {"major": "1", "minor": "31", "gitVersion": "v1.31.4", "gitCommit": "0" * 40,
                  "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.22.10",
                  "compiler": "gc", "platform": "linux/amd64"}
VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
WEBHOOK = "vraycluster.kb.io"
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
               "transfer-encoding", "upgrade", "host", "authorization", "content-length"}


class ApiState:
    """What the server serves and the switches tests flip."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.store = Store()
        self.crd_installed = True
        self.webhook = True
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def record(self, method: str, path: str) -> None:
        with self._lock:
            self.requests.append((method, path))

    def kinds(self) -> tuple[Kind, ...]:
        return (*CORE_KINDS, CRDS, RAYCLUSTERS) if self.crd_installed else (*CORE_KINDS, CRDS)

    def crds(self) -> list[dict[str, Any]]:
        """The CustomResourceDefinitions installed: KubeRay's RayCluster one, or none."""
        if not self.crd_installed:
            return []
        k = RAYCLUSTERS
        return [{
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{k.plural}.{k.group}", "uid": "00000000-0000-4000-8000-000000000001",
                         "resourceVersion": "1", "creationTimestamp": "2026-01-01T00:00:00Z",
                         "annotations": {"controller-gen.kubebuilder.io/version": "v0.18.0"}},
            "spec": {"group": k.group, "scope": "Namespaced",
                     "names": {"kind": k.kind, "listKind": f"{k.kind}List", "plural": k.plural, "singular": k.singular,
                               "categories": list(k.categories)},
                     "versions": [{"name": k.version, "served": True, "storage": True,
                                   "subresources": {"status": {}},
                                   "schema": {"openAPIV3Schema": schema.to_openapi(schema.RAYCLUSTER)}}]},
            "status": {"acceptedNames": {"kind": k.kind, "plural": k.plural}, "storedVersions": [k.version],
                       "conditions": [{"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                                       "message": "the initial names have been accepted",
                                       "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
        }]


# ------------------------------------------------------------ discovery and OpenAPI


def _resource_list(group_version: str, kinds: list[Kind]) -> dict[str, Any]:
    resources: list[dict[str, Any]] = []
    for kind in kinds:
        entry = {"name": kind.plural, "singularName": kind.singular, "namespaced": kind.namespaced,
                 "kind": kind.kind, "verbs": VERBS, "storageVersionHash": hashlib.sha1(kind.plural.encode()).hexdigest()[:12]}
        if kind.short_names:
            entry["shortNames"] = list(kind.short_names)
        if kind.categories:
            entry["categories"] = list(kind.categories)
        resources.append(entry)
        if kind in (PODS, RAYCLUSTERS, SERVICES, NAMESPACES):
            resources.append({"name": f"{kind.plural}/status", "singularName": "", "namespaced": kind.namespaced,
                              "kind": kind.kind, "verbs": ["get", "patch", "update"]})
    resources.append({"name": "services/proxy", "singularName": "", "namespaced": True, "kind": "ServiceProxyOptions",
                      "verbs": ["create", "delete", "get", "patch", "update"]} if group_version == "v1" else {})
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
            "resources": [r for r in resources if r]}


_CORE_OBJECT = schema.Field("object", open=True)


def _openapi_doc(kinds: list[Kind]) -> dict[str, Any]:
    """One group-version's OpenAPI v3 document: each kind's paths (PATCH
    with fieldValidation, so kubectl validates server-side) and schema."""
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for kind in kinds:
        gvk = {"group": kind.group, "version": kind.version, "kind": kind.kind}
        ref = f"io.k8s.api.core.v1.{kind.kind}" if not kind.group else f"io.ray.v1.{kind.kind}"
        body = {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}
        query = [{"name": n, "in": "query", "schema": {"type": t}, "uniqueItems": True}
                 for n, t in (("dryRun", "string"), ("fieldManager", "string"), ("fieldValidation", "string"),
                              ("force", "boolean"))]
        ok = {"200": body, "201": body}
        base = "/api/v1" if not kind.group else f"/apis/{kind.group}/{kind.version}"
        prefix = f"{base}/namespaces/{{namespace}}/{kind.plural}" if kind.namespaced else f"{base}/{kind.plural}"
        operation = {"x-kubernetes-group-version-kind": gvk, "responses": ok}
        paths[f"{prefix}/{{name}}"] = {
            "get": {**operation, "x-kubernetes-action": "get"},
            "put": {**operation, "x-kubernetes-action": "put", "parameters": query, "requestBody": body},
            "patch": {**operation, "x-kubernetes-action": "patch", "parameters": query,
                      "requestBody": {"content": {t: {"schema": {"type": "object"}} for t in (
                          "application/apply-patch+yaml", "application/merge-patch+json",
                          "application/json-patch+json", "application/strategic-merge-patch+json")}}},
            "delete": {**operation, "x-kubernetes-action": "delete"},
        }
        paths[prefix] = {"post": {**operation, "x-kubernetes-action": "post", "parameters": query, "requestBody": body},
                         "get": {**operation, "x-kubernetes-action": "list"}}
        shape = schema.to_openapi(schema.RAYCLUSTER if kind is RAYCLUSTERS else _CORE_OBJECT)
        shape["x-kubernetes-group-version-kind"] = [gvk]
        schemas[ref] = shape
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": SERVER_VERSION["gitVersion"]},
            "paths": paths, "components": {"schemas": schemas}}


# ------------------------------------------------------------ server-side apply


def _leaves(value: Any, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Field paths to the values they set; lists count as one atomic value."""
    if isinstance(value, dict) and value:
        out: dict[tuple[str, ...], Any] = {}
        for key, item in value.items():
            out.update(_leaves(item, (*path, key)))
        return out
    return {path: value}


def _at(obj: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def _merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 JSON merge patch (a null deletes)."""
    for key, value in patch.items():
        if value is None:
            base.pop(key, None)
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def _remove(obj: dict[str, Any], path: tuple[str, ...]) -> None:
    parent = _at(obj, path[:-1])
    if isinstance(parent, dict):
        parent.pop(path[-1], None)


def _fields_v1(paths: list[tuple[str, ...]]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path in paths:
        node = tree
        for part in path:
            node = node.setdefault(f"f:{part}", {})
    return tree


def _owned(entry: dict[str, Any]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []

    def walk(node: dict[str, Any], path: tuple[str, ...]) -> None:
        children = {k: v for k, v in node.items() if k.startswith("f:")}
        if not children:
            out.append(path)
        for key, child in children.items():
            walk(child, (*path, key[2:]))

    walk(entry.get("fieldsV1") or {}, ())
    return out


_IDENTITY = {("apiVersion",), ("kind",), ("metadata", "name"), ("metadata", "namespace")}


def _managed_entry(manager: str, operation: str, api_version: str, paths: list[tuple[str, ...]],
                   subresource: str = "") -> dict[str, Any]:
    entry = {"manager": manager, "operation": operation, "apiVersion": api_version, "time": now(),
             "fieldsType": "FieldsV1", "fieldsV1": _fields_v1([p for p in paths if p not in _IDENTITY])}
    if subresource:
        entry["subresource"] = subresource
    return entry


def server_side_apply(live: dict[str, Any] | None, config: dict[str, Any], manager: str, force: bool,
                      api_version: str) -> dict[str, Any]:
    """The object after ``manager`` applies ``config`` to ``live`` (None:
    a new object): fields it no longer sets are removed unless someone else
    owns them, and a field another manager owns with another value is a
    conflict unless ``force`` (then it changes hands)."""
    applied = {p: v for p, v in _leaves(config).items() if p[:1] != ("status",)}
    if live is None:
        obj = copy.deepcopy(config)
        obj.get("metadata", {}).pop("managedFields", None)
        obj["metadata"]["managedFields"] = [_managed_entry(manager, "Apply", api_version, list(applied))]
        return obj
    obj = copy.deepcopy(live)
    entries = obj["metadata"].get("managedFields") or []
    conflicts: list[tuple[str, tuple[str, ...]]] = []
    for entry in entries:
        if entry["manager"] == manager:
            continue
        for path in _owned(entry):
            if path in applied and _at(live, path) != applied[path]:
                conflicts.append((entry["manager"], path))
    if conflicts and not force:
        lines = [f'conflict with "{who}": .{".".join(path)}' for who, path in conflicts]
        raise ApiError(409, "Conflict", f"Apply failed with {len(conflicts)} conflict{'s' if len(conflicts) > 1 else ''}: "
                       + "\n".join(lines), {"causes": [{"reason": "FieldManagerConflict", "message": line,
                                                          "field": f".{'.'.join(p)}"} for line, (_, p) in zip(lines, conflicts)]})
    others: set[tuple[str, ...]] = set()
    previous: list[tuple[str, ...]] = []
    kept: list[dict[str, Any]] = []
    for entry in entries:
        if entry["manager"] == manager and entry.get("operation") == "Apply":
            previous = _owned(entry)
            continue
        paths = [p for p in _owned(entry) if p not in applied]
        others.update(paths)
        if paths:
            kept.append({**entry, "fieldsV1": _fields_v1(paths)})
    for path in previous:
        if path not in applied and path not in others and path[:1] != ("status",):
            _remove(obj, path)
    for path, value in applied.items():
        node = obj
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        if path:
            node[path[-1]] = copy.deepcopy(value)
    obj["metadata"]["managedFields"] = [*kept, _managed_entry(manager, "Apply", api_version, list(applied))]
    return obj


# ------------------------------------------------------------ tables


def _age(timestamp: str) -> str:
    then = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    seconds = int((datetime.now(timezone.utc) - then).total_seconds())
    return f"{seconds}s" if seconds < 120 else f"{seconds // 60}m"


def _pod_cells(pod: dict[str, Any]) -> list[Any]:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    ready = sum(1 for s in statuses if s.get("ready"))
    waiting = [s["state"]["waiting"]["reason"] for s in statuses if "waiting" in s.get("state", {})]
    phase = waiting[0] if waiting else pod.get("status", {}).get("phase", "Pending")
    return [f"{ready}/{len(pod['spec'].get('containers', []))}", phase, 0]


_COLUMNS: dict[str, list[tuple[str, str, Callable[[dict[str, Any]], Any]]]] = {
    "pods": [("Ready", "string", lambda o: _pod_cells(o)[0]), ("Status", "string", lambda o: _pod_cells(o)[1]),
             ("Restarts", "string", lambda o: _pod_cells(o)[2])],
    "services": [("Type", "string", lambda o: o["spec"].get("type", "ClusterIP")),
                 ("Cluster-IP", "string", lambda o: o["spec"].get("clusterIP", "")),
                 ("Ports", "string", lambda o: ",".join(f"{p['port']}/{p.get('protocol', 'TCP')}"
                                                        for p in o["spec"].get("ports", [])))],
    "secrets": [("Type", "string", lambda o: o.get("type", "Opaque")), ("Data", "string", lambda o: len(o.get("data") or {}))],
    "namespaces": [("Status", "string", lambda o: o.get("status", {}).get("phase", "Active"))],
    "rayclusters": [("desired workers", "integer", lambda o: o.get("status", {}).get("desiredWorkerReplicas", 0)),
                    ("available workers", "integer", lambda o: o.get("status", {}).get("availableWorkerReplicas", 0)),
                    ("cpus", "string", lambda o: o.get("status", {}).get("desiredCPU", "")),
                    ("memory", "string", lambda o: o.get("status", {}).get("desiredMemory", "")),
                    ("gpus", "string", lambda o: o.get("status", {}).get("desiredGPU", "")),
                    ("status", "string", lambda o: o.get("status", {}).get("state", ""))],
}


def as_table(kind: Kind, items: list[dict[str, Any]], rv: str) -> dict[str, Any]:
    columns = [("Name", "string", lambda o: o["metadata"]["name"]), *_COLUMNS.get(kind.plural, []),
               ("Age", "string", lambda o: _age(o["metadata"]["creationTimestamp"]))]
    return {
        "kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv},
        "columnDefinitions": [{"name": n, "type": t, "format": "name" if n == "Name" else "", "description": "",
                               "priority": 0} for n, t, _ in columns],
        "rows": [{"cells": [f(o) for _, _, f in columns],
                  "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                             "metadata": o["metadata"]}} for o in items],
    }


# ------------------------------------------------------------ requests

_RESOURCE_PATH = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>status|proxy)(?P<rest>/.*)?)?$"
)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ApiServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (the stdlib's name)
        """Quiet: the tests read ``ApiState.requests`` instead."""

    # -- plumbing

    @property
    def state(self) -> ApiState:
        return self.server.state

    def _send(self, code: int, body: Any, content_type: str = "application/json",
              headers: dict[str, str] | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache, private")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        url = urlsplit(self.path)
        self.state.record(self.command, self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        body = self._body()
        try:
            if self.headers.get("Authorization", "") != f"Bearer {self.state.token}":
                raise ApiError(401, "Unauthorized", "Unauthorized")
            self._route(url.path, query, body)
        except ApiError as err:
            self._send(err.code, err.status())
        except OSError:
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

    # -- routing

    def _route(self, path: str, query: dict[str, str], body: bytes) -> None:
        # The service proxy keeps a trailing slash, as the API server's does
        # (Ray's dashboard routes "/api/jobs/" and "/api/jobs" apart).
        trailing = "/" if path.endswith("/") and len(path) > 1 else ""
        path = path.rstrip("/") or "/"
        kinds = self.state.kinds()
        groups = [k for k in kinds if k.group]
        if path == "/version":
            return self._send(200, SERVER_VERSION)
        if path == "/api":
            return self._send(200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self.server.server_port}"}]})
        if path == "/apis":
            return self._send(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": g, "versions": [{"groupVersion": f"{g}/v1", "version": "v1"}],
                 "preferredVersion": {"groupVersion": f"{g}/v1", "version": "v1"}} for g in sorted({k.group for k in groups})]})
        if path == "/api/v1":
            return self._send(200, _resource_list("v1", [k for k in kinds if not k.group]))
        if path == "/openapi/v2":
            # An empty protobuf Document: kubectl then treats the CRD kinds as
            # supporting server-side field validation (it asks the CRD list),
            # and leaves other kinds unvalidated on its side.
            return self._send(200, b"", content_type="application/com.github.proto-openapi.spec.v2.v1.0+protobuf")
        if path in ("/openapi/v3", "/openapi/v3/api/v1") or path.startswith("/openapi/v3/apis/"):
            return self._openapi(path, kinds)
        match = _RESOURCE_PATH.match(path)
        group_doc = re.match(r"^/apis/([^/]+)/([^/]+)$", path)
        if group_doc:
            listed = [k for k in groups if k.group == group_doc[1] and k.version == group_doc[2]]
            if not listed:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return self._send(200, _resource_list(f"{group_doc[1]}/{group_doc[2]}", listed))
        if not match:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        group = match["group"] or ""
        kind = KINDS_BY_PLURAL.get(match["plural"])
        if kind is None or kind not in kinds or kind.group != group:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        namespace = match["ns"]
        name = match["name"]
        if kind is NAMESPACES and namespace is None and name is None and match["plural"] != "namespaces":
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if kind is CRDS:
            return self._crds(name)
        if match["sub"] == "proxy":
            if kind is not SERVICES or name is None or namespace is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return self._proxy(namespace, name, (match["rest"] or "") + trailing or "/", body)
        self._resource(kind, namespace or "", name, match["sub"], query, body)

    def _crds(self, name: str | None) -> None:
        if self.command not in ("GET", "HEAD"):
            raise ApiError(403, "Forbidden", 'customresourcedefinitions.apiextensions.k8s.io is forbidden: User '
                           '"rlkit-test" cannot change custom resource definitions in the stand-in')
        crds = self.state.crds()
        if name is None:
            return self._send_objects_list(CRDS, crds)
        found = [c for c in crds if c["metadata"]["name"] == name]
        if not found:
            raise not_found(CRDS, name)
        self._send_objects(CRDS, found, single=True)

    def _openapi(self, path: str, kinds: tuple[Kind, ...]) -> None:
        docs: dict[str, list[Kind]] = {}
        for kind in kinds:
            docs.setdefault("api/v1" if not kind.group else f"apis/{kind.group}/{kind.version}", []).append(kind)
        if path == "/openapi/v3":
            paths = {}
            for key, listed in docs.items():
                digest = hashlib.sha256(json.dumps(_openapi_doc(listed), sort_keys=True).encode()).hexdigest()[:32].upper()
                paths[key] = {"serverRelativeURL": f"/openapi/v3/{key}?hash={digest}"}
            return self._send(200, {"paths": paths})
        listed = docs.get(path[len("/openapi/v3/"):])
        if listed is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        self._send(200, _openapi_doc(listed))

    # -- resources

    def _decode(self, body: bytes) -> dict[str, Any]:
        try:
            obj = yaml.safe_load(body.decode() or "{}")
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise ApiError(400, "BadRequest", f"error decoding YAML: {err}") from None
        if not isinstance(obj, dict):
            raise ApiError(400, "BadRequest", "Object 'Kind' is missing in the request body")
        return obj

    def _resource(self, kind: Kind, namespace: str, name: str | None, sub: str | None, query: dict[str, str],
                  body: bytes) -> None:
        store = self.state.store
        if self.command in ("GET", "HEAD") and name is None:
            return self._list(kind, namespace or None, query)
        if self.command in ("GET", "HEAD"):
            obj = store.get(kind, namespace, name or "")
            return self._send_objects(kind, [obj], single=True)
        if self.command == "POST" and name is None:
            obj = self._decode(body)
            warnings = self._admit(kind, namespace, obj, query, creating=True)
            if query.get("dryRun") == "All":
                return self._send(201, obj, headers=warnings)
            manager = query.get("fieldManager", "unknown")
            obj["metadata"]["managedFields"] = [_managed_entry(manager, "Update", kind.api_version,
                                                               list(_leaves(obj)))]
            if kind is RAYCLUSTERS:
                obj.pop("status", None)
            return self._send(201, store.create(kind, namespace, obj), headers=warnings)
        if name is None:
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        if self.command == "DELETE":
            return self._delete(kind, namespace, name, body, query)
        if self.command == "PUT":
            obj = self._decode(body)
            warnings = self._admit(kind, namespace, obj, query, creating=False)
            live = store.get(kind, namespace, name)
            self._keep_other_half(kind, live, obj, sub)
            return self._send(200, store.replace(kind, obj, spec_changed=obj.get("spec") != live.get("spec")),
                              headers=warnings)
        if self.command == "PATCH":
            return self._patch(kind, namespace, name, sub, query, body)
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    @staticmethod
    def _keep_other_half(kind: Kind, live: dict[str, Any], new: dict[str, Any], sub: str | None) -> None:
        """A status subresource: writes to the object keep its status, writes
        to /status keep everything else."""
        if kind not in (RAYCLUSTERS, PODS, SERVICES, NAMESPACES):
            return
        if sub == "status":
            status = new.get("status")
            new.clear()
            new.update(copy.deepcopy(live))
            if status is not None:
                new["status"] = status
        elif "status" in live:
            new["status"] = copy.deepcopy(live["status"])
        else:
            new.pop("status", None)

    def _admit(self, kind: Kind, namespace: str, obj: dict[str, Any], query: dict[str, str],
               creating: bool, applying: bool = False) -> dict[str, str]:
        """Validate ``obj`` (in place: defaults, pruning) as the API server
        and KubeRay's webhook would; returns the response's warning header."""
        meta = obj.setdefault("metadata", {})
        name = meta.get("name", "")
        if obj.get("kind") not in (None, kind.kind) or obj.get("apiVersion") not in (None, kind.api_version):
            raise ApiError(400, "BadRequest", f"the API version in the data ({obj.get('apiVersion')}) does not match "
                           f"the expected API version ({kind.api_version})")
        if not name:
            raise ApiError(422, "Invalid", f"{kind.kind} \"\" is invalid: metadata.name: Required value: name or "
                           "generateName is required", {"kind": kind.kind, "causes": [
                               {"reason": "FieldValueRequired", "message": "Required value: name or generateName is required",
                                "field": "metadata.name"}]})
        if creating and kind.namespaced and not self.state.store.namespace_exists(namespace):
            raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found', {"name": namespace, "kind": "namespaces"})
        if kind.namespaced and meta.get("namespace") not in (None, namespace):
            raise ApiError(400, "BadRequest", "the namespace of the provided object does not match the namespace "
                           "sent on the request")
        if kind is not RAYCLUSTERS:
            return {}
        mode = query.get("fieldValidation", "Warn" if not applying else "Strict")
        found = schema.Problems()
        schema.validate(obj, schema.RAYCLUSTER, "", found, prune=mode != "Strict" and not applying)
        if found.unknown and applying:
            paths = ", ".join(f".{p}" for p in found.unknown)
            raise ApiError(500, "", f"failed to create typed patch object ({namespace}/{name}; {kind.api_version}, "
                           f"Kind={kind.kind}): {paths}: field not declared in schema")
        if found.unknown and mode == "Strict":
            unknown = ", ".join(f'unknown field "{p}"' for p in found.unknown)
            raise ApiError(400, "BadRequest", f'{kind.kind} in version "{kind.version}" cannot be handled as a '
                           f"{kind.kind}: strict decoding error: {unknown}")
        if found.invalid:
            errors = [f"{p}: {m}" for p, m in found.invalid]
            shown = errors[0] if len(errors) == 1 else f"[{', '.join(errors)}]"
            raise ApiError(422, "Invalid", f'{kind.kind}.{kind.group} "{name}" is invalid: {shown}', {
                "name": name, "group": kind.group, "kind": kind.kind,
                "causes": [{"reason": "FieldValueInvalid", "message": m, "field": p} for p, m in found.invalid]})
        if self.state.webhook:
            problem = schema.name_problem(name)
            if problem:
                cause = f'Invalid value: "{name}": {problem}'
                raise ApiError(422, "Invalid", f'admission webhook "{WEBHOOK}" denied the request: '
                               f'{kind.kind}.{kind.group} "{name}" is invalid: metadata.name: {cause}', {
                                   "name": name, "group": kind.group, "kind": kind.kind,
                                   "causes": [{"reason": "FieldValueInvalid", "message": cause, "field": "metadata.name"}]})
        if found.unknown and mode == "Warn":
            return {"Warning": ", ".join(f'299 - "unknown field \\"{p}\\""' for p in found.unknown)}
        return {}

    def _patch(self, kind: Kind, namespace: str, name: str, sub: str | None, query: dict[str, str], body: bytes) -> None:
        store = self.state.store
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        live = store.find(kind, namespace, name)
        if content_type == "application/apply-patch+yaml":
            config = self._decode(body)
            manager = query.get("fieldManager")
            if not manager:
                raise ApiError(400, "BadRequest", "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: "
                               "is required for apply patch")
            if config.get("metadata", {}).get("name") not in (None, name):
                raise ApiError(400, "BadRequest", "the name of the object does not match the name on the URL")
            config.setdefault("metadata", {})["name"] = name
            for key in ("apiVersion", "kind"):
                if key not in config:
                    raise ApiError(400, "BadRequest", f"{key} must be set in the apply patch")
            warnings = self._admit(kind, namespace, config, query, creating=live is None, applying=True)
            new = server_side_apply(live, config, manager, query.get("force") == "true", kind.api_version)
            if query.get("dryRun") == "All":
                return self._send(200, new)
            if live is None:
                new.pop("status", None)
                return self._send(201, store.create(kind, namespace, new), headers=warnings)
            self._keep_other_half(kind, live, new, sub)
            return self._send(200, store.replace(kind, new, spec_changed=new.get("spec") != live.get("spec")),
                              headers=warnings)
        if live is None:
            raise not_found(kind, name)
        if content_type in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            new = _merge(copy.deepcopy(live), self._decode(body))
        elif content_type == "application/json-patch+json":
            new = _json_patch(copy.deepcopy(live), json.loads(body or b"[]"))
        else:
            raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - accepted "
                           f"media types include: application/json-patch+json, application/merge-patch+json, "
                           f"application/apply-patch+yaml")
        warnings = self._admit(kind, namespace, new, query, creating=False)
        self._keep_other_half(kind, live, new, sub)
        self._send(200, store.replace(kind, new, spec_changed=new.get("spec") != live.get("spec")), headers=warnings)

    def _delete(self, kind: Kind, namespace: str, name: str, body: bytes, query: dict[str, str]) -> None:
        options = json.loads(body) if body.strip() else {}
        policy = options.get("propagationPolicy") or query.get("propagationPolicy") or "Background"
        if options.get("orphanDependents") is True:
            policy = "Orphan"
        if options.get("dryRun") or query.get("dryRun"):
            return self._send(200, self.state.store.get(kind, namespace, name))
        obj = self.state.store.delete(kind, namespace, name, orphan=policy == "Orphan")
        self._send(200, obj)

    def _list(self, kind: Kind, namespace: str | None, query: dict[str, str]) -> None:
        store = self.state.store
        labels, fields = query.get("labelSelector", ""), query.get("fieldSelector", "")
        if query.get("watch") in ("true", "1"):
            return self._watch(kind, namespace, labels, fields, query)
        self._send_objects_list(kind, store.list(kind, namespace, labels, fields))

    def _send_objects_list(self, kind: Kind, items: list[dict[str, Any]]) -> None:
        rv = str(self.state.store.resource_version())
        if "as=Table" in (self.headers.get("Accept") or ""):
            return self._send(200, as_table(kind, items, rv))
        self._send(200, {"kind": f"{kind.kind}List", "apiVersion": kind.api_version,
                         "metadata": {"resourceVersion": rv}, "items": items})

    def _send_objects(self, kind: Kind, items: list[dict[str, Any]], single: bool) -> None:
        if "as=Table" in (self.headers.get("Accept") or ""):
            return self._send(200, as_table(kind, items, str(self.state.store.resource_version())))
        self._send(200, items[0] if single else items)

    def _watch(self, kind: Kind, namespace: str | None, labels: str, fields: str, query: dict[str, str]) -> None:
        """A chunked stream of watch events (one JSON object per line) from
        ``resourceVersion`` on; ``sendInitialEvents`` replays the current
        objects first and ends them with a bookmark, as watch-list clients expect."""
        store = self.state.store
        label_ok = label_matcher(labels)
        field_ok = field_matcher(kind, fields)
        timeout = min(float(query.get("timeoutSeconds") or 1800), 1800.0)
        start = query.get("resourceVersion") or "0"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def emit(event_type: str, obj: dict[str, Any]) -> None:
            line = json.dumps({"type": event_type, "object": obj}).encode() + b"\n"
            self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
            self.wfile.flush()

        try:
            rv = int(start) if start.isdigit() else 0
            if query.get("sendInitialEvents") == "true" or start in ("", "0"):
                rv = store.resource_version()
                for obj in store.list(kind, namespace, labels, fields):
                    emit("ADDED", obj)
                if query.get("sendInitialEvents") == "true":
                    emit("BOOKMARK", {"kind": kind.kind, "apiVersion": kind.api_version, "metadata": {
                        "resourceVersion": str(rv), "annotations": {"k8s.io/initial-events-end": "true"}}})
            for event in store.events_after(rv, kind, timeout):
                meta = event.obj["metadata"]
                if namespace is not None and meta.get("namespace") != namespace:
                    continue
                if label_ok(meta.get("labels") or {}) and field_ok(event.obj):
                    emit(event.type, event.obj)
            self.wfile.write(b"0\r\n\r\n")
        except ApiError as err:
            emit("ERROR", err.status())
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass  # the client went away (TLS reports it as an OSError too)
        self.close_connection = True

    # -- the service proxy

    def _proxy(self, namespace: str, name_port: str, rest: str, body: bytes) -> None:
        """Forward to a ready pod behind the service, as the API server's
        service proxy does (the port part names a service port, by name or number)."""
        store = self.state.store
        name, _, port_ref = name_port.partition(":")
        if name in ("http", "https") and port_ref:
            name, _, port_ref = port_ref.partition(":")
        service = store.get(SERVICES, namespace, name)
        ports = service["spec"].get("ports") or []
        chosen = next((p for p in ports if port_ref in (p.get("name", ""), str(p["port"]))), None) if port_ref else (
            ports[0] if len(ports) == 1 else None)
        if chosen is None:
            raise ApiError(503, "ServiceUnavailable", f'no endpoints available for service "{name_port}"')
        selector = service["spec"].get("selector") or {}
        pods = [p for p in store.list(PODS, namespace) if selector
                and all((p["metadata"].get("labels") or {}).get(k) == v for k, v in selector.items())
                and p.get("status", {}).get("podIP")
                and any(c.get("type") == "Ready" and c.get("status") == "True" for c in p["status"].get("conditions", []))]
        if not pods:
            raise ApiError(503, "ServiceUnavailable", f'no endpoints available for service "{name}"')
        pod = pods[0]
        target = chosen.get("targetPort", chosen["port"])
        if isinstance(target, str):
            named = [p["containerPort"] for c in pod["spec"]["containers"] for p in c.get("ports", []) if p.get("name") == target]
            if not named:
                raise ApiError(503, "ServiceUnavailable", f'no endpoints available for service "{name}"')
            target = named[0]
        upstream = rest + (f"?{urlsplit(self.path).query}" if urlsplit(self.path).query else "")
        if self.headers.get("Upgrade"):
            return self._tunnel(pod["status"]["podIP"], int(target), upstream)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        connection = http.client.HTTPConnection(pod["status"]["podIP"], int(target), timeout=60)
        try:
            connection.request(self.command, upstream, body=body or None, headers=headers)
            answer = connection.getresponse()
            data = answer.read()
        except OSError as err:
            raise ApiError(503, "ServiceUnavailable", f"error trying to reach service: {err}") from None
        finally:
            connection.close()
        passed = {k: v for k, v in answer.getheaders() if k.lower() not in _HOP_BY_HOP | {"content-type"}}
        self._send(answer.status, data, content_type=answer.getheader("Content-Type", "application/octet-stream"),
                   headers=passed)


    def _tunnel(self, host: str, port: int, upstream: str) -> None:
        """An upgraded connection (Ray's log tail is a websocket), passed
        through byte for byte as the API server's upgrade-aware proxy does."""
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP - {"connection", "upgrade"}}
        try:
            pod = socket.create_connection((host, port), timeout=60)
        except OSError as err:
            raise ApiError(503, "ServiceUnavailable", f"error trying to reach service: {err}") from None
        headers["Host"] = f"{host}:{port}"
        head = f"{self.command} {upstream} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        pod.sendall((head + "\r\n").encode("latin-1"))
        self.close_connection = True
        client = self.connection

        def pipe(source: socket.socket, sink: socket.socket) -> None:
            try:
                while data := source.recv(65536):
                    sink.sendall(data)
            except OSError:
                pass
            finally:
                for end in (source, sink):
                    try:
                        end.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        back = threading.Thread(target=pipe, args=(pod, client), daemon=True)
        back.start()
        pipe(client, pod)
        back.join(timeout=60)
        pod.close()


def _json_patch(obj: dict[str, Any], operations: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902, the operations kubectl sends (add, replace, remove)."""
    for op in operations:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent: Any = obj
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent.setdefault(part, {})
        last = parts[-1]
        if op["op"] == "remove":
            del parent[int(last) if isinstance(parent, list) else last]
        elif isinstance(parent, list):
            index = len(parent) if last == "-" else int(last)
            if op["op"] == "add":
                parent.insert(index, op["value"])
            else:
                parent[index] = op["value"]
        else:
            parent[last] = op["value"]
    return obj


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (valid two days) and its key."""
    cert, key = directory / "apiserver.crt", directory / "apiserver.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=rlkit-test-apiserver",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    key.chmod(0o600)
    return cert, key


class ApiServer(ThreadingHTTPServer):
    """The server; each connection's TLS handshake runs in its own thread,
    so one slow client cannot hold up the others."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, state: ApiState, cert: Path, key: Path) -> None:
        self.state = state
        self.cert = cert
        self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._tls.load_cert_chain(cert, key)
        super().__init__(("127.0.0.1", 0), Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        try:
            wrapped = self._tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        super().finish_request(wrapped, client_address)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server_port}"
