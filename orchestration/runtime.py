"""Where a training loop runs: in this process (`LocalRuntime`) or in a Ray Train worker
(`RayRuntime`). Pretraining and finetuning share one loop each, written against this interface:

    rank, world, device      this worker's place
    restore() -> dict | None the job's latest checkpoint (orchestration.checkpoint)
    prepare(module)          move to the device; under Ray with several workers, wrap in DDP
    report(metrics, ckpt)    a checkpoint (rank 0 passes the dict, others None) and metrics
    agree(flag) -> bool      True on every worker when it is true on one (a stop decision)

Ray is imported only inside RayRuntime, so the in-process path needs no cluster.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from orchestration.checkpoint import CHECKPOINT_FILE, load_checkpoint
from orchestration.distributed import any_rank


class LocalRuntime:
    """A loop's runtime in this process, without Ray: one worker, checkpoints in the job folder.

    restore() reads FOLDER/<file> if a previous run left one; report() writes it atomically,
    with the reported metrics beside it, so that rerunning a finished job (which trains
    nothing) still returns its last metrics, as Ray's result does.
    """

    rank, world = 0, 1

    def __init__(self, folder: Path, device: torch.device, file: str = CHECKPOINT_FILE) -> None:
        self.folder, self.device, self.file = folder, device, file
        self.last_metrics: dict = {}

    @property
    def checkpoint_path(self) -> Path:
        return self.folder / self.file

    def restore(self) -> dict | None:
        if not self.checkpoint_path.is_file():
            return None
        saved = load_checkpoint(self.checkpoint_path)
        self.last_metrics = saved.get("reported_metrics", {})
        return saved

    def prepare(self, network: torch.nn.Module) -> torch.nn.Module:
        return network.to(self.device)

    def report(self, metrics: dict, checkpoint: dict | None) -> None:
        self.last_metrics = metrics
        if checkpoint is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            partial = self.checkpoint_path.with_suffix(".partial")
            torch.save({**checkpoint, "reported_metrics": metrics}, partial)
            partial.replace(self.checkpoint_path)

    def agree(self, flag: bool) -> bool:
        return flag


class RayRuntime:
    """A loop's runtime inside a Ray Train worker: DDP, Ray's checkpoints and reports."""

    def __init__(self, gpu: bool, file: str = CHECKPOINT_FILE) -> None:
        import ray.train
        import ray.train.torch

        self.file = file
        context = ray.train.get_context()
        self.rank, self.world = context.get_world_rank(), context.get_world_size()
        self.device = ray.train.torch.get_device() if gpu else torch.device("cpu")

    def restore(self) -> dict | None:
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as folder:
            return load_checkpoint(Path(folder) / self.file)

    def prepare(self, network: torch.nn.Module) -> torch.nn.Module:
        import ray.train.torch

        return ray.train.torch.prepare_model(network) if self.world > 1 else \
            network.to(self.device)

    def report(self, metrics: dict, checkpoint: dict | None) -> None:
        import ray.train

        if checkpoint is None:
            ray.train.report(metrics, checkpoint=None)
            return
        with tempfile.TemporaryDirectory() as folder:
            torch.save(checkpoint, Path(folder) / self.file)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))

    def agree(self, flag: bool) -> bool:
        return any_rank(flag, self.device)
