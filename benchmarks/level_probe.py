"""How much of a view's intensity level frozen encoders carry: the shortcut L_mi is meant to remove.

Every pretraining view (the global view and its K local clips) gets one intensity level: a bin
of brightness, contrast, saturation, hue and blur (DESIGN.md, Intensity levels). For each
encoder this script takes pretraining views of the train shards and one epoch of the test
shards from the DALI loader (the config's augmentation, every applied level emitted) and pools
their features (global views through f', clips through f; eval mode). Two reads of the level:

- Linear probes: one per parameter (the evaluation's linear probe on standardised features,
  predicting the parameter's bin), fitted on the first epoch of train views, accuracy on the
  test views next to chance (1 / bins).
- The critic: L_mi's own estimator (G_theta with the config's hidden width, the moving-average
  DV bound, L_mi's joint pairs: same level, different videos, within a batch) fitted on every
  train epoch's batches of frozen features, its DV bound in nats scored on the test batches.
  That is what a critic trained to convergence sees; the checkpoint's own G_theta (full
  objective) is scored on the same test batches beside it. The ceiling line fits the same
  critic to the views' applied jitter parameters (the level fully readable): at most
  log(levels per batch) nats.

An encoder that keeps less of the level scores closer to chance and to 0 nats.

    .venv/bin/python benchmarks/level_probe.py --train TRAIN_SHARDS --test TEST_SHARDS \
        --checkpoint RUN/checkpoint.pt [...] --random-seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from model.encoder import R3D18, pool_features
from model.evaluation import train_linear_probe
from model.mine import MovingAverageDVBound, StatisticsNetwork, dv_bound, level_pairs
from orchestration.checkpoint import encoder_from, load_checkpoint
from orchestration.experiment import load_config
from pipeline.config import AugmentConfig
from pipeline.loader import build_pretrain_loader

ROOT = Path(__file__).resolve().parents[1]
PARAMETERS = ("brightness", "contrast", "saturation", "hue", "blur")


class ViewBatch(NamedTuple):
    """One loader batch of B videos, V = K + 1 views each (global first):
    features (B, V, C) pooled, level (B, V) long, jitter (B, V, 5) the applied parameters."""

    features: Tensor
    level: Tensor
    jitter: Tensor


def view_batches(encoder: R3D18, shards: str, augment: AugmentConfig, batch_size: int,
                 seed: int, epochs: int = 1) -> list[ViewBatch]:
    """`epochs` epochs of pretraining views through a frozen encoder, batch by batch."""
    batches = []
    with torch.no_grad():
        for epoch in range(epochs):
            for batch in build_pretrain_loader(shards, batch_size, config=augment,
                                               backend="dali", num_threads=1, prefetch=1,
                                               seed=seed, epoch=epoch):
                clips = pool_features(encoder.forward_clip(batch.local_frames.flatten(0, 1)))
                clips = clips.unflatten(0, batch.local_frames.shape[:2])  # (B, K, C)
                globals_ = pool_features(encoder.forward_global(batch.global_frames))  # (B, C)
                params = (batch.global_params, batch.local_params)
                batches.append(ViewBatch(
                    torch.cat([globals_[:, None], clips], dim=1),
                    torch.cat([params[0].level[:, None], params[1].level], dim=1),
                    torch.cat([params[0].jitter[:, None], params[1].jitter], dim=1).float()))
    return batches


def level_bins(batches: list[ViewBatch], augment: AugmentConfig) -> tuple[Tensor, Tensor]:
    """The views of batches as probe data: features (N, C) and level bins (N, 5) long."""
    features = torch.cat([b.features.flatten(0, 1) for b in batches])
    level = torch.cat([b.level.flatten() for b in batches]).numpy()
    bins = np.stack(np.unravel_index(level, augment.level_bins), axis=-1)  # (N, 5)
    return features, torch.from_numpy(bins)


def _pair_scores(critic: StatisticsNetwork, features: Tensor, level: Tensor,
                 generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """L_mi's scores on one batch: joint (same level, other video) and marginal (the same
    first views with arbitrary views of the batch). features (B, V, C), level (B, V)."""
    b, v, c = features.shape
    views = features.reshape(b * v, c)
    videos = torch.arange(b).repeat_interleave(v)
    first, second = level_pairs(level.reshape(-1), videos)
    arbitrary = torch.randint(0, b * v, first.shape, generator=generator)
    return (critic.score_pairs(views, views, first, second),
            critic.score_pairs(views, views, first, arbitrary))


def held_out_bound(critic: StatisticsNetwork, test: list[tuple[Tensor, Tensor]],
                   seed: int = 1) -> float:
    """Mean plain DV bound (nats) of a critic over (features, level) batches."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return float(np.mean([dv_bound(*_pair_scores(critic, features, level, generator)).item()
                              for features, level in test]))


def fit_critic(train: list[tuple[Tensor, Tensor]], test: list[tuple[Tensor, Tensor]],
               hidden_dim: int, steps: int, lr: float = 1e-3, ema_rate: float = 0.01,
               seed: int = 0) -> float:
    """Fit L_mi's critic (G_theta, moving-average DV bound, Adam) on frozen (features (B, V, C),
    level (B, V)) train batches, cycling through them for `steps` steps; its held-out bound."""
    torch.manual_seed(seed)
    dim = train[0][0].shape[-1]
    critic = StatisticsNetwork(dim, dim, hidden_dim)
    bound = MovingAverageDVBound(ema_rate)
    optimizer = torch.optim.Adam(critic.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    for step in range(steps):
        features, level = train[step % len(train)]
        loss = -bound(*_pair_scores(critic, features, level, generator))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return held_out_bound(critic, test)


def checkpoint_critic(path: str) -> StatisticsNetwork | None:
    """The G_theta a pretraining checkpoint trained (objective.statistics.*), None without L_mi."""
    prefix = "objective.statistics."
    state = {name[len(prefix):]: value
             for name, value in load_checkpoint(Path(path))["model"].items()
             if name.startswith(prefix)}
    if not state:
        return None
    hidden_dim, x_dim = state["x_in.weight"].shape
    critic = StatisticsNetwork(x_dim, state["y_in.weight"].shape[1], hidden_dim)
    critic.load_state_dict(state)
    return critic


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
    parser.add_argument("--critic-epochs", type=int, default=4,
                        help="epochs of train views the critic is fitted on (probes: the first)")
    parser.add_argument("--critic-steps", type=int, default=4000,
                        help="critic optimisation steps (one train batch each)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config(Path(args.config), [])
    augment = config.augment
    encoders = []
    for seed in args.random_seeds:
        torch.manual_seed(seed)
        encoders.append((f"random init, seed {seed}",
                         R3D18(config.model.width, config.model.global_unstrided_stages), None))
    encoders += [(path, encoder_from(Path(path))[0], path) for path in args.checkpoint]
    chance = {name: 1 / bins for name, bins in zip(PARAMETERS, augment.level_bins, strict=True)}
    hidden, lr, rate = config.model.mine_hidden_dim, config.optim.lr, config.loss.mine_ema_rate
    print(json.dumps({"chance": chance,
                      "critic nats at most": round(math.log(augment.levels_per_batch), 3)}),
          flush=True)
    ceiling = None
    for name, encoder, checkpoint in encoders:
        encoder.eval()
        train = view_batches(encoder, args.train, augment, config.data.batch_size,
                             args.views_seed, args.critic_epochs)
        test = view_batches(encoder, args.test, augment, config.data.batch_size,
                            args.views_seed)
        if ceiling is None:  # the views are the same for every encoder: fit it once
            ceiling = fit_critic([(b.jitter, b.level) for b in train],
                                 [(b.jitter, b.level) for b in test], hidden, args.critic_steps,
                                 lr, rate)
            print(json.dumps({"critic on the applied parameters (ceiling)": round(ceiling, 4)}),
                  flush=True)
        first_epoch = train[:len(train) // args.critic_epochs]
        (train_x, train_y), (test_x, test_y) = level_bins(first_epoch, augment), level_bins(
            test, augment)
        scores = {parameter: round(probe_accuracy(train_x, train_y[:, i], test_x, test_y[:, i],
                                                  augment.level_bins[i]), 3)
                  for i, parameter in enumerate(PARAMETERS)}
        pairs = ([(b.features, b.level) for b in train], [(b.features, b.level) for b in test])
        scores["critic nats"] = round(fit_critic(*pairs, hidden, args.critic_steps, lr, rate), 4)
        own = checkpoint_critic(checkpoint) if checkpoint else None
        if own is not None:
            scores["own critic nats"] = round(held_out_bound(own, pairs[1]), 4)
        print(json.dumps({"encoder": name, "views": [len(train_x), len(test_x)], **scores}),
              flush=True)


if __name__ == "__main__":
    main()
