"""Advantage estimators against values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from rlkit.train.algos.advantages import gae, group_advantages


def col(*xs: float) -> np.ndarray:
    return np.asarray(xs, np.float32).reshape(-1, 1)


def test_gae_without_episode_end_matches_hand_computation() -> None:
    gamma, lam = 0.9, 0.8
    r, v, last = col(1, 2, 3), col(0.5, 1.0, 1.5), np.asarray([2.0], np.float32)
    adv, ret = gae(r, v, col(0, 0, 0), col(0, 0, 0), last, gamma, lam)
    d2 = 3 + 0.9 * 2.0 - 1.5            # 3.3
    d1 = 2 + 0.9 * 1.5 - 1.0            # 2.35
    d0 = 1 + 0.9 * 1.0 - 0.5            # 1.4
    a2 = d2
    a1 = d1 + 0.9 * 0.8 * a2            # 4.726
    a0 = d0 + 0.9 * 0.8 * a1            # 4.80272
    np.testing.assert_allclose(adv[:, 0], [a0, a1, a2], rtol=1e-5)
    np.testing.assert_allclose(ret[:, 0], [a0 + 0.5, a1 + 1.0, a2 + 1.5], rtol=1e-5)


def test_termination_cuts_the_chain_and_drops_the_next_value() -> None:
    gamma, lam = 0.9, 0.8
    r, v, last = col(1, 2, 3), col(0.5, 1.0, 1.5), np.asarray([2.0], np.float32)
    adv, _ = gae(r, v, col(0, 1, 0), col(0, 0, 0), last, gamma, lam)
    a2 = 3 + 0.9 * 2.0 - 1.5            # the new episode after the reset
    a1 = 2 - 1.0                         # terminal: no next value, no carry
    a0 = (1 + 0.9 * 1.0 - 0.5) + 0.9 * 0.8 * a1
    np.testing.assert_allclose(adv[:, 0], [a0, a1, a2], rtol=1e-5)


def test_truncation_bootstraps_from_the_final_observation_value() -> None:
    gamma, lam = 0.9, 0.8
    r, v, last = col(1, 2, 3), col(0.5, 1.0, 1.5), np.asarray([2.0], np.float32)
    # Step 1 hit the time limit; V(final obs) = 4.0 stands in for the future.
    adv, _ = gae(r, v, col(0, 1, 0), col(0, 4.0, 0), last, gamma, lam)
    a1 = 2 + 0.9 * 4.0 - 1.0            # 4.6: bootstrapped, chain still cut
    a0 = (1 + 0.9 * 1.0 - 0.5) + 0.9 * 0.8 * a1
    np.testing.assert_allclose(adv[:2, 0], [a0, a1], rtol=1e-5)


def test_gae_treats_columns_independently() -> None:
    r = np.asarray([[1, 0], [1, 0]], np.float32)
    v = np.zeros((2, 2), np.float32)
    adv, _ = gae(r, v, np.zeros((2, 2), np.float32), np.zeros((2, 2), np.float32),
                 np.zeros(2, np.float32), 1.0, 1.0)
    np.testing.assert_allclose(adv, [[2, 0], [1, 0]])


def test_group_advantages_are_return_minus_mean_over_population_std() -> None:
    returns = np.asarray([10, 20, 30, 5, 5, 5], np.float32)
    groups = np.asarray([0, 0, 0, 1, 1, 1])
    adv = group_advantages(returns, groups)
    std = np.sqrt(((10 - 20) ** 2 + 0 + (30 - 20) ** 2) / 3)   # ddof=0: 8.165
    np.testing.assert_allclose(adv[:3], [-10 / std, 0, 10 / std], rtol=1e-5)
    # All equal returns carry no signal: advantage exactly zero, not NaN.
    assert adv[3:].tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("group_size", [2, 5])
def test_group_advantages_have_zero_mean_and_unit_std_per_group(group_size: int) -> None:
    rng = np.random.default_rng(0)
    returns = rng.normal(size=4 * group_size).astype(np.float32)
    groups = np.repeat(np.arange(4), group_size)
    adv = group_advantages(returns, groups)
    for g in range(4):
        assert abs(adv[groups == g].mean()) < 1e-5
        assert abs(adv[groups == g].std() - 1) < 1e-4
