"""MINE (Belghazi et al., 2018): statistics network G_theta and the Donsker-Varadhan bound (Eq. 5).

    I(X; Y) >= E_{P_XY}[G] - log E_{P_X x P_Y}[exp G]

`level_pairs` says which pairs of views are L_mi's joint samples. `dv_bound` is the plain bound.
Its minibatch gradient is biased (the log of a minibatch mean), so G_theta is trained with
`MovingAverageDVBound`, MINE's correction: the denominator of the gradient of log E[exp G] is a
moving average of E[exp G] instead of the current minibatch's mean. Its value is still the
plain bound, so what is logged is what is estimated.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _log_mean_exp(x: Tensor) -> Tensor:
    return torch.logsumexp(x, dim=0) - math.log(x.shape[0])


def level_pairs(levels: Tensor, videos: Tensor) -> tuple[Tensor, Tensor]:
    """L_mi's joint pairs: every ordered pair of views with the same intensity level that come
    from different videos (low-level statistics shared, semantics not).

    levels, videos: (V,) long, each view's level and the video it was cut from.
    Returns first, second: (P,) indices into the V views, first[p] != second[p] as videos.
    """
    joint = (levels[:, None] == levels[None, :]) & (videos[:, None] != videos[None, :])
    first, second = joint.nonzero(as_tuple=True)
    return first, second


def dv_bound(joint_scores: Tensor, marginal_scores: Tensor) -> Tensor:
    """Donsker-Varadhan lower bound on mutual information, in nats.

    joint_scores: (P,) G on pairs drawn from the joint; marginal_scores: (Q,) G on pairs drawn
    from the product of marginals. Returns mean(joint) - log mean(exp(marginal)), a scalar.
    """
    if joint_scores.ndim != 1 or marginal_scores.ndim != 1:
        raise ValueError("dv_bound expects 1-D score vectors")
    return joint_scores.mean() - _log_mean_exp(marginal_scores)


class MovingAverageDVBound(nn.Module):
    """DV bound whose gradient uses a moving average of E[exp G] (MINE, Sec. 3.2).

    forward(joint (P,), marginal (Q,)) -> scalar whose value is `dv_bound(joint, marginal)` and
    whose gradient is  E[dG_joint] - E[exp(G) dG_marginal] / ema,  ema the running mean of
    exp(G_marginal) (kept in log space, a buffer, so it is checkpointed with the model).
    """

    def __init__(self, rate: float = 0.01) -> None:
        super().__init__()
        if not 0 < rate < 1:
            raise ValueError(f"rate must be in (0, 1), got {rate}")
        self.rate = rate
        self.register_buffer("log_ema", torch.tensor(float("nan")))

    def forward(self, joint_scores: Tensor, marginal_scores: Tensor) -> Tensor:
        value = dv_bound(joint_scores, marginal_scores)
        log_mean = _log_mean_exp(marginal_scores.float())  # log E[exp G], with gradient
        if self.training:
            # torch.where rather than an `if` on the buffer: no host sync on the training path.
            with torch.no_grad():
                blended = torch.logaddexp(self.log_ema + math.log1p(-self.rate),
                                          log_mean + math.log(self.rate))
                self.log_ema.copy_(torch.where(torch.isnan(self.log_ema), log_mean, blended))
        log_ema = torch.where(torch.isnan(self.log_ema), log_mean.detach(), self.log_ema)
        surrogate = joint_scores.mean() - torch.exp(log_mean - log_ema)
        return value.detach() + (surrogate - surrogate.detach())


class StatisticsNetwork(nn.Module):
    """G_theta: a two-layer MLP on the concatenated pair, concat(x, y) -> hidden -> ReLU -> 1.

    The first layer is stored split, W [x; y] = W_x x + W_y y, which is the same function but lets
    `score_pairs` project each feature once and score any number of index pairs cheaply.
    With frozen=True the parameters are used detached: the scores still carry gradients to x
    and y (the encoder) but none reach theta (the paper's frozen estimator on local-global pairs).
    """

    def __init__(self, x_dim: int, y_dim: int, hidden_dim: int = 512) -> None:
        super().__init__()
        self.x_in = nn.Linear(x_dim, hidden_dim)
        self.y_in = nn.Linear(y_dim, hidden_dim, bias=False)
        self.out = nn.Linear(hidden_dim, 1)

    def _weights(self, frozen: bool) -> dict[str, Tensor]:
        return {name: p.detach() if frozen else p for name, p in self.named_parameters()}

    def score_pairs(self, x: Tensor, y: Tensor, x_index: Tensor, y_index: Tensor,
                    frozen: bool = False) -> Tensor:
        """Scores of the pairs (x[x_index[p]], y[y_index[p]]): x (Nx, Dx), y (Ny, Dy) -> (P,)."""
        w = self._weights(frozen)
        hx = F.linear(x, w["x_in.weight"], w["x_in.bias"])  # (Nx, hidden)
        hy = F.linear(y, w["y_in.weight"])  # (Ny, hidden)
        hidden = F.relu(hx[x_index] + hy[y_index])  # (P, hidden)
        return F.linear(hidden, w["out.weight"], w["out.bias"]).squeeze(-1)

    def forward(self, x: Tensor, y: Tensor, frozen: bool = False) -> Tensor:
        """Scores of aligned pairs: x (N, Dx), y (N, Dy) -> (N,)."""
        index = torch.arange(x.shape[0], device=x.device)
        return self.score_pairs(x, y, index, index, frozen=frozen)
