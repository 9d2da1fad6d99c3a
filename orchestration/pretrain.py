"""Pretraining: the training loop, its two runtimes (Ray Train, or this process), and the driver.

Driver (`run_pretraining`): validate the shards and the tracking store, find or create the job's
MLflow run, then run `pretrain_loop` either on `run.workers` Ray Train workers with TorchTrainer
(gloo on CPU, NCCL on GPU; `run.ray = true`, the default) or in this process (`run.ray = false`:
one worker, no cluster, steppable in a debugger). Rerunning the same command (same run.name and
run.storage_path) resumes from the job's latest checkpoint. A worker failure restarts the loop
from that checkpoint, up to run.max_failures times; the MLflow run stays the same.

Loop (`pretrain_loop`): what differs between the runtimes is behind `LocalRuntime` /
`RayRuntime` (restore, prepare the model, report a checkpoint, agree across workers). It resumes
from the checkpoint if there is one, wraps the network for data parallelism, and loops epochs of
`training_step`. Every epoch end (and every
checkpoint_every_steps steps) all workers report; rank 0 attaches the checkpoint (model,
optimiser, scheduler, epoch, step, position in the epoch, sampler seed, config, MLflow run id)
and logs to MLflow: every loss term, the MI estimates, lr, videos/s, the share of time spent
waiting for data, the augmentation preview, and at the end the final checkpoint and the encoder
as an MLflow PyTorch model.
"""

from __future__ import annotations

import copy
import sys
import tempfile
import time
from pathlib import Path

import torch

from model import PretrainNetwork
from orchestration.checkpoint import (
    CHECKPOINT_FILE,
    TrainState,
    encoder_state,
    load_latest_checkpoint,
    pretraining_checkpoint,
    restore_pretraining,
)
from orchestration.distributed import gather_keys_with_grad, gather_views_with_grad
from orchestration.experiment import ExperimentConfig, config_from_dict, resume_conflicts
from orchestration.runtime import LocalRuntime, RayRuntime, connect_ray, quiet_train_logging
from orchestration.train_step import NonFiniteLoss, training_step, unwrap
from pipeline import build_pretrain_loader
from preprocessing.progress import format_seconds
from preprocessing.storage import Folder

NONFINITE_FILE = "nonfinite.txt"
INJECTED_FILE = ".injected-failure"


def job_folder(config: ExperimentConfig) -> Folder:
    """The job's folder: run.storage_path (a path or an object-store URI) / run.name."""
    return Folder(config.run.storage_path) / config.run.name


def _maybe_inject_failure(config: ExperimentConfig, step: int, rank: int, world: int) -> None:
    """Fault drill: one worker raises once at run.fail_at_step (a marker keeps it to once)."""
    if step != config.run.fail_at_step or rank != min(1, world - 1):
        return
    folder = job_folder(config)
    if folder.exists(INJECTED_FILE):
        return
    folder.write_text(INJECTED_FILE, f"failure injected at step {step}\n")
    raise RuntimeError(f"injected failure at step {step} (run.fail_at_step)")


def pretrain_loop(config: ExperimentConfig, run_id: str, tracking_uri: str,
                  runtime: LocalRuntime | RayRuntime) -> None:
    """Epochs of `training_step` from wherever the job stands (see the module docstring);
    rank 0 samples system metrics into the run meanwhile."""
    from orchestration.tracking import RunLogger

    rank, world, device = runtime.rank, runtime.world, runtime.device
    torch.manual_seed(config.run.seed)
    network = PretrainNetwork(config.model, config.loss)
    optimizer = torch.optim.Adam(network.parameters(), lr=config.optim.lr,
                                 weight_decay=config.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=list(config.optim.decay_epochs), gamma=config.optim.decay_factor)
    state = TrainState()
    saved = runtime.restore()
    if saved is None and config.run.init_encoder:
        network.encoder.load_state_dict(encoder_state(config.run.init_encoder))
    if saved is not None:
        state = restore_pretraining(saved, network, optimizer, scheduler)
    if config.run.gpu:
        network = network.to(memory_format=torch.channels_last_3d)
    network = runtime.prepare(network)

    per_worker = config.data.batch_size // world  # >= MIN_VIDEOS_PER_BATCH (ExperimentConfig)
    loader = build_pretrain_loader(
        config.data.shards, per_worker, device="gpu" if config.run.gpu else "cpu", rank=rank,
        world_size=world, seed=config.run.seed, epoch=state.epoch, config=config.augment,
        backend=config.data.backend, prefetch=config.data.prefetch,
        num_threads=config.data.num_threads, split=config.data.split,
        shuffle_memory_mb=config.data.shuffle_memory_mb, device_id=device.index or 0,
        decode=config.data.decode, gpu_share=config.data.decode_gpu_share)
    grids = unwrap(network).grids((config.augment.clip_frames, config.augment.size,
                                   config.augment.size))
    logger = RunLogger(tracking_uri, run_id) if rank == 0 else None
    if logger is not None and state.step == 0:
        logger.params_once(config.flat())
        logger.json(config.to_dict(), "config.json")
    monitor = logger.system_metrics().start() if logger is not None else None
    try:
        _train_epochs(config, run_id, runtime, network, optimizer, scheduler, state, loader,
                      grids, logger)
    finally:
        if monitor is not None:
            monitor.stop()


class ConsoleLine:
    """Rank 0's progress line every run.log_every_steps steps: where the job is, every loss
    term, videos/s, and per step the time spent waiting for data and the rest of the step (with
    GPU memory on a GPU), averaged since the previous line."""

    TERMS = ("rc", "nce", "mi", "td")

    def __init__(self, epoch: int, epochs: int, steps_per_epoch: int, start_batch: int) -> None:
        self.epoch, self.epochs, self.steps_per_epoch = epoch, epochs, steps_per_epoch
        self.since, self.steps, self.waited = time.perf_counter(), start_batch, 0.0

    def line(self, state: TrainState, metrics: dict, stats) -> str:
        """stats: the loader's LoaderStats of this epoch."""
        now = time.perf_counter()
        steps = max(state.batch_in_epoch - self.steps, 1)
        wait = (stats.wait_seconds - self.waited) / steps
        step_time = (now - self.since) / steps - wait
        self.since, self.steps, self.waited = now, state.batch_in_epoch, stats.wait_seconds
        terms = "  ".join(f"{name} {metrics[f'loss_{name}']:.3f}" for name in self.TERMS
                          if f"loss_{name}" in metrics)
        memory = ""
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            memory = f"  gpu mem {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"
        return (f"epoch {self.epoch + 1}/{self.epochs}  step {state.batch_in_epoch}/"
                f"{self.steps_per_epoch} ({state.step})  loss {metrics['loss']:.3f} ({terms})  "
                f"videos/s {metrics['videos_per_s']:.1f}  data {wait:.2f} s  step "
                f"{step_time:.2f} s{memory}")


def _train_epochs(config: ExperimentConfig, run_id: str, runtime: LocalRuntime | RayRuntime,
                  network: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler,
                  state: TrainState, loader, grids, logger) -> None:
    """The epochs left, then (rank 0) the final checkpoint and encoder in MLflow."""
    from orchestration.preview import render_preview

    rank, world = runtime.rank, runtime.world
    started, epochs_run = time.perf_counter(), 0
    steps_per_epoch = len(loader)

    def report(metrics: dict) -> None:
        checkpoint = pretraining_checkpoint(unwrap(network), optimizer, scheduler, state,
                                            config.to_dict(), run_id) if rank == 0 else None
        runtime.report(metrics, checkpoint)

    try:
        for epoch in range(state.epoch, config.optim.epochs):
            loader.set_epoch(epoch)
            epoch_start, epoch_videos, last = time.perf_counter(), 0, {}
            console = ConsoleLine(epoch, config.optim.epochs, steps_per_epoch,
                                  state.batch_in_epoch)
            for batch in loader.iterate(start_batch=state.batch_in_epoch):
                _maybe_inject_failure(config, state.step, rank, world)
                if logger is not None and state.step == 0:
                    logger.image(render_preview(batch, grids), "augmentation_preview.png")
                breakdown = training_step(network, optimizer, batch, grids, state.step,
                                          gather_keys_with_grad, config.run.gpu, runtime.agree,
                                          gather_views_with_grad, config.run.seed, rank)
                state.step += 1
                state.batch_in_epoch += 1
                epoch_videos += len(batch.video_id)
                elapsed = time.perf_counter() - epoch_start
                last = {**breakdown.scalars(), "lr": optimizer.param_groups[0]["lr"],
                        "videos_per_s": epoch_videos * world / max(elapsed, 1e-9),
                        "data_wait_fraction": loader.stats.wait_seconds / max(elapsed, 1e-9)}
                if logger is not None and state.step % config.run.log_every_steps == 0:
                    logger.metrics(last, state.step)
                    print(console.line(state, last, loader.stats), flush=True)
                every = config.run.checkpoint_every_steps
                if every and state.step % every == 0 and state.batch_in_epoch < steps_per_epoch:
                    report({**last, "epoch": epoch, "step": state.step})
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
            report({**last, "epoch": epoch + 1, "step": state.step})
    except NonFiniteLoss as error:
        if rank == 0:
            job_folder(config).write_text(NONFINITE_FILE, str(error) + "\n")
            if logger is not None:
                logger.tag("ctrlaug.stopped", str(error))
        return
    # The final checkpoint and encoder, once: a rerun of a finished job does not log them again.
    if logger is not None and state.epoch == config.optim.epochs and \
            (epochs_run > 0 or not logger.has_model()):
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / CHECKPOINT_FILE
            torch.save(pretraining_checkpoint(unwrap(network), optimizer, scheduler, state,
                                              config.to_dict(), run_id), path)
            logger.file(path, "checkpoints")
        logger.model(copy.deepcopy(unwrap(network).encoder).cpu(), "encoder", state.step)


def pretrain_worker(loop_config: dict) -> None:
    """The Ray Train worker: the loop under RayRuntime."""
    config = config_from_dict(loop_config["config"])
    pretrain_loop(config, loop_config["mlflow_run_id"], loop_config["tracking_uri"],
                  RayRuntime(config.run.gpu))


def run_pretraining(config: ExperimentConfig, tags: dict[str, str] | None = None) -> dict:
    """Launch (or resume) the job; returns the last reported metrics and where things are.

    run.ray (default): on Ray Train with run.workers workers. run.ray = false: in this process,
    one worker (debuggable, and no cluster start-up for small jobs); a failure restarts the loop
    from the job's last checkpoint, up to run.max_failures times, as Ray would. tags: extra
    MLflow tags for a new run (for example mlflow.parentRunId).

    Raises ValueError / TrackingUnavailable with one clear line before training when the shards
    or the tracking store are unusable; NonFiniteLoss when training stopped on a non-finite loss.
    """
    from orchestration.tracking import (
        RunLogger,
        check_reachable,
        job_run,
        resolve_tracking_uri,
    )
    from pipeline.shard_reader import ShardDataset

    if not config.data.shards:
        raise ValueError("data.shards is not set (--data.shards=FOLDER)")
    config = config.with_absolute_paths()
    dataset = ShardDataset.open(config.data.shards, config.data.split)
    if len(dataset) < config.data.batch_size:
        raise ValueError(f"{config.data.shards} has {len(dataset)} videos, fewer than one batch "
                         f"of {config.data.batch_size}")
    folder = job_folder(config)
    check_resumable(config, folder)
    uri = resolve_tracking_uri(config.run.tracking_uri, config.run.storage_path)
    check_reachable(uri)
    run_id = job_run(uri, config.run.experiment, config.run.name, folder.uri, tags or {},
                     shards=config.data.shards)
    folder.delete(NONFINITE_FILE)
    logger = RunLogger(uri, run_id)
    print(f"pretraining {config.run.name}: MLflow {logger.link()}", file=sys.stderr, flush=True)
    try:
        if config.run.ray:
            metrics, checkpoint = _fit_on_ray(config, run_id, uri)
        else:
            metrics, checkpoint = _fit_in_process(config, run_id, uri, folder)
    except Exception:
        logger.finish("FAILED")
        raise
    if folder.exists(NONFINITE_FILE):
        logger.finish("FAILED")
        raise NonFiniteLoss(folder.read_text(NONFINITE_FILE).strip())
    logger.finish("FINISHED")
    metrics.update(mlflow_run_id=run_id, tracking_uri=uri,
                   checkpoint=str(checkpoint) if checkpoint else None)
    print(f"pretraining {config.run.name}: done; MLflow run {run_id} at {uri}",
          file=sys.stderr)
    return metrics


def check_resumable(config: ExperimentConfig, folder: Folder) -> None:
    """ValueError (one line) when the job's folder holds a checkpoint written with settings a
    resume cannot change (experiment.resume_conflicts): resuming would mix two experiments in
    one job (another batch layout replays the wrong part of an epoch; another model does not
    load). Nothing happens for a new job."""
    try:
        saved = load_latest_checkpoint(folder.uri)
    except ValueError:  # no folder, or no checkpoint in it yet: a new job
        return
    conflicts = resume_conflicts(saved.get("config", {}), config)
    if conflicts:
        raise ValueError(f"job {config.run.name} in {config.run.storage_path} was started with "
                         f"other settings ({'; '.join(conflicts)}): rerun it with its own "
                         f"settings to resume it, or give another --run.name for a new job")


def _fit_on_ray(config: ExperimentConfig, run_id: str, uri: str) -> tuple[dict, str | None]:
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    connect_ray(log_to_driver=True)
    trainer = TorchTrainer(
        pretrain_worker,
        train_loop_config={"config": config.to_dict(), "mlflow_run_id": run_id,
                           "tracking_uri": uri},
        torch_config=TorchConfig(backend="nccl" if config.run.gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=config.run.workers, use_gpu=config.run.gpu),
        run_config=RunConfig(
            name=config.run.name, storage_path=Folder(config.run.storage_path).uri,
            failure_config=FailureConfig(max_failures=config.run.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2), **quiet_train_logging()))
    result = trainer.fit()
    checkpoint = result.checkpoint
    if checkpoint is None:
        return dict(result.metrics or {}), None
    # Ray gives the checkpoint's path inside the storage's file system: put the scheme back.
    storage = Folder(config.run.storage_path)
    where = checkpoint.path if storage.is_local else \
        f"{storage.uri.split('://')[0]}://{checkpoint.path}"
    return dict(result.metrics or {}), f"{where}/{CHECKPOINT_FILE}"


def _fit_in_process(config: ExperimentConfig, run_id: str, uri: str, folder: Folder
                    ) -> tuple[dict, str | None]:
    device = torch.device("cuda", 0) if config.run.gpu else torch.device("cpu")
    runtime = LocalRuntime(folder, device)
    for attempt in range(config.run.max_failures + 1):
        try:
            pretrain_loop(config, run_id, uri, runtime)
            break
        except NonFiniteLoss:
            raise
        except Exception as error:
            if attempt == config.run.max_failures:
                raise
            print(f"pretraining {config.run.name}: {type(error).__name__}: {error}; restarting "
                  f"from the last checkpoint ({attempt + 1} of {config.run.max_failures})",
                  file=sys.stderr, flush=True)
    saved = folder.is_file(runtime.file)
    return runtime.last_metrics, (folder / runtime.file).uri if saved else None
