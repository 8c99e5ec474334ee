"""Training configs: YAML files validated into typed models.

Every model forbids unknown keys, so a typo is an error that names the key
and the closest valid one instead of a silently ignored setting. Numbers are
finite (``.inf`` and ``.nan`` are YAML floats) and sizes have upper bounds, so
a slip such as ``fragment_length=1.0e12`` is refused here rather than met as
an out-of-memory error in a rollout actor.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rlkit import paths
from rlkit.errors import BadInputError, ConfigError

# The parser, pydantic and the config writer all recurse: deeper YAML is refused first.
MAX_DEPTH = 32
# Aliases count each time they are used, so a "billion laughs" file is refused too.
MAX_VALUES = 100_000
# Steps one rollout worker returns per fragment (envs_per_worker x fragment_length):
# about 4 MiB per float of observation, far above any batch that trains well.
MAX_STEPS_PER_FRAGMENT = 1 << 20
MAX_SEED = 2**32 - 1
"""numpy and gymnasium take seeds up to 2**64; this leaves room for the per-worker offsets."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class EnvConfig(_Strict):
    id: str = "CartPole-v1"
    """A gymnasium id ("CartPole-v1"), or "module:env" for a PettingZoo env."""
    kwargs: dict[str, Any] = Field(default_factory=dict)
    normalize_obs: bool = False
    clip_obs: float = Field(10.0, gt=0)
    reward_scale: float = Field(1.0, gt=0)
    """Rewards are multiplied by this for learning; reported returns stay raw."""
    normalize_reward: bool = False
    """Divide the rewards learned from by the running standard deviation of the discounted
    return (algo.gamma), as SB3's VecNormalize does; reported returns stay raw."""
    clip_reward: float = Field(10.0, gt=0)
    """Normalised rewards are clipped to [-clip_reward, clip_reward]."""
    preprocess: Literal["none", "atari"] = "none"
    """atari: the DQN papers' pipeline for an ALE/ id (30 no-op starts, 4 frames a step, 84x84 grayscale
    scaled to [0, 1], the last 4 steps stacked channels-last), built on gymnasium's AtariPreprocessing."""
    vectorization: Literal["auto", "sync"] = "auto"
    """auto: the environment's own batched implementation where gymnasium registers
    one (CartPole-v1 steps all its copies in one numpy call); sync: one env object per copy."""


class RolloutConfig(_Strict):
    num_workers: int = Field(2, ge=1, le=1024)
    envs_per_worker: int = Field(8, ge=1, le=65_536)
    fragment_length: int = Field(64, ge=1, le=MAX_STEPS_PER_FRAGMENT)
    num_cpus_per_worker: float = Field(1.0, gt=0, le=1024)

    @model_validator(mode="after")
    def _fragment_fits(self) -> RolloutConfig:
        steps = self.envs_per_worker * self.fragment_length
        if steps > MAX_STEPS_PER_FRAGMENT:
            raise ValueError(
                f"rollout.envs_per_worker x rollout.fragment_length is {steps:,} steps per fragment, "
                f"above {MAX_STEPS_PER_FRAGMENT:,}: lower one of them"
            )
        return self


class ModelConfig(_Strict):
    hidden_sizes: list[Annotated[int, Field(ge=1, le=65_536)]] = Field(default_factory=lambda: [64, 64], max_length=64)
    activation: Literal["tanh", "relu"] = "tanh"
    """The MLP's hidden activation (mlp only)."""
    encoder: Literal["mlp", "cnn"] = "mlp"
    """mlp: hidden_sizes on the flattened observation. cnn: a conv net on (height, width, channels)
    images, then one ReLU layer (rlkit.train.encoder picks the layers from the image size)."""


class _AlgoCommon(_Strict):
    lr: float = Field(2.5e-4, gt=0)
    anneal_lr: bool = True
    update_epochs: int = Field(4, ge=1, le=10_000)
    num_minibatches: int = Field(4, ge=1, le=MAX_STEPS_PER_FRAGMENT)
    clip_coef: float = Field(0.2, gt=0)
    anneal_clip: bool = False
    """Anneal clip_coef linearly to zero over the run, as learning rate is (rl-zoo3's lin_0.2)."""
    ent_coef: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(0.5, gt=0)
    target_kl: float | None = Field(None, gt=0)


class PPOConfig(_AlgoCommon):
    name: Literal["ppo"] = "ppo"
    gamma: float = Field(0.99, gt=0, le=1)
    gae_lambda: float = Field(0.95, ge=0, le=1)
    norm_adv: bool = True
    clip_vloss: bool = True
    vf_coef: float = Field(0.5, ge=0)


class GRPOConfig(_AlgoCommon):
    name: Literal["grpo"] = "grpo"
    group_size: int = Field(8, ge=2, le=65_536)
    kl_coef: float = Field(0.04, ge=0)
    ref_update_interval: int = Field(10, ge=0, le=10**9)
    """Updates between refreshes of the frozen reference policy; 0 never refreshes."""


AlgoConfig = Annotated[Union[PPOConfig, GRPOConfig], Field(discriminator="name")]


class SyncConfig(_Strict):
    mode: Literal["sync", "async"] = "sync"
    max_policy_lag: int = Field(1, ge=0, le=1000)


class StopConfig(_Strict):
    total_steps: int | None = Field(500_000, ge=1, le=10**13)
    target_return: float | None = None
    """Stop once the mean return of the last 100 episodes reaches this; with eval.every_updates,
    once an evaluation's mean return does."""
    # A year: longer is a typing mistake, and far longer overflows the waits on it.
    time_budget_s: float | None = Field(None, gt=0, le=366 * 24 * 3600)

    @model_validator(mode="after")
    def _some_stop(self) -> StopConfig:
        if self.total_steps is None and self.time_budget_s is None:
            raise ValueError("set stop.total_steps or stop.time_budget_s, or training never ends")
        return self


class EvalConfig(_Strict):
    """Evaluation during training: the deterministic policies on environments of their own."""

    every_updates: int | None = Field(None, ge=1, le=10**9)
    """Updates between evaluations, logged as eval/episodic_return; none never evaluates."""
    episodes: int = Field(10, ge=1, le=100_000)
    """Episodes per evaluation, from the seeds rlkit eval uses, so each evaluation plays the same starts."""


class CheckpointConfig(_Strict):
    every_updates: int = Field(50, ge=1, le=10**9)
    keep: int = Field(3, ge=1, le=10_000)


class SelfPlayConfig(_Strict):
    """A learning policy against frozen snapshots of itself (two-seat games)."""

    pool_size: int = Field(20, ge=1, le=10_000)
    """Snapshots kept; the oldest leaves when a new one joins a full pool."""
    keep_first: bool = True
    """The first snapshot (the untrained policy) never leaves the pool; the next oldest does."""
    win_rate: float | None = Field(0.6, gt=0, le=1)
    """A snapshot joins once the learner wins this share of its last ``window`` games against the pool."""
    window: int = Field(100, ge=1, le=1_000_000)
    snapshot_every: int = Field(0, ge=0, le=10**9)
    """A snapshot also joins every this many updates; 0: by win rate only."""
    sampling: Literal["uniform", "recent"] = "uniform"
    """How each episode's opponent is drawn from the pool; recent weighs snapshot k of n by ``recent_decay**(n-1-k)``."""
    recent_decay: float = Field(0.7, gt=0, le=1)
    random_eval_every: int = Field(10, ge=0, le=10**9)
    """Updates between measurements against a uniform-random player; 0 never measures."""
    random_eval_games: int = Field(50, ge=1, le=100_000)
    """Games per seat in each of those measurements."""

    @model_validator(mode="after")
    def _some_admission(self) -> SelfPlayConfig:
        if self.win_rate is None and not self.snapshot_every:
            raise ValueError("self_play: set win_rate or snapshot_every, or the pool never grows past the first snapshot")
        return self


class MultiAgentConfig(_Strict):
    """Who plays what in a PettingZoo environment (see ``rlkit.train.agents``)."""

    mode: Literal["shared", "independent", "self_play", "mappo"] = "shared"
    """shared: one policy per agent type; independent: one per agent; self_play: one policy
    against snapshots of itself; mappo: shared-type actors and one critic of the global state."""
    policies: dict[str, Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]] = Field(default_factory=dict)
    """Agent id or agent type -> policy id, overriding the mode's own choice for those agents."""
    agent_onehot: bool = False
    """Append the agent's one-hot index among its policy's agents to what the policy sees."""
    self_play: SelfPlayConfig = Field(default_factory=SelfPlayConfig)


class TrainConfig(_Strict):
    name: str = Field("run", pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = Field(1, ge=0, le=MAX_SEED)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    learner_threads: int = Field(1, ge=0, le=1024)
    """torch threads of a CPU learner; 0 keeps torch's default (one per core)."""
    runs_dir: str = Field(default_factory=paths.runs_dir)
    """Parent of run directories; $RLKIT_RUNS_DIR sets the default (jobs, sweeps)."""
    env: EnvConfig = Field(default_factory=EnvConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    algo: AlgoConfig = Field(default_factory=PPOConfig)
    sync: SyncConfig = Field(default_factory=SyncConfig)
    stop: StopConfig = Field(default_factory=StopConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    multiagent: MultiAgentConfig | None = None
    """For PettingZoo environments; none is mode shared."""

    @field_validator("runs_dir")
    @classmethod
    def _runs_dir_can_hold_runs(cls, value: str) -> str:
        try:
            paths.check_dir(Path(value).expanduser())
        except BadInputError as err:
            raise ValueError(str(err)) from None
        return value

    @model_validator(mode="before")
    @classmethod
    def _algo_defaults_to_ppo(cls, data: Any) -> Any:
        # An algo section without a name is PPO, so its other keys are still checked.
        if isinstance(data, dict) and isinstance(data.get("algo"), dict) and "name" not in data["algo"]:
            data = {**data, "algo": {"name": "ppo", **data["algo"]}}
        return data

    @model_validator(mode="after")
    def _grpo_groups_fit(self) -> TrainConfig:
        if isinstance(self.algo, GRPOConfig) and self.rollout.envs_per_worker % self.algo.group_size:
            raise ValueError(
                f"rollout.envs_per_worker ({self.rollout.envs_per_worker}) must be a multiple of "
                f"algo.group_size ({self.algo.group_size}): each worker runs whole groups"
            )
        return self

    @model_validator(mode="after")
    def _grpo_normalises_its_own_returns(self) -> TrainConfig:
        if isinstance(self.algo, GRPOConfig) and self.env.normalize_reward:
            raise ValueError("env.normalize_reward: algo grpo already scales each group's returns by their "
                             "standard deviation; leave it false, or use algo.name ppo")
        return self

    @model_validator(mode="after")
    def _grpo_is_single_agent(self) -> TrainConfig:
        if isinstance(self.algo, GRPOConfig) and self.multiagent is not None:
            raise ValueError("multiagent: algo grpo trains single-agent environments only; use algo.name ppo")
        return self

    @model_validator(mode="after")
    def _self_play_evaluates_against_random(self) -> TrainConfig:
        if (self.eval.every_updates is not None and self.multiagent is not None
                and self.multiagent.mode == "self_play"):
            raise ValueError("eval.every_updates: a self-play run is measured against a random player; "
                             "use multiagent.self_play.random_eval_every")
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def load_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping, turning I/O and syntax errors into one-line ConfigErrors."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file", "check the path") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read: {err.__class__.__name__}") from None
    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise ConfigError(f"{path}: nested deeper than Python can parse", f"keep it under {MAX_DEPTH} levels") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise ConfigError(f"{where}: YAML syntax error: {problem}") from None
    if data is None:
        return {}
    check_shape(data, str(path))
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top, got {type(data).__name__}")
    return data


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``algo.lr=1e-3`` into its key path and a YAML-typed value."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set algo.lr=1e-3")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    except RecursionError:
        raise ConfigError(f"--set {key.strip()}: nested deeper than Python can parse",
                          f"keep it under {MAX_DEPTH} levels") from None
    check_shape(value, f"--set {key.strip()}")
    return key.strip().split("."), value


def check_shape(data: Any, source: str) -> None:
    """Refuse YAML nested deeper than ``MAX_DEPTH`` or with more than ``MAX_VALUES`` values."""
    pending: list[tuple[Any, int]] = [(data, 1)]
    seen = 0
    while pending:
        node, depth = pending.pop()
        seen += 1
        if depth > MAX_DEPTH:
            raise ConfigError(f"{source}: nested deeper than {MAX_DEPTH} levels", "flatten it")
        if seen > MAX_VALUES:
            raise ConfigError(f"{source}: more than {MAX_VALUES:,} values (aliases count each time they are used)")
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        pending.extend((child, depth + 1) for child in children)


def set_key(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in a raw config mapping, making sections on the way."""
    keys = dotted.split(".")
    node = data
    for i, key in enumerate(keys[:-1]):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(keys[: i + 1])} is not a section")
        node = child
    node[keys[-1]] = value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``--set`` overrides to a raw config mapping (validation comes after)."""
    for item in overrides:
        keys, value = parse_override(item)
        try:
            set_key(data, ".".join(keys), value)
        except ConfigError as err:
            raise ConfigError(f"--set {item}: {err}") from None
    return data


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The valid keys of the section that ``loc`` points into, for suggestions."""
    current: Any = model
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(str(part))
        if field is None:
            # A discriminated union puts the tag ("ppo") in the location.
            continue
        annotation = field.annotation
        args = getattr(annotation, "__args__", ())
        models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        current = models[0] if models else annotation
        if len(models) > 1:
            tag = next((p for p in loc if p in ("ppo", "grpo")), None)
            current = next((m for m in models if tag and m.model_fields["name"].default == tag), models[0])
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def describe_validation_error(err: ValidationError, model: type[BaseModel], source: str) -> str:
    """One line for the first problem pydantic found, with a suggestion where one exists."""
    first = err.errors()[0]
    loc = tuple(first["loc"])
    # The union tag ("ppo"/"grpo") is an internal step, not a key the user wrote.
    key = ".".join(str(p) for p in loc if p not in ("ppo", "grpo")) or "(top level)"
    kind = first["type"]
    if kind == "extra_forbidden":
        valid = _fields_at(model, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
        hint = f"did you mean {'.'.join([*key.split('.')[:-1], close[0]])}?" if close else (
            f"valid keys here: {', '.join(valid)}" if valid else "remove it"
        )
        return f"{source}: unknown key {key} ({hint})"
    if kind == "union_tag_invalid":
        return f"{source}: {key}.name must be one of ppo, grpo"
    msg = first["msg"]
    if kind == "value_error":
        msg = msg.removeprefix("Value error, ")
        return f"{source}: {msg}" if key == "(top level)" else f"{source}: {key}: {msg}"
    given = first.get("input")
    shown = f" (got {_short_repr(given)})" if not isinstance(given, dict) else ""
    return f"{source}: {key}: {msg}{shown}"


def _short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def load_train_config(path: Path | None, overrides: list[str] | None = None,
                      base: dict[str, Any] | None = None) -> TrainConfig:
    """Load a config file (or ``base``), apply ``--set`` overrides, validate."""
    data = base if base is not None else (load_yaml(path) if path else {})
    data = apply_overrides(data, list(overrides or []))
    if path is not None and "name" not in data:
        data["name"] = path.stem
    source = str(path) if path else "config"
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(describe_validation_error(err, TrainConfig, source)) from None
