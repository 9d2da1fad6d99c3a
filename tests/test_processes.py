"""A pool worker stops when the process that started it dies (preprocessing.processes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Starts a one-worker pool, prints the worker's pid, gives it a two-minute task and waits.
PARENT = textwrap.dedent("""
    import os, sys, time
    from concurrent.futures import ProcessPoolExecutor
    from preprocessing.processes import spawn_pool

    if __name__ == "__main__":
        pool = spawn_pool(1) if sys.argv[1] == "spawn_pool" else ProcessPoolExecutor(1)
        print(pool.submit(os.getpid).result(), flush=True)
        pool.submit(time.sleep, 120)
        time.sleep(120)
""")


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for a reaper (Linux /proc)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _orphan_after_parent_killed(tmp_path: Path, pool: str, wait_s: float) -> tuple[int, bool]:
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    parent = subprocess.Popen([sys.executable, str(script), pool], stdout=subprocess.PIPE,
                              text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        worker = int(parent.stdout.readline())
        assert _alive(worker)
        time.sleep(0.5)  # the worker has taken its two-minute task
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + wait_s
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.2)
        return worker, _alive(worker)
    finally:
        parent.kill()
        parent.stdout.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_worker_exits_soon_after_its_parent_is_killed(tmp_path):
    worker, alive = _orphan_after_parent_killed(tmp_path, "spawn_pool", wait_s=15)
    assert not alive, f"worker {worker} still runs 15 s after its parent was killed"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_plain_pool_worker_outlives_its_parent_which_is_why_spawn_pool_exists(tmp_path):
    worker, alive = _orphan_after_parent_killed(tmp_path, "plain", wait_s=3)
    try:
        assert alive, "a plain ProcessPoolExecutor worker stopped with its parent: the watch " \
                      "in preprocessing.processes may no longer be needed"
    finally:
        if alive:
            os.kill(worker, signal.SIGKILL)
