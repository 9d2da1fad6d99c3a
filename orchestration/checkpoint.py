"""Training checkpoints: the one module that writes, reads and interprets them.

Pretraining (`checkpoint.pt`, `pretraining_checkpoint`):
    model            PretrainNetwork state (encoder.* and objective.* entries)
    optimizer, scheduler
    epoch            the next epoch to run
    step             optimiser steps done in all
    batch_in_epoch   batches of `epoch` already done (resuming skips them without reading)
    config           ExperimentConfig.to_dict(); config["run"]["seed"] with epoch and
                     batch_in_epoch is the whole sampler state: every view is drawn from
                     (seed, epoch, sample index), every level set from (seed, epoch, batch)
    mlflow_run_id    the job's MLflow run (a resumed job keeps logging to it)
No grad-scaler state: training runs in fp32 or bf16 autocast, neither of which scales the loss.

Finetuning (`finetune.pt`, `finetuning_checkpoint`): model (VideoClassifier state), optimizer,
scheduler, epoch (next to run), initial (test accuracy before training), encoder (the R3D-18's
width and global_unstrided_stages).

Either may carry `reported_metrics` (orchestration.runtime.LocalRuntime stores the report that
wrote it). Everything loads with weights_only=True; `encoder_from` builds the R3D-18 of either.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from model.encoder import R3D18
from preprocessing.storage import Folder, is_uri

CHECKPOINT_FILE = "checkpoint.pt"
FINETUNE_FILE = "finetune.pt"


@dataclass
class TrainState:
    """Where pretraining stands: the next epoch to run, steps done, batches of it done."""

    epoch: int = 0
    step: int = 0
    batch_in_epoch: int = 0


def _parent_and_name(location: str | Path | Folder) -> tuple[Folder, str]:
    folder = Folder(location)
    parent = Folder(folder.uri.rsplit("/", 1)[0] if "/" in folder.uri else ".")
    return parent, folder.name


def latest_checkpoint(location: str | Path) -> str:
    """The checkpoint file a location names: the file itself, or for a job's folder
    (run.storage_path / run.name) its latest pretraining checkpoint, whether the job ran in
    this process (FOLDER/checkpoint.pt) or on Ray Train (FOLDER/checkpoint_*/checkpoint.pt; the
    one with the most steps). ValueError when there is none."""
    return _latest(location)[0]


def load_latest_checkpoint(location: str | Path) -> dict:
    """The checkpoint latest_checkpoint names, loaded (once: choosing among Ray Train's
    checkpoints already loads them)."""
    uri, saved = _latest(location)
    return saved if saved is not None else load_checkpoint(uri)


def _latest(location: str | Path) -> tuple[str, dict | None]:
    """(latest_checkpoint's URI, the checkpoint when choosing it loaded it, else None)."""
    folder = Folder(location)
    if not folder.exists():
        raise ValueError(f"checkpoint {location} not found")
    if folder.is_file(""):
        return folder.uri, None
    if folder.is_file(CHECKPOINT_FILE):
        return (folder / CHECKPOINT_FILE).uri, None
    candidates = [folder / name / CHECKPOINT_FILE for name in folder.subfolders("checkpoint_*")
                  if (folder / name).is_file(CHECKPOINT_FILE)]
    if not candidates:
        raise ValueError(f"{location} is a folder without a {CHECKPOINT_FILE} (give a "
                         f"checkpoint file or a pretraining job's folder)")
    loaded = [(candidate, load_checkpoint(candidate)) for candidate in candidates]
    best, saved = max(loaded, key=lambda pair: pair[1].get("step", 0))
    return best.uri, saved


def load_checkpoint(location: str | Path | Folder) -> dict:
    """A training checkpoint (a path or an object-store URI), loaded with weights_only=True."""
    if not isinstance(location, Folder) and not is_uri(location):
        return torch.load(location, map_location="cpu", weights_only=True)
    parent, name = _parent_and_name(location)
    return checkpoint_from_bytes(parent.read_bytes(name))


def checkpoint_from_bytes(data: bytes) -> dict:
    """A training checkpoint from the bytes of its file, loaded with weights_only=True."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def save_checkpoint(location: str | Path | Folder, checkpoint: dict) -> None:
    """Write a checkpoint atomically (a path or an object-store URI)."""
    parent, name = _parent_and_name(location)
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    parent.write_bytes(name, buffer.getvalue())


def pretraining_checkpoint(network: nn.Module, optimizer: torch.optim.Optimizer,
                           scheduler, state: TrainState, config: dict, run_id: str) -> dict:
    """The pretraining checkpoint of `network` (the PretrainNetwork, unwrapped)."""
    return {"model": network.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "epoch": state.epoch, "step": state.step,
            "batch_in_epoch": state.batch_in_epoch, "config": config, "mlflow_run_id": run_id}


def restore_pretraining(saved: dict, network: nn.Module, optimizer: torch.optim.Optimizer,
                        scheduler) -> TrainState:
    """Load a pretraining checkpoint into the training objects; returns where it stood."""
    network.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    return TrainState(saved["epoch"], saved["step"], saved["batch_in_epoch"])


def finetuning_checkpoint(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler,
                          epoch: int, initial: dict, encoder: R3D18) -> dict:
    """The finetuning checkpoint of `model` (a VideoClassifier around `encoder`)."""
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "epoch": epoch, "initial": initial,
            "encoder": {"width": encoder.width,
                        "global_unstrided_stages": encoder.global_unstrided_stages}}


def encoder_state(path: Path) -> dict[str, torch.Tensor]:
    """The R3D-18 weights of a pretraining or finetuning checkpoint: the "encoder." entries of
    its model, without the prefix."""
    model = load_checkpoint(path)["model"]
    state = {k.removeprefix("encoder."): v for k, v in model.items() if k.startswith("encoder.")}
    if not state:
        raise ValueError(f"{path} holds no encoder weights")
    return state


def encoder_from(path: Path) -> tuple[R3D18, str | None]:
    """The R3D-18 of a pretraining or finetuning checkpoint, and the MLflow run it came from
    (pretraining checkpoints only)."""
    saved = load_checkpoint(path)
    if "config" in saved:
        shape = saved["config"]["model"]
    elif "encoder" in saved:
        shape = saved["encoder"]
    else:
        raise ValueError(f"{path} does not say the encoder's width (not a ctrlaug checkpoint)")
    encoder = R3D18(shape["width"], shape["global_unstrided_stages"])
    encoder.load_state_dict(encoder_state(path))
    return encoder, saved.get("mlflow_run_id")
