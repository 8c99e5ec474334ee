"""A watchdog that ends an embedded Ray when the program that started it dies.

Ray ties its GCS and raylet to the driver, but the raylet's agents notice
their raylet is gone only after a minute or more; a driver killed by
SIGKILL, or interrupted while ``ray.init`` starts them, runs no cleanup
at all. So the driver starts this watchdog first (in a session of its own,
where a terminal's Ctrl-C does not reach it) and passes its Ray processes
a marker; when the driver's process is gone, the watchdog stops every
process that carries the marker, their descendants, and what still writes
into their log dirs, then exits::

    python -m rlkit.clusters.reaper PID START_TICKS MARKER
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

from rlkit.clusters import procs
from rlkit.clusters.records import ProcessRef

POLL_S = 0.2
GRACE_S = 3.0
# How often the process tree is read while the driver lives (one read costs
# ~17 ms of CPU): often while Ray starts its processes, rarely afterwards.
SCAN_STARTING_S, SCAN_RUNNING_S, STARTING_S = 1.0, 5.0, 60.0


def start_for_this_process() -> str:
    """Start the watchdog for the calling process; return the marker that
    its Ray processes must carry in ``procs.MARKER_ENV``."""
    me = procs.this_process()
    marker = f"session-{uuid.uuid4().hex}"
    env = {k: v for k, v in os.environ.items() if k != procs.MARKER_ENV}
    subprocess.Popen(
        [sys.executable, "-m", __name__, str(me.pid), str(me.start_ticks), marker], env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    return marker


def watch(driver: ProcessRef, marker: str) -> None:
    """Wait until ``driver`` has finished, then stop the marked processes.

    Ray's agents and workers overwrite their environment when they retitle
    themselves: they carry the marker only through their parent, the raylet,
    which dies with the driver and leaves them orphans that nothing marks.
    So the tree is read while the driver lives, and what it held is stopped
    too; and since one that started after the last read would escape that,
    so is every process still writing into the log dirs of the marked ones
    (``procs.find_writers``)."""
    seen: set[ProcessRef] = set()
    log_dirs: set[str] = set()
    started, next_scan = time.monotonic(), 0.0
    while procs.is_running(driver):
        now = time.monotonic()
        if now >= next_scan:
            found = set(procs.find_processes(marker))
            log_dirs |= procs.log_dirs_of(found - seen)
            seen |= found
            next_scan = now + (SCAN_STARTING_S if now - started < STARTING_S else SCAN_RUNNING_S)
        time.sleep(POLL_S)

    def left_behind() -> set[ProcessRef]:
        return set(procs.find_processes(marker)) | set(procs.find_writers(log_dirs))

    refs = seen | left_behind()
    procs.terminate([[r for r in refs if procs.is_running(r)]], GRACE_S)
    # Workers that a dying raylet forked meanwhile.
    procs.terminate([sorted(left_behind(), key=lambda r: r.pid)], GRACE_S)

if __name__ == "__main__":
    watch(ProcessRef(int(sys.argv[1]), int(sys.argv[2])), sys.argv[3])
