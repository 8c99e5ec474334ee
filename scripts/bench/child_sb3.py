"""Stable-Baselines3 PPO on CartPole-v1, rl-zoo3's tuned settings; one run for train_bench.py.

Hyperparameters: rl-baselines3-zoo, hyperparams/ppo.yml, entry CartPole-v1
(marked "# Tuned"): n_envs 8, n_timesteps 1e5, policy MlpPolicy, n_steps 32,
batch_size 256, gae_lambda 0.8, gamma 0.98, n_epochs 20, ent_coef 0.0,
learning_rate lin_0.001, clip_range lin_0.2. The zoo builds DummyVecEnv with
a Monitor per env; ``lin_X`` is a schedule X * progress_remaining.
"""

from __future__ import annotations

import time

from benchlib import TARGET_RETURN, WINDOW, child_args, emit, peak_rss_mb

ZOO_TIMESTEPS = 100_000


def linear(start: float):
    return lambda progress_remaining: progress_remaining * start


def main() -> None:
    args = child_args(__doc__.splitlines()[0])
    import numpy as np
    import stable_baselines3
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv

    emit("start", version=f"stable-baselines3 {stable_baselines3.__version__}")

    class StopAtTarget(BaseCallback):
        """Stops when the mean of the last 100 Monitor episode returns reaches the target."""

        def _on_rollout_end(self) -> None:
            emit("progress", steps=self.num_timesteps)

        def _on_step(self) -> bool:
            buf = self.model.ep_info_buffer  # the last stats_window_size=100 episodes
            if len(buf) == WINDOW and (ret := float(np.mean([e["r"] for e in buf]))) >= TARGET_RETURN:
                emit("solved", steps=self.num_timesteps, rolling=ret)
                return False
            return True

    env = make_vec_env("CartPole-v1", n_envs=8, seed=args.seed, vec_env_cls=DummyVecEnv)
    model = PPO("MlpPolicy", env, n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98, n_epochs=20,
                ent_coef=0.0, learning_rate=linear(0.001), clip_range=linear(0.2),
                seed=args.seed, device="cpu", verbose=0)
    emit("train_start")
    started = time.time()
    model.learn(total_timesteps=args.budget_steps or ZOO_TIMESTEPS, callback=StopAtTarget())
    buf = model.ep_info_buffer
    emit("end", steps=model.num_timesteps, train_wall_s=time.time() - started,
         rolling=float(np.mean([e["r"] for e in buf])) if buf else None,
         driver_peak_rss_mb=peak_rss_mb())


if __name__ == "__main__":
    main()
