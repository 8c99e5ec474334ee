"""What a job is: an entrypoint, the driver's resources, env vars and a name;
read from the command line or from a job spec YAML, and checked here before
anything is sent.

A job spec file holds one job, or several under ``jobs:``::

    jobs:
      - name: mlp
        entrypoint: rlkit train configs/ppo_cartpole.yaml --set model.hidden_sizes=[64,64]
      - name: wide
        entrypoint: rlkit train configs/ppo_cartpole.yaml --set model.hidden_sizes=[256,256]
        cpus: 1
        env: {OMP_NUM_THREADS: 1}
"""

from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from rlkit.clusters.address_file import parse_init_address
from rlkit.config import (
    TrainConfig,
    describe_validation_error,
    load_train_config,
    load_yaml,
)
from rlkit.errors import BadInputError, ConfigError

SPEC_SUFFIXES = (".yaml", ".yml")
NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"


def _scalar_to_str(value: Any) -> Any:
    # `OMP_NUM_THREADS: 1` in YAML is an int; the environment wants text.
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value) if isinstance(value, (int, float)) else value


class JobSpec(BaseModel):
    """One job. ``cpus``/``gpus`` are reserved for the entrypoint (the
    driver, where rlkit's learner runs); rollout actors ask for their own."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    # Checked after the fields, so that a misspelt key is reported as the
    # unknown key it is rather than as a missing entrypoint.
    entrypoint: str = ""
    name: str | None = Field(None, pattern=NAME_PATTERN)
    cpus: float | None = Field(None, ge=0)
    gpus: float | None = Field(None, ge=0)
    env: dict[str, Annotated[str, BeforeValidator(_scalar_to_str)]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _has_entrypoint(self) -> JobSpec:
        if not self.entrypoint.strip():
            raise ValueError("entrypoint is missing: the command the job runs")
        return self


class JobFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    jobs: list[JobSpec] = Field(min_length=1)


def load_job_file(path: Path) -> list[JobSpec]:
    """The jobs of a spec file; any problem is one ``ConfigError`` line."""
    data = load_yaml(path)
    model: type[BaseModel] = JobFile if "jobs" in data else JobSpec
    try:
        parsed = model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(describe_validation_error(err, model, str(path))) from None
    return parsed.jobs if isinstance(parsed, JobFile) else [parsed]


def specs_from_args(args: list[str]) -> list[JobSpec]:
    """Jobs from ``rlkit submit``'s arguments, in the three forms it takes:
    ``-- CMD ARGS...`` (one entrypoint, word by word), ``"CMD ARGS" "CMD
    ARGS"`` (one job per argument) and ``JOBS.yaml`` (spec files). A first
    argument that is one word and not a spec file starts the first form."""
    if not args:
        raise BadInputError(
            "missing ENTRYPOINT",
            "e.g. rlkit submit -- rlkit train configs/ppo_cartpole.yaml, or rlkit submit jobs.yaml",
        )
    if not args[0].strip():
        raise BadInputError("the entrypoint is empty", "give the command the job runs, e.g. rlkit submit -- python train.py")
    if not _is_spec_file(args[0]) and not any(c.isspace() for c in args[0]):
        return [JobSpec(entrypoint=shlex.join(args))]
    specs: list[JobSpec] = []
    for arg in args:
        if not arg.strip():
            raise BadInputError("an entrypoint is empty", "quote each job's whole command, or drop the empty one")
        specs += load_job_file(Path(arg)) if _is_spec_file(arg) else [JobSpec(entrypoint=arg.strip())]
    return specs


def _is_spec_file(arg: str) -> bool:
    return arg.endswith(SPEC_SUFFIXES) and not any(c.isspace() for c in arg)


def with_defaults(spec: JobSpec, name: str | None = None, cpus: float | None = None,
                  gpus: float | None = None, env: dict[str, str] | None = None) -> JobSpec:
    """``spec`` with command-line defaults where it sets nothing itself."""
    try:
        return JobSpec(
            entrypoint=spec.entrypoint,
            name=spec.name or name,
            cpus=spec.cpus if spec.cpus is not None else cpus,
            gpus=spec.gpus if spec.gpus is not None else gpus,
            env={**(env or {}), **spec.env},
        )
    except ValidationError as err:
        raise BadInputError(describe_validation_error(err, JobSpec, "job")) from None


def parse_env(items: list[str]) -> dict[str, str]:
    """``--env KEY=VALUE`` options as a mapping."""
    env = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BadInputError(f"--env {item!r}: expected KEY=VALUE, e.g. --env OMP_NUM_THREADS=1")
        env[key.strip()] = value
    return env


@dataclass(frozen=True)
class Job:
    """A job checked and ready to send. ``entrypoint`` is the command as it
    runs on the cluster; ``config`` is the resolved training config of an
    ``rlkit train`` entrypoint (None for other commands and for --resume)."""

    spec: JobSpec
    name: str
    entrypoint: str
    config: TrainConfig | None


def prepare(spec: JobSpec, working_dir: Path) -> Job:
    """Check ``spec``: its command parses, and an ``rlkit train`` config is
    in the working dir and validates (a bad config fails here, once, rather
    than on every cluster)."""
    try:
        words = shlex.split(spec.entrypoint)
    except ValueError as err:
        raise BadInputError(f"entrypoint {spec.entrypoint!r}: {err}", "check its quotes") from None
    if not words or not words[0].strip():
        raise BadInputError(f"entrypoint {spec.entrypoint!r} has no command", "give the command the job runs first")
    config = _train_config(words, working_dir) if words[:2] == ["rlkit", "train"] else None
    name = spec.name or (config.name if config else _command_name(words))
    return Job(spec, name, rewrite_entrypoint(spec.entrypoint), config)


def rewrite_entrypoint(entrypoint: str) -> str:
    """A leading ``rlkit`` runs as ``python -m rlkit``: rlkit travels with
    the job as a Python module, so its console script need not exist there."""
    head, _, rest = entrypoint.strip().partition(" ")
    return f"python -m rlkit {rest}".rstrip() if head == "rlkit" else entrypoint.strip()


def _command_name(words: list[str]) -> str:
    script = next((w for w in words if w.endswith(".py")), None)
    stem = Path(script or words[0]).stem
    return "".join(c if c.isalnum() or c in "_.-" else "-" for c in stem) or "job"


def _train_config(words: list[str], working_dir: Path) -> TrainConfig | None:
    # The options of `rlkit train` that take a value, so that a value is
    # never taken for the config; the rest go by.
    parser = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    parser.add_argument("config", nargs="?")
    parser.add_argument("--set", action="append", default=[])
    for option in ("--name", "--device", "--resume", "--address"):
        parser.add_argument(option)
    try:
        args, _ = parser.parse_known_args(words[2:])
    except argparse.ArgumentError as err:
        raise BadInputError(f"{shlex.join(words)}: {err}") from None
    if args.address is not None:
        try:
            parse_init_address(args.address)
        except ValueError as err:
            raise BadInputError(f"{shlex.join(words)}: --address: {err}") from None
    if args.resume:
        return None
    if not args.config:
        raise BadInputError(f"{shlex.join(words)}: missing CONFIG", "e.g. rlkit train configs/ppo_cartpole.yaml")
    path = Path(args.config)
    local = path if path.is_absolute() else working_dir / path
    if not local.is_file():
        if path.is_absolute():
            return None  # a path on the cluster: rlkit train checks it there
        raise ConfigError(
            f"{args.config}: no such file in the working dir {working_dir}",
            "the job runs from the working dir: give the config's path inside it, or pass --working-dir",
        )
    overrides = list(args.set)
    overrides += [f"{key}={value}" for key, value in (("name", args.name), ("device", args.device)) if value]
    return load_train_config(path, overrides, base=load_yaml(local))
