"""Ray Tune hyperparameter sweeps over rlkit training.

    from rlkit.sweep import load_sweep, run_sweep
    result = run_sweep(load_sweep(Path("configs/sweeps/ppo_cartpole_asha.yaml"), ["num_samples=4"]))
    print(result.best_config, result.best_metric)

Ray and Tune are imported only when a sweep runs, so loading and checking a
sweep file stays fast.
"""

from rlkit.sweep.spec import SweepSpec, load_sweep

__all__ = ["SweepSpec", "load_sweep", "run_sweep", "resume_sweep", "plan_sweep", "SweepResult", "SweepPlan"]


def __getattr__(name: str):  # noqa: ANN202  (lazy: rlkit.sweep.run imports ray)
    if name in ("run_sweep", "resume_sweep", "plan_sweep", "SweepResult", "SweepPlan"):
        from rlkit.sweep import run

        return getattr(run, name)
    raise AttributeError(name)
