"""Tune's overhead: the same trials through ``rlkit sweep`` and as direct ``rlkit train`` runs.

The trials are PPO on CartPole-v1 that differ only in their seed (a grid),
one rollout worker each, a fixed step budget. Every path runs as a fresh
process from the shell, as a user would run it, one after another:

    sweep, sequential  rlkit sweep ... --set max_concurrent_trials=1   (one Ray, trials in turn)
    sweep, concurrent  rlkit sweep ...                                  (as many at once as fit)
    direct             rlkit train ... --set seed=S, once per seed      (each starts its own Ray)

    .venv/bin/python scripts/bench/sweep_bench.py [--trials 8] [--steps 8192] [--json out.json]

The ratio is sweep time / direct time: below 1 the sweep is faster. "train
time" adds up the trials' own training clocks, so that "overhead" is what
each path spends outside training (Ray and Tune start-up, actors, checkpoints).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
RLKIT = str(Path(sys.executable).with_name("rlkit"))


@dataclass
class PathTiming:
    name: str
    total_s: float
    """From spawning the first process to the exit of the last."""
    train_s: float
    """The trials' own training time, added up."""
    trials: int

    @property
    def overhead_s(self) -> float:
        return self.total_s - self.train_s


def run(args: list[str], env: dict[str, str]) -> tuple[float, dict]:
    start = time.perf_counter()
    out = subprocess.run([RLKIT, *args, "--json"], capture_output=True, text=True, env=env, check=False)
    took = time.perf_counter() - start
    if out.returncode != 0:
        sys.exit(f"rlkit {' '.join(args)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return took, json.loads(out.stdout)


def trial_train_s(trial_dir: Path) -> float:
    """A trial's training clock: the ``time`` of its last metrics line."""
    lines = (trial_dir / "metrics.jsonl").read_text().splitlines()
    return json.loads(lines[-1])["time"]


def sweep_file(work: Path, trials: int, steps: int) -> Path:
    data = {
        "name": "bench",
        "base": str(REPO / "configs" / "ppo_cartpole.yaml"),
        "base_set": {"stop.total_steps": steps, "stop.target_return": None},
        "space": {"seed": {"grid": list(range(1, trials + 1))}},
        "resources": {"learner_cpus": 0, "rollout_workers": 1, "cpus_per_worker": 1},
        "checkpoint_every": 10_000,  # one checkpoint, at the end, as rlkit train writes
        "storage_path": str(work / "sweeps"),
    }
    path = work / "bench.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--steps", type=int, default=8192, help="env steps per trial")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="rlkit-sweep-bench-"))
    env = {**os.environ, "RLKIT_HOME": str(work / "home"), "RLKIT_RAY_ADDRESS_FILE": str(work / "ray_address")}
    env.pop("RAY_ADDRESS", None)
    spec = sweep_file(work, args.trials, args.steps)
    timings: list[PathTiming] = []

    for name, extra in (("sweep, sequential", ["--set", "max_concurrent_trials=1"]), ("sweep, concurrent", [])):
        took, result = run(["sweep", str(spec), "--quiet", *extra], env)
        assert result["state"] == "finished" and len(result["trials"]) == args.trials, result
        train_s = sum(trial_train_s(Path(t["path"])) for t in result["trials"])
        timings.append(PathTiming(name, took, train_s, args.trials))
        print(f"{name}: {took:.1f} s", flush=True)

    total, train_s = 0.0, 0.0
    for seed in range(1, args.trials + 1):
        took, summary = run(["train", str(REPO / "configs" / "ppo_cartpole.yaml"), "--quiet",
                             "--set", f"runs_dir={work / 'runs'}", "--set", f"seed={seed}",
                             "--set", f"stop.total_steps={args.steps}", "--set", "stop.target_return=null",
                             "--set", "rollout.num_workers=1"], env)
        total += took
        train_s += summary["wall_s"]
    direct = PathTiming("direct rlkit train", total, train_s, args.trials)
    timings.append(direct)
    print(f"direct: {total:.1f} s", flush=True)

    print(f"\n{args.trials} trials of {args.steps} steps, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}")
    print(f"{'path':<20} {'total s':>8} {'train s':>8} {'overhead s':>10} {'ratio':>6}")
    for t in timings:
        print(f"{t.name:<20} {t.total_s:>8.1f} {t.train_s:>8.1f} {t.overhead_s:>10.1f} {t.total_s / direct.total_s:>6.2f}")
    if args.json:
        args.json.write_text(json.dumps({
            "trials": args.trials, "steps": args.steps, "cpus": os.cpu_count(),
            "paths": [{**asdict(t), "overhead_s": t.overhead_s, "ratio": t.total_s / direct.total_s} for t in timings],
        }, indent=2) + "\n")


if __name__ == "__main__":
    main()
