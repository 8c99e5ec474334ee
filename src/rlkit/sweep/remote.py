"""Sweeps on clusters: the sweep driver itself runs as a Ray job there
(``rlkit submit``'s machinery), so it outlives this machine's session.

Sweep files pair with clusters as jobs do: in address-file order, one sweep
per cluster at the same time; ``broadcast`` sends every sweep to every
cluster. The job runs ``rlkit sweep FILE --set ...`` in the shipped working
dir, so the sweep file (and a base config it names) must lie inside it.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rlkit.errors import BadInputError
from rlkit.sweep.records import SweepRecord, save_record
from rlkit.sweep.spec import SweepSpec, load_sweep

SWEEPS_SUBDIR = "sweeps"
JOB_ENV = "RLKIT_SWEEP_JOB"
"""Set in a sweep job's environment: its driver leaves the recording to the sender."""


@dataclass
class RemoteSweep:
    """One sweep sent to one cluster; ``error`` is None when Ray took the job.
    ``storage`` is the directory on the cluster that will hold the sweep's
    directory (``NAME-TIMESTAMP``)."""

    cluster: str
    name: str
    submission_id: str
    entrypoint: str
    storage: str
    error: str | None = None
    input_error: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


def _inside(path: Path, working_dir: Path, what: str) -> Path:
    try:
        return path.resolve().relative_to(working_dir)
    except ValueError:
        raise BadInputError(f"{what} {path} is outside the working dir {working_dir}",
                            "the sweep driver runs there on the cluster: run rlkit sweep from a directory that holds it") from None


def entrypoint(sweep_file: Path, overrides: list[str], working_dir: Path) -> str:
    """The job's command: this sweep, these overrides, printed as JSON at the end."""
    words = ["rlkit", "sweep", str(_inside(sweep_file, working_dir, "sweep file")), "--json", "--quiet"]
    for item in overrides:
        words += ["--set", item]
    return shlex.join(words)


def _storage(spec: SweepSpec, job_runs_dir: str) -> str:
    """Where the job's sweep directory will be: as ``default_storage`` works
    it out on the cluster, where RLKIT_RUNS_DIR is the job's runs dir."""
    if spec.file.storage_path is not None:
        return spec.file.storage_path
    runs_dir = spec.base["runs_dir"] if "runs_dir" in spec.base else job_runs_dir
    return f"{runs_dir}/{SWEEPS_SUBDIR}"


def submit_sweeps(
    files: list[Path],
    overrides: list[str],
    clusters: list[str] | None,
    *,
    broadcast: bool = False,
    working_dir: Path = Path("."),
    dry_run: bool = False,
    timeout: float = 60.0,
    include: tuple[str, ...] = (),
    notice: Callable[[str], None] | None = None,
) -> list[RemoteSweep]:
    """Validate the sweeps here (a bad file fails once, before anything is
    sent), then submit each as a job; records what was taken for ``rlkit status``.
    ``include`` takes secrets back into the working dir, as for ``rlkit submit``;
    ``notice`` gets the line that names those left out."""
    from rlkit.jobs import package, plan_submissions, submit_plan
    from rlkit.jobs.client import quiet_client_logs
    from rlkit.jobs.spec import JobSpec

    working_dir = working_dir.resolve()
    specs = [load_sweep(f, overrides) for f in files]
    jobs = []
    for path, spec in zip(files, specs):
        if spec.base_file is not None:
            _inside(Path(spec.base_file), working_dir, "base config")
        jobs.append(JobSpec(entrypoint=entrypoint(path, overrides, working_dir), name=spec.name, env={JOB_ENV: "1"}))
    plan = plan_submissions(jobs, clusters, broadcast=broadcast, working_dir=working_dir)
    spec_of = {id(job): spec for job, spec in zip(jobs, specs)}
    sweeps = [RemoteSweep(a.cluster.name, a.job.name, a.submission_id, a.job.entrypoint,
                          _storage(spec_of[id(a.job.spec)], a.runs_dir)) for a in plan.assignments]
    if dry_run:
        return sweeps
    quiet_client_logs()
    with package.packed(plan.working_dir, include) as packed:
        if packed.left_out and notice is not None:
            notice(package.left_out_note(packed.left_out))
        submitted = submit_plan(plan, packed, timeout)
    for sweep, result in zip(sweeps, submitted):
        sweep.submission_id = result.submission_id
        sweep.error, sweep.input_error = result.error, result.input_error
        if result.ok:
            save_record(SweepRecord(name=sweep.name, path=sweep.storage, cluster=sweep.cluster,
                                    job_id=result.submission_id), result.submission_id)
    return sweeps

