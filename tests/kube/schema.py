"""The RayCluster schema the stand-in validates against, as data.

Derived from KubeRay's CRD (ray-project/kuberay
``ray-operator/config/crd/bases/ray.io_rayclusters.yaml``, generated from
``ray-operator/apis/ray/v1/raycluster_types.go``): read at commits
1184bc872c0801e59c18caf8a1a4eb5f2800ce93 (CRD) and
3275ee09f6a6c899c37e82ea6349785536de6bd4 (types), then brought to v1.5.1
with the fields that release's generated API reference lists
(ray-project.github.io/kuberay/reference/api: ``authOptions.mode``, an enum
of ``disabled``/``token``, default ``token``; group ``labels`` and
``resources``; ``upgradeStrategy``). The fields, types, enums, defaults and
required lists of the RayCluster spec and status are kept; the pod
templates are checked more loosely (their well-known fields are typed,
anything else is accepted, as if marked x-kubernetes-preserve-unknown-fields)
because their real schema is all of core/v1 PodSpec.

Besides the CRD, KubeRay limits ``metadata.name`` to 53 characters
(``utils.MaxRayClusterNameLength``: 63 minus ``-serve-svc``), checked in
``ValidateRayClusterMetadata`` by the operator's reconcile loop and by its
optional validating webhook; see ``name_problem``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_NAME_LENGTH = 53
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)(([KMGTPE]i)|[numkMGTPE]|[eE][+-]?\d+)?$")


@dataclass(frozen=True)
class Field:
    """One node of an OpenAPI v3 structural schema.

    ``kind`` is object, array, string, integer, boolean, number or
    quantity (Kubernetes' int-or-string resource quantity); ``values`` is
    the schema of a map's values (additionalProperties); ``open`` accepts
    fields not listed (x-kubernetes-preserve-unknown-fields)."""

    kind: str
    properties: Mapping[str, Field] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    items: Field | None = None
    values: Field | None = None
    enum: tuple[str, ...] = ()
    default: Any = None
    open: bool = False
    int_format: str | None = None


def obj(required: tuple[str, ...] = (), open: bool = False, **properties: Field) -> Field:
    return Field("object", properties=properties, required=required, open=open)


def arr(items: Field) -> Field:
    return Field("array", items=items)


def string(*enum: str, default: str | None = None) -> Field:
    return Field("string", enum=enum, default=default)


def int32(default: int | None = None) -> Field:
    return Field("integer", default=default, int_format="int32")


def int64() -> Field:
    return Field("integer", int_format="int64")


BOOL = Field("boolean")
STRING = string()
QUANTITY = Field("quantity")
STRING_MAP = Field("object", values=STRING)
QUANTITY_MAP = Field("object", values=QUANTITY)
ANY_OBJECT = Field("object", open=True)

_RESOURCES = obj(limits=QUANTITY_MAP, requests=QUANTITY_MAP, open=True)
_OBJECT_META = obj(
    name=STRING, namespace=STRING, labels=STRING_MAP, annotations=STRING_MAP, finalizers=arr(STRING), open=True
)
_CONTAINER = obj(
    required=("name",),
    open=True,
    name=STRING,
    image=STRING,
    imagePullPolicy=string("Always", "IfNotPresent", "Never"),
    command=arr(STRING),
    args=arr(STRING),
    env=arr(obj(required=("name",), name=STRING, value=STRING, valueFrom=ANY_OBJECT)),
    ports=arr(obj(required=("containerPort",), containerPort=int32(), name=STRING, protocol=string(default="TCP"),
                  hostPort=int32(), hostIP=STRING)),
    resources=_RESOURCES,
)
POD_TEMPLATE = obj(
    metadata=_OBJECT_META,
    spec=obj(required=("containers",), open=True, containers=arr(_CONTAINER), initContainers=arr(_CONTAINER),
             nodeSelector=STRING_MAP, serviceAccountName=STRING, restartPolicy=STRING),
)
_HEAD_SERVICE = obj(apiVersion=STRING, kind=STRING, metadata=_OBJECT_META, spec=ANY_OBJECT, status=ANY_OBJECT)
_REDIS_CREDENTIAL = obj(value=STRING, valueFrom=ANY_OBJECT)

HEAD_GROUP = obj(
    required=("template",),
    enableIngress=BOOL,
    headService=_HEAD_SERVICE,
    labels=STRING_MAP,
    rayStartParams=STRING_MAP,
    resources=STRING_MAP,
    serviceType=STRING,
    template=POD_TEMPLATE,
)
WORKER_GROUP = obj(
    required=("groupName", "maxReplicas", "minReplicas", "template"),
    groupName=STRING,
    idleTimeoutSeconds=int32(),
    labels=STRING_MAP,
    maxReplicas=int32(default=2147483647),
    minReplicas=int32(default=0),
    numOfHosts=int32(default=1),
    rayStartParams=STRING_MAP,
    replicas=int32(default=0),
    resources=STRING_MAP,
    scaleStrategy=obj(workersToDelete=arr(STRING)),
    suspend=BOOL,
    template=POD_TEMPLATE,
)
SPEC = obj(
    required=("headGroupSpec",),
    authOptions=obj(mode=string("disabled", "token", default="token")),
    autoscalerOptions=obj(
        env=arr(ANY_OBJECT), envFrom=arr(ANY_OBJECT), idleTimeoutSeconds=int32(), image=STRING,
        imagePullPolicy=STRING, resources=_RESOURCES, securityContext=ANY_OBJECT,
        upscalingMode=string("Default", "Aggressive", "Conservative"), version=string("v1", "v2"),
        volumeMounts=arr(ANY_OBJECT),
    ),
    enableInTreeAutoscaling=BOOL,
    gcsFaultToleranceOptions=obj(
        required=("redisAddress",), externalStorageNamespace=STRING, redisAddress=STRING,
        redisPassword=_REDIS_CREDENTIAL, redisUsername=_REDIS_CREDENTIAL,
    ),
    headGroupSpec=HEAD_GROUP,
    headServiceAnnotations=STRING_MAP,
    managedBy=STRING,
    rayVersion=STRING,
    suspend=BOOL,
    upgradeStrategy=obj(type=string("Recreate", "None")),
    workerGroupSpecs=arr(WORKER_GROUP),
)
_CONDITION = obj(
    required=("lastTransitionTime", "message", "reason", "status", "type"),
    lastTransitionTime=STRING, message=STRING, observedGeneration=int64(), reason=STRING,
    status=string("True", "False", "Unknown"), type=STRING,
)
STATUS = obj(
    availableWorkerReplicas=int32(), conditions=arr(_CONDITION), desiredCPU=QUANTITY, desiredGPU=QUANTITY,
    desiredMemory=QUANTITY, desiredTPU=QUANTITY, desiredWorkerReplicas=int32(), endpoints=STRING_MAP,
    head=obj(podIP=STRING, podName=STRING, serviceIP=STRING, serviceName=STRING), lastUpdateTime=STRING,
    maxWorkerReplicas=int32(), minWorkerReplicas=int32(), observedGeneration=int64(), readyWorkerReplicas=int32(),
    reason=STRING, state=STRING, stateTransitionTimes=STRING_MAP,
)
RAYCLUSTER = obj(apiVersion=STRING, kind=STRING, metadata=ANY_OBJECT, spec=SPEC, status=STATUS)


@dataclass
class Problems:
    """What validating an object found: ``unknown`` field paths (refused
    under strict validation, dropped otherwise) and ``invalid`` field
    errors, each ``(path, message)`` as the API server words them."""

    unknown: list[str] = field(default_factory=list)
    invalid: list[tuple[str, str]] = field(default_factory=list)


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def _type_ok(kind: str, value: Any) -> bool:
    actual = _type_name(value)
    if kind == "number":
        return actual in ("integer", "number")
    if kind == "quantity":
        return actual in ("integer", "number") or (actual == "string" and bool(_QUANTITY.match(value)))
    return actual == kind


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def validate(value: Any, schema: Field, path: str, found: Problems, prune: bool = False) -> None:
    """Check ``value`` against ``schema``, filling defaults in place;
    ``prune`` drops unknown fields as the API server does when it is not
    asked to refuse them."""
    if value is None:
        return
    if not _type_ok(schema.kind, value):
        expected = "string" if schema.kind == "quantity" else schema.kind
        found.invalid.append((path, f'Invalid value: "{_type_name(value)}": {path} in body must be of type {expected}: '
                                    f'"{_type_name(value)}"'))
        return
    if schema.enum and value not in schema.enum:
        supported = ", ".join(f'"{v}"' for v in schema.enum)
        found.invalid.append((path, f'Unsupported value: "{value}": supported values: {supported}'))
    if schema.kind == "array" and schema.items is not None:
        for i, item in enumerate(value):
            validate(item, schema.items, f"{path}[{i}]", found, prune)
    if schema.kind != "object":
        return
    if schema.values is not None:
        for key, item in value.items():
            validate(item, schema.values, _join(path, key), found, prune)
        return
    for key, sub in schema.properties.items():
        if key not in value and sub.default is not None:
            value[key] = sub.default
    for key in schema.required:
        if key not in value:
            found.invalid.append((_join(path, key), "Required value"))
    for key in list(value):
        sub = schema.properties.get(key)
        if sub is not None:
            validate(value[key], sub, _join(path, key), found, prune)
        elif not schema.open:
            found.unknown.append(_join(path, key))
            if prune:
                del value[key]


def name_problem(name: str) -> str | None:
    """KubeRay's own check of a RayCluster's name (ValidateRayClusterMetadata)."""
    if len(name) > MAX_NAME_LENGTH:
        return f"RayCluster name should be no more than {MAX_NAME_LENGTH} characters"
    if not _DNS1035.match(name):
        return f"RayCluster name should be a valid DNS1035 label: {name!r}"
    return None


def to_openapi(schema: Field) -> dict[str, Any]:
    """The OpenAPI v3 form of ``schema``, as the API server publishes a CRD's."""
    if schema.kind == "quantity":
        out: dict[str, Any] = {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": True}
    else:
        out = {"type": schema.kind}
    if schema.int_format:
        out["format"] = schema.int_format
    if schema.enum:
        out["enum"] = list(schema.enum)
    if schema.default is not None:
        out["default"] = schema.default
    if schema.items is not None:
        out["items"] = to_openapi(schema.items)
    if schema.values is not None:
        out["additionalProperties"] = to_openapi(schema.values)
    if schema.properties:
        out["properties"] = {k: to_openapi(v) for k, v in schema.properties.items()}
    if schema.required:
        out["required"] = list(schema.required)
    if schema.open:
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out
