"""model.encoder cnn: the actors' and the learner's forward passes, learning MinAtar, Atari's pipeline."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rlkit.config import EnvConfig, ModelConfig, TrainConfig
from rlkit.errors import ConfigError
from rlkit.train.checkpoint import check_resumable
from rlkit.train.encoder import NATURE, SMALL, CnnEncoder, make_encoder
from rlkit.train.envs import PolicySpec, probe
from rlkit.train.policies import NumpyPolicy
from rlkit.train.torch_model import ActorCritic
from tests.cli_helpers import one_error_line, run_rlkit
from tests.conftest import CONFIGS

# MinAtar/Breakout-v1 under uniformly random actions: mean return 0.30-0.33 over 30 episodes
# for each of 3 seeds. The shipped config's rolling-100 return after its 40k steps was
# 3.29, 2.58, 2.46 and 2.76 for seeds 1-4: 4x random is far from both.
RANDOM_BREAKOUT = 0.33
LEARNED = 4 * RANDOM_BREAKOUT


@pytest.mark.parametrize("shape", [(10, 10, 4), (84, 84, 4)], ids=["minatar", "atari"])
def test_actor_forward_matches_the_learners(shape: tuple[int, int, int]) -> None:
    """The actors' policy (torch on CPU, numpy sampling) gives the learner's log-probabilities and values."""
    torch.manual_seed(0)
    spec, model = PolicySpec(shape, "discrete", 6), ModelConfig(encoder="cnn")
    learner = ActorCritic(spec, model, critic=True)
    actor = NumpyPolicy(spec, model, critic=True)
    actor.load(learner.numpy_weights())
    obs = np.random.default_rng(0).random((8, int(np.prod(shape))), dtype=np.float32)
    actions, logp, values = actor.act(obs, np.random.default_rng(1))
    with torch.no_grad():
        ref_logp, _ = learner.log_prob_entropy(torch.from_numpy(obs), torch.from_numpy(actions))
        ref_values = learner.value(torch.from_numpy(obs))
    np.testing.assert_allclose(logp, ref_logp.numpy(), atol=1e-5)
    np.testing.assert_allclose(values, ref_values.numpy(), atol=1e-5)
    # A new version reaches the actor's torch network, not only the first one.
    with torch.no_grad():
        for p in learner.parameters():
            p.mul_(-1.5)
    actor.load(learner.numpy_weights())
    with torch.no_grad():
        np.testing.assert_allclose(actor.value(obs), learner.value(torch.from_numpy(obs)).numpy(), atol=1e-5)


def test_cnn_reads_channels_last_and_picks_its_layers_from_the_image_size() -> None:
    assert make_encoder(PolicySpec((84, 84, 4), "discrete", 4), ModelConfig(encoder="cnn")).layers == NATURE
    small = make_encoder(PolicySpec((10, 10, 7), "discrete", 4), ModelConfig(encoder="cnn"))
    assert isinstance(small, CnnEncoder) and small.layers == SMALL
    image = np.zeros((1, 10, 10, 7), np.float32)
    image[0, 3, 5, 2] = 1.0
    to_conv = small.network(1, 1.0)[0]
    seen = to_conv(torch.from_numpy(image.reshape(1, -1)))
    assert seen.shape == (1, 7, 10, 10) and seen[0, 2, 3, 5] == 1.0 and seen.sum() == 1.0


def test_atari_pipeline_gives_stacked_channels_last_frames() -> None:
    spec = probe(EnvConfig(id="ALE/Breakout-v5", preprocess="atari"), "ppo")
    assert spec.agents["agent_0"].obs_shape == (84, 84, 4)


@pytest.mark.parametrize("env_id, module, extra", [("ALE/Breakout-v5", "ale_py", "atari"),
                                                   ("MinAtar/Breakout-v1", "minatar", "minatar")])
def test_a_family_not_installed_names_its_extra(monkeypatch: pytest.MonkeyPatch, env_id: str, module: str,
                                                extra: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError, as when not installed
    monkeypatch.delitem(sys.modules, f"{module}.gym", raising=False)
    with pytest.raises(ConfigError) as err:
        probe(EnvConfig(id=env_id), "ppo")
    assert err.value.hint == f"pip install 'rlkit[{extra}]'"


def test_cnn_on_vector_observations_is_one_error_line(tmp_path: Path) -> None:
    result = run_rlkit("train", str(CONFIGS / "ppo_cartpole.yaml"), "--set", "model.encoder=cnn",
                       "--set", f"runs_dir={tmp_path}")
    assert result.returncode == 2
    assert "model.encoder cnn" in one_error_line(result)
    result = run_rlkit("train", str(CONFIGS / "ppo_cartpole.yaml"), "--set", "env.preprocess=atari",
                       "--set", f"runs_dir={tmp_path}")
    assert result.returncode == 2
    assert "not an Atari game" in one_error_line(result)


@pytest.mark.slow
def test_cnn_learns_minatar_breakout_and_evaluates(tmp_path: Path) -> None:
    result = run_rlkit("train", str(CONFIGS / "ppo_minatar_breakout.yaml"), "--set", f"runs_dir={tmp_path}",
                       "--quiet", "--json", timeout=300)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["rolling_return"] >= LEARNED, summary
    # rlkit eval rebuilds the CNN from the checkpoint's weights (no pickle) and plays it.
    evaluated = run_rlkit("eval", summary["run_dir"], "-n", "3", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads(evaluated.stdout)
    assert report["episodes"] == 3 and report["mean_return"] > RANDOM_BREAKOUT, report


def test_atari_breakout_config_trains(tmp_path: Path) -> None:
    """The shipped Breakout config runs two updates of its Nature-CNN end to end (one gradient step each:
    on a CPU learner the config's 16 steps of 256 frames take a minute)."""
    small = ["stop.total_steps=512", "rollout.num_workers=1", "rollout.fragment_length=64",
             "algo.update_epochs=1", "algo.num_minibatches=1"]
    result = run_rlkit("train", str(CONFIGS / "ppo_atari_breakout.yaml"), "--set", f"runs_dir={tmp_path}",
                       *(a for o in small for a in ("--set", o)), "--quiet", "--json", timeout=300)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["stop_reason"] == "total_steps" and summary["global_step"] >= 512, summary


def test_a_run_saved_before_the_encoder_setting_resumes_as_mlp() -> None:
    config = TrainConfig()
    saved = config.model_dump(mode="json")
    del saved["model"]["encoder"], saved["env"]["preprocess"]
    check_resumable(saved, config)
    with pytest.raises(ConfigError, match="model: the checkpoint was trained with"):
        check_resumable(saved, config.model_copy(update={"model": ModelConfig(encoder="cnn")}))
