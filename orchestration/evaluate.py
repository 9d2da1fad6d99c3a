"""Downstream evaluation of a pretrained encoder: linear probe and retrieval, tracked in MLflow.

Features: every video's N uniformly spaced clips (default 10), centre crop, no jitter
(`build_eval_loader`, with the clip length, size and clip extent of the pretraining's augment
config), encoded with f and pooled to (N, 512); they are computed once per (encoder, shard
folder, view settings) and cached beside the job (`features-*.pt`). With device "gpu" the clips
are decoded by DALI on the GPU and encoded there under bf16 autocast.

- Linear probe: the encoder is frozen; a linear classifier is trained on the clip features of
  the train videos (each of the N clips is one training example), then every test video is
  predicted by the mean of its clips' softmax. Reports top-1, top-5 and per-class accuracy and
  a confusion matrix.
- Retrieval: a video's feature is the mean of its clips' features, L2-normalised; test videos
  query the train videos by cosine similarity (no centring); R@1/5/10/20. Also instance@1,
  the share of test clips whose nearest other clip is from the same video: how much the
  features identify a video whatever its class (an appearance shortcut shows as a high
  instance@1 with class retrieval at chance).

Each evaluation is an MLflow run tagged with the pretraining run it evaluates
(`ctrlaug.pretrain_run`, and MLflow's parent-run tag), with the confusion matrix and a picture of
a few queries and their nearest neighbours.
- Finetune (orchestration/finetune.py): the whole network with a new head on Ray Train workers;
  test accuracy before and after, same 10-clip protocol.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from model.encoder import R3D18, pool_features
from model.evaluation import (
    average_clip_softmax,
    per_class_accuracy,
    retrieval_recall,
    same_video_recall,
    top_k_accuracy,
    train_linear_probe,
)
from orchestration.checkpoint import encoder_from, latest_checkpoint, load_checkpoint
from orchestration.finetune import FinetuneConfig, run_finetune
from orchestration.preview import frames_to_uint8
from orchestration.train_step import bf16_autocast
from pipeline import build_eval_loader
from pipeline.config import AugmentConfig
from preprocessing import shards as layout


@dataclass
class Features:
    """clips (V, N, D) pooled clip features; labels (V,); video_id; first_frames (V, H, W, 3)."""

    clips: torch.Tensor
    labels: torch.Tensor
    video_id: list[str]
    first_frames: np.ndarray


@torch.no_grad()
def extract_features(encoder: R3D18, shards: Path, clips: int = 10, batch_size: int = 8,
                     backend: str = "dali", augment: AugmentConfig | None = None,
                     device: str = "cpu") -> Features:
    """Pooled clip features of every video; device "cpu" or "gpu" (decode and encode there;
    the features come back to the CPU in float32)."""
    target = torch.device("cuda", 0) if device == "gpu" else torch.device("cpu")
    encoder = encoder.to(target).eval()
    loader = build_eval_loader(shards, batch_size, clips=clips, backend=backend, prefetch=2,
                               config=augment or AugmentConfig(), device=device)
    parts, labels, ids, firsts = [], [], [], []
    for batch in loader:
        b, n = batch.frames.shape[:2]
        with bf16_autocast(target):
            maps = encoder.forward_clip(batch.frames.flatten(0, 1))  # (B*N, C, T, H, W)
        parts.append(pool_features(maps.float()).unflatten(0, (b, n)).cpu())  # (B, N, C)
        labels.append(batch.label.cpu())
        ids += batch.video_id
        firsts += [frames_to_uint8(batch.frames[i, 0].cpu())[0] for i in range(b)]
    if loader.stats.skipped:
        print(f"skipped {len(loader.stats.skipped)} undecodable videos: "
              f"{loader.stats.skipped[:3]}")
    return Features(torch.cat(parts), torch.cat(labels), ids, np.stack(firsts))


def cached_features(encoder: R3D18, shards: Path, cache: Path, clips: int = 10,
                    backend: str = "dali", augment: AugmentConfig | None = None,
                    device: str = "cpu") -> Features:
    """extract_features, kept in `cache` under a key of the weights, the shard manifest and the
    view settings (the device is not part of the key: it changes only rounding)."""
    augment = augment or AugmentConfig()
    digest = hashlib.sha256()
    for tensor in encoder.state_dict().values():
        digest.update(tensor.cpu().numpy().tobytes())
    digest.update(layout.manifest_bytes(shards))
    digest.update(str((clips, augment.clip_frames, augment.size, augment.clip_extent,
                       augment.frame_stride)).encode())
    path = cache / f"features-{digest.hexdigest()[:16]}.pt"
    if path.is_file():
        try:
            saved = torch.load(path, weights_only=True)
            return Features(saved["clips"], saved["labels"], saved["video_id"],
                            saved["first_frames"].numpy())
        except Exception as error:  # a damaged cache entry costs a recomputation, no more
            print(f"feature cache {path} unreadable ({type(error).__name__}: {error}); "
                  f"recomputing it", flush=True)
    features = extract_features(encoder, shards, clips, backend=backend, augment=augment,
                                device=device)
    cache.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    torch.save({"clips": features.clips, "labels": features.labels,
                "video_id": features.video_id,
                "first_frames": torch.from_numpy(features.first_frames)}, partial)
    os.replace(partial, path)  # atomic: a killed save leaves no truncated entry
    return features


def linear_probe(train: Features, test: Features, num_classes: int, epochs: int = 100
                 ) -> dict:
    """Train on every train clip, test by the mean clip softmax; returns metrics and matrix."""
    n = train.clips.shape[1]
    mean, std = train.clips.mean((0, 1)), train.clips.std((0, 1)) + 1e-6  # feature scaling
    x = ((train.clips - mean) / std).reshape(-1, train.clips.shape[-1])
    y = train.labels.repeat_interleave(n)
    probe = train_linear_probe(x, y, num_classes, epochs=epochs)
    with torch.no_grad():
        probabilities = average_clip_softmax(probe((test.clips - mean) / std))  # (V, C)
    predictions = probabilities.argmax(1)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    confusion.index_put_((test.labels, predictions), torch.ones_like(predictions),
                         accumulate=True)
    return {"top1": top_k_accuracy(probabilities, test.labels, 1),
            "top5": top_k_accuracy(probabilities, test.labels, 5),
            "per_class": per_class_accuracy(predictions, test.labels, num_classes).tolist(),
            "confusion": confusion}


def retrieval(train: Features, test: Features) -> dict:
    """R@k of test videos querying train videos by their mean clip features, and instance@1:
    the share of test clips whose nearest other test clip is from the same video."""
    recall = retrieval_recall(test.clips.mean(1), test.labels, train.clips.mean(1),
                              train.labels)
    return {**{f"R@{k}": value for k, value in recall.items()},
            "instance@1": same_video_recall(test.clips)}


def confusion_image(confusion: torch.Tensor, classes: list[str], cell: int = 24) -> Image.Image:
    c = len(classes)
    rows = confusion.float() / confusion.sum(1, keepdim=True).clamp_min(1)
    margin = 12 + 7 * max(len(name) for name in classes)
    image = Image.new("RGB", (margin + c * cell + 10, 20 + c * cell + 10), "white")
    draw = ImageDraw.Draw(image)
    draw.text((margin, 4), "rows: true class, columns: predicted", fill="black")
    for i, name in enumerate(classes):
        draw.text((4, 20 + i * cell + 6), name, fill="black")
        for j in range(c):
            shade = int(255 * (1 - rows[i, j].item()))
            box = [margin + j * cell, 20 + i * cell, margin + (j + 1) * cell - 1,
                   20 + (i + 1) * cell - 1]
            draw.rectangle(box, fill=(shade, shade, 255))
            draw.text((box[0] + 4, box[1] + 6), str(int(confusion[i, j])), fill="black")
    return image


def retrieval_image(train: Features, test: Features, classes: list[str], queries: int = 4,
                    neighbours: int = 4) -> Image.Image:
    """A few test queries (first frame) and their nearest train videos; green = same class."""
    gallery = torch.nn.functional.normalize(train.clips.mean(1), dim=1)
    query = torch.nn.functional.normalize(test.clips.mean(1), dim=1)
    nearest = (query @ gallery.T).topk(min(neighbours, len(gallery)), dim=1).indices
    size = train.first_frames.shape[1]
    image = Image.new("RGB", ((neighbours + 1) * (size + 8) + 8,
                              min(queries, len(query)) * (size + 24) + 8), "white")
    draw = ImageDraw.Draw(image)
    for row in range(min(queries, len(query))):
        y = 8 + row * (size + 24)
        image.paste(Image.fromarray(test.first_frames[row]), (8, y + 14))
        draw.text((8, y), f"query: {classes[int(test.labels[row])]}", fill="black")
        for column, index in enumerate(nearest[row].tolist(), start=1):
            x = 8 + column * (size + 8)
            same = int(train.labels[index]) == int(test.labels[row])
            draw.rectangle([x - 3, y + 11, x + size + 2, y + size + 16],
                           outline=(0, 160, 0) if same else (200, 0, 0), width=3)
            image.paste(Image.fromarray(train.first_frames[index]), (x, y + 14))
    return image


def load_encoder(checkpoint: Path | None, model_uri: str | None, tracking_uri: str
                 ) -> tuple[R3D18, str | None, AugmentConfig]:
    """(encoder, its pretraining MLflow run, the view settings it was pretrained with) from a
    pretraining checkpoint file or an MLflow model URI (runs:/ID/encoder, ...; the views then
    come from the run's config.json, or are the defaults when the URI names no run)."""
    if checkpoint is not None:
        checkpoint = latest_checkpoint(checkpoint)
        encoder, run_id = encoder_from(checkpoint)
        config = load_checkpoint(checkpoint).get("config")
        return encoder, run_id, _augment_of(config) if config else AugmentConfig()
    import mlflow.artifacts
    import mlflow.pytorch
    from mlflow.tracking import MlflowClient

    from orchestration.tracking import fluent_tracking_uri

    run_id = model_uri.split("/")[1] if model_uri.startswith("runs:/") else None
    logged = run_id is not None and any(
        a.path == "config.json" for a in MlflowClient(tracking_uri).list_artifacts(run_id))
    with fluent_tracking_uri(tracking_uri):
        encoder = mlflow.pytorch.load_model(model_uri, map_location="cpu")
        config = mlflow.artifacts.load_dict(f"runs:/{run_id}/config.json") if logged else None
    return encoder, run_id, _augment_of(config) if config else AugmentConfig()


def _augment_of(config: dict) -> AugmentConfig:
    """The augment section of a saved ExperimentConfig (lists back to tuples)."""
    from orchestration.experiment import config_from_dict

    return config_from_dict(config).augment


def run_evaluation(protocols: list[str], encoder: R3D18, train_shards: Path, test_shards: Path,
                   tracking_uri: str, pretrain_run: str | None, cache: Path,
                   name: str = "evaluation", backend: str = "dali",
                   finetune: FinetuneConfig | None = None, augment: AugmentConfig | None = None,
                   experiment_name: str = "ctrlaug-evaluate", tags: dict[str, str] | None = None,
                   device: str = "cpu") -> dict:
    """Evaluate `encoder` with the protocols ("linear", "retrieval", "finetune"); log an
    MLflow run in `experiment_name` (a child of `pretrain_run` when given, with `tags`).
    augment: the view settings of the pretraining (clip length, size, clip extent).
    Finetuning runs on Ray Train with `finetune` (defaults when None); its Ray job folder is
    kept beside `cache`. device: where features are extracted ("cpu" or "gpu")."""
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    from orchestration.tracking import (
        check_reachable,
        experiment_id,
        log_shards_input,
        source_tags,
    )

    unknown = sorted(set(protocols) - {"linear", "retrieval", "finetune"})
    if unknown:
        raise ValueError(f"unknown protocol(s) {unknown}; choose linear, retrieval, finetune")
    check_reachable(tracking_uri)
    classes = layout.read_manifest(train_shards)["classes"]
    test_classes = layout.read_manifest(test_shards)["classes"]
    if test_classes != classes:
        difference = _first_difference(classes, test_classes)
        raise ValueError(f"the train and test shards number their classes differently "
                         f"({len(classes)} classes in {train_shards}, {len(test_classes)} in "
                         f"{test_shards}; {difference}): preprocess both splits with the "
                         f"same class list (one annotation source, or folder datasets with "
                         f"the same class folders)")
    if device not in ("cpu", "gpu"):
        raise ValueError(f"device must be cpu or gpu, got {device!r}")
    if (device == "gpu" or (finetune is not None and finetune.gpu)) and \
            not torch.cuda.is_available():
        raise ValueError("--gpu: this machine has no CUDA device")
    train = cached_features(encoder, train_shards, cache, backend=backend, augment=augment,
                            device=device)
    test = cached_features(encoder, test_shards, cache, backend=backend, augment=augment,
                           device=device)
    for split, features in (("train", train), ("test", test)):
        unlabelled = int(((features.labels < 0) | (features.labels >= len(classes))).sum())
        if unlabelled:
            raise ValueError(f"{unlabelled} of the {split} videos have no class label (e.g. "
                             f"Kinetics' unlabelled test split): evaluate on labelled shards "
                             f"(e.g. the validation split)")
    encoder = encoder.cpu()  # finetuning takes the weights from here
    results: dict = {}
    client = MlflowClient(tracking_uri)
    experiment = experiment_id(client, experiment_name)
    tags = {"ctrlaug.train_shards": str(train_shards), "ctrlaug.test_shards": str(test_shards),
            **(tags or {})}
    if pretrain_run:
        tags |= {"ctrlaug.pretrain_run": pretrain_run, "mlflow.parentRunId": pretrain_run}
    run = client.create_run(experiment, run_name=name, tags={**source_tags(), **tags})
    run_id = run.info.run_id
    augment = augment or AugmentConfig()
    params = {"protocols": ",".join(protocols), "clips": 10, "backend": backend,
              "device": device,
              "clip_frames": augment.clip_frames, "size": augment.size,
              "clip_extent": augment.clip_extent, "frame_stride": augment.frame_stride,
              "encoder_width": encoder.width,
              **({f"finetune.{k}": v for k, v in asdict(finetune).items()}
                 if finetune and "finetune" in protocols else {})}
    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
    log_shards_input(client, run_id, str(train_shards), "train")
    log_shards_input(client, run_id, str(test_shards), "test")
    status = "FAILED"  # unless every protocol finishes; what finished is logged either way
    try:
        if "linear" in protocols:
            probe = linear_probe(train, test, len(classes))
            results |= {"linear_top1": probe["top1"], "linear_top5": probe["top5"]}
            client.log_image(run_id, confusion_image(probe["confusion"], classes),
                             "confusion_matrix.png")
            client.log_dict(run_id, dict(zip(classes, probe["per_class"], strict=True)),
                            "per_class_accuracy.json")
        if "retrieval" in protocols:
            results |= retrieval(train, test)
            client.log_image(run_id, retrieval_image(train, test, classes), "retrieval.png")
        if "finetune" in protocols:
            results |= run_finetune(encoder, len(classes), train_shards, test_shards,
                                    finetune or FinetuneConfig(backend=backend),
                                    f"finetune-{run_id}", cache.parent, augment)
        status = "FINISHED"
    finally:
        for key, value in results.items():
            client.log_metric(run_id, key.replace("@", "_at_"), value)
        client.set_terminated(run_id, status)
    return {**results, "mlflow_run_id": run_id}


def _first_difference(first: list[str], second: list[str]) -> str:
    for index, (a, b) in enumerate(zip(first, second, strict=False)):
        if a != b:
            return f"class {index} is {a!r} in train, {b!r} in test"
    return f"class {min(len(first), len(second))} exists in only one of them"
