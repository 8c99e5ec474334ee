"""A ``SweepSpec`` in Ray Tune's terms: domains, scheduler, searcher,
placement group, stopper. Everything here is pickled into the experiment
state by Tune, so it holds plain data and module-level classes only."""

from __future__ import annotations

import math
from typing import Any

from ray import tune

from rlkit.sweep.spec import Distribution, SweepSpec


def domain(dist: Distribution) -> Any:
    low, high, q = dist.low, dist.high, dist.q
    if dist.kind == "choice":
        return tune.choice(list(dist.values))
    if dist.kind == "grid":
        return tune.grid_search(list(dist.values))
    if dist.kind == "uniform":
        return tune.uniform(low, high)
    if dist.kind == "quniform":
        return tune.quniform(low, high, q)
    if dist.kind == "loguniform":
        return tune.loguniform(low, high)
    if dist.kind == "qloguniform":
        return tune.qloguniform(low, high, q)
    if dist.kind == "randint":
        return tune.randint(int(low), int(high))
    return tune.qrandint(int(low), int(high), int(q or 1))


def param_space(spec: SweepSpec) -> dict[str, Any]:
    """Flat ``{"algo.lr": domain}``: a trial's config is exactly its hyperparameters."""
    return {key: domain(dist) for key, dist in spec.file.space.items()}


def placement(spec: SweepSpec, params: dict[str, Any] | None = None) -> tune.PlacementGroupFactory:
    """A learner bundle (the trial process) plus one bundle per rollout worker."""
    res = spec.file.resources
    rollout = spec.trial_config(params or {}).rollout
    learner = {"CPU": res.learner_cpus, "GPU": res.learner_gpus}
    workers = [{"CPU": rollout.num_cpus_per_worker}] * rollout.num_workers
    return tune.PlacementGroupFactory([learner, *workers], strategy=res.placement)


class TrialPlacement:
    """Per-trial placement when the search space changes the number of workers."""

    def __init__(self, spec: SweepSpec) -> None:
        self.spec = spec

    def __call__(self, config: dict[str, Any]) -> tune.PlacementGroupFactory:
        return placement(self.spec, config)


def resources(spec: SweepSpec) -> tune.PlacementGroupFactory | TrialPlacement:
    tuned = set(spec.tuned_keys)
    if tuned & {"rollout.num_workers", "rollout.num_cpus_per_worker"}:
        return TrialPlacement(spec)
    return placement(spec)


class ClampToRange:
    """PBT multiplies a value by 0.8 or 1.2, which can leave its range (a gamma
    above 1): pull each perturbed value back inside its distribution."""

    def __init__(self, spec: SweepSpec) -> None:
        self.ranges = {k: (d.low, d.high, d.kind) for k, d in spec.file.scheduler.mutations.items()
                       if d.kind not in ("choice", "grid")}

    def __call__(self, config: dict[str, Any]) -> dict[str, Any]:
        for key, (low, high, kind) in self.ranges.items():
            if key in config:
                value = min(max(config[key], low), high)
                config[key] = int(round(value)) if kind in ("randint", "qrandint") else value
        return config


def scheduler(spec: SweepSpec) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining

    sched = spec.file.scheduler
    if sched.type == "asha":
        return ASHAScheduler(time_attr=sched.time_attr, **sched.asha)
    if sched.type == "pbt":
        mutations = {k: (list(d.values) if d.kind == "choice" else domain(d)) for k, d in sched.mutations.items()}
        return PopulationBasedTraining(
            time_attr=sched.time_attr, hyperparam_mutations=mutations,
            custom_explore_fn=ClampToRange(spec), **sched.pbt,
        )
    return FIFOScheduler()


def search_alg(spec: SweepSpec) -> Any:
    search = spec.file.search
    if search.type == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(seed=search.seed)
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(random_state=search.seed)


class TargetReached(tune.Stopper):
    """Ends the whole sweep once one trial's metric reaches ``target``."""

    def __init__(self, metric: str, mode: str, target: float) -> None:
        self.metric, self.sign, self.target = metric, 1.0 if mode == "max" else -1.0, target
        self.reached = False

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and not math.isnan(value) and self.sign * (value - self.target) >= 0:
            self.reached = True
        return self.reached

    def stop_all(self) -> bool:
        return self.reached


def stopper(spec: SweepSpec) -> TargetReached | None:
    target = spec.file.stop.target
    return None if target is None else TargetReached(spec.file.metric, spec.file.mode, target)


def trial_count(spec: SweepSpec) -> int:
    """Trials the sweep will run: num_samples times the grid's size."""
    grid = 1
    for dist in spec.file.space.values():
        if dist.kind == "grid":
            grid *= len(dist.values)
    return spec.file.num_samples * grid
