"""RLlib PPO (new API stack) on a PettingZoo parallel environment; one run for marl_bench.py.

The environment goes through RLlib's own wrapper, ``ParallelPettingZooEnv``,
and the agents map to policies (RLModules) by ``--mapping``:

    shared  one policy for every agent (parameter sharing), as RLlib's
            examples/multi_agent/pettingzoo_parameter_sharing.py
    agent   one policy per agent, as its pettingzoo_independent_learning.py

Every PPO setting comes from ``--settings`` (JSON), which marl_bench.py
fills from the rlkit config it compares against, so both sides train with
the same numbers: env runners and envs per runner (rlkit's rollout actors
and their envs), rollout fragment, train batch (their product, in env
steps), epochs, minibatches, lr (linear to 0 over the step budget, as
rlkit's anneal_lr), gamma, lambda, clip, entropy and value coefficients,
gradient-norm clip, hidden sizes and activation (separate policy and value
networks, as rlkit's). RLlib's KL penalty is off (rlkit has none).
rlkit's env.reward_scale, which RLlib lacks, is a wrapper that scales the
rewards the same way; the returns reported are divided back (unscaled).

RLlib's minibatch_size is per policy (RLModule), in agent steps, and a
policy with fewer rows cycles through its batch until every policy has
had ``num_epochs``: it is set so that the policy with the most agents
makes ``num_minibatches`` minibatches per epoch, as each rlkit policy does.

It trains until ``--budget-steps`` env steps or a SIGINT (Ctrl-C), which
ends training after the iteration in progress, as rlkit train does, and
reports after every iteration the env steps so far and the team return
(an episode's rewards summed over all its agents) averaged over the last
100 episodes, as rlkit's charts/rolling_return. Not RLlib's own
``env_runners/episode_return_mean``: its window is emptied at every
iteration (Ray 2.60's MeanStats.reduce), so it averages only the episodes
of the last iteration. The episodes' returns come from an on_episode_end
callback instead.

``--settings`` keys: env_runners, envs_per_runner, fragment_length, epochs,
num_minibatches, lr, anneal_lr, gamma, lambda, clip, vf_clip, ent_coef,
vf_coef, max_grad_norm, hidden, activation, reward_scale.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import math
import os
import signal
import threading
import time
from collections import Counter, deque

from benchlib import WINDOW, emit, peak_rss_mb

TEAM_RETURNS = "bench_team_returns"
"""The env runners' metric: every episode's return of the iteration, as a list."""


def parallel_env(env_id: str, kwargs: dict, reward_scale: float = 1.0):
    """``mpe2:simple_spread_v3`` -> that module's ``parallel_env(**kwargs)``, its rewards times ``reward_scale``."""
    from pettingzoo.utils.wrappers import BaseParallelWrapper

    class ScaledRewards(BaseParallelWrapper):
        def step(self, actions):
            obs, rewards, terminated, truncated, infos = self.env.step(actions)
            return obs, {a: r * reward_scale for a, r in rewards.items()}, terminated, truncated, infos

    module, _, name = env_id.partition(":")
    env = importlib.import_module(f"{module}.{name}").parallel_env(**kwargs)
    return env if reward_scale == 1.0 else ScaledRewards(env)


def log_team_return(*, episode, prev_episode_chunks=None, metrics_logger=None, **_kw) -> None:
    """An RLlib on_episode_end callback: the episode's return, all its chunks and agents summed."""
    ret = episode.get_return() + sum(chunk.get_return() for chunk in prev_episode_chunks or ())
    metrics_logger.log_value(TEAM_RETURNS, ret, reduce="item_series")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", required=True, help="module:name, e.g. mpe2:simple_spread_v3")
    p.add_argument("--env-kwargs", default="{}", help="JSON, to the environment's constructor")
    p.add_argument("--mapping", choices=("shared", "agent"), default="shared")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--budget-steps", type=int, required=True, help="env steps; also the lr schedule's horizon")
    p.add_argument("--settings", required=True, help="JSON: the PPO settings (see the module docstring)")
    args = p.parse_args()
    s = json.loads(args.settings)
    env_kwargs = json.loads(args.env_kwargs)

    import ray
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
    from ray.rllib.env.wrappers.pettingzoo_env import ParallelPettingZooEnv
    from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME
    from ray.tune.registry import register_env

    emit("start", version=f"ray[rllib] {ray.__version__}")
    # "local": a fresh Ray of our own even if another cluster runs on this host.
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False,
             logging_level=logging.ERROR, log_to_driver=False)
    scale = s["reward_scale"]
    register_env("bench_env", lambda _cfg: ParallelPettingZooEnv(parallel_env(args.env, env_kwargs, scale)))
    agents = parallel_env(args.env, env_kwargs).possible_agents
    if args.mapping == "shared":
        policies = {"shared"}
        def policy_of(agent_id, *_args, **_kw):
            return "shared"
    else:
        policies = set(agents)
        def policy_of(agent_id, *_args, **_kw):
            return agent_id

    batch = s["env_runners"] * s["envs_per_runner"] * s["fragment_length"]
    most_agents = max(Counter(policy_of(a) for a in agents).values())
    minibatch = math.ceil(batch * most_agents / s["num_minibatches"])
    config = (
        PPOConfig()
        .environment("bench_env")
        .env_runners(num_env_runners=s["env_runners"], num_envs_per_env_runner=s["envs_per_runner"],
                     rollout_fragment_length=s["fragment_length"], num_cpus_per_env_runner=1)
        .multi_agent(policies=policies, policy_mapping_fn=policy_of)
        .training(
            train_batch_size_per_learner=batch,
            minibatch_size=minibatch,
            num_epochs=s["epochs"],
            lr=[[0, s["lr"]], [args.budget_steps, 0.0]] if s["anneal_lr"] else s["lr"],
            gamma=s["gamma"], lambda_=s["lambda"],
            clip_param=s["clip"], vf_clip_param=s["vf_clip"],
            entropy_coeff=s["ent_coef"], vf_loss_coeff=s["vf_coef"],
            grad_clip=s["max_grad_norm"], grad_clip_by="global_norm",
            use_kl_loss=False,
        )
        .rl_module(model_config=DefaultModelConfig(
            fcnet_hiddens=s["hidden"], fcnet_activation=s["activation"], vf_share_layers=False))
        .callbacks(on_episode_end=log_team_return)
        .debugging(seed=args.seed)
    )
    # RLlib checks minibatch_size against the train batch in env steps, but cuts each
    # policy's minibatches from its rows, one per agent and env step (3 per env step for
    # simple_spread's shared policy): check everything with a minibatch it accepts, then
    # build with the one that matches rlkit's minibatches, unchecked.
    config.training(minibatch_size=min(minibatch, batch)).validate()
    config.training(minibatch_size=minibatch).experimental(_validate_config=False)
    algo = config.build_algo()
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda _signum, _frame: stop.set())
    emit("train_start", policies=sorted(policies), train_batch=batch, minibatch=minibatch)
    started = time.time()
    steps, ret, episodes = 0, None, 0
    recent: deque[float] = deque(maxlen=WINDOW)
    while steps < args.budget_steps and not stop.is_set():
        result = algo.train()
        steps = int(result[NUM_ENV_STEPS_SAMPLED_LIFETIME])
        # One episode's return arrives as a bare number, several as a list.
        returns = result[ENV_RUNNER_RESULTS].get(TEAM_RETURNS, [])
        returns = returns if isinstance(returns, list) else [returns]
        recent.extend(float(r) / scale for r in returns)
        episodes += len(returns)
        ret = sum(recent) / len(recent) if recent else None
        emit("progress", steps=steps, team_return=ret, episodes=episodes)
    emit("end", steps=steps, train_wall_s=time.time() - started, team_return=ret, driver_peak_rss_mb=peak_rss_mb())
    algo.stop()
    ray.shutdown()


if __name__ == "__main__":
    main()
