"""Helpers shared by the sb3_distill algorithms."""

from collections.abc import Callable, Iterable

import numpy as np
import torch as th
from stable_baselines3.common.policies import BasePolicy


def clip_grad_norm_per_member_(parameters: Iterable[th.Tensor], max_norm: float, n_members: int) -> th.Tensor:
    """
    Gradient-norm clipping of each member of a stacked ensemble, as if
    ``th.nn.utils.clip_grad_norm_(member_j.parameters(), max_norm)`` were called for every member j.

    Every parameter holds the M members stacked along its first dimension. For member j,
    ``norm_j = sqrt(sum_p ||grad_p[j]||^2)`` and its gradients are scaled by
    ``min(1, max_norm / (norm_j + 1e-6))``, the coefficient PyTorch uses.

    :param parameters: stacked parameters, each of shape (M, ...)
    :param max_norm: maximum gradient norm of one member
    :param n_members: number of members M
    :return: the per-member gradient norms before clipping, shape (M,)
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if len(grads) == 0:
        return th.zeros(n_members)
    # (n_params, M) squared norms -> (M,) total norm of each member
    norms = th.stack([g.reshape(n_members, -1).pow(2).sum(dim=1) for g in grads]).sum(dim=0).sqrt()
    clip_coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(clip_coef.reshape(n_members, *([1] * (g.dim() - 1))))
    return norms


class QValuePredictor:
    """
    A minimal object with SB3's ``predict()`` signature that acts greedily with respect to a
    Q-value function, so that ``evaluate_policy`` can score one member of an ensemble.

    :param policy: the policy whose ``obs_to_tensor`` prepares observations
    :param q_function: maps an observation tensor (batch, ...) to Q-values (batch, n_actions)
    """

    def __init__(self, policy: BasePolicy, q_function: Callable[[th.Tensor], th.Tensor]) -> None:
        self.policy = policy
        self.q_function = q_function

    def predict(
        self,
        observation: np.ndarray,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        obs_tensor, vectorized_env = self.policy.obs_to_tensor(observation)
        with th.no_grad():
            actions = self.q_function(obs_tensor).argmax(dim=-1).cpu().numpy()
        if not vectorized_env:
            actions = actions.squeeze(axis=0)
        return actions, state
