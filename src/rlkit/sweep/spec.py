"""Sweep files: a base training config, a search space over its dotted keys,
a scheduler and the resources of one trial, validated into a ``SweepSpec``.

Every problem is one line naming the key, like a training config's; every
value a trial could draw is checked against the training config's own rules
before Ray starts, so a bad range fails here and not in trial 37.
"""

from __future__ import annotations

import copy
import difflib
import importlib.util
import math
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rlkit.config import MAX_SEED, TrainConfig, apply_overrides, describe_validation_error, load_yaml, set_key
from rlkit.errors import ConfigError

CONTINUOUS = ("uniform", "quniform", "loguniform", "qloguniform")
INTEGER = ("randint", "qrandint")
DISCRETE = ("choice", "grid")
KINDS = (*DISCRETE, *CONTINUOUS, *INTEGER)
# Ray Tune's own bounds: randint excludes its upper end, qrandint includes it.
_ARITY = {"uniform": 2, "loguniform": 2, "randint": 2, "quniform": 3, "qloguniform": 3, "qrandint": 3}
TIME_ATTRS = ("training_iteration", "global_step", "time_total_s")
# PBT copies a donor's checkpoint into the trial, so only settings that the
# donor's model, optimizer and actors can run under may change.
_PBT_FROZEN = ("algo.name", "algo.group_size")
BASE_PREFIX = "base."


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Distribution(BaseModel):
    """One search-space entry, written ``{loguniform: [1.0e-4, 1.0e-2]}``."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    kind: Literal["choice", "grid", "uniform", "quniform", "loguniform", "qloguniform", "randint", "qrandint"]
    values: list[Any] = Field(default_factory=list)
    """The options of choice and grid."""
    low: float = 0.0
    high: float = 0.0
    q: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_yaml(cls, data: Any) -> Any:
        if isinstance(data, Distribution):
            return data
        if not isinstance(data, dict) or len(data) != 1:
            raise ValueError(
                "expected one distribution such as {loguniform: [1.0e-4, 1.0e-2]} or {choice: [a, b]}"
                f" (one of {', '.join(KINDS)})"
            )
        (kind, args), = data.items()
        if kind not in KINDS:
            close = difflib.get_close_matches(str(kind), KINDS, n=1, cutoff=0.5)
            hint = f"did you mean {close[0]}?" if close else f"one of {', '.join(KINDS)}"
            raise ValueError(f"unknown distribution {kind!r} ({hint})")
        if not isinstance(args, list) or not args:
            raise ValueError(f"{kind} takes a non-empty list, e.g. {{{kind}: {_example(kind)}}}")
        if kind in DISCRETE:
            return {"kind": kind, "values": args}
        if len(args) != _ARITY[kind]:
            names = "[low, high, q]" if _ARITY[kind] == 3 else "[low, high]"
            raise ValueError(f"{kind} takes {names}, e.g. {{{kind}: {_example(kind)}}}")
        try:
            numbers = [float(a) for a in args]
        except (TypeError, ValueError, OverflowError):
            numbers = []
        if not numbers or not all(math.isfinite(n) for n in numbers):
            raise ValueError(f"{kind} bounds must be finite numbers, got {args}")
        return {"kind": kind, "low": numbers[0], "high": numbers[1], "q": numbers[2] if len(numbers) == 3 else None}

    @model_validator(mode="after")
    def _check_range(self) -> Distribution:
        if self.kind in DISCRETE:
            return self
        if not self.low < self.high:
            raise ValueError(f"{self.kind}: low ({self.low:g}) must be below high ({self.high:g})")
        if self.kind in ("loguniform", "qloguniform") and self.low <= 0:
            raise ValueError(f"{self.kind}: low ({self.low:g}) must be above 0 for a log scale")
        if self.q is not None and self.q <= 0:
            raise ValueError(f"{self.kind}: q ({self.q:g}) must be above 0")
        if self.kind in INTEGER and not (self.low.is_integer() and self.high.is_integer()
                                         and (self.q is None or self.q.is_integer())):
            raise ValueError(f"{self.kind}: bounds must be whole numbers")
        return self

    def edges(self) -> list[Any]:
        """The values at the ends of the range, which a trial may come near; the
        training config's limits are intervals, so checking them checks all."""
        if self.kind in DISCRETE:
            return list(self.values)
        if self.kind in INTEGER:
            top = self.high if self.kind == "qrandint" else self.high - 1
            return [int(self.low), int(top)]
        return [self.low, self.high]

    def to_yaml(self) -> dict[str, Any]:
        if self.kind in DISCRETE:
            return {self.kind: list(self.values)}
        args: list[Any] = [self.low, self.high] + ([self.q] if self.q is not None else [])
        if self.kind in INTEGER:
            args = [int(a) for a in args]
        return {self.kind: args}


def _example(kind: str) -> str:
    return {"choice": "[0.0, 0.01]", "grid": "[1, 2, 3]", "uniform": "[0.9, 0.99]",
            "quniform": "[0.1, 0.3, 0.05]", "loguniform": "[1.0e-4, 1.0e-2]",
            "qloguniform": "[1.0e-4, 1.0e-2, 1.0e-5]", "randint": "[1, 11]", "qrandint": "[2, 16, 2]"}[kind]


class SchedulerSpec(_Strict):
    """``type: none`` runs every trial to its end; ``asha`` stops the worst
    early; ``pbt`` copies the best trials' checkpoints into the worst and
    perturbs their hyperparameters. ``time_attr`` is the clock of max_t,
    grace_period and perturbation_interval."""

    type: Literal["none", "asha", "pbt"] = "none"
    time_attr: Literal["training_iteration", "global_step", "time_total_s"] = "training_iteration"
    max_t: float | None = Field(None, gt=0)
    grace_period: float | None = Field(None, gt=0)
    reduction_factor: float | None = Field(None, gt=1)
    perturbation_interval: float | None = Field(None, gt=0)
    quantile_fraction: float | None = Field(None, gt=0, le=0.5)
    resample_probability: float | None = Field(None, ge=0, le=1)
    synch: bool = False
    """PBT only: perturb once every trial has reached the interval (trials pause
    and wait), rather than whenever one trial reaches it."""
    mutations: dict[str, Distribution] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _keys_fit_type(self) -> SchedulerSpec:
        owners = {"max_t": "asha", "grace_period": "asha", "reduction_factor": "asha",
                  "perturbation_interval": "pbt", "quantile_fraction": "pbt", "resample_probability": "pbt",
                  "synch": "pbt", "mutations": "pbt"}
        for key, owner in owners.items():
            if key in self.model_fields_set and owner != self.type:
                raise ValueError(f"scheduler.{key} belongs to type {owner}, not {self.type}")
        if self.type == "pbt":
            if not self.mutations:
                raise ValueError("scheduler.mutations: PBT needs at least one setting to perturb")
            grid = [k for k, d in self.mutations.items() if d.kind == "grid"]
            if grid:
                raise ValueError(f"scheduler.mutations.{grid[0]}: PBT cannot perturb a grid; use choice")
        return self

    @property
    def asha(self) -> dict[str, float]:
        return {"max_t": self.max_t or 100, "grace_period": self.grace_period or 10,
                "reduction_factor": self.reduction_factor or 2}

    @property
    def pbt(self) -> dict[str, float | bool]:
        return {"perturbation_interval": self.perturbation_interval or 10,
                "quantile_fraction": self.quantile_fraction or 0.25,
                "resample_probability": 0.25 if self.resample_probability is None else self.resample_probability,
                "synch": self.synch}


class SearchSpec(_Strict):
    """``random`` crosses grid entries and samples the rest; ``grid`` insists that
    every entry is a grid; ``optuna`` (TPE, ``pip install 'rlkit[optuna]'``)
    learns from finished trials."""

    type: Literal["random", "grid", "optuna"] = "random"
    seed: int | None = Field(None, ge=0, le=MAX_SEED)


class SweepStop(_Strict):
    time_budget_s: float | None = Field(None, gt=0)
    """The whole sweep's wall clock: trials still running then are stopped."""
    target: float | None = None
    """Stop the whole sweep once any trial's metric reaches this (in the sweep's mode)."""


class Resources(_Strict):
    """One trial's placement group: a learner bundle and one bundle per rollout worker."""

    learner_cpus: float = Field(1.0, ge=0)
    learner_gpus: float = Field(0.0, ge=0)
    rollout_workers: int | None = Field(None, ge=1, le=1024)
    """Sets the base config's rollout.num_workers."""
    cpus_per_worker: float | None = Field(None, gt=0)
    """Sets the base config's rollout.num_cpus_per_worker."""
    placement: Literal["PACK", "STRICT_PACK", "SPREAD"] = "PACK"


class SweepFile(_Strict):
    """The sweep file as written (``base`` still a path or a mapping)."""

    name: str = Field("sweep", pattern=r"^[A-Za-z0-9_.-]+$")
    base: str | dict[str, Any] = Field(default_factory=dict)
    """A training config file (relative to the sweep file) or the config itself."""
    base_set: dict[str, Any] = Field(default_factory=dict)
    """Dotted keys set on the base for every trial, e.g. stop.total_steps: 20000."""
    metric: str = "charts/rolling_return"
    mode: Literal["max", "min"] = "max"
    num_samples: int = Field(1, ge=1, le=100_000)
    space: dict[str, Distribution] = Field(default_factory=dict)
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    search: SearchSpec = Field(default_factory=SearchSpec)
    stop: SweepStop = Field(default_factory=SweepStop)
    resources: Resources = Field(default_factory=Resources)
    max_concurrent_trials: int | None = Field(None, ge=1, le=100_000)
    max_failures: int = Field(1, ge=0, le=1000)
    """How often a trial that raises is retried (from its last checkpoint)."""
    checkpoint_every: int | None = Field(None, ge=1, le=10**9)
    """Training iterations between trial checkpoints (default: PBT's interval, else 10)."""
    keep_checkpoints: int | None = Field(None, ge=1, le=10_000)
    """Checkpoints kept per trial (default 2; with PBT 5, since clones restore a donor's)."""
    storage_path: str | None = None
    """Parent of the sweep directory (default: <base runs_dir>/sweeps)."""

    @field_validator("storage_path")
    @classmethod
    def _storage_is_a_path(cls, value: str | None) -> str | None:
        if value is not None and "://" in value:
            raise ValueError("must be a filesystem path (on several nodes: one they all mount at the same path); "
                             "trials write their logs there directly, so URIs are not supported")
        return value

    @field_validator("metric")
    @classmethod
    def _metric_is_reported(cls, value: str) -> str:
        if value == "global_step" or value.startswith(("charts/", "losses/")):
            return value
        raise ValueError(f"{value!r} is not a training metric (e.g. charts/rolling_return, losses/approx_kl, global_step)")


class SweepSpec(BaseModel):
    """A validated sweep: ``base`` is the raw training-config mapping that every
    trial starts from (``base_set`` and resources already applied)."""

    model_config = ConfigDict(extra="forbid")
    file: SweepFile
    base: dict[str, Any]
    source: str = "sweep"
    base_file: str | None = None
    """The training config file the base came from, if it came from one."""

    @property
    def name(self) -> str:
        return self.file.name

    @property
    def base_config(self) -> TrainConfig:
        return TrainConfig.model_validate(copy.deepcopy(self.base))

    @property
    def tuned_keys(self) -> list[str]:
        """The keys a trial's hyperparameters set, in file order."""
        return list(dict.fromkeys([*self.file.space, *self.file.scheduler.mutations]))

    def trial_config(self, params: dict[str, Any], **fixed: Any) -> TrainConfig:
        """The training config of one trial: base, then its hyperparameters, then ``fixed``."""
        data = copy.deepcopy(self.base)
        for key, value in {**params, **fixed}.items():
            set_key(data, key, value)
        return TrainConfig.model_validate(data)

    def checkpoint_every(self) -> int:
        sched = self.file.scheduler
        if self.file.checkpoint_every is not None:
            return self.file.checkpoint_every
        if sched.type == "pbt" and sched.time_attr == "training_iteration":
            return max(1, int(sched.pbt["perturbation_interval"]))
        # Global steps or seconds do not map to iterations: PBT then needs a
        # checkpoint at every iteration to clone a current one.
        return 1 if sched.type == "pbt" else 10

    def keep_checkpoints(self) -> int:
        if self.file.keep_checkpoints is not None:
            return self.file.keep_checkpoints
        return 5 if self.file.scheduler.type == "pbt" else 2

    def to_yaml(self) -> str:
        """The resolved sweep, self-contained (base inline): what --resume reads back."""
        data = self.file.model_dump(mode="json", exclude_defaults=True)
        data["base"] = self.base
        # Already applied to base, where a later --set may have changed them.
        data.pop("base_set", None)
        for key in ("rollout_workers", "cpus_per_worker"):
            data.get("resources", {}).pop(key, None)
        data["space"] = {k: d.to_yaml() for k, d in self.file.space.items()}
        if self.file.scheduler.mutations:
            data["scheduler"]["mutations"] = {k: d.to_yaml() for k, d in self.file.scheduler.mutations.items()}
        return yaml.safe_dump({"name": self.name, **data}, sort_keys=False)


def split_overrides(overrides: list[str]) -> tuple[list[str], list[str]]:
    """``--set`` items for the sweep file, and those (``base.KEY=V``) for its base config."""
    sweep = [item for item in overrides if not item.startswith(BASE_PREFIX)]
    base = [item.removeprefix(BASE_PREFIX) for item in overrides if item.startswith(BASE_PREFIX)]
    return sweep, base


def load_sweep(path: Path, overrides: list[str] | None = None) -> SweepSpec:
    """Read, override (``--set num_samples=4``, ``--set base.stop.total_steps=5000``) and validate."""
    sweep_sets, base_sets = split_overrides(list(overrides or []))
    data = apply_overrides(load_yaml(path), sweep_sets)
    data.setdefault("name", path.stem)
    return build_spec(data, str(path), path.parent, base_sets)


def build_spec(data: dict[str, Any], source: str, relative_to: Path, base_sets: list[str] | None = None) -> SweepSpec:
    """Validate a sweep mapping; ``relative_to`` resolves a base given as a path."""
    try:
        file = SweepFile.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_describe(err, source)) from None
    base_source = f"{source}: base"
    if isinstance(file.base, str):
        base_path = Path(os.path.expanduser(file.base))
        if not base_path.is_absolute():
            base_path = relative_to / base_path
        base = load_yaml(base_path)
        base_source = str(base_path)
    else:
        base = copy.deepcopy(file.base)
    for key, value in file.base_set.items():
        _set_checked(base, key, value, f"{source}: base_set.{key}")
    if file.resources.rollout_workers is not None:
        _set_checked(base, "rollout.num_workers", file.resources.rollout_workers, f"{source}: resources.rollout_workers")
    if file.resources.cpus_per_worker is not None:
        _set_checked(base, "rollout.num_cpus_per_worker", file.resources.cpus_per_worker,
                     f"{source}: resources.cpus_per_worker")
    # The command line comes last: --set base.rollout.num_workers=2 wins over the file.
    base = apply_overrides(base, list(base_sets or []))
    try:
        TrainConfig.model_validate(copy.deepcopy(base))
    except ValidationError as err:
        raise ConfigError(describe_validation_error(err, TrainConfig, base_source)) from None
    spec = SweepSpec(file=file, base=base, source=source, base_file=None if isinstance(file.base, dict) else base_source)
    _check_space(spec)
    return spec


def _set_checked(data: dict[str, Any], key: str, value: Any, where: str) -> None:
    try:
        set_key(data, key, value)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err.message}") from None


def _describe(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    loc = tuple(first["loc"])
    # A search-space key is a dotted config key, not a section of the sweep file.
    if loc[:1] == ("space",) or loc[:2] == ("scheduler", "mutations"):
        where = ".".join(str(p) for p in loc[: (2 if loc[0] == "space" else 3)])
        msg = first["msg"].removeprefix("Value error, ")
        return f"{source}: {where}: {msg}"
    return describe_validation_error(err, SweepFile, source)


def _check_space(spec: SweepSpec) -> None:
    """Every key a trial sets exists in the base config, and every value it may
    draw passes the training config's validation."""
    file, source = spec.file, spec.source
    entries = [(f"space.{k}", k, d) for k, d in file.space.items()]
    entries += [(f"scheduler.mutations.{k}", k, d) for k, d in file.scheduler.mutations.items()]
    valid = _dotted_keys(spec.base_config.model_dump(mode="json"))
    for where, key, dist in entries:
        if key not in valid and not _under_free_mapping(key, valid):
            close = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}?" if close else "search over keys of the training config, e.g. algo.lr"
            raise ConfigError(f"{source}: {where}: {key} is not a key of the base training config ({hint})")
        for value in dist.edges():
            try:
                spec.trial_config({key: value})
            except ValidationError as err:
                problem = describe_validation_error(err, TrainConfig, "").removeprefix(": ")
                raise ConfigError(f"{source}: {where}: {value!r} is out of range ({problem})") from None
    frozen = [k for k in file.scheduler.mutations if k in _PBT_FROZEN or not k.startswith(("algo.", "env.reward_scale"))]
    if frozen:
        raise ConfigError(f"{source}: scheduler.mutations.{frozen[0]}: PBT can only perturb algo.* settings "
                          "(a trial continues from another's checkpoint, whose model and actors must fit)")
    if file.resources.rollout_workers is not None and "rollout.num_workers" in spec.tuned_keys:
        raise ConfigError(f"{source}: resources.rollout_workers and space.rollout.num_workers both set the "
                          "number of rollout workers; keep one")
    if file.search.type == "grid":
        sampled = [k for k, d in file.space.items() if d.kind != "grid"]
        if sampled or not file.space:
            raise ConfigError(f"{source}: search.type grid needs every space entry to be a grid"
                              + (f" ({sampled[0]} is {file.space[sampled[0]].kind})" if sampled else ""),
                              "use search.type random to mix grids and sampled entries")
    if file.search.type == "optuna":
        if importlib.util.find_spec("optuna") is None:
            raise ConfigError(f"{source}: search.type optuna needs the optuna package", "pip install 'rlkit[optuna]'")
        grid = [k for k, d in file.space.items() if d.kind == "grid"]
        if grid:
            raise ConfigError(f"{source}: space.{grid[0]}: Optuna cannot search a grid; use choice")
        logq = [k for k, d in file.space.items() if d.kind == "qloguniform"]
        if logq:
            raise ConfigError(f"{source}: space.{logq[0]}: Optuna cannot quantize a log scale; use loguniform")
        if file.scheduler.type == "pbt":
            raise ConfigError(f"{source}: search.type optuna does not combine with PBT, which picks its own values")
    if file.scheduler.type == "pbt" and spec.keep_checkpoints() < 3:
        raise ConfigError(f"{source}: keep_checkpoints {spec.keep_checkpoints()} is too few for PBT: a clone "
                          "restores its donor's checkpoint after the donor may have written two more",
                          "keep 3 or more (default 5)")
    config = spec.base_config
    if file.resources.learner_gpus == 0 and config.device == "cuda":
        raise ConfigError(f"{source}: the base config asks for device cuda but resources.learner_gpus is 0")


def _dotted_keys(data: dict[str, Any], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        keys.add(dotted)
        if isinstance(value, dict):
            keys |= _dotted_keys(value, dotted + ".")
    return keys


def _under_free_mapping(key: str, valid: set[str]) -> bool:
    """env.kwargs takes any key: the environment's constructor checks them."""
    return key.startswith("env.kwargs.") and "env.kwargs" in valid
