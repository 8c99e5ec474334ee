"""Time-to-475 and throughput on CartPole-v1: rlkit PPO against SB3 PPO and RLlib PPO.

Each (framework, seed) runs in its own fresh process, one at a time, so the
time from process start includes imports and Ray's start-up:

    python scripts/bench/train_bench.py --seeds 3 [--frameworks rlkit,sb3,rllib]
        [--budget-steps N] [--wall-cap 900] [--json out.json]
        [--rlkit-variant NAME=PATH/TO/rlkit ...]

``--rlkit-variant`` runs another rlkit install (another checkout's venv) as
one more framework, interleaved with the rest seed by seed, so a change can
be measured before and after in the same run.

Run it with rlkit's venv (.venv/bin/python); the peers run with
--peer-python (default scripts/bench/.venv/bin/python, made by
scripts/bench/setup.sh). See scripts/bench/README.md for the columns.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchlib import finite, fmt, median, parse_events, ratio, run_child
from ceiling import ceiling, layout

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CONFIG = REPO / "configs" / "ppo_cartpole.yaml"
TARGETS = {"time_ratio": 0.5, "sps_vs_sb3": 5.0, "actor_mb": 300.0, "first_update_s": 2.5, "exit_s": 0.5}


@dataclass
class Run:
    framework: str
    seed: int
    solved: bool = False
    time_to_475_s: float | None = None
    """From just before the process was spawned to the moment the rolling-100 return reached 475."""
    steps_at_475: int | None = None
    steps: int | None = None
    train_wall_s: float | None = None
    sps: float | None = None
    """End-to-end env steps per second of training: steps / train_wall_s."""
    startup_s: float | None = None
    """From spawn to the start of training (imports, Ray, actors)."""
    process_wall_s: float = 0.0
    timeline: dict[str, float] = field(default_factory=dict)
    """rlkit's own: seconds from its process's start to ray_ready, first_update
    and last_update; ``exit_after_last_update`` is the parent's spawn-to-exit less last_update."""
    driver_peak_mb: float | None = None
    actor_peak_mb: list[float] = field(default_factory=list)
    self_reported: dict[str, object] = field(default_factory=dict)
    exit_code: int | None = None
    capped: bool = False
    load_before: float = 0.0
    load_after: float = 0.0
    error: str | None = None


# ------------------------------------------------------------ the frameworks

def rlkit_cmd(exe: str | None = None):
    """``rlkit train``, of the install ``exe`` (default: ``--rlkit``)."""
    def cmd(args: argparse.Namespace, seed: int, tmp: Path) -> list[str]:
        out = [exe or args.rlkit, "train", args.rlkit_config, "--json", "--quiet",
               "--set", f"seed={seed}", "--set", f"runs_dir={tmp}"]
        if args.budget_steps:
            out += ["--set", f"stop.total_steps={args.budget_steps}"]
        for item in args.rlkit_set:
            out += ["--set", item]
        return out
    return cmd


def peer_cmd(script: str):
    def cmd(args: argparse.Namespace, seed: int, tmp: Path) -> list[str]:
        extra = ["--budget-steps", str(args.budget_steps)] if args.budget_steps else []
        return [args.peer_python, str(HERE / script), "--seed", str(seed), *extra]
    return cmd


def read_rlkit(run: Run, t0: float, out: list[str]) -> None:
    """`rlkit train --json` prints a summary; the loop stops at the 475 update and saves a checkpoint at once."""
    text = "".join(out)
    summary = json.loads(text[text.index("{"):])
    run.self_reported = {k: summary[k] for k in ("driver_peak_rss_mb", "actor_peak_rss_mb", "stop_reason")}
    run.steps, run.train_wall_s, run.sps = summary["global_step"], summary["wall_s"], summary["sps"]
    last_ckpt = Path(summary["checkpoint"])
    if summary["stop_reason"] == "target_return":
        # The final checkpoint is written right after the update that reached
        # 475 (its mtime includes that save, a few ms): the child's timestamp.
        run.solved, run.steps_at_475 = True, summary["global_step"]
        run.time_to_475_s = last_ckpt.stat().st_mtime - t0
        run.startup_s = run.time_to_475_s - summary["wall_s"]
    run.driver_peak_mb = max(run.driver_peak_mb or 0.0, summary["driver_peak_rss_mb"])
    # An rlkit from before the timeline: its final checkpoint, written right after the last update, stands in.
    run.timeline = dict(summary.get("timeline") or {"last_update": round(last_ckpt.stat().st_mtime - t0, 3)})
    run.timeline["exit_after_last_update"] = round(run.process_wall_s - run.timeline["last_update"], 3)


def read_peer(run: Run, t0: float, out: list[str]) -> None:
    events = {}
    for e in parse_events(out):
        events[e["event"]] = e  # the last of each kind
    if "train_start" in events:
        run.startup_s = events["train_start"]["t"] - t0
    if "solved" in events:
        run.solved, run.steps_at_475 = True, events["solved"]["steps"]
        run.time_to_475_s = events["solved"]["t"] - t0
    if "end" in events:
        end = events["end"]
        run.steps, run.train_wall_s = end["steps"], end["train_wall_s"]
        run.driver_peak_mb = max(run.driver_peak_mb or 0.0, end["driver_peak_rss_mb"])
    elif "progress" in events and "train_start" in events:  # cut off by the wall-clock cap
        run.steps = events["progress"]["steps"]
        run.train_wall_s = events["progress"]["t"] - events["train_start"]["t"]
    if run.steps and run.train_wall_s:
        run.sps = round(run.steps / run.train_wall_s, 1)
    run.self_reported = {"version": events.get("start", {}).get("version")}


FRAMEWORKS = {
    # name: (command, reader, title of its rollout-actor processes; None: no separate actors)
    "rlkit": (rlkit_cmd(), read_rlkit, "ray::RolloutWorker"),
    "sb3": (peer_cmd("child_sb3.py"), read_peer, None),
    "rllib": (peer_cmd("child_rllib.py"), read_peer, "ray::SingleAgentEnvRunner"),
}


# ------------------------------------------------------------------ one run

def run_one(name: str, seed: int, args: argparse.Namespace, logs: Path, frameworks: dict = FRAMEWORKS) -> Run:
    make_cmd, read, actor_title = frameworks[name]
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    child = run_child(make_cmd(args, seed, tmp), stem=f"{name}-seed{seed}", logs=logs, cap=args.wall_cap,
                      actor_title=actor_title, torch_threads=args.torch_threads, cwd=REPO)
    run = Run(name, seed, process_wall_s=child.wall_s, driver_peak_mb=child.driver_peak_mb,
              actor_peak_mb=child.actor_peak_mb, exit_code=child.exit_code, capped=child.capped,
              load_before=child.load_before, load_after=child.load_after)
    try:
        read(run, child.t0, child.out)
    except (ValueError, KeyError, OSError) as err:
        run.error = f"{type(err).__name__}: {err}; see {child.stderr}"
    if run.solved and run.time_to_475_s > args.wall_cap:
        run.solved = False
    shutil.rmtree(tmp, ignore_errors=True)
    return run


# ------------------------------------------------------------------ summary

def summarize(runs: list[Run], frameworks: list[str], ceiling_sps: float | None,
              variants: tuple[str, ...] = ()) -> dict[str, object]:
    """Medians per framework, and each rlkit's (``rlkit`` and every variant's) ratios over every other framework's."""
    rows = {}
    for name in frameworks:
        mine = [r for r in runs if r.framework == name]
        actors = [mb for r in mine for mb in r.actor_peak_mb]
        rows[name] = {
            "solved": sum(r.solved for r in mine), "runs": len(mine),
            # An unsolved run counts as infinitely slow, so the median is honest.
            "time_to_475_s": median([r.time_to_475_s if r.solved else None for r in mine], True),
            "steps_at_475": median([r.steps_at_475 if r.solved else None for r in mine], True),
            "sps": median([r.sps for r in mine]),
            "startup_s": median([r.startup_s for r in mine]),
            "driver_peak_mb": median([r.driver_peak_mb for r in mine]),
            "actor_peak_mb_max": max(actors) if actors else None,
            **{f"timeline_{k}": median([r.timeline.get(k) for r in mine]) for k in TIMELINE},
        }
    mine_all = [f for f in frameworks if f == "rlkit" or f in variants]
    peers = [f for f in frameworks if f not in mine_all]
    ratios: dict[str, dict[str, dict[str, float | None]]] = {}
    for me in mine_all:
        ratios[me] = {peer: {"time_to_475": ratio(rows[me]["time_to_475_s"], rows[peer]["time_to_475_s"]),
                             "sps": ratio(rows[me]["sps"], rows[peer]["sps"])}
                      for peer in frameworks if peer != me}
    summary = {"frameworks": rows, "ratios": ratios, "ceiling_sps": ceiling_sps}
    if "rlkit" in rows:
        summary["rlkit_fraction_of_ceiling"] = ratio(rows["rlkit"]["sps"], ceiling_sps)
        summary["targets"] = targets({name: rows[name] for name in ["rlkit", *peers]})
    return summary


TIMELINE = ("ray_ready", "first_update", "last_update", "exit_after_last_update")


def targets(rows: dict[str, dict]) -> dict[str, dict[str, object]]:
    me = rows["rlkit"]
    peer_times = [rows[p]["time_to_475_s"] for p in rows if p != "rlkit"]
    faster = min((t for t in peer_times if t is not None and t != float("inf")), default=None)
    out: dict[str, dict[str, object]] = {}
    if faster is not None and me["time_to_475_s"] is not None:
        out["time_to_475 <= 0.5 x faster peer"] = {
            "value": ratio(me["time_to_475_s"], faster), "limit": TARGETS["time_ratio"],
            "pass": me["time_to_475_s"] <= TARGETS["time_ratio"] * faster}
    if "sb3" in rows and me["sps"] and rows["sb3"]["sps"]:
        value = me["sps"] / rows["sb3"]["sps"]
        out["SPS >= 5 x SB3"] = {"value": value, "limit": TARGETS["sps_vs_sb3"], "pass": value >= TARGETS["sps_vs_sb3"]}
    if me["actor_peak_mb_max"] is not None:
        out["rollout actor <= 300 MB"] = {"value": me["actor_peak_mb_max"], "limit": TARGETS["actor_mb"],
                                          "pass": me["actor_peak_mb_max"] <= TARGETS["actor_mb"]}
    for key, target, limit in (("timeline_first_update", "spawn to first update", TARGETS["first_update_s"]),
                               ("timeline_exit_after_last_update", "exit after the last update", TARGETS["exit_s"])):
        if me[key] is not None:
            out[f"{target} <= {limit:g} s"] = {"value": me[key], "limit": limit, "pass": me[key] <= limit}
    return out


def print_report(runs: list[Run], summary: dict, cap: float) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(150, Console().width))
    t = Table(title=f"CartPole-v1 PPO to a rolling-100 return of 475 (medians over seeds; wall cap {cap:g} s)")
    for col in ("framework", "solved", "time-to-475 s", "steps at 475", "end-to-end SPS", "start-up s",
                "driver peak MB", "max actor peak MB"):
        t.add_column(col, justify="left" if col == "framework" else "right")
    for name, r in summary["frameworks"].items():
        t.add_row(name, f"{r['solved']}/{r['runs']}", fmt(r["time_to_475_s"], 1), fmt(r["steps_at_475"]),
                  fmt(r["sps"]), fmt(r["startup_s"], 1), fmt(r["driver_peak_mb"]), fmt(r["actor_peak_mb_max"]))
    console.print(t)

    per = Table(title="Per run")
    for col in ("framework", "seed", "solved", "time-to-475 s", "steps at 475", "steps", "train s", "SPS",
                "start-up s", "driver MB", "actor peak MB", "load 1m", "note"):
        per.add_column(col, justify="left" if col in ("framework", "note") else "right")
    for r in runs:
        note = r.error or ("wall cap" if r.capped else "" if r.exit_code == 0 else f"exit {r.exit_code}")
        per.add_row(r.framework, str(r.seed), "yes" if r.solved else "no", fmt(r.time_to_475_s, 1),
                    fmt(r.steps_at_475), fmt(r.steps), fmt(r.train_wall_s, 1), fmt(r.sps),
                    fmt(r.startup_s, 1), fmt(r.driver_peak_mb), " ".join(fmt(m) for m in r.actor_peak_mb) or "-",
                    f"{r.load_before:.1f}->{r.load_after:.1f}", note)
    console.print(per)

    timed = [r for r in runs if r.timeline]
    if timed:
        tl = Table(title="Start-up and exit: seconds from the process's start (rlkit's own timeline)")
        for col in ("framework", "seed", "Ray ready", "first update", "last update", "exit after last update"):
            tl.add_column(col, justify="left" if col == "framework" else "right")
        for r in timed:
            tl.add_row(r.framework, str(r.seed), *(fmt(r.timeline.get(k), 2) for k in TIMELINE))
        console.print(tl)

    for me, vs in summary["ratios"].items():
        for peer, r in vs.items():
            console.print(f"{me} / {peer}: time-to-475 {fmt(r['time_to_475'], 2)}, "
                          f"end-to-end SPS {fmt(r['sps'], 2)}")
    if summary["ceiling_sps"]:
        console.print(f"ceiling (rlkit's rollout layout stepping its own vector env, random actions, no learning): "
                      f"{summary['ceiling_sps']:,.0f} env steps/s; rlkit end-to-end SPS is "
                      f"{fmt(summary.get('rlkit_fraction_of_ceiling'), 3)} of it")
    for target, res in summary.get("targets", {}).items():
        verdict = "[green]PASS[/]" if res["pass"] else "[red]FAIL[/]"
        console.print(f"{verdict} {target}: {fmt(res['value'], 2)} (limit {res['limit']:g})")


# --------------------------------------------------------------------- main

def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3, help="seeds 1..N for each framework")
    p.add_argument("--frameworks", default="rlkit,sb3,rllib")
    p.add_argument("--budget-steps", type=int, default=None,
                   help="env-step budget for every framework (default: each one's reference setting: "
                        "rlkit's config 200k, rl-zoo3's 100k, RLlib's example 300k)")
    p.add_argument("--wall-cap", type=float, default=900.0, help="seconds after which a run counts as unsolved")
    p.add_argument("--torch-threads", type=int, default=1,
                   help="OMP_NUM_THREADS for every child (0: leave torch's default, one per core); "
                        "see README: on a shared machine the default thrashes every framework's learner")
    p.add_argument("--ceiling-seconds", type=float, default=3.0, help="0 skips the ceiling")
    p.add_argument("--peer-python", default=str(HERE / ".venv" / "bin" / "python"))
    p.add_argument("--rlkit", default=str(Path(sys.executable).parent / "rlkit"))
    p.add_argument("--rlkit-config", default=str(CONFIG), help="rlkit's config (default: the shipped default)")
    p.add_argument("--rlkit-set", action="append", default=[], metavar="KEY=VALUE",
                   help="an override for rlkit's config (repeatable), to compare settings")
    p.add_argument("--rlkit-variant", action="append", default=[], metavar="NAME=PATH",
                   help="another rlkit install's rlkit executable (e.g. another checkout's .venv/bin/rlkit), "
                        "run as framework NAME with the same config and overrides (repeatable); "
                        "a variant --frameworks does not name runs after the others")
    p.add_argument("--logs", default=None, help="folder for each child's stderr (default: a temp folder)")
    p.add_argument("--json", default=None, help="write every raw number here")
    args = p.parse_args()
    table = dict(FRAMEWORKS)
    for item in args.rlkit_variant:
        name, sep, exe = item.partition("=")
        if not sep or not name or name in FRAMEWORKS or not os.access(exe, os.X_OK):
            p.error(f"--rlkit-variant {item}: give NAME=PATH, a new name and an executable rlkit")
        table[name] = (rlkit_cmd(exe), read_rlkit, "ray::RolloutWorker")
    variants = tuple(name for name in table if name not in FRAMEWORKS)
    frameworks = [f.strip() for f in args.frameworks.split(",") if f.strip()]
    frameworks += [v for v in variants if v not in frameworks]
    unknown = set(frameworks) - set(table)
    if unknown:
        p.error(f"unknown framework(s) {', '.join(sorted(unknown))}; choose from {', '.join(table)}")
    logs = Path(args.logs or tempfile.mkdtemp(prefix="train-bench-logs-"))
    logs.mkdir(parents=True, exist_ok=True)

    started = time.time()
    ceil = (ceiling(3, seconds=args.ceiling_seconds, **layout(args.rlkit_config, args.rlkit_set))
            if args.ceiling_seconds > 0 else None)
    if ceil:
        print(f"ceiling: {ceil['median_sps']:,.0f} env steps/s", file=sys.stderr)
    runs: list[Run] = []
    # Seed-major order: drifts in the machine's load fall on every framework alike.
    for seed in range(1, args.seeds + 1):
        for name in frameworks:
            run = run_one(name, seed, args, logs, table)
            runs.append(run)
            print(f"{name} seed {seed}: solved={run.solved} time={fmt(run.time_to_475_s, 1)} s "
                  f"steps={fmt(run.steps)} sps={fmt(run.sps)} load={run.load_before:.1f}"
                  + (f" ({run.error})" if run.error else ""), file=sys.stderr)
    summary = summarize(runs, frameworks, ceil["median_sps"] if ceil else None, variants)
    print_report(runs, summary, args.wall_cap)
    print(f"child logs: {logs}; bench wall {time.time() - started:,.0f} s", file=sys.stderr)
    if args.json:
        raw = {"args": vars(args), "cpu_count": os.cpu_count(), "ceiling": ceil,
               "runs": [asdict(r) for r in runs], "summary": summary}
        Path(args.json).write_text(json.dumps(finite(raw), indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
