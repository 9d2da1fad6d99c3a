"""Run the preprocessing job's shard tasks on a Ray cluster (or a local Ray instance).

The only Ray-specific part of preprocessing: a ShardExecutor that submits one Ray task per
piece (a few dozen videos, 1 CPU each) and yields results as they finish. Workers must see the
source videos and the output folder at the same paths as the driver (a shared filesystem on a
cluster) and have this package installed; before any piece runs, one probe per node checks
that (a node that cannot see them would write its pieces to its own disk, and the job would
fail only at assembly, hours later). A task whose worker dies is retried by Ray (max_retries),
then reported (WorkerDied) after the others; because a piece is written atomically and its
record last, a retried or duplicated task writes the same bytes.
"""

from __future__ import annotations

import os
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
            if tasks:
                check_every_node_sees(tasks[0].local_paths())
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


def check_every_node_sees(paths: list[str]) -> None:
    """Raise ValueError naming each Ray node (of those with CPUs, where pieces run) that does
    not see every one of `paths` (local paths), before any work is submitted."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if not paths:
        return
    nodes = [node for node in ray.nodes()
             if node["Alive"] and node["Resources"].get("CPU", 0) >= 1]
    probe = ray.remote(num_cpus=0, max_retries=0)(_missing)
    answers = ray.get([probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        node["NodeID"], soft=False)).remote(paths) for node in nodes])
    blind = [f"  node {node['NodeManagerAddress']} ({node['NodeID'][:8]}) does not see "
             f"{', '.join(missing)}" for node, missing in zip(nodes, answers, strict=True)
             if missing]
    if blind:
        listed = "\n".join(blind)
        raise ValueError(
            f"{len(blind)} of {len(nodes)} Ray nodes cannot see the paths this job reads and "
            f"writes:\n{listed}\nOn a cluster, --out and local video paths must be on a "
            f"filesystem every node mounts at the same path, or in an object store "
            f"(--out s3://bucket/shards); nothing was transcoded")


def _missing(paths: list[str]) -> list[str]:
    """The paths this process cannot see (runs on the node being probed)."""
    return [path for path in paths if not os.path.exists(path)]
