"""Run the preprocessing job's shard tasks on a Ray cluster (or a local Ray instance).

The only Ray-specific part of preprocessing: a ShardExecutor that submits one Ray task per
piece (a few dozen videos, 1 CPU each) and yields results as they finish. Workers must see the
source videos and the output folder at the same paths as the driver (a shared filesystem on a
cluster) and have this package installed. A task whose worker dies is retried by Ray
(max_retries), then reported (WorkerDied) after the others; because a piece is written
atomically and its record last, a retried or duplicated task writes the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from orchestration.runtime import connect_ray
from preprocessing.job import PieceResult, PieceTask, ShardExecutor, WorkerDied


def ray_executor(address: str | None = None, max_retries: int = 3) -> ShardExecutor:
    """A ShardExecutor on Ray: `address` of a running cluster, or None for a local instance.
    An error cancels the tasks not finished; a piece whose worker dies (a crash, Ray's OOM
    killer) on every try ends the job with WorkerDied after every other piece is done."""

    def run(function: Callable[[PieceTask], PieceResult], tasks: list[PieceTask]
            ) -> Iterator[PieceResult]:
        import ray
        from ray.exceptions import OutOfMemoryError, WorkerCrashedError

        started_here = connect_ray(address, log_to_driver=False)
        pending, died = [], []
        try:
            remote = ray.remote(num_cpus=1, max_retries=max_retries)(function)
            task_of = {remote.remote(task): task for task in tasks}
            pending = list(task_of)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                try:
                    result = ray.get(done[0])
                except (WorkerCrashedError, OutOfMemoryError):
                    died.append(task_of[done[0]])
                    continue
                yield result
        finally:
            for ref in pending:  # stopped early: an error, or the consumer gave up
                ray.cancel(ref, force=True)
            if started_here:
                ray.shutdown()
        if died:
            raise WorkerDied(died, f"on each of its {max_retries + 1} tries")

    return run
