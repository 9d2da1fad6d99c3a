"""Process pools on this machine whose workers stop when the process that started them dies.

A ProcessPoolExecutor's worker runs its current task to the end even after its parent is gone
(killed by `kill`, a scheduler's SIGTERM, `docker stop`, SIGKILL): for a 45-minute ablation job
that is 45 minutes of cores spent on a result nobody records, and two orphans slow every later
run beside them. Workers of `spawn_pool` watch their parent from a daemon thread and exit
within POLL_SECONDS of its death; the parent's records (ablation results, shard progress
files) make a rerun resume from the tasks that had finished.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor

POLL_SECONDS = 1.0
ORPHAN_EXIT_CODE = 70  # what an orphaned worker exits with (EX_SOFTWARE)


def spawn_pool(workers: int) -> ProcessPoolExecutor:
    """`workers` fresh ("spawn") processes that exit when this process dies."""
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_exit_with_parent, initargs=(os.getpid(),))


def _exit_with_parent(parent: int) -> None:
    threading.Thread(target=_watch, args=(parent,), name="exit-with-parent", daemon=True).start()


def _watch(parent: int) -> None:
    while os.getppid() == parent:  # an orphan is re-parented (to init or a subreaper)
        time.sleep(POLL_SECONDS)
    os._exit(ORPHAN_EXIT_CODE)  # no cleanup: the parent that would use it is gone
