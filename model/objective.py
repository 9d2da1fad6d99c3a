"""The pretraining objective: L = w_rc L_rc (or w_nce L_nce) + w_mi L_mi + w_td L_td.

Pure torch. `Objective` owns the heads that sit on encoder features (projection, MINE statistics
network G_theta, temporal head G_psi) and turns feature maps plus the correspondence into a
`LossBreakdown`: the total to backpropagate, every term by name, and the estimates to log.

  L_rc / L_nce  projected cells (or pooled clips) of the local clips against the global views of
                every video in the batch; keys may come from other workers through `gather_keys`,
                a callable supplied by the caller (no collectives here).
  L_mi          (Eq. 6) joint pairs: two views of *different* videos with the *same* intensity
                level, over the whole batch (every worker's views arrive through `gather_views`,
                so a level group spans the global batch as in the paper); marginal pairs: the
                first view with an arbitrary view (drawn with `generator`, the same on every
                worker, so every worker computes the same term). G_theta scores them
                through a gradient-reversal layer, so one backward step makes theta maximise the
                bound (MINE, moving-average corrected) and the encoder minimise it. Then G_theta,
                frozen, scores local-global pairs (clip k with its own video's global view = joint,
                with another video's = marginal) and the encoder minimises that estimate too
                (while it is positive).
                All views are pooled 512-d encoder features.
  L_td          (Eq. 7) clips in true order vs a random non-identity order, each with the global
                view; the head's DV bound is maximised. The vcop head instead classifies which of
                the K! orders was applied (cross-entropy), without the global view.

Heads and losses run in float32 with autocast off, whatever precision the encoder used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.config import LossConfig, ModelConfig
from model.encoder import pool_features
from model.grl import grad_reverse
from model.losses import info_nce_loss, region_contrast_loss
from model.mine import MovingAverageDVBound, StatisticsNetwork, dv_bound, level_pairs
from model.projection import ProjectionHead
from model.temporal import TemporalOrderHead

MIN_VIDEOS_PER_BATCH = 2
"""The objective contrasts videos: every worker's batch needs this many (the loader and the
experiment config enforce it from here)."""

KeyGather = Callable[[Tensor], tuple[Tensor, int]]
"""keys (B, ...) -> (keys of all M videos (M, ...), index of this caller's first video).
Used for L_rc's keys (other workers' rows are constants) and for L_mi's views (every worker
computes the same full-batch term and the gradients for a worker's rows are summed)."""


def local_keys(keys: Tensor) -> tuple[Tensor, int]:
    """The KeyGather of a single process: the batch's own keys, starting at 0."""
    return keys, 0


@dataclass
class LossBreakdown:
    """What one objective evaluation produced.

    total: scalar to backpropagate (weighted sum of `terms`).
    terms: unweighted loss terms by name: "rc" or "nce", "mi", "td" (only those switched on).
    estimates: detached diagnostics: "mi_level" (I between same-level views of different
        videos), "mi_local_global" (frozen-G estimate on local-global pairs), "mi_joint_pairs",
        "td_mi" (DV bound of the temporal head, at most 2 / td_temperature),
        "td_order_accuracy" (share of videos whose true order scores above the shuffled one;
        for vcop, order classification accuracy).
    """

    total: Tensor
    terms: dict[str, Tensor]
    estimates: dict[str, Tensor]

    def scalars(self) -> dict[str, float]:
        """Every term and estimate as a Python float, for logging (one host sync)."""
        named = {"loss": self.total, **{f"loss_{k}": v for k, v in self.terms.items()},
                 **self.estimates}
        values = torch.stack([v.detach().float() for v in named.values()]).tolist()
        return dict(zip(named, values, strict=True))


def _randint(high: int, shape: torch.Size, generator: torch.Generator | None,
             device: torch.device) -> Tensor:
    """Uniform integers in [0, high): from `generator` (CPU) when given, else torch's RNG."""
    if generator is None:
        return torch.randint(0, high, shape, device=device)
    return torch.randint(0, high, shape, generator=generator).to(device)


class Objective(nn.Module):
    """Heads plus losses; see the module docstring for the formulation."""

    def __init__(self, model: ModelConfig, loss: LossConfig) -> None:
        super().__init__()
        self.loss = loss
        feature_dim = model.feature_dim
        self.projection: ProjectionHead | None = None
        if loss.contrast != "none":
            self.projection = ProjectionHead(feature_dim, model.projection_hidden_dim,
                                             model.projection_dim)
        self.statistics: StatisticsNetwork | None = None
        self.level_bound: MovingAverageDVBound | None = None
        if loss.mi:
            self.statistics = StatisticsNetwork(feature_dim, feature_dim, model.mine_hidden_dim)
            self.level_bound = MovingAverageDVBound(loss.mine_ema_rate)
        self.temporal_head: TemporalOrderHead | None = None
        if loss.td:
            if model.num_clips < 2:
                raise ValueError("L_td needs num_clips >= 2; switch td off for K = 1")
            self.temporal_head = TemporalOrderHead(
                model.temporal_head, feature_dim, model.num_clips, model.temporal_hidden_dim,
                temperature=loss.td_temperature)

    def forward(self, local_maps: Tensor, global_maps: Tensor, correspondence: Tensor | None,
                local_levels: Tensor, global_levels: Tensor,
                gather_keys: KeyGather = local_keys, gather_views: KeyGather = local_keys,
                generator: torch.Generator | None = None) -> LossBreakdown:
        """Evaluate the objective.

        Args:
            local_maps: (B, K, C, Tc, Hc, Wc) f(v_k).
            global_maps: (B, C, Tv, Hv, Wv) f'(v).
            correspondence: (B, K, Nc, Nv) S_k, required for contrast="region".
            local_levels: (B, K) long, intensity level of each local clip.
            global_levels: (B,) long, intensity level of each global view.
            gather_keys: how to see other workers' global keys (identity by default).
            gather_views: how to see other workers' pooled views and levels for L_mi.
            generator: CPU generator for L_mi's marginal pairs; give every worker the same
                seed so that they compute the same full-batch term (None: torch's global RNG).
        """
        b, k = local_maps.shape[:2]
        if b < MIN_VIDEOS_PER_BATCH:
            raise ValueError(f"the objective contrasts videos: need B >= "
                             f"{MIN_VIDEOS_PER_BATCH}, got B={b}")
        with torch.autocast(local_maps.device.type, enabled=False):
            local_maps, global_maps = local_maps.float(), global_maps.float()
            local_feats = pool_features(local_maps)  # (B, K, C)
            global_feats = pool_features(global_maps)  # (B, C)
            terms: dict[str, Tensor] = {}
            estimates: dict[str, Tensor] = {}
            weights = {"rc": self.loss.contrast_weight, "nce": self.loss.contrast_weight,
                       "mi": self.loss.mi_weight, "td": self.loss.td_weight}
            if self.loss.contrast == "region":
                if correspondence is None:
                    raise ValueError("contrast='region' needs the correspondence matrix")
                terms["rc"] = self._region_contrast(local_maps, global_maps, correspondence,
                                                    gather_keys)
            elif self.loss.contrast == "clip":
                terms["nce"] = self._clip_contrast(local_feats, global_feats, gather_keys)
            if self.loss.mi:
                terms["mi"] = self._mutual_information(local_feats, global_feats, local_levels,
                                                       global_levels, gather_views, generator,
                                                       estimates)
            if self.loss.td:
                terms["td"] = self._temporal_dependency(local_feats, global_feats, estimates)
            total = sum(weights[name] * value for name, value in terms.items())
        return LossBreakdown(total, terms, {n: v.detach() for n, v in estimates.items()})

    def _region_contrast(self, local_maps: Tensor, global_maps: Tensor, correspondence: Tensor,
                         gather_keys: KeyGather) -> Tensor:
        b, k = local_maps.shape[:2]
        queries = self.projection.project_cells(local_maps.flatten(0, 1))  # (B*K, Nc, D)
        queries = queries.unflatten(0, (b, k))  # (B, K, Nc, D)
        keys, offset = gather_keys(self.projection.project_cells(global_maps))  # (M, Nv, D)
        positive = offset + torch.arange(b, device=keys.device)
        return region_contrast_loss(queries, keys, correspondence, self.loss.temperature,
                                    positive)

    def _clip_contrast(self, local_feats: Tensor, global_feats: Tensor,
                       gather_keys: KeyGather) -> Tensor:
        b = local_feats.shape[0]
        queries = self.projection(local_feats)  # (B, K, D)
        keys, offset = gather_keys(self.projection(global_feats))  # (M, D)
        positive = offset + torch.arange(b, device=keys.device)
        return info_nce_loss(queries, keys, self.loss.temperature, positive)

    def _mutual_information(self, local_feats: Tensor, global_feats: Tensor,
                            local_levels: Tensor, global_levels: Tensor,
                            gather_views: KeyGather, generator: torch.Generator | None,
                            estimates: dict[str, Tensor]) -> Tensor:
        b, k, c = local_feats.shape
        device = local_feats.device
        per_video, _ = gather_views(torch.cat([global_feats[:, None], local_feats], dim=1))
        levels_per_video, _ = gather_views(torch.cat([global_levels[:, None], local_levels],
                                                     dim=1))
        m = per_video.shape[0]  # videos of the whole batch: (M, K+1, C) and (M, K+1)
        views = per_video.reshape(-1, c)  # (V, C), V = M (K+1)
        levels = levels_per_video.reshape(-1)  # (V,)
        video = torch.arange(m, device=device).repeat_interleave(k + 1)  # (V,)

        first, second = level_pairs(levels, video)  # (P,), (P,)
        estimates["mi_joint_pairs"] = torch.tensor(float(first.numel()), device=device)
        if first.numel() > 0:
            reversed_views = grad_reverse(views, self.loss.grl_scale)
            arbitrary = _randint(views.shape[0], first.shape, generator, device)
            joint = self.statistics.score_pairs(reversed_views, reversed_views, first, second)
            marginal = self.statistics.score_pairs(reversed_views, reversed_views, first,
                                                   arbitrary)
            level_mi = self.level_bound(joint, marginal)
        else:  # no level holds two videos in this batch: nothing to estimate. A zero that
            # still reaches every parameter of G_theta, so each gets a gradient (0) on every
            # step: DDP (find_unused_parameters=False) fails the next step otherwise.
            level_mi = sum(p.sum() for p in self.statistics.parameters()) * 0.0
        estimates["mi_level"] = level_mi

        # Frozen G_theta on local-global pairs: own video (joint) vs another video (marginal).
        clips = local_feats.reshape(b * k, c)  # (B*K, C)
        clip_index = torch.arange(b * k, device=device)
        own = clip_index // k
        other = (own + torch.randint(1, b, own.shape, device=device)) % b
        joint_lg = self.statistics.score_pairs(clips, global_feats, clip_index, own, frozen=True)
        marginal_lg = self.statistics.score_pairs(clips, global_feats, clip_index, other,
                                                  frozen=True)
        local_global_mi = dv_bound(joint_lg, marginal_lg)
        estimates["mi_local_global"] = local_global_mi
        # theta ascends level_mi; through the reversal the encoder descends it. The encoder also
        # descends local_global_mi, but only while it is positive: mutual information is >= 0,
        # and pushing a frozen critic's bound below zero would reward anti-correlating a clip
        # with its own global view, which is exactly what L_rc asks the opposite of.
        return -level_mi + local_global_mi.clamp_min(0)

    def _temporal_dependency(self, local_feats: Tensor, global_feats: Tensor,
                             estimates: dict[str, Tensor]) -> Tensor:
        head = self.temporal_head
        b = local_feats.shape[0]
        device = local_feats.device
        if head.is_classifier:
            order = torch.randint(0, head.num_orders, (b,), device=device)
            logits = head.classify(head.reorder(local_feats, order))  # (B, K!)
            estimates["td_order_accuracy"] = (logits.argmax(-1) == order).float().mean()
            return F.cross_entropy(logits, order)
        shuffled = torch.randint(1, head.num_orders, (b,), device=device)  # 0 is the identity
        joint = head.score(local_feats, global_feats)  # (B,)
        marginal = head.score(head.reorder(local_feats, shuffled), global_feats)  # (B,)
        td_mi = dv_bound(joint, marginal)
        estimates["td_mi"] = td_mi
        estimates["td_order_accuracy"] = (joint > marginal).float().mean()
        return -td_mi
