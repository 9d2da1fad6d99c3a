"""Does the pretraining objective need motion? Its contrast term without the global motion.

For each encoder (pretraining checkpoints, or random initialisations of a config's network) this
script takes batches of pretraining views from the DALI loader (the config's augmentation, the
same draws for every encoder) and evaluates the objective's contrast term (L_rc or L_nce, as the
checkpoint was trained; eval mode) with the global view

    as sampled | static (its middle frame, repeated) | reversed in time | frames shuffled

while the local clips and the correspondence S_k stay as sampled. Beside each loss it prints
"video top-1": the share of local clips whose most similar global view in the batch (cosine of
pooled encoder features) is their own video's. If the loss with a static global view is no
higher than with the real one, the objective is solved without the global view's motion: by
appearance, which every frame of a video shares. For L_rc two references are printed with it:
the loss of a perfect model (the entropy of S_k's rows) and that of one that recognises the
video but not where or when in it a cell lies (log of the global cells per video).

    .venv/bin/python benchmarks/motion_shortcut.py --shards TRAIN_SHARDS \
        --checkpoint RUN/checkpoint.pt [...] [--batches 8]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from model import PretrainNetwork, clip_correspondence
from model.encoder import pool_features
from orchestration.checkpoint import load_checkpoint
from orchestration.experiment import ExperimentConfig, config_from_dict, load_config
from orchestration.train_step import geometry
from pipeline import PretrainBatch
from pipeline.loader import build_pretrain_loader

ROOT = Path(__file__).resolve().parents[1]


def static(frames: Tensor) -> Tensor:
    """(B, 3, T, H, W) -> the middle frame repeated T times."""
    t = frames.shape[2]
    return frames[:, :, t // 2: t // 2 + 1].expand_as(frames).contiguous()


def reversed_in_time(frames: Tensor) -> Tensor:
    return frames.flip(2)


def shuffled(frames: Tensor) -> Tensor:
    order = torch.randperm(frames.shape[2], generator=torch.Generator().manual_seed(0))
    return frames[:, :, order]


GLOBAL_VIEWS = {"as sampled": lambda frames: frames, "static": static,
                "reversed": reversed_in_time, "shuffled": shuffled}


def video_top1(local_maps: Tensor, global_maps: Tensor) -> float:
    """Share of clips whose nearest global view (cosine, pooled features) is their own video's.
    local_maps (B, K, C, ...), global_maps (B, C, ...)."""
    b, k = local_maps.shape[:2]
    clips = F.normalize(pool_features(local_maps), dim=-1).flatten(0, 1)  # (B*K, C)
    videos = F.normalize(pool_features(global_maps), dim=-1)  # (B, C)
    nearest = (clips @ videos.T).argmax(dim=1)  # (B*K,)
    return (nearest == torch.arange(b).repeat_interleave(k)).float().mean().item()


@torch.no_grad()
def contrast_per_global_view(network: PretrainNetwork, batch: PretrainBatch,
                             grids: tuple) -> tuple[dict[str, tuple[float, float]], float]:
    """For each of GLOBAL_VIEWS, (contrast loss, video top-1) of one batch, and the entropy of
    S_k's rows. The clips and S_k are encoded once; only the global view changes."""
    correspondence = clip_correspondence(geometry(batch.local_params),
                                         geometry(batch.global_params), *grids)  # (B,K,Nc,Nv)
    b, k = batch.local_frames.shape[:2]
    local_maps = network.encoder.forward_clip(batch.local_frames.flatten(0, 1))
    local_maps = local_maps.unflatten(0, (b, k))  # (B, K, C, Tc, Hc, Wc)
    scores = {}
    for view, change in GLOBAL_VIEWS.items():
        global_maps = network.encoder.forward_global(change(batch.global_frames))  # (B,C,Tv,..)
        breakdown = network.objective(local_maps, global_maps, correspondence,
                                      batch.local_params.level, batch.global_params.level,
                                      generator=torch.Generator().manual_seed(0))
        term = next(value for name, value in breakdown.terms.items() if name in ("rc", "nce"))
        scores[view] = (term.item(), video_top1(local_maps, global_maps))
    entropy = -torch.xlogy(correspondence, correspondence).sum(-1).mean()
    return scores, entropy.item()


def networks(args: argparse.Namespace) -> list[tuple[str, PretrainNetwork, ExperimentConfig]]:
    found = []
    for seed in args.random_seeds:
        config = load_config(args.config)
        torch.manual_seed(seed)
        found.append((f"random init, seed {seed}", PretrainNetwork(config.model, config.loss),
                       config))
    for path in args.checkpoint:
        saved = load_checkpoint(Path(path))
        config = config_from_dict(saved["config"])
        network = PretrainNetwork(config.model, config.loss)
        network.load_state_dict(saved["model"])
        found.append((path, network, config))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", required=True, help="pretraining shards (train videos)")
    parser.add_argument("--checkpoint", nargs="*", default=[], help="pretraining checkpoints")
    parser.add_argument("--random-seeds", nargs="*", type=int, default=[],
                        help="random initialisations of --config's network to run beside them")
    parser.add_argument("--config", default=str(ROOT / "configs" / "ablation-cpu.toml"),
                        help="the config of the random initialisations")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--views-seed", type=int, default=123,
                        help="seed of the views drawn (the same for every encoder)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name, network, config in networks(args):
        if config.loss.contrast == "none":
            print(json.dumps({"encoder": name, "skipped": "no contrast term"}), flush=True)
            continue
        network.eval()
        loader = build_pretrain_loader(args.shards, config.data.batch_size,
                                       config=config.augment, backend="dali", num_threads=1,
                                       prefetch=1, seed=args.views_seed, epoch=0)
        augment = config.augment
        grids = network.grids((augment.clip_frames, augment.size, augment.size))
        scores: dict[str, list[tuple[float, float]]] = {view: [] for view in GLOBAL_VIEWS}
        entropies = []
        for index, batch in enumerate(loader):
            if index == args.batches:
                break
            batch_scores, entropy = contrast_per_global_view(network, batch, grids)
            for view, values in batch_scores.items():
                scores[view].append(values)
            entropies.append(entropy)
        region = config.loss.contrast == "region"
        references = {"perfect": round(float(np.mean(entropies)), 4),
                      "video only": round(float(np.log(np.prod(grids[1]))), 4)} if region else {}
        for view, values in scores.items():
            loss, top1 = np.mean(values, axis=0)
            print(json.dumps({"encoder": name, "global view": view,
                              f"loss_{'rc' if region else 'nce'}": round(loss, 4),
                              "video top-1": round(top1, 3), **references,
                              "batches": len(values)}), flush=True)


if __name__ == "__main__":
    main()
