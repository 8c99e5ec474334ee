"""Time to submit N jobs to N local clusters (N = 1, 2, 3), against one job
to one cluster: with parallel fan-out the ratio stays near 1.

Starts three local clusters (one CPU each) in a temporary RLKIT_HOME and
address file, never the user's, and stops them at the end. Each timing is
one call of ``rlkit.jobs.submit`` (pack the working dir, connect, upload
what the cluster lacks, submit), taken after a warm-up submission to every
cluster (so the shipped modules are there already: the steady state of
repeated submissions) and after the previous jobs have ended (so they do
not compete for the CPU). For contrast, the same N submissions one cluster
after another.

    .venv/bin/python scripts/bench/submit_bench.py --repeats 7 --json /tmp/submit.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

ENTRYPOINT = "python -c pass"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timings per N (the median is reported)")
    parser.add_argument("--max-clusters", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="rlkit-submit-bench-") as tmp:
        os.environ["RLKIT_HOME"] = str(Path(tmp) / "home")
        os.environ["RLKIT_RAY_ADDRESS_FILE"] = str(Path(tmp) / "ray_address")
        os.environ.pop("RAY_ADDRESS", None)
        work = Path(tmp) / "project"
        (work / "configs").mkdir(parents=True)
        (work / "configs" / "x.yaml").write_text("name: x\n")
        report = run(work, args.repeats, args.max_clusters)
    print_table(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


def run(work: Path, repeats: int, max_clusters: int) -> dict[str, object]:
    from rlkit.clusters import launching, local
    from rlkit.clusters.records import list_records
    from rlkit.jobs import JobSpec, submit
    from rlkit.jobs.client import quiet_client_logs

    quiet_client_logs()
    specs = local.specs_for("bench", max_clusters, cpus=1)
    try:
        started = time.monotonic()
        outcomes = launching.launch_many(local.provider, specs, timeout_s=local.START_TIMEOUT_S)
        failed = [str(o.error) for o in outcomes if o.error is not None]
        if failed:
            raise SystemExit(f"launch failed: {failed}")
        launch_s = time.monotonic() - started
        names = [s.name for s in specs]

        def timed(clusters: list[str]) -> float:
            t0 = time.perf_counter()
            results = submit([JobSpec(entrypoint=ENTRYPOINT)] * len(clusters), clusters, working_dir=work)
            elapsed = time.perf_counter() - t0
            bad = [r.error for r in results if not r.ok]
            if bad:
                raise SystemExit(f"submission failed: {bad}")
            wait_until_idle(clusters)
            return elapsed

        cold = timed(names)
        rows = []
        for n in range(1, max_clusters + 1):
            parallel = [timed(names[:n]) for _ in range(repeats)]
            serial = [sum(timed([name]) for name in names[:n]) for _ in range(repeats)]
            rows.append({"n": n, "parallel_s": parallel, "serial_s": serial})
        base = statistics.median(rows[0]["parallel_s"])
        for row in rows:
            row["parallel_median_s"] = round(statistics.median(row["parallel_s"]), 3)
            row["serial_median_s"] = round(statistics.median(row["serial_s"]), 3)
            row["ratio_to_one"] = round(row["parallel_median_s"] / base, 2)
        return {"launch_s": round(launch_s, 1), "cold_fanout_s": round(cold, 3), "repeats": repeats,
                "cpus": os.cpu_count(), "load_average": [round(x, 1) for x in os.getloadavg()], "rows": rows}
    finally:
        for record in list_records():
            local.stop(record)


def wait_until_idle(clusters: list[str], timeout: float = 120.0) -> None:
    from rlkit.clusters.registry import select_clusters
    from rlkit.jobs import list_jobs

    deadline = time.monotonic() + timeout
    targets = select_clusters(clusters)
    while time.monotonic() < deadline:
        if not any(j.active for j in list_jobs(targets).jobs):
            return
        time.sleep(0.25)
    raise SystemExit(f"jobs on {clusters} did not end within {timeout:.0f} s")


def print_table(report: dict[str, object]) -> None:
    print(f"{report['cpus']} CPUs, load average {report['load_average']}; clusters launched in {report['launch_s']} s; "
          f"first (cold) fan-out to all: {report['cold_fanout_s']} s; median of {report['repeats']}")
    print(f"{'N':>2}  {'parallel s':>10}  {'ratio to N=1':>12}  {'one after another s':>19}")
    for row in report["rows"]:  # type: ignore[attr-defined]
        print(f"{row['n']:>2}  {row['parallel_median_s']:>10.3f}  {row['ratio_to_one']:>12.2f}  "
              f"{row['serial_median_s']:>19.3f}")


if __name__ == "__main__":
    main()
