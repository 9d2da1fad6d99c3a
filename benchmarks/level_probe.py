"""How much of a view's intensity level frozen encoders carry: the shortcut L_mi is meant to remove.

Every pretraining view (the global view and its K local clips) gets one intensity level: a bin
of brightness, contrast, saturation, hue and blur (DESIGN.md, Intensity levels). For each
encoder this script takes one epoch of pretraining views of the train shards and of the test
shards from the DALI loader (the config's augmentation, every applied level emitted), pools
their features (global views through f', clips through f; eval mode), and fits one linear probe
per parameter (the evaluation's linear probe on standardised features, predicting the
parameter's bin) on the train views; it prints each probe's accuracy on the test views next to
chance (1 / bins). An encoder that keeps less of the level scores closer to chance.

    .venv/bin/python benchmarks/level_probe.py --train TRAIN_SHARDS --test TEST_SHARDS \
        --checkpoint RUN/checkpoint.pt [...] --random-seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from model.encoder import R3D18, pool_features
from model.evaluation import train_linear_probe
from orchestration.checkpoint import encoder_from
from orchestration.experiment import load_config
from pipeline.config import AugmentConfig
from pipeline.loader import build_pretrain_loader

ROOT = Path(__file__).resolve().parents[1]
PARAMETERS = ("brightness", "contrast", "saturation", "hue", "blur")


def view_features(encoder: R3D18, shards: str, augment: AugmentConfig, batch_size: int,
                  seed: int) -> tuple[Tensor, Tensor]:
    """One epoch of pretraining views -> pooled features (V, C) and level bins (V, 5), V = the
    videos' global views followed, batch by batch, by their local clips."""
    loader = build_pretrain_loader(shards, batch_size, config=augment, backend="dali",
                                   num_threads=1, prefetch=1, seed=seed, epoch=0)
    features, levels = [], []
    with torch.no_grad():
        for batch in loader:
            features.append(pool_features(encoder.forward_global(batch.global_frames)))
            clips = batch.local_frames.flatten(0, 1)  # (B*K, 3, L, S, S)
            features.append(pool_features(encoder.forward_clip(clips)))
            levels += [batch.global_params.level, batch.local_params.level.flatten()]
    level = torch.cat(levels).numpy()
    bins = np.stack(np.unravel_index(level, augment.level_bins), axis=-1)  # (V, 5)
    return torch.cat(features), torch.from_numpy(bins)


def probe_accuracy(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor,
                   classes: int) -> float:
    """Test accuracy of the evaluation's linear probe (`model.evaluation.train_linear_probe`)
    fitted on standardised features. train_x (N, C), train_y (N,) long; test_x (M, C)."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    probe = train_linear_probe((train_x - mean) / std, train_y, classes)
    with torch.no_grad():
        return (probe((test_x - mean) / std).argmax(1) == test_y).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "ablation-cpu.toml"),
                        help="the pretraining config (its augmentation and encoder width)")
    parser.add_argument("--train", required=True, help="train shards (the probes fit here)")
    parser.add_argument("--test", required=True, help="held-out shards (the probes score here)")
    parser.add_argument("--checkpoint", nargs="*", default=[], help="pretraining checkpoints")
    parser.add_argument("--random-seeds", type=int, nargs="*", default=[0],
                        help="randomly initialised encoders to probe beside them")
    parser.add_argument("--views-seed", type=int, default=123,
                        help="seed of the views drawn (the same for every encoder)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config(Path(args.config), [])
    augment = config.augment
    encoders = []
    for seed in args.random_seeds:
        torch.manual_seed(seed)
        encoders.append((f"random init, seed {seed}",
                         R3D18(config.model.width, config.model.global_unstrided_stages)))
    encoders += [(str(path), encoder_from(Path(path))[0]) for path in args.checkpoint]
    chance = {name: 1 / bins for name, bins in zip(PARAMETERS, augment.level_bins, strict=True)}
    print(json.dumps({"chance": chance}), flush=True)
    for name, encoder in encoders:
        encoder.eval()
        train_x, train_y = view_features(encoder, args.train, augment, config.data.batch_size,
                                         args.views_seed)
        test_x, test_y = view_features(encoder, args.test, augment, config.data.batch_size,
                                       args.views_seed)
        scores = {parameter: round(probe_accuracy(train_x, train_y[:, i], test_x, test_y[:, i],
                                                  augment.level_bins[i]), 3)
                  for i, parameter in enumerate(PARAMETERS)}
        print(json.dumps({"encoder": name, "views": [len(train_x), len(test_x)], **scores}),
              flush=True)


if __name__ == "__main__":
    main()
