"""The benchmarks' arithmetic (scripts/bench): what a run's curve says, and whose ratios a report holds.

No child process runs here: these are the parent's readings of what the
children reported, on hand-made runs.
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "scripts" / "bench"


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> dict[str, ModuleType]:
    monkeypatch.syspath_prepend(str(BENCH))
    return {name: importlib.import_module(name) for name in ("marl_bench", "train_bench")}


def test_a_curve_gives_the_time_to_the_threshold_and_the_return_at_equal_wall_time(bench: dict) -> None:
    marl = bench["marl_bench"]
    run = marl.Run("spread", "rlkit", 1, curve=[(10.0, 800, -80.0), (20.0, 1600, -69.0), (30.0, 2400, -75.0),
                                                (40.0, 3200, -60.0)])
    marl.read_curve(run, threshold=-70.0, wall_s=35.0)
    assert (run.time_to_threshold_s, run.steps_at_threshold) == (20.0, 1600)
    assert run.value_at_wall == -75.0  # the last point before W, not the best
    assert run.final_value == -60.0

    never = marl.Run("spread", "rllib", 1, curve=[(30.0, 800, -80.0), (50.0, 1600, -75.0)])
    marl.read_curve(never, threshold=-70.0, wall_s=20.0)
    assert never.time_to_threshold_s is None and never.value_at_wall is None and never.final_value == -75.0


def test_a_run_that_never_reaches_the_threshold_counts_as_infinitely_slow(bench: dict) -> None:
    marl = bench["marl_bench"]
    runs = [marl.Run("spread", "rlkit", s, time_to_threshold_s=t, sps=1500.0) for s, t in ((1, 30.0), (2, 40.0), (3, None))]
    runs += [marl.Run("spread", "rllib", s, time_to_threshold_s=t, sps=400.0) for s, t in ((1, 100.0), (2, None), (3, None))]
    summary = marl.summarize(runs, "spread", ["rlkit", "rllib"])
    rows = summary["frameworks"]
    assert rows["rlkit"]["time_to_threshold_s"] == 40.0 and rows["rlkit"]["reached"] == 2
    assert math.isinf(rows["rllib"]["time_to_threshold_s"])
    assert summary["rlkit_vs_rllib"]["sps"] == pytest.approx(3.75)
    # rlkit got there in most runs and RLlib did not: the time target is met.
    assert summary["targets"]["time to threshold <= 0.5 x RLlib"]["pass"]
    assert summary["targets"]["SPS >= 3 x RLlib"]["pass"]


def test_every_rlkit_install_gets_ratios_and_none_is_a_peer_in_the_targets(bench: dict) -> None:
    train = bench["train_bench"]
    def run(name: str, seed: int, t: float, sps: float) -> object:
        return train.Run(name, seed, solved=True, time_to_475_s=t, steps_at_475=1, sps=sps)
    runs = [run("rlkit-before", 1, 5.0, 30_000.0), run("rlkit", 1, 10.0, 20_000.0), run("sb3", 1, 40.0, 2_500.0)]
    summary = train.summarize(runs, ["rlkit-before", "rlkit", "sb3"], None, variants=("rlkit-before",))
    assert summary["ratios"]["rlkit"]["sb3"] == {"time_to_475": 0.25, "sps": 8.0}
    assert summary["ratios"]["rlkit-before"]["sb3"] == {"time_to_475": 0.125, "sps": 12.0}
    assert summary["ratios"]["rlkit"]["rlkit-before"]["time_to_475"] == 2.0
    # The faster peer is SB3, not the other rlkit.
    assert summary["targets"]["time_to_475 <= 0.5 x faster peer"]["value"] == 0.25
