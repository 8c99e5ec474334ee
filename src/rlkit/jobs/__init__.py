"""Training jobs on several Ray clusters at once, through Ray's Job
Submission API: pairing jobs with clusters, code shipping, logs, stop,
job listing and fetching runs home. Importing this package imports no ray.

    from rlkit.jobs import JobSpec, submit, list_jobs
    results = submit([JobSpec(entrypoint="rlkit train configs/ppo_cartpole.yaml")], ["lab-a", "lab-b"],
                     broadcast=True)
    for job in list_jobs().jobs:
        print(job.cluster, job.id, job.status)
"""

from rlkit.jobs.fetch import FetchResult, fetch
from rlkit.jobs.listing import JobListing, JobRecord, find_jobs, list_jobs
from rlkit.jobs.logs import JobOutcome, JobRef, follow, job_logs
from rlkit.jobs.spec import Job, JobSpec, load_job_file
from rlkit.jobs.stop import JobStopResult, stop_jobs
from rlkit.jobs.submit import (
    Assignment,
    SubmissionPlan,
    SubmitResult,
    plan_submissions,
    submit,
    submit_plan,
)

__all__ = [
    "Assignment", "FetchResult", "Job", "JobListing", "JobOutcome", "JobRecord", "JobRef", "JobSpec", "JobStopResult",
    "SubmissionPlan", "SubmitResult", "fetch", "find_jobs", "follow", "job_logs", "list_jobs", "load_job_file",
    "plan_submissions", "stop_jobs", "submit", "submit_plan",
]
