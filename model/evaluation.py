"""Downstream-evaluation maths, pure torch: multi-clip aggregation, top-k accuracy, retrieval R@k,
and the linear probe classifier trained on cached features.

No DALI, Ray or MLflow; orchestration feeds it features from the encoder and logs the results.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def average_clip_softmax(logits: Tensor) -> Tensor:
    """A video's prediction is the mean of its clips' softmax: (B, N, C) -> (B, C)."""
    return logits.softmax(dim=-1).mean(dim=1)


def top_k_accuracy(probabilities: Tensor, labels: Tensor, k: int = 1) -> float:
    """Share of rows whose label is among the k highest scores: (B, C), (B,) -> float."""
    top = probabilities.topk(min(k, probabilities.shape[1]), dim=1).indices  # (B, k)
    return (top == labels[:, None]).any(dim=1).float().mean().item()


def per_class_accuracy(predictions: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Top-1 accuracy of each class (NaN for classes without test videos): (C,)."""
    correct = torch.zeros(num_classes).index_add_(0, labels.cpu(),
                                                   (predictions == labels).float().cpu())
    counts = torch.bincount(labels.cpu(), minlength=num_classes).float()
    return correct / counts


def retrieval_recall(queries: Tensor, query_labels: Tensor, gallery: Tensor,
                     gallery_labels: Tensor, ks: tuple[int, ...] = (1, 5, 10, 20)
                     ) -> dict[int, float]:
    """R@k: share of queries with a same-class gallery item among their k nearest (cosine).

    queries (Q, D), gallery (G, D): features, L2-normalised here. Ties in similarity are broken
    by gallery position (a stable sort), so the result is deterministic. No centring is applied.
    """
    similarity = F.normalize(queries, dim=1) @ F.normalize(gallery, dim=1).T  # (Q, G)
    order = torch.sort(similarity, dim=1, descending=True, stable=True).indices  # (Q, G)
    hits = gallery_labels[order] == query_labels[:, None]  # (Q, G) in rank order
    return {k: hits[:, :k].any(dim=1).float().mean().item() for k in ks}


def same_video_recall(clips: Tensor) -> float:
    """Instance retrieval: the share of clips whose nearest other clip (cosine) comes from the
    same video. clips (V, N, D), N >= 2 clips of each of V videos.

    A diagnostic of what features encode: near 1 when they identify the video (its appearance)
    whatever the class; set against class retrieval it shows an appearance shortcut.
    """
    v, n, _ = clips.shape
    features = F.normalize(clips.reshape(v * n, -1), dim=1)  # (V N, D)
    similarity = features @ features.T
    similarity.fill_diagonal_(float("-inf"))  # a clip is not its own neighbour
    video = torch.arange(v, device=clips.device).repeat_interleave(n)  # (V N,)
    nearest = similarity.argmax(dim=1)
    return (video[nearest] == video).float().mean().item()


def train_linear_probe(features: Tensor, labels: Tensor, num_classes: int, epochs: int = 100,
                       lr: float = 1e-2, weight_decay: float = 1e-4, batch_size: int = 256,
                       seed: int = 0) -> nn.Linear:
    """A linear classifier on frozen features (N, D) with labels (N,), Adam, cross-entropy."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    probe = nn.Linear(features.shape[1], num_classes)
    optimizer = torch.optim.Adam(probe.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):
        for batch in torch.randperm(len(features), generator=generator).split(batch_size):
            loss = F.cross_entropy(probe(features[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return probe
