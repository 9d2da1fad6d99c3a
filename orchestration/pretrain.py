"""Distributed pretraining on Ray Train: the per-worker loop, checkpoints, and the driver.

Driver (`run_pretraining`): validate the shards and the tracking store, find or create the job's
MLflow run, then launch `pretrain_worker` on `run.workers` workers with Ray Train's TorchTrainer
(gloo on CPU, NCCL on GPU). Rerunning the same command (same run.name and run.storage_path)
resumes: Ray hands the workers the job's latest checkpoint. A worker failure restarts the worker
group from that checkpoint, up to run.max_failures times; the MLflow run stays the same.

Worker (`pretrain_worker`): resume from the checkpoint if there is one, wrap the network for
data parallelism, and loop epochs of `training_step`. Every epoch end (and every
checkpoint_every_steps steps) all workers report; rank 0 attaches the checkpoint (model,
optimiser, scheduler, epoch, step, position in the epoch, sampler seed, config, MLflow run id)
and logs to MLflow: every loss term, the MI estimates, lr, videos/s, the share of time spent
waiting for data, the augmentation preview, and at the end the final checkpoint and the encoder
as an MLflow PyTorch model.
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from model import PretrainNetwork
from orchestration.distributed import any_rank, gather_keys_with_grad
from orchestration.experiment import ExperimentConfig, config_from_dict
from orchestration.train_step import NonFiniteLoss, training_step, unwrap
from pipeline import build_pretrain_loader
from preprocessing.progress import format_seconds

CHECKPOINT_FILE = "checkpoint.pt"
NONFINITE_FILE = "nonfinite.txt"
INJECTED_FILE = ".injected-failure"


@dataclass
class TrainState:
    """Where training stands: the next epoch to run and the batch to start it at."""

    epoch: int = 0
    step: int = 0
    batch_in_epoch: int = 0


def job_folder(config: ExperimentConfig) -> Path:
    return Path(config.run.storage_path).resolve() / config.run.name


def _checkpoint_dict(network, optimizer, scheduler, state: TrainState,
                     config: ExperimentConfig, run_id: str) -> dict:
    return {"model": unwrap(network).state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": {}, "epoch": state.epoch,
            "step": state.step, "batch_in_epoch": state.batch_in_epoch,
            "sampler": {"seed": config.run.seed, "epoch": state.epoch,
                        "batch": state.batch_in_epoch},
            "config": config.to_dict(), "mlflow_run_id": run_id}


def load_checkpoint(path: Path) -> dict:
    """A pretraining checkpoint, loaded with weights_only=True."""
    return torch.load(path, map_location="cpu", weights_only=True)


def _report(metrics: dict, state: TrainState, rank: int, network, optimizer, scheduler,
            config: ExperimentConfig, run_id: str) -> None:
    import ray.train

    if rank != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    with tempfile.TemporaryDirectory() as folder:
        torch.save(_checkpoint_dict(network, optimizer, scheduler, state, config, run_id),
                   Path(folder) / CHECKPOINT_FILE)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


def _maybe_inject_failure(config: ExperimentConfig, step: int, rank: int, world: int) -> None:
    """Fault drill: one worker raises once at run.fail_at_step (a marker keeps it to once)."""
    if step != config.run.fail_at_step or rank != min(1, world - 1):
        return
    marker = job_folder(config) / INJECTED_FILE
    if marker.exists():
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"failure injected at step {step}\n")
    raise RuntimeError(f"injected failure at step {step} (run.fail_at_step)")


def pretrain_worker(loop_config: dict) -> None:
    """The Ray Train worker loop (see the module docstring)."""
    import ray.train
    import ray.train.torch

    from orchestration.preview import render_preview
    from orchestration.tracking import RunLogger

    config = config_from_dict(loop_config["config"])
    run_id = loop_config["mlflow_run_id"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device() if config.run.gpu else torch.device("cpu")
    torch.manual_seed(config.run.seed)

    network = PretrainNetwork(config.model, config.loss)
    optimizer = torch.optim.Adam(network.parameters(), lr=config.optim.lr,
                                 weight_decay=config.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=list(config.optim.decay_epochs), gamma=config.optim.decay_factor)
    state = TrainState()
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            saved = load_checkpoint(Path(folder) / CHECKPOINT_FILE)
        network.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state = TrainState(saved["epoch"], saved["step"], saved["batch_in_epoch"])
    if config.run.gpu:
        network = network.to(memory_format=torch.channels_last_3d)
    network = ray.train.torch.prepare_model(network) if world > 1 else network.to(device)

    per_worker = max(2, config.data.batch_size // world)
    loader = build_pretrain_loader(
        config.data.shards, per_worker, device="gpu" if config.run.gpu else "cpu", rank=rank,
        world_size=world, seed=config.run.seed, epoch=state.epoch, config=config.augment,
        backend=config.data.backend, prefetch=config.data.prefetch,
        num_threads=config.data.num_threads, split=config.data.split,
        device_id=device.index or 0)
    grids = unwrap(network).grids((config.augment.clip_frames, config.augment.size,
                                   config.augment.size))
    logger = RunLogger(loop_config["tracking_uri"], run_id) if rank == 0 else None
    if logger is not None and state.step == 0:
        logger.params_once(config.flat())
        logger.json(config.to_dict(), "config.json")
    started, epochs_run = time.perf_counter(), 0
    steps_per_epoch = len(loader)

    def agree(flag: bool) -> bool:
        return any_rank(flag, device)

    try:
        for epoch in range(state.epoch, config.optim.epochs):
            loader.set_epoch(epoch)
            epoch_start, epoch_videos, last = time.perf_counter(), 0, {}
            for batch in loader.iterate(start_batch=state.batch_in_epoch):
                _maybe_inject_failure(config, state.step, rank, world)
                if logger is not None and state.step == 0:
                    logger.image(render_preview(batch), "augmentation_preview.png")
                breakdown = training_step(network, optimizer, batch, grids, state.step,
                                          gather_keys_with_grad, config.run.gpu, agree)
                state.step += 1
                state.batch_in_epoch += 1
                epoch_videos += len(batch.video_id)
                elapsed = time.perf_counter() - epoch_start
                last = {**breakdown.scalars(), "lr": optimizer.param_groups[0]["lr"],
                        "videos_per_s": epoch_videos * world / max(elapsed, 1e-9),
                        "data_wait_fraction": loader.stats.wait_seconds / max(elapsed, 1e-9)}
                if logger is not None and state.step % config.run.log_every_steps == 0:
                    logger.metrics(last, state.step)
                every = config.run.checkpoint_every_steps
                if every and state.step % every == 0 and state.batch_in_epoch < steps_per_epoch:
                    _report({**last, "epoch": epoch, "step": state.step}, state, rank, network,
                            optimizer, scheduler, config, run_id)
            scheduler.step()
            state = TrainState(epoch + 1, state.step, 0)
            epochs_run += 1
            if logger is not None:
                logger.metrics({**last, "epoch": epoch + 1}
                               if state.step % config.run.log_every_steps else
                               {"epoch": epoch + 1}, state.step)
                per_epoch = (time.perf_counter() - started) / epochs_run
                eta = per_epoch * (config.optim.epochs - epoch - 1)
                print(f"epoch {epoch + 1}/{config.optim.epochs}  step {state.step}  loss "
                      f"{last.get('loss', float('nan')):.4f}  videos/s "
                      f"{last.get('videos_per_s', 0):.1f}  data wait "
                      f"{100 * last.get('data_wait_fraction', 0):.0f}%  ETA "
                      f"{format_seconds(eta)}", flush=True)
            _report({**last, "epoch": epoch + 1, "step": state.step}, state, rank, network,
                    optimizer, scheduler, config, run_id)
    except NonFiniteLoss as error:
        if rank == 0:
            (job_folder(config) / NONFINITE_FILE).write_text(str(error) + "\n")
            if logger is not None:
                logger.tag("ctrlaug.stopped", str(error))
        return
    if logger is not None and state.epoch == config.optim.epochs:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / CHECKPOINT_FILE
            torch.save(_checkpoint_dict(network, optimizer, scheduler, state, config, run_id),
                       path)
            logger.file(path, "checkpoints")
        logger.model(unwrap(network).encoder.cpu(), "encoder")


def run_pretraining(config: ExperimentConfig) -> dict:
    """Launch (or resume) the job on Ray Train; returns the last reported metrics.

    Raises ValueError / TrackingUnavailable with one clear line before training when the shards
    or the tracking store are unusable; NonFiniteLoss when training stopped on a non-finite loss.
    """
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from orchestration.tracking import (
        check_reachable,
        git_commit,
        job_run,
        manifest_hash,
        resolve_tracking_uri,
    )
    from pipeline.shard_reader import ShardDataset

    if not config.data.shards:
        raise ValueError("data.shards is not set (--data.shards=FOLDER)")
    dataset = ShardDataset.open(config.data.shards, config.data.split)
    if len(dataset) < config.data.batch_size:
        raise ValueError(f"{config.data.shards} has {len(dataset)} videos, fewer than one batch "
                         f"of {config.data.batch_size}")
    uri = resolve_tracking_uri(config.run.tracking_uri, config.run.storage_path)
    check_reachable(uri)
    run_id = job_run(uri, config.run.experiment, config.run.name,
                     {"git_commit": git_commit(),
                      "shards_manifest_sha256": manifest_hash(config.data.shards),
                      "shards": str(Path(config.data.shards).resolve())})
    folder = job_folder(config)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / NONFINITE_FILE).unlink(missing_ok=True)
    if not ray.is_initialized():
        ray.init(log_to_driver=True, include_dashboard=False)
    trainer = TorchTrainer(
        pretrain_worker,
        train_loop_config={"config": config.to_dict(), "mlflow_run_id": run_id,
                           "tracking_uri": uri},
        torch_config=TorchConfig(backend="nccl" if config.run.gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=config.run.workers, use_gpu=config.run.gpu),
        run_config=RunConfig(
            name=config.run.name, storage_path=str(Path(config.run.storage_path).resolve()),
            failure_config=FailureConfig(max_failures=config.run.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2)))
    from orchestration.tracking import RunLogger

    logger = RunLogger(uri, run_id)
    try:
        result = trainer.fit()
    except Exception:
        logger.finish("FAILED")
        raise
    stopped = folder / NONFINITE_FILE
    if stopped.exists():
        logger.finish("FAILED")
        raise NonFiniteLoss(stopped.read_text().strip())
    logger.finish("FINISHED")
    metrics = dict(result.metrics or {})
    checkpoint = result.checkpoint.path if result.checkpoint is not None else None
    metrics.update(mlflow_run_id=run_id, tracking_uri=uri,
                   checkpoint=str(Path(checkpoint) / CHECKPOINT_FILE) if checkpoint else None)
    print(f"pretraining {config.run.name}: done; MLflow run {run_id} at {uri}",
          file=sys.stderr)
    return metrics
