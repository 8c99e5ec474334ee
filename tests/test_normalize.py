"""Reward normalisation's parts against values computed by hand: the discounted return, its moments, the scale."""

from __future__ import annotations

import numpy as np
import pytest

from rlkit.train.normalize import DiscountedReturn, RunningMeanStd


def test_the_discounted_return_accumulates_and_counts_the_step_that_ends_an_episode() -> None:
    acc = DiscountedReturn(0.9, (1,))
    yes = np.ones(1, bool)
    acc.step(np.asarray([1.0]), np.asarray([0.0]), yes)    # G = 1
    acc.step(np.asarray([2.0]), np.asarray([1.0]), yes)    # G = 0.9 * 1 + 2 = 2.9, then the episode ends
    assert acc.value.tolist() == [0.0]
    acc.step(np.asarray([3.0]), np.asarray([0.0]), yes)    # a new episode: G = 3
    moments = acc.take_moments()
    assert moments is not None
    mean = (1 + 2.9 + 3) / 3                                 # 2.3
    var = ((1 - 2.3) ** 2 + (2.9 - 2.3) ** 2 + (3 - 2.3) ** 2) / 3   # 2.54 / 3
    assert moments.mean.tolist() == pytest.approx([mean]) and moments.var.tolist() == pytest.approx([var])
    assert moments.count == 3
    # Taken once: the next fragment starts counting afresh.
    assert acc.take_moments() is None


def test_streams_that_made_no_transition_are_neither_changed_nor_counted() -> None:
    acc = DiscountedReturn(0.5, (2,))
    acc.step(np.asarray([4.0, 2.0]), np.asarray([0.0, 0.0]), np.asarray([True, True]))   # G = 4, 2
    # Stream 1's row is an autoreset (or a seat waiting its turn): its reward and done are no transition.
    acc.step(np.asarray([2.0, 7.0]), np.asarray([0.0, 1.0]), np.asarray([True, False]))  # G = 0.5 * 4 + 2 = 4, 2
    assert acc.value.tolist() == [4.0, 2.0]
    moments = acc.take_moments()
    assert moments is not None and moments.count == 3
    assert moments.mean.tolist() == pytest.approx([10 / 3])    # over 4, 2 and 4


def test_rewards_are_divided_by_the_return_std_not_centred_and_clipped() -> None:
    rms = RunningMeanStd(np.asarray([5.0]), np.asarray([4.0]), 10.0)
    rewards = np.asarray([[2.0, -6.0], [0.0, 30.0]])
    # sqrt(4 + 1e-8) = 2: the mean (5) plays no part, zero stays zero, 30 / 2 = 15 is clipped to 10.
    np.testing.assert_allclose(rms.scale(rewards, clip=10.0), [[1.0, -3.0], [0.0, 10.0]], rtol=1e-6)
    np.testing.assert_allclose(rms.scale(rewards, clip=2.0), [[1.0, -2.0], [0.0, 2.0]], rtol=1e-6)


def test_moments_of_two_actors_merge_into_the_moments_of_all_their_returns() -> None:
    one, two = DiscountedReturn(1.0, (1,)), DiscountedReturn(1.0, (1,))
    for r in (1.0, 1.0):
        one.step(np.asarray([r]), np.asarray([0.0]), np.ones(1, bool))   # G = 1, 2
    for r in (3.0, 3.0):
        two.step(np.asarray([r]), np.asarray([0.0]), np.ones(1, bool))   # G = 3, 6
    learner = RunningMeanStd.zeros((1,))
    for actor in (one, two):
        moments = actor.take_moments()
        assert moments is not None
        learner.merge(moments)
    # Over 1, 2, 3, 6 (the learner's prior weighs 1e-4 of a sample): mean 3, variance 14 / 4.
    assert learner.mean.tolist() == pytest.approx([3.0], rel=1e-4)
    assert learner.var.tolist() == pytest.approx([3.5], rel=1e-4)
    assert learner.count == pytest.approx(4.0001)
