"""Multi-agent PPO on PettingZoo: rlkit against RLlib, and rlkit's self-play on connect_four.

    python scripts/bench/marl_bench.py [--quick] [--seeds 3] [--tasks spread,adversary,connect_four]
        [--wall S] [--threshold TASK=VALUE] [--json out.json]

Each (task, seed, framework) runs in a fresh process, one at a time, seed by
seed (drifts in the machine's load fall on both frameworks alike), timed
from just before the spawn, as train_bench.py does. Every run gets the same
wall time W from its spawn, start-up included (the task's ``wall_s``): then
its main process gets Ctrl-C, finishes the update in progress and reports.
Each run records its curve: (seconds since spawn, env steps, rolling-100
team return) after every update. From it:

    time to threshold   spawn to the first point at or above the task's team-return threshold
    return at W         the team return at W seconds after spawn (the last point before it)
    end-to-end SPS      env steps / training wall time, learning included

rlkit runs ``rlkit train`` on the task's config; RLlib runs
child_rllib_marl.py with the same PPO numbers, read from that config here.
connect_four is rlkit only (RLlib has no built-in self-play league that
would compare fairly): the time until rlkit wins 95% of its games against
a uniform-random player, over both seats.

Run it with rlkit's venv (.venv/bin/python); RLlib runs with --peer-python
(default scripts/bench/.venv/bin/python, made by scripts/bench/setup.sh).
See scripts/bench/README.md for the columns and the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from benchlib import finite, fmt, median, parse_events, ratio, run_child

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
TARGETS = {"sps_vs_rllib": 3.0, "time_ratio": 0.5}
TEAM_RETURN = "charts/rolling_return"
"""rlkit's metrics.jsonl key for the mean team return of the last 100 episodes."""
RANDOM_WIN = ("selfplay/random_first_win", "selfplay/random_second_win")
"""rlkit's win rates against a uniform-random player, as first and as second player."""


@dataclass(frozen=True)
class Task:
    config: str
    """rlkit's config, relative to the repo (or absolute)."""
    overrides: tuple[str, ...]
    rllib_mapping: str | None
    """child_rllib_marl.py's --mapping (shared, agent); None: rlkit only (self-play)."""
    threshold: float
    """A team return both frameworks reach; for self-play the win rate against random."""
    wall_s: float
    """Seconds from spawn every run gets."""
    quick_wall_s: float


TASKS = {
    # simple_spread: 3 agents, one policy for all (parameter sharing).
    # Thresholds: a uniform-random policy's team return is -81 (spread) and -15 (adversary).
    "spread": Task("configs/ppo_simple_spread_shared.yaml", (), "shared", -70.0, 180.0, 45.0),
    # simple_adversary: 1 adversary and 2 good agents over unlike spaces, one policy each.
    # (One per agent rather than per type: RLlib's minibatch size is one number for every
    # policy, so policies of unequal row counts could not match rlkit's minibatches.)
    "adversary": Task("configs/ppo_simple_adversary_independent.yaml", (), "agent", -4.0, 180.0, 45.0),
    "connect_four": Task("configs/selfplay_connect_four.yaml", (), None, 0.95, 180.0, 90.0),
}


@dataclass
class Run:
    task: str
    framework: str
    seed: int
    curve: list[tuple[float, int, float | None]] = field(default_factory=list)
    """(seconds since spawn, env steps, the task's metric) after each update."""
    steps: int | None = None
    train_wall_s: float | None = None
    sps: float | None = None
    startup_s: float | None = None
    """Spawn to the start of training (imports, Ray, actors)."""
    time_to_threshold_s: float | None = None
    steps_at_threshold: int | None = None
    value_at_wall: float | None = None
    """The metric at the task's wall_s after spawn (the last point before it)."""
    final_value: float | None = None
    process_wall_s: float = 0.0
    driver_peak_mb: float | None = None
    actor_peak_mb: list[float] = field(default_factory=list)
    exit_code: int | None = None
    interrupted: bool = False
    """Stopped by the Ctrl-C at W (the rule), not by its step budget."""
    capped: bool = False
    load_before: float = 0.0
    load_after: float = 0.0
    self_reported: dict[str, object] = field(default_factory=dict)
    error: str | None = None


# ------------------------------------------------------------ the frameworks

def rllib_settings(config: str, overrides: tuple[str, ...]) -> tuple[dict, dict[str, object]]:
    """child_rllib_marl.py's PPO settings from the rlkit config, and the env's id and kwargs."""
    from rlkit.config import load_train_config

    cfg = load_train_config(REPO / config, list(overrides))
    a = cfg.algo
    settings = {
        "env_runners": cfg.rollout.num_workers, "envs_per_runner": cfg.rollout.envs_per_worker,
        "fragment_length": cfg.rollout.fragment_length, "epochs": a.update_epochs,
        "num_minibatches": a.num_minibatches, "lr": a.lr, "anneal_lr": a.anneal_lr, "gamma": a.gamma,
        "lambda": a.gae_lambda, "clip": a.clip_coef, "ent_coef": a.ent_coef, "vf_coef": a.vf_coef,
        "max_grad_norm": a.max_grad_norm, "hidden": cfg.model.hidden_sizes, "activation": cfg.model.activation,
        "reward_scale": cfg.env.reward_scale,
        # RLlib clips the squared value error at vf_clip_param, not the value's change as rlkit's
        # clip_vloss does: no clip where rlkit has none, RLlib's default (10) where it clips.
        "vf_clip": 10.0 if a.clip_vloss else 1e9,
    }
    return settings, {"id": cfg.env.id, "kwargs": cfg.env.kwargs, "total_steps": cfg.stop.total_steps}


def rlkit_cmd(args: argparse.Namespace, task: Task, seed: int, tmp: Path) -> list[str]:
    # No stop at a return: every run trains until the Ctrl-C at W. (Not stop.time_budget_s:
    # rlkit anneals its learning rate over that budget, RLlib over the steps.)
    cmd = [args.rlkit, "train", str(REPO / task.config), "--json", "--quiet",
           "--set", f"seed={seed}", "--set", f"runs_dir={tmp}", "--set", "stop.target_return=null"]
    for item in task.overrides:
        cmd += ["--set", item]
    return cmd


def rllib_cmd(args: argparse.Namespace, task: Task, seed: int, _tmp: Path) -> list[str]:
    settings, env = rllib_settings(task.config, task.overrides)
    return [args.peer_python, str(HERE / "child_rllib_marl.py"), "--env", env["id"],
            "--env-kwargs", json.dumps(env["kwargs"]), "--mapping", task.rllib_mapping, "--seed", str(seed),
            "--budget-steps", str(env["total_steps"]), "--settings", json.dumps(settings)]


def task_metric(task: Task, record: dict) -> float | None:
    """The task's metric in one metrics.jsonl record: the team return, or the mean win rate against random."""
    if task.rllib_mapping is None:
        rates = [record.get(k) for k in RANDOM_WIN]
        return None if None in rates else sum(rates) / len(rates)
    return record.get(TEAM_RETURN)


def read_rlkit(run: Run, task: Task, t0: float, out: list[str]) -> None:
    """`rlkit train --json`'s summary, then its metrics.jsonl: one record per update, timed from training's start."""
    text = "".join(out)
    summary = json.loads(text[text.index("{"):])
    run.self_reported = {k: summary.get(k) for k in ("driver_peak_rss_mb", "actor_peak_rss_mb", "stop_reason")}
    run.steps, run.train_wall_s, run.sps = summary["global_step"], summary["wall_s"], summary["sps"]
    # The final checkpoint is written right after the last update: its mtime less the
    # training time is the start of training, on the parent's clock.
    started = Path(summary["checkpoint"]).stat().st_mtime - summary["wall_s"]
    run.startup_s = started - t0
    with (Path(summary["run_dir"]) / "metrics.jsonl").open() as f:
        for line in f:
            record = json.loads(line)
            value = task_metric(task, record)
            if value is not None:
                run.curve.append((started + record["time"] - t0, record["step"], value))
    run.driver_peak_mb = max(run.driver_peak_mb or 0.0, summary["driver_peak_rss_mb"])


def read_rllib(run: Run, task: Task, t0: float, out: list[str]) -> None:
    events = parse_events(out)
    for e in events:
        if e["event"] == "train_start":
            run.startup_s = e["t"] - t0
            started = e["t"]
        elif e["event"] == "progress":
            # From the first episode on, as rlkit's rolling return (both average up to the last 100).
            if e["team_return"] is not None:
                run.curve.append((e["t"] - t0, e["steps"], e["team_return"]))
            run.steps, run.train_wall_s = e["steps"], e["t"] - started
        elif e["event"] == "end":
            run.steps, run.train_wall_s = e["steps"], e["train_wall_s"]
            run.driver_peak_mb = max(run.driver_peak_mb or 0.0, e["driver_peak_rss_mb"])
    if run.steps and run.train_wall_s:
        run.sps = round(run.steps / run.train_wall_s, 1)
    run.self_reported = {"version": next((e["version"] for e in events if e["event"] == "start"), None)}


FRAMEWORKS = {
    # name: (command, reader, title of its rollout-actor processes)
    "rlkit": (rlkit_cmd, read_rlkit, "ray::RolloutWorker"),
    "rllib": (rllib_cmd, read_rllib, "ray::MultiAgentEnvRunner"),
}


# ------------------------------------------------------------------ one run

def read_curve(run: Run, threshold: float, wall_s: float) -> None:
    """Time and steps to the threshold, the value at ``wall_s`` after spawn, and the last value."""
    for t, steps, value in run.curve:
        if value >= threshold:
            run.time_to_threshold_s, run.steps_at_threshold = round(t, 2), steps
            break
    before = [value for t, _steps, value in run.curve if t <= wall_s]
    run.value_at_wall = before[-1] if before else None
    run.final_value = run.curve[-1][2] if run.curve else None


def run_one(task_name: str, name: str, seed: int, args: argparse.Namespace, logs: Path) -> Run:
    task = TASKS[task_name]
    make_cmd, read, actor_title = FRAMEWORKS[name]
    wall_s = args.walls[task_name]
    tmp = Path(tempfile.mkdtemp(prefix=f"marl-{task_name}-{name}-"))
    # The update in progress at W, the final save and shutdown come on top.
    child = run_child(make_cmd(args, task, seed, tmp), stem=f"{task_name}-{name}-seed{seed}", logs=logs,
                      cap=wall_s + args.grace, actor_title=actor_title, torch_threads=args.torch_threads, cwd=REPO,
                      interrupt_after=wall_s)
    run = Run(task_name, name, seed, process_wall_s=child.wall_s, driver_peak_mb=child.driver_peak_mb,
              actor_peak_mb=child.actor_peak_mb, exit_code=child.exit_code, interrupted=child.interrupted,
              capped=child.capped, load_before=child.load_before, load_after=child.load_after)
    try:
        read(run, task, child.t0, child.out)
    except (ValueError, KeyError, OSError, StopIteration) as err:
        run.error = f"{type(err).__name__}: {err}; see {child.stderr}"
    read_curve(run, args.thresholds[task_name], wall_s)
    shutil.rmtree(tmp, ignore_errors=True)
    return run


# ------------------------------------------------------------------ summary

def env_ceiling(task_name: str, args: argparse.Namespace) -> dict[str, float] | None:
    """Env steps/s of the task's environment alone: as many processes as rollout actors, each
    stepping the config's copies with random actions, at once (child_env_ceiling.py), for
    PettingZoo's public parallel env and for the one rlkit steps. None for self-play tasks."""
    from rlkit.config import load_train_config

    task = TASKS[task_name]
    if task.rllib_mapping is None or args.ceiling_seconds <= 0:
        return None
    workers = load_train_config(REPO / task.config, list(task.overrides)).rollout.num_workers
    out: dict[str, float] = {"processes": workers}
    for adapter in ("public", "rlkit"):
        cmd = [sys.executable, str(HERE / "child_env_ceiling.py"), str(REPO / task.config),
               "--adapter", adapter, "--seconds", str(args.ceiling_seconds)]
        children = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(workers)]
        results = [json.loads(child.communicate()[0].strip().splitlines()[-1]) for child in children]
        out[adapter] = sum(r["sps"] for r in results)
    return out


def summarize(runs: list[Run], task_name: str, frameworks: list[str]) -> dict[str, object]:
    rows = {}
    for name in frameworks:
        mine = [r for r in runs if r.task == task_name and r.framework == name]
        if not mine:
            continue
        actors = [mb for r in mine for mb in r.actor_peak_mb]
        rows[name] = {
            "reached": sum(r.time_to_threshold_s is not None for r in mine), "runs": len(mine),
            # A run that never reached the threshold counts as infinitely slow, so the median is honest.
            "time_to_threshold_s": median([r.time_to_threshold_s for r in mine], True),
            "steps_at_threshold": median([r.steps_at_threshold for r in mine], True),
            "value_at_wall": median([r.value_at_wall for r in mine]),
            "final_value": median([r.final_value for r in mine]),
            "sps": median([r.sps for r in mine]),
            "startup_s": median([r.startup_s for r in mine]),
            "driver_peak_mb": median([r.driver_peak_mb for r in mine]),
            "actor_peak_mb_max": max(actors) if actors else None,
        }
    out: dict[str, object] = {"frameworks": rows}
    if "rlkit" in rows and "rllib" in rows:
        me, peer = rows["rlkit"], rows["rllib"]
        # No ratio when RLlib never got there (the target below still says who did).
        time_ratio = (None if math.isinf(peer["time_to_threshold_s"])
                      else ratio(me["time_to_threshold_s"], peer["time_to_threshold_s"]))
        sps_ratio = ratio(me["sps"], peer["sps"])
        out["rlkit_vs_rllib"] = {"time_to_threshold": time_ratio, "sps": sps_ratio}
        out["targets"] = {
            "SPS >= 3 x RLlib": {"value": sps_ratio, "limit": TARGETS["sps_vs_rllib"],
                                 "pass": sps_ratio is not None and sps_ratio >= TARGETS["sps_vs_rllib"]},
            # An RLlib that never got there is beaten by any rlkit that did.
            "time to threshold <= 0.5 x RLlib": {
                "value": time_ratio, "limit": TARGETS["time_ratio"],
                "pass": (not math.isinf(me["time_to_threshold_s"])
                         and (math.isinf(peer["time_to_threshold_s"])
                              or me["time_to_threshold_s"] <= TARGETS["time_ratio"] * peer["time_to_threshold_s"]))},
        }
    return out


def cell(v: object, digits: int = 0) -> str:
    return fmt(v, digits, inf="not reached")


def print_report(runs: list[Run], summaries: dict[str, dict], args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(150, Console().width))
    for task_name, summary in summaries.items():
        task, wall = TASKS[task_name], args.walls[task_name]
        selfplay = task.rllib_mapping is None
        metric = "win rate vs random" if selfplay else "team return"
        t = Table(title=f"{task_name}: {Path(task.config).name} {' '.join(task.overrides)} (medians over seeds; "
                        f"{wall:g} s from spawn each; threshold {metric} {args.thresholds[task_name]:g})")
        for col in ("framework", "reached", "time to threshold s", "steps then", f"{metric} at {wall:g} s",
                    f"final {metric}", "end-to-end SPS", "start-up s", "driver MB", "max actor MB"):
            t.add_column(col, justify="left" if col == "framework" else "right")
        digits = 2 if selfplay else 1
        for name, r in summary["frameworks"].items():
            t.add_row(name, f"{r['reached']}/{r['runs']}", cell(r["time_to_threshold_s"], 1),
                      cell(r["steps_at_threshold"]), cell(r["value_at_wall"], digits), cell(r["final_value"], digits),
                      cell(r["sps"]), cell(r["startup_s"], 1), cell(r["driver_peak_mb"]), cell(r["actor_peak_mb_max"]))
        console.print(t)
        per = Table(title=f"{task_name}, per run")
        for col in ("framework", "seed", "time to threshold s", f"at {wall:g} s", "final", "steps", "train s", "SPS",
                    "start-up s", "actor MB", "load 1m", "note"):
            per.add_column(col, justify="left" if col in ("framework", "note") else "right")
        for r in (r for r in runs if r.task == task_name):
            # rlkit train exits 130 when Ctrl-C stopped it, as it was meant to be here.
            fine = r.exit_code == 0 or (r.interrupted and r.exit_code == 130)
            note = r.error or ("wall cap" if r.capped else "" if fine else f"exit {r.exit_code}")
            per.add_row(r.framework, str(r.seed), cell(r.time_to_threshold_s, 1), cell(r.value_at_wall, digits),
                        cell(r.final_value, digits), cell(r.steps), cell(r.train_wall_s, 1), cell(r.sps),
                        cell(r.startup_s, 1), " ".join(cell(m) for m in r.actor_peak_mb) or "-",
                        f"{r.load_before:.1f}->{r.load_after:.1f}", note)
        console.print(per)
        if vs := summary.get("rlkit_vs_rllib"):
            console.print(f"rlkit / rllib: time to threshold {cell(vs['time_to_threshold'], 2)}, "
                          f"end-to-end SPS {cell(vs['sps'], 2)}")
        if ceiling := summary.get("env_ceiling"):
            line = (f"the environment alone ({ceiling['processes']} processes, random actions, no learning): "
                    f"{cell(ceiling['public'])} env steps/s as PettingZoo's parallel_env, "
                    f"{cell(ceiling['rlkit'])} as rlkit steps it")
            if vs := summary.get("rlkit_vs_rllib"):
                peer = summary["frameworks"]["rllib"]["sps"]
                line += (f"; 3 x RLlib's SPS would be {cell(3 * peer)}, "
                         f"{cell(100 * 3 * peer / ceiling['rlkit'])}% of the latter")
            console.print(line)
        for target, res in summary.get("targets", {}).items():
            verdict = "[green]PASS[/]" if res["pass"] else "[red]FAIL[/]"
            console.print(f"{verdict} {target}: {cell(res['value'], 2)} (limit {res['limit']:g})")


def report_again(path: Path, args: argparse.Namespace) -> None:
    """The report of a saved run, each curve read again at the thresholds asked for now."""
    raw = json.loads(path.read_text())
    saved = raw["args"]
    args.walls = saved["walls"]
    for name, value in saved["thresholds"].items():
        if not any(item.startswith(f"{name}=") for item in args.threshold):
            args.thresholds[name] = value
    runs = []
    for item in raw["runs"]:
        run = Run(**{**item, "curve": [tuple(point) for point in item["curve"]],
                     "time_to_threshold_s": None, "steps_at_threshold": None})
        read_curve(run, args.thresholds[run.task], args.walls[run.task])
        runs.append(run)
    tasks = list(dict.fromkeys(r.task for r in runs))
    frameworks = list(dict.fromkeys(r.framework for r in runs))
    summaries = {name: summarize(runs, name, frameworks) for name in tasks}
    for name in tasks:
        if ceiling := raw["summary"].get(name, {}).get("env_ceiling"):
            summaries[name]["env_ceiling"] = ceiling
    print_report(runs, summaries, args)


# --------------------------------------------------------------------- main

def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="check the harness: 1 seed, short training times")
    p.add_argument("--seeds", type=int, default=3, help="seeds 1..N for each framework (--quick: 1)")
    p.add_argument("--tasks", default=",".join(TASKS), help=f"of {', '.join(TASKS)}")
    p.add_argument("--frameworks", default="rlkit,rllib")
    p.add_argument("--wall", type=float, default=None,
                   help="seconds from spawn that every run gets (default: each task's)")
    p.add_argument("--threshold", action="append", default=[], metavar="TASK=VALUE",
                   help="another threshold for a task (repeatable)")
    p.add_argument("--config", action="append", default=[], metavar="TASK=PATH",
                   help="another rlkit config for a task, whose settings RLlib then takes too (repeatable)")
    p.add_argument("--grace", type=float, default=120.0,
                   help="seconds past W after which a run that has not exited is killed")
    p.add_argument("--ceiling-seconds", type=float, default=8.0,
                   help="seconds of the env-alone ceiling per adapter and task (0: skip it)")
    p.add_argument("--torch-threads", type=int, default=1,
                   help="OMP_NUM_THREADS for every child (0: torch's default); see README")
    p.add_argument("--peer-python", default=str(HERE / ".venv" / "bin" / "python"))
    p.add_argument("--rlkit", default=str(Path(sys.executable).parent / "rlkit"))
    p.add_argument("--logs", default=None, help="folder for each child's output (default: a temp folder)")
    p.add_argument("--json", default=None, help="write every raw number here, curves included")
    p.add_argument("--report", default=None, metavar="JSON",
                   help="run nothing: print the report of an earlier --json file, at its thresholds or --threshold's")
    args = p.parse_args()
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    frameworks = [f.strip() for f in args.frameworks.split(",") if f.strip()]
    if bad := set(tasks) - set(TASKS):
        p.error(f"unknown task(s) {', '.join(sorted(bad))}; choose from {', '.join(TASKS)}")
    if bad := set(frameworks) - set(FRAMEWORKS):
        p.error(f"unknown framework(s) {', '.join(sorted(bad))}; choose from {', '.join(FRAMEWORKS)}")
    args.thresholds = {name: task.threshold for name, task in TASKS.items()}
    for item in args.threshold:
        name, sep, value = item.partition("=")
        try:
            args.thresholds[name] = float(value)
        except ValueError:
            p.error(f"--threshold {item}: give TASK=NUMBER")
        if not sep or name not in TASKS:
            p.error(f"--threshold {item}: give TASK=NUMBER, TASK one of {', '.join(TASKS)}")
    for item in args.config:
        name, sep, path = item.partition("=")
        if not sep or name not in TASKS or not Path(path).is_file():
            p.error(f"--config {item}: give TASK=PATH of a config file, TASK one of {', '.join(TASKS)}")
        TASKS[name] = replace(TASKS[name], config=str(Path(path).resolve()))
    args.walls = {name: args.wall or (t.quick_wall_s if args.quick else t.wall_s) for name, t in TASKS.items()}
    if args.report:
        report_again(Path(args.report), args)
        return
    seeds = 1 if args.quick else args.seeds
    logs = Path(args.logs or tempfile.mkdtemp(prefix="marl-bench-logs-"))
    logs.mkdir(parents=True, exist_ok=True)

    started = time.time()
    runs: list[Run] = []
    ceilings: dict[str, dict[str, float] | None] = {}
    for task_name in tasks:
        # RLlib has no built-in self-play league to compare with: self-play tasks run rlkit only.
        names = [f for f in frameworks if TASKS[task_name].rllib_mapping is not None or f == "rlkit"]
        ceilings[task_name] = env_ceiling(task_name, args)
        # Seed-major order: drifts in the machine's load fall on every framework alike.
        for seed in range(1, seeds + 1):
            for name in names:
                run = run_one(task_name, name, seed, args, logs)
                runs.append(run)
                print(f"{task_name} {name} seed {seed}: to threshold {cell(run.time_to_threshold_s, 1)} s, "
                      f"at wall {cell(run.value_at_wall, 2)}, steps {cell(run.steps)}, sps {cell(run.sps)}, "
                      f"load {run.load_before:.1f}" + (f" ({run.error})" if run.error else ""), file=sys.stderr)
    summaries = {task_name: summarize(runs, task_name, frameworks) for task_name in tasks}
    for task_name, ceiling in ceilings.items():
        if ceiling is not None:
            summaries[task_name]["env_ceiling"] = ceiling
    print_report(runs, summaries, args)
    print(f"child logs: {logs}; bench wall {time.time() - started:,.0f} s", file=sys.stderr)
    if args.json:
        raw = {"args": {k: v for k, v in vars(args).items()}, "cpu_count": os.cpu_count(),
               "tasks": {name: asdict(TASKS[name]) for name in tasks},
               "runs": [asdict(r) for r in runs], "summary": summaries}
        Path(args.json).write_text(json.dumps(finite(raw), indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
