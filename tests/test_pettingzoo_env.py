"""The PettingZoo environment layer on real environments: ids, spaces, the policy mapping, the stepper."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest
from gymnasium import spaces
from pettingzoo import AECEnv, ParallelEnv
from pettingzoo.utils import env_logger

from rlkit.errors import ConfigError
from rlkit.train.agents import agent_type
from rlkit.train import pettingzoo_env as pz
from rlkit.train.multiagent_stepper import MultiAgentStepper

KAZ = "pettingzoo.butterfly:knights_archers_zombies_v11"
# Fast zombies and deadly walls, so random knights and archers die within a few dozen steps.
KAZ_KWARGS = {"obs_method": "vector", "spawn_delay": 3, "line_death": True, "max_cycles": 400}


def slots_for(agents: tuple[str, ...] | list[str], policy_of: dict[str, str]) -> dict[str, tuple[str, ...]]:
    """Policy -> its agents in the env's order, as ``AgentMapping.slots`` has them."""
    return {p: tuple(a for a in agents if policy_of[a] == p) for p in dict.fromkeys(policy_of[a] for a in agents)}


def one_line(err: pytest.ExceptionInfo[Exception]) -> str:
    text = str(err.value)
    assert "\n" not in text and "Traceback" not in text
    return text


# --- a tiny turn-based game whose reward credit is computed by hand ------------------------------

# Two seats alternate, two moves each. After move k the env hands every seat a reward
# (REWARDS[k]); the last move ends the game for both.
REWARDS = [{"seat_0": 1.0, "seat_1": 10.0}, {"seat_0": 2.0, "seat_1": 20.0},
           {"seat_0": 3.0, "seat_1": 30.0}, {"seat_0": 4.0, "seat_1": 40.0}]


class TinyGame(AECEnv):
    metadata = {"name": "tiny_v0", "is_parallelizable": False}

    def __init__(self) -> None:
        super().__init__()
        self.possible_agents = ["seat_0", "seat_1"]
        self.observation_spaces = {a: spaces.Box(0.0, 4.0, (1,), np.float32) for a in self.possible_agents}
        self.action_spaces = {a: spaces.Discrete(3) for a in self.possible_agents}

    def observation_space(self, agent: str) -> spaces.Space:
        return self.observation_spaces[agent]

    def action_space(self, agent: str) -> spaces.Space:
        return self.action_spaces[agent]

    def reset(self, seed: int | None = None, options: dict | None = None) -> None:
        self.agents = self.possible_agents[:]
        self.moves = 0
        self.rewards = dict.fromkeys(self.agents, 0.0)
        self._cumulative_rewards = dict.fromkeys(self.agents, 0.0)
        self.terminations = dict.fromkeys(self.agents, False)
        self.truncations = dict.fromkeys(self.agents, False)
        self.infos = {a: {} for a in self.agents}
        self.agent_selection = "seat_0"

    def observe(self, agent: str) -> np.ndarray:
        return np.array([self.moves], np.float32)

    def step(self, action: int | None) -> None:
        if self.terminations[self.agent_selection]:
            self._was_dead_step(action)
            return
        self._cumulative_rewards[self.agent_selection] = 0
        self.rewards = dict(REWARDS[self.moves])
        self.moves += 1
        if self.moves == len(REWARDS):
            self.terminations = dict.fromkeys(self.agents, True)
        self._accumulate_rewards()
        self.agent_selection = "seat_1" if self.agent_selection == "seat_0" else "seat_0"


def test_turn_based_credit_goes_to_each_seats_last_move() -> None:
    ref = pz.PettingZooRef("test:tiny_v0", "test", "tiny_v0", "aec")
    spec = pz.describe(ref, TinyGame())
    slots = slots_for(spec.agents, {"seat_0": "a", "seat_1": "b"})
    stepper = MultiAgentStepper(spec, TinyGame, 2, slots, seed=0)
    decision = stepper.reset()
    rows: list[tuple[str, int, float, float, float, bool]] = []  # policy, env, obs, action, reward, terminated
    for step in range(5):  # one whole game and the first move of the next
        acting = {p: decision.acting[p].copy() for p in slots}
        assert acting["a"][:, 0].all() != acting["b"][:, 0].all()  # one seat moves per turn
        # Env 0 plays action 1, env 1 action 2; the extras carry step*10 + env.
        actions = {p: np.array([[1], [2]]) for p in slots}
        extras = {p: {"tag": np.array([[step * 10.0], [step * 10.0 + 1]], np.float32)} for p in slots}
        moves, decision = stepper.step(actions, extras)
        for p in slots:
            for i in np.flatnonzero(moves.valid[p][:, 0]):
                assert moves.action[p][i, 0] == i + 1 and moves.extras[p]["tag"][i, 0] % 10 == i
                rows.append((p, int(i), float(moves.obs[p][i, 0, 0]), float(moves.extras[p]["tag"][i, 0] // 10),
                             float(moves.reward[p][i, 0]), bool(moves.terminated[p][i, 0])))
        if step == 3:
            assert [(e.env_index, e.returns, e.team_return, e.length) for e in moves.episodes] == [
                (0, {"seat_0": 10.0, "seat_1": 100.0}, 110.0, 4), (1, {"seat_0": 10.0, "seat_1": 100.0}, 110.0, 4)]
        else:
            assert moves.episodes == []
    # seat_0's first move earns what arrives until its next turn (1 + 2), its last the rewards
    # of both remaining moves, terminal one included (3 + 4); seat_1's first 20 + 30, its last 40.
    expected = [("a", 0, 3.0, False), ("b", 1, 50.0, False), ("a", 2, 7.0, True), ("b", 3, 40.0, True)]
    for env_index in (0, 1):
        got = [(p, int(obs), reward, term) for p, i, obs, made_at, reward, term in rows if i == env_index]
        assert got == expected
        # Each move comes back with the step it was made at: rows were completed in order.
        assert [made_at for p, i, obs, made_at, *_ in rows if i == env_index] == [0.0, 1.0, 2.0, 3.0]
    # The next game began with seat_0's move, still open (no row yet); seat_1 is to move.
    assert decision.acting["b"].all() and not decision.acting["a"].any()


class TinyRace(ParallelEnv):
    """runner_1 drops out after the first step; runner_0 runs three. No state(): rlkit concatenates."""

    metadata = {"name": "tiny_race_v0"}

    def __init__(self) -> None:
        self.possible_agents = ["runner_0", "runner_1"]

    def observation_space(self, agent: str) -> spaces.Space:
        return spaces.Box(-10.0, 10.0, (2,), np.float32)

    def action_space(self, agent: str) -> spaces.Space:
        return spaces.Discrete(2)

    def _obs(self, agent: str) -> np.ndarray:
        return np.array([self.t + 1, 5.0 if agent == "runner_1" else 1.0], np.float32)

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        self.agents, self.t = self.possible_agents[:], 0
        return {a: self._obs(a) for a in self.agents}, {a: {} for a in self.agents}

    def step(self, actions: dict) -> tuple[dict, dict, dict, dict, dict]:
        self.t += 1
        rewards = {a: float(actions[a]) + self.t for a in self.agents}
        done = {a: a == "runner_1" or self.t == 3 for a in self.agents}
        observations = {a: self._obs(a) for a in self.agents}
        self.agents = [a for a in self.agents if not done[a]]
        return observations, rewards, done, dict.fromkeys(done, False), {a: {} for a in done}


def test_an_agent_that_leaves_is_zeroed_in_the_concatenated_state() -> None:
    spec = pz.describe(pz.PettingZooRef("test:tiny_race_v0", "test", "tiny_race_v0", "parallel"), TinyRace())
    assert spec.state_shape is None
    slots = slots_for(spec.agents, dict.fromkeys(spec.agents, "shared"))
    stepper = MultiAgentStepper(spec, TinyRace, 1, slots, seed=0, global_state=True)
    decision = stepper.reset()
    assert decision.state.tolist() == [[1.0, 1.0, 1.0, 5.0]]
    moves, decision = stepper.step({"shared": np.array([[1, 0]])})
    assert moves.reward["shared"].tolist() == [[2.0, 1.0]] and moves.terminated["shared"].tolist() == [[False, True]]
    assert decision.state.tolist() == [[2.0, 1.0, 0.0, 0.0]]  # runner_1 is gone: its part is zeros
    assert decision.alive["shared"].tolist() == [[True, False]]
    moves, decision = stepper.step({"shared": np.array([[0, 1]])})  # runner_1's action is not used
    assert moves.valid["shared"].tolist() == [[True, False]] and moves.reward["shared"].tolist() == [[2.0, 0.0]]
    assert moves.state["shared"][0, 0].tolist() == [2.0, 1.0, 0.0, 0.0]  # the state the move was chosen in
    moves, decision = stepper.step({"shared": np.array([[1, 1]])})
    assert [(e.returns, e.length) for e in moves.episodes] == [({"runner_0": 2.0 + 2.0 + 4.0, "runner_1": 1.0}, 3)]
    assert decision.alive["shared"].all() and decision.state.tolist() == [[1.0, 1.0, 1.0, 5.0]]


# --- knights_archers_zombies: agents die -----------------------------------------------------------


@pytest.fixture(scope="module")
def kaz() -> pz.MultiAgentSpec:
    spec = pz.probe(KAZ, KAZ_KWARGS)
    # What a rollout actor receives travels pickled.
    env = pickle.loads(pickle.dumps(pz.env_factory(spec.ref, KAZ_KWARGS)))()
    assert env.possible_agents == list(spec.agents)
    env.close()
    return spec


def run_kaz(spec: pz.MultiAgentSpec, steps: int, seed: int) -> list[tuple]:
    slots = slots_for(spec.agents, {a: agent_type(a) for a in spec.agents})
    stepper = MultiAgentStepper(spec, pz.env_factory(spec.ref, KAZ_KWARGS), 2, slots, seed, global_state=True)
    rng = np.random.default_rng(seed)
    decision = stepper.reset()
    trace = []
    for _ in range(steps):
        actions = {p: rng.integers(0, 6, decision.acting[p].shape) for p in slots}
        moves, after = stepper.step(actions)
        env_agents = [set(env.agents) for env in stepper.envs]
        trace.append((decision, moves, after, env_agents))
        decision = after
    stepper.close()
    return trace


def test_kaz_masks_agents_from_the_step_they_die(kaz: pz.MultiAgentSpec) -> None:
    assert kaz.types == {"archer": ("archer_0", "archer_1"), "knight": ("knight_0", "knight_1")}
    assert kaz.state_shape is not None
    trace = run_kaz(kaz, 120, seed=3)
    mid_episode_deaths = 0
    for decision, moves, after, env_agents in trace:
        assert after.state is not None and after.state.shape == (2, *kaz.state_shape)
        ended = {e.env_index for e in moves.episodes}
        for p, agents in kaz.types.items():
            # Every agent that acted has its move completed in the same step, and no other row exists.
            assert (moves.valid[p] == decision.acting[p]).all()
            assert not moves.obs[p][~moves.valid[p]].any() and not moves.reward[p][~moves.valid[p]].any()
            for i in range(2):
                for j, agent in enumerate(agents):
                    died = bool(moves.valid[p][i, j] and moves.terminated[p][i, j])
                    if died and i not in ended:
                        mid_episode_deaths += 1
                        # Gone from the next decision on: neither alive nor acting, observation zeroed.
                        assert agent not in env_agents[i]
                        assert not after.alive[p][i, j] and not after.acting[p][i, j]
                        assert not after.obs[p][i, j].any()
                    if i not in ended:
                        assert after.alive[p][i, j] == (agent in env_agents[i])
        for i in ended:  # an episode ends when all its agents are done; the next starts whole
            assert all(after.acting[p][i].all() for p in kaz.types)
    assert mid_episode_deaths >= 2, "the run must see agents die while others play on"


def test_kaz_stepper_is_deterministic(kaz: pz.MultiAgentSpec) -> None:
    a, b = run_kaz(kaz, 40, seed=5), run_kaz(kaz, 40, seed=5)
    for (_, ma, da, _), (_, mb, db, _) in zip(a, b):
        assert np.array_equal(da.state, db.state)
        for p in kaz.types:
            assert np.array_equal(ma.obs[p], mb.obs[p]) and np.array_equal(ma.reward[p], mb.reward[p])
            assert np.array_equal(da.alive[p], db.alive[p])


@pytest.mark.parametrize("env_id, kwargs", [("mpe2:simple_spread_v3", {}), (KAZ, KAZ_KWARGS)])
def test_a_pickled_stepper_continues_exactly(env_id: str, kwargs: dict) -> None:
    """What an exact resume restores: mid-episode envs (their pygame canvases, sprites and fonts
    included, which pickle cannot take as they are) carry on as if never saved."""
    from rlkit.train import envstate

    spec = pz.probe(env_id, kwargs)
    slots = dict(spec.types)
    stepper = MultiAgentStepper(spec, pz.env_factory(spec.ref, kwargs), 2, slots, seed=0, global_state=True)
    stepper.reset()
    rng = np.random.default_rng(1)
    for _ in range(13):
        stepper.step({p: rng.integers(0, 5, (2, len(a))) for p, a in slots.items()})
    restored = pickle.loads(envstate.dumps(stepper))
    for _ in range(60):
        actions = {p: rng.integers(0, 5, (2, len(a))) for p, a in slots.items()}
        (moves, decision), (moves_r, decision_r) = stepper.step(actions), restored.step(actions)
        np.testing.assert_array_equal(decision.state, decision_r.state)
        for p in slots:
            np.testing.assert_array_equal(decision.obs[p], decision_r.obs[p])
            np.testing.assert_array_equal(moves.reward[p], moves_r.reward[p])
            np.testing.assert_array_equal(decision.alive[p], decision_r.alive[p])
    stepper.close()
    restored.close()


# --- classic games: masks -------------------------------------------------------------------------


# Each game's own list of legal moves, read from its board.
LEGAL = {"tictactoe_v3": lambda env: env.unwrapped.board.legal_moves(),
         "connect_four_v3": lambda env: env.unwrapped._legal_moves()}


@pytest.mark.parametrize("env_id, games", [("pettingzoo.classic:tictactoe_v3", 2000),
                                           ("pettingzoo.classic:connect_four_v3", 1000)])
def test_random_legal_play_never_plays_an_illegal_move(env_id: str, games: int,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    illegal = []
    monkeypatch.setattr(env_logger.EnvLogger, "warn_on_illegal_move", staticmethod(lambda: illegal.append(1)))
    spec = pz.probe(env_id)
    assert spec.ref.api == "aec"
    slots = slots_for(spec.agents, dict.fromkeys(spec.agents, "learner"))
    stepper = MultiAgentStepper(spec, pz.env_factory(spec.ref), 32, slots, seed=0)
    rng = np.random.default_rng(0)
    decision, finished = stepper.reset(), []
    while len(finished) < games:
        mask, acting = decision.action_mask["learner"], decision.acting["learner"]
        for i, j in zip(*np.nonzero(acting)):  # the stepper's mask is the board's legal moves
            assert np.flatnonzero(mask[i, j]).tolist() == sorted(LEGAL[spec.ref.name](stepper.envs[i]))
        actions = (rng.random(mask.shape) * mask).argmax(-1)
        moves, decision = stepper.step({"learner": actions})
        finished += moves.episodes
    assert illegal == []
    outcomes = {tuple(e.returns.values()) for e in finished}
    assert outcomes <= {(1.0, -1.0), (-1.0, 1.0), (0.0, 0.0)}  # an illegal move ends a game -1 / 0
    # The check can see an illegal move: play one into an occupied square.
    env = pz.make(spec.ref)
    env.reset(seed=0)
    first = int(np.flatnonzero(env.observe(env.agent_selection)["action_mask"])[0])
    env.step(first)
    env.observe(env.agent_selection)
    if spec.ref.name.startswith("tictactoe"):
        env.step(first)
    else:  # fill a column, then play it once more
        for _ in range(5):
            env.step(first)
            env.observe(env.agent_selection)
        env.step(first)
    assert illegal == [1]


# --- spaces, types, the mapping check -------------------------------------------------------------


def test_particle_worlds_spaces_and_types() -> None:
    spread = pz.probe("mpe2:simple_spread_v3")
    assert spread.ref.api == "parallel" and spread.types == {"agent": ("agent_0", "agent_1", "agent_2")}
    assert {pz.space_label(o) for o, _ in spread.spaces.values()} == {"Box(18,)"}
    assert spread.state_shape == (54,)
    adversary = pz.probe("mpe2:simple_adversary_v3")
    assert adversary.types == {"adversary": ("adversary_0",), "agent": ("agent_0", "agent_1")}
    assert adversary.spaces["adversary_0"][0].shape == (8,) and adversary.spaces["agent_0"][0].shape == (10,)


def test_particle_world_truncation_and_global_state() -> None:
    spec = pz.probe("mpe2:simple_spread_v3", {"max_cycles": 3})
    slots = slots_for(spec.agents, dict.fromkeys(spec.agents, "shared"))
    stepper = MultiAgentStepper(spec, pz.env_factory(spec.ref, {"max_cycles": 3}), 2, slots, 0, global_state=True)
    decision = stepper.reset()
    for step in range(3):
        assert np.array_equal(decision.state, np.stack([env.state() for env in stepper.envs]))
        moves, decision = stepper.step({"shared": np.full((2, 3), step % 5)})
        assert moves.valid["shared"].all() and moves.state["shared"].shape == (2, 3, 54)
    # The time limit cuts every agent: truncated, not terminated, with the observation it was cut at.
    assert moves.truncated["shared"].all() and not moves.terminated["shared"].any()
    assert moves.final_obs["shared"].any(axis=-1).all()
    assert [e.length for e in moves.episodes] == [3, 3]
    assert all(abs(e.team_return - sum(e.returns.values())) < 1e-9 for e in moves.episodes)
    assert decision.acting["shared"].all()  # the next episode, whole


def test_particle_world_moves_match_pettingzoos_own_parallel_env() -> None:
    """The stepper (its lean adapter and its sliced moves) against mpe2's public parallel_env,
    pettingzoo's checking wrappers and all, stepped alongside with the same seeds and actions."""
    import mpe2.simple_adversary_v3 as adversary

    kwargs = {"max_cycles": 4}
    spec = pz.probe("mpe2:simple_adversary_v3", kwargs)
    slots = slots_for(spec.agents, {a: agent_type(a) for a in spec.agents})
    stepper = MultiAgentStepper(spec, pz.env_factory(spec.ref, kwargs), 2, slots, seed=7, global_state=True)
    references = [adversary.parallel_env(**kwargs) for _ in range(2)]
    seeds = np.random.default_rng(7)  # the stepper draws each reset's seed from its own generator so
    observations = [ref.reset(seed=int(seeds.integers(0, 2**31 - 1)))[0] for ref in references]
    returns = [dict.fromkeys(spec.agents, 0.0) for _ in references]
    decision, rng, ended = stepper.reset(), np.random.default_rng(0), 0
    for _ in range(10):  # two and a half episodes
        actions = {p: rng.integers(0, 5, (2, len(agents))) for p, agents in slots.items()}
        states = [ref.state() for ref in references]
        moves, decision = stepper.step(actions)
        for i, ref in enumerate(references):
            before = observations[i]
            observations[i], rewards, terms, truncs, _ = ref.step(
                {a: int(actions[p][i, j]) for p, agents in slots.items() for j, a in enumerate(agents)})
            for p, agents in slots.items():
                for j, agent in enumerate(agents):
                    assert moves.valid[p][i, j] and moves.action[p][i, j] == actions[p][i, j]
                    np.testing.assert_array_equal(moves.obs[p][i, j], before[agent])
                    np.testing.assert_array_equal(moves.state[p][i, j], states[i])
                    assert moves.reward[p][i, j] == np.float32(rewards[agent])
                    assert moves.terminated[p][i, j] == terms[agent] and moves.truncated[p][i, j] == truncs[agent]
                    if truncs[agent]:
                        np.testing.assert_array_equal(moves.final_obs[p][i, j], observations[i][agent])
                    returns[i][agent] += rewards[agent]
            if not ref.agents:
                episode = next(e for e in moves.episodes if e.env_index == i)
                assert episode.returns == returns[i] and episode.length == kwargs["max_cycles"]
                observations[i] = ref.reset(seed=int(seeds.integers(0, 2**31 - 1)))[0]
                returns[i] = dict.fromkeys(spec.agents, 0.0)
                ended += 1
        for p, agents in slots.items():  # the next decision: what the reference envs show now
            for i, j in np.ndindex(2, len(agents)):
                np.testing.assert_array_equal(decision.obs[p][i, j], observations[i][agents[j]])
    assert ended == 4
    stepper.close()


def test_global_state_without_state_concatenates_observations() -> None:
    spec = pz.probe("pettingzoo.classic:tictactoe_v3")
    assert spec.state_shape is None
    slots = slots_for(spec.agents, dict.fromkeys(spec.agents, "learner"))
    stepper = MultiAgentStepper(spec, pz.env_factory(spec.ref), 2, slots, 0, global_state=True)
    decision = stepper.reset()
    for _ in range(3):
        decision = stepper.step({"learner": decision.action_mask["learner"].argmax(-1)})[1]
        for i, env in enumerate(stepper.envs):
            parts = [env.observe(a)["observation"].ravel() for a in spec.agents]
            assert np.array_equal(decision.state[i], np.concatenate(parts).astype(np.float32))


def test_every_spelling_of_an_id_resolves_without_deprecation_output() -> None:
    code = (
        "import warnings; warnings.simplefilter('error')\n"
        "from rlkit.train import pettingzoo_env as pz\n"
        "for i in ['pettingzoo.sisl:pursuit_v5', 'pettingzoo.classic.tictactoe_v3', 'classic/connect_four-v3',\n"
        "          'butterfly/knights_archers_zombies_v11', 'mpe2.simple_spread_v3']:\n"
        "    s = pz.probe(i); print(s.ref.canonical, s.ref.api, len(s.agents))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    assert out.stdout.split("\n")[:5] == [
        "pettingzoo.sisl:pursuit_v5 parallel 8", "pettingzoo.classic:tictactoe_v3 aec 2",
        "pettingzoo.classic:connect_four_v3 aec 2", "pettingzoo.butterfly:knights_archers_zombies_v11 parallel 4",
        "mpe2:simple_spread_v3 parallel 3"]
    for env_id in ("mpe2:simple_spread_v3", "pettingzoo.classic:tictactoe_v3", "classic/tictactoe-v3",
                   "pettingzoo.mpe:simple_spread_v3"):
        assert pz.is_pettingzoo_id(env_id)
    for env_id in ("CartPole-v1", "ALE/Pong-v5", "gymnasium.envs.classic_control:CartPoleEnv"):
        assert not pz.is_pettingzoo_id(env_id)


@pytest.mark.parametrize("env_id, kwargs, message", [
    ("pettingzoo.mpe:simple_spread_v3", {}, "the particle environments (MPE) left pettingzoo for the mpe2 "
     "package (use env.id mpe2:simple_spread_v3 and pip install 'rlkit[mpe]')"),
    ("pettingzoo.sisl:pursuit_v4", {}, "the installed pettingzoo.sisl has pursuit_v5, not pursuit_v4"),
    ("pettingzoo.sisl:waterworld_v4", {}, "waterworld was removed from pettingzoo in 1.27"),
    ("pettingzoo.classic:tic_tac_toe_v3", {}, "did you mean pettingzoo.classic:tictactoe_v3?"),
    ("mpe2:simple_sprad_v3", {}, "did you mean mpe2:simple_spread_v3"),
    ("pettingzoo.atari:pong_v3", {}, "not a PettingZoo environment rlkit knows"),
    ("pettingzoo.butterfly:pistonball_v6", {}, "agent piston_0 observes images Box(457, 120, 3)"),
    (KAZ, {"obs_method": "image"}, "agent archer_0 observes images Box(512, 512, 3)"),
    (KAZ, {"num_wizards": 2}, "env.kwargs for pettingzoo.butterfly:knights_archers_zombies_v11: "),
    ("pettingzoo.classic:leduc_holdem_v4", {}, "needs the package rlcard, which rlkit's extras do not install"),
])
def test_bad_ids_are_refused_in_one_line(env_id: str, kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        pz.probe(env_id, kwargs)
    assert message in one_line(err) and err.value.exit_code == 2


@pytest.mark.parametrize("blocked, env_id, extra", [("pygame", KAZ, "butterfly"),
                                                    ("mpe2", "mpe2:simple_spread_v3", "mpe")])
def test_a_family_whose_package_is_missing_names_its_extra(blocked: str, env_id: str, extra: str) -> None:
    # A fresh interpreter where the package cannot be imported, as on a machine without the extra.
    code = (
        f"import sys; sys.modules[{blocked!r}] = None\n"
        "from rlkit.errors import ConfigError\n"
        "from rlkit.train import pettingzoo_env as pz\n"
        f"try: pz.probe({env_id!r})\n"
        "except ConfigError as err: print(err)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert out.stdout.strip().endswith(f"which is not installed (pip install 'rlkit[{extra}]')")
    assert out.stdout.count("\n") == 1
