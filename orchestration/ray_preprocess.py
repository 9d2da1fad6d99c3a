"""Run the preprocessing job's shard tasks on a Ray cluster (or a local Ray instance).

The only Ray-specific part of preprocessing: a ShardExecutor that submits one Ray task per
piece (a few dozen videos, 1 CPU each) and yields results as they finish. Workers must see the
source videos and the output folder at the same paths as the driver (a shared filesystem on a
cluster) and have this package installed. A task whose worker dies is retried by Ray
(max_retries); because a piece is written atomically and its record last, a retried or
duplicated task writes the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from orchestration.runtime import connect_ray
from preprocessing.job import PieceResult, PieceTask, ShardExecutor


def ray_executor(address: str | None = None, max_retries: int = 3) -> ShardExecutor:
    """A ShardExecutor on Ray: `address` of a running cluster, or None for a local instance."""

    def run(function: Callable[[PieceTask], PieceResult], tasks: list[PieceTask]
            ) -> Iterator[PieceResult]:
        import ray

        started_here = connect_ray(address, log_to_driver=False)
        try:
            remote = ray.remote(num_cpus=1, max_retries=max_retries)(function)
            pending = [remote.remote(task) for task in tasks]
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                yield ray.get(done[0])
        finally:
            if started_here:
                ray.shutdown()

    return run
