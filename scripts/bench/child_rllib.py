"""RLlib PPO (new API stack) on CartPole-v1, RLlib's own example settings; one run for train_bench.py.

Settings: ray-project/ray, rllib/tuned_examples/ppo/cartpole_ppo.py (the
DefaultModelConfig version, Ray 2.x new API stack): lr 3e-4, num_epochs 6,
vf_loss_coeff 0.01, fcnet_hiddens [32], fcnet_activation linear,
vf_share_layers True, everything else PPOConfig's defaults (2 env runners,
1 env each, train_batch_size 4000, minibatch_size 128); the example's
budget is 300,000 timesteps. Scaled to this machine: Ray gets the
machine's cores (2), one CPU per env runner, the learner in the driver.

Stops when env_runners/episode_return_mean, which RLlib smooths over
metrics_num_episodes_for_smoothing=100 episodes (its default), reaches 475
with at least 100 episodes done.
"""

from __future__ import annotations

import logging
import os
import time

from benchlib import TARGET_RETURN, WINDOW, child_args, emit, peak_rss_mb

EXAMPLE_TIMESTEPS = 300_000


def main() -> None:
    args = child_args(__doc__.splitlines()[0])
    import ray
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
    from ray.rllib.utils.metrics import (
        ENV_RUNNER_RESULTS, EPISODE_RETURN_MEAN, NUM_ENV_STEPS_SAMPLED_LIFETIME, NUM_EPISODES_LIFETIME,
    )

    emit("start", version=f"ray[rllib] {ray.__version__}")
    # "local": a fresh Ray of our own even if another cluster runs on this host.
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False,
             logging_level=logging.ERROR, log_to_driver=False)
    config = (
        PPOConfig()
        .environment("CartPole-v1")
        .env_runners(num_env_runners=2, num_cpus_per_env_runner=1)
        .training(lr=0.0003, num_epochs=6, vf_loss_coeff=0.01)
        .rl_module(model_config=DefaultModelConfig(
            fcnet_hiddens=[32], fcnet_activation="linear", vf_share_layers=True))
        .reporting(metrics_num_episodes_for_smoothing=WINDOW)
        .debugging(seed=args.seed)
    )
    budget = args.budget_steps or EXAMPLE_TIMESTEPS
    algo = config.build_algo()
    emit("train_start")
    started = time.time()
    steps, ret = 0, None
    while steps < budget:
        result = algo.train()
        runners = result[ENV_RUNNER_RESULTS]
        steps = int(result[NUM_ENV_STEPS_SAMPLED_LIFETIME])
        ret = runners.get(EPISODE_RETURN_MEAN)
        emit("progress", steps=steps, rolling=ret)
        if ret is not None and runners.get(NUM_EPISODES_LIFETIME, 0) >= WINDOW and ret >= TARGET_RETURN:
            emit("solved", steps=steps, rolling=ret)
            break
    emit("end", steps=steps, train_wall_s=time.time() - started, rolling=ret, driver_peak_rss_mb=peak_rss_mb())
    algo.stop()
    ray.shutdown()


if __name__ == "__main__":
    main()
