"""
Distillation losses shared by the sb3_distill algorithms.

Every loss is a pure function: Q-values (or logits) in, a scalar out. With
``p_X = softmax(q_X / temperature)`` the losses are:

- ``forward_kl``: mean over the batch of ``sum_a p_T (log p_T - log p_S)``
  (Rusu et al. 2015, Policy Distillation; Hinton et al. 2015)
- ``reverse_kl``: mean over the batch of ``sum_a p_S (log p_S - log p_T)``
  (Sun & Fazli, Ensemble Policy Distillation, Eq. 3; Real-time Policy Distillation, Eq. 6)
- ``nll``: mean over the batch of ``-log p_S(argmax_a q_T)`` (Rusu et al. 2015)
- ``mse``: mean over the batch of ``sum_a (q_T - q_S)^2`` (Rusu et al. 2015)

For continuous policies, :func:`gaussian_distillation_loss` gives the same losses between diagonal
Gaussians in closed form (and ``mse`` between means or deterministic actions).

The teacher side never receives gradients: the teacher tensor is detached inside each function.
A teacher tensor with a leading member dimension, ``(n_teachers, batch, n_actions)``, is broadcast
against the student's ``(batch, n_actions)`` and the loss is averaged over teachers and batch,
which is ``(1/M) sum_j loss(S, T_j)``. Likewise K stacked students ``(K, batch, n_actions)`` against one
teacher ``(batch, n_actions)`` give ``(1/K) sum_k loss(S_k, T)``.
"""

import math

import numpy as np
import torch as th
from torch.nn import functional as F

DISTILLATION_LOSSES = ("forward_kl", "reverse_kl", "nll", "mse")
#: The losses for continuous (diagonal Gaussian or deterministic) policies
GAUSSIAN_DISTILLATION_LOSSES = ("forward_kl", "reverse_kl", "mse")
ENSEMBLE_REDUCTIONS = ("mean_loss", "mean_probs")


def check_temperature(temperature: float, name: str = "temperature") -> None:
    """
    Raise a ``ValueError`` unless ``temperature`` is a positive number.

    :param temperature: the softmax temperature tau
    :param name: the argument name to report in the error
    """
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"`{name}` must be a number > 0 (the softmax temperature tau), got {temperature!r}")


def check_loss_name(loss: str, name: str = "loss") -> None:
    """
    Raise a ``ValueError`` unless ``loss`` names one of :data:`DISTILLATION_LOSSES`.

    :param loss: the loss name
    :param name: the argument name to report in the error
    """
    if loss not in DISTILLATION_LOSSES:
        raise ValueError(f"`{name}` must be one of {DISTILLATION_LOSSES}, got {loss!r}")


def check_reduction_name(reduction: str, name: str = "reduction") -> None:
    """
    Raise a ``ValueError`` unless ``reduction`` names one of :data:`ENSEMBLE_REDUCTIONS`.

    :param reduction: the ensemble reduction name
    :param name: the argument name to report in the error
    """
    if reduction not in ENSEMBLE_REDUCTIONS:
        raise ValueError(f"`{name}` must be one of {ENSEMBLE_REDUCTIONS}, got {reduction!r}")


def forward_kl_loss(student_q: th.Tensor, teacher_q: th.Tensor, temperature: float = 1.0) -> th.Tensor:
    """
    Forward KL divergence KL(p_T || p_S) (Rusu et al. 2015; Hinton et al. 2015):

    ``L = mean_batch sum_a p_T(a) (log p_T(a) - log p_S(a))``, ``p_X = softmax(q_X / temperature)``.

    :param student_q: student Q-values, shape (batch, n_actions)
    :param teacher_q: teacher Q-values, shape (batch, n_actions) or (n_teachers, batch, n_actions)
    :param temperature: softmax temperature tau (> 0)
    :return: the loss, a scalar, averaged over the batch (and over teachers)
    """
    teacher_log_probs = F.log_softmax(teacher_q.detach() / temperature, dim=-1)
    student_log_probs = F.log_softmax(student_q / temperature, dim=-1)
    # sum over actions, mean over (teachers,) batch
    return (teacher_log_probs.exp() * (teacher_log_probs - student_log_probs)).sum(dim=-1).mean()


def reverse_kl_loss(student_q: th.Tensor, teacher_q: th.Tensor, temperature: float = 1.0) -> th.Tensor:
    """
    Reverse KL divergence KL(p_S || p_T) (Sun & Fazli, Ensemble Policy Distillation, Eq. 3):

    ``L = mean_batch sum_a p_S(a) (log p_S(a) - log p_T(a))``, ``p_X = softmax(q_X / temperature)``.

    It is zero-forcing: the student weights the teacher's supervision by its own confidence.

    :param student_q: student Q-values, shape (batch, n_actions)
    :param teacher_q: teacher Q-values, shape (batch, n_actions) or (n_teachers, batch, n_actions)
    :param temperature: softmax temperature tau (> 0)
    :return: the loss, a scalar, averaged over the batch (and over teachers)
    """
    teacher_log_probs = F.log_softmax(teacher_q.detach() / temperature, dim=-1)
    student_log_probs = F.log_softmax(student_q / temperature, dim=-1)
    return (student_log_probs.exp() * (student_log_probs - teacher_log_probs)).sum(dim=-1).mean()


def nll_loss(student_q: th.Tensor, teacher_q: th.Tensor, temperature: float = 1.0) -> th.Tensor:
    """
    Negative log-likelihood of the teacher's greedy action (Rusu et al. 2015):

    ``L = mean_batch -log p_S(argmax_a q_T(a))``, ``p_S = softmax(q_S / temperature)``.

    :param student_q: student Q-values, shape (batch, n_actions)
    :param teacher_q: teacher Q-values, shape (batch, n_actions) or (n_teachers, batch, n_actions)
    :param temperature: softmax temperature tau (> 0) of the student's softmax
    :return: the loss, a scalar, averaged over the batch (and over teachers)
    """
    teacher_actions = teacher_q.detach().argmax(dim=-1, keepdim=True)
    student_log_probs = F.log_softmax(student_q / temperature, dim=-1)
    # Broadcast teachers and students against each other: (..., batch, n_actions)
    shape = th.broadcast_shapes(student_q.shape, teacher_q.shape)
    teacher_actions = teacher_actions.expand(*shape[:-1], 1)
    return -th.gather(student_log_probs.expand(shape), dim=-1, index=teacher_actions).mean()


def mse_loss(student_q: th.Tensor, teacher_q: th.Tensor, temperature: float = 1.0) -> th.Tensor:
    """
    Squared error between Q-values (Rusu et al. 2015):

    ``L = mean_batch sum_a (q_T(a) - q_S(a))^2``. The temperature is not used.

    :param student_q: student Q-values, shape (batch, n_actions)
    :param teacher_q: teacher Q-values, shape (batch, n_actions) or (n_teachers, batch, n_actions)
    :param temperature: unused, kept so that every loss has the same signature
    :return: the loss, a scalar, averaged over the batch (and over teachers)
    """
    return (teacher_q.detach() - student_q).pow(2).sum(dim=-1).mean()


_LOSS_FUNCTIONS = {
    "forward_kl": forward_kl_loss,
    "reverse_kl": reverse_kl_loss,
    "nll": nll_loss,
    "mse": mse_loss,
}


def ensemble_teacher_q(teacher_q: th.Tensor, loss: str, temperature: float) -> th.Tensor:
    """
    Collapse an ensemble of teachers, shape (n_teachers, batch, n_actions), into one teacher
    (batch, n_actions) whose distribution is the averaged teacher distribution
    ``p_bar = (1/M) sum_j softmax(q_j / temperature)``.

    For the softmax losses the returned values are ``temperature * log p_bar`` (up to a constant),
    so that ``softmax(returned / temperature) = p_bar`` and its argmax is the argmax of ``p_bar``;
    for ``mse`` they are the mean Q-values ``(1/M) sum_j q_j``.

    :param teacher_q: teacher Q-values, shape (n_teachers, batch, n_actions)
    :param loss: the loss the result is for, one of :data:`DISTILLATION_LOSSES`
    :param temperature: softmax temperature tau (> 0)
    :return: Q-values of the averaged teacher, shape (batch, n_actions)
    """
    teacher_q = teacher_q.detach()
    if loss == "mse":
        return teacher_q.mean(dim=0)
    # log p_bar = logsumexp_j log p_j - log M; the constant does not change the softmax
    return temperature * th.logsumexp(F.log_softmax(teacher_q / temperature, dim=-1), dim=0)


def distillation_loss(
    student_q: th.Tensor,
    teacher_q: th.Tensor,
    loss: str = "forward_kl",
    temperature: float = 1.0,
    reduction: str = "mean_loss",
) -> th.Tensor:
    """
    Distillation loss of a student against one teacher or an ensemble of M teachers.

    With one teacher, ``loss(S, T)``. With several (``teacher_q`` of shape (M, batch, n_actions)):

    - ``reduction="mean_loss"``: ``(1/M) sum_j loss(S, T_j)``, the average of the per-teacher losses.
      With ``reverse_kl`` this is Eq. 4 of Sun & Fazli (Ensemble Policy Distillation): each teacher's
      term is weighted by the student's own probabilities, which gives the "voting" behaviour.
    - ``reduction="mean_probs"``: the loss against the averaged teacher distribution
      ``(1/M) sum_j softmax(q_j / tau)`` (for ``nll``, its argmax; for ``mse``, the mean Q-values).

    :param student_q: student Q-values (logits), shape (batch, n_actions), or (n_students, batch, n_actions)
        for K stacked students distilled from one teacher (the loss is then averaged over students);
        receives gradients
    :param teacher_q: teacher Q-values, shape (batch, n_actions) or (n_teachers, batch, n_actions);
        never receives gradients
    :param loss: one of ``"forward_kl"``, ``"reverse_kl"``, ``"nll"``, ``"mse"``
    :param temperature: softmax temperature tau (> 0); ignored by ``mse``
    :param reduction: how several teachers are combined, ``"mean_loss"`` or ``"mean_probs"``
    :return: the loss, a scalar tensor
    """
    check_loss_name(loss)
    check_temperature(temperature)
    check_reduction_name(reduction)
    if student_q.dim() not in (2, 3):
        raise ValueError(
            f"`student_q` must have shape (batch, n_actions) or (n_students, batch, n_actions), got {tuple(student_q.shape)}"
        )
    if teacher_q.dim() not in (2, 3) or teacher_q.shape[-2:] != student_q.shape[-2:]:
        raise ValueError(
            "`teacher_q` must have shape (batch, n_actions) or (n_teachers, batch, n_actions) "
            f"matching `student_q` {tuple(student_q.shape)}, got {tuple(teacher_q.shape)}"
        )
    if student_q.dim() == 3 and teacher_q.dim() == 3:
        raise ValueError("Several students (3-D `student_q`) are distilled from one teacher: `teacher_q` must be 2-D")
    if teacher_q.dim() == 3 and reduction == "mean_probs":
        teacher_q = ensemble_teacher_q(teacher_q, loss, temperature)
    return _LOSS_FUNCTIONS[loss](student_q, teacher_q, temperature=temperature)


def diagonal_gaussian_kl(
    mean_p: th.Tensor,
    log_std_p: th.Tensor,
    mean_q: th.Tensor,
    log_std_q: th.Tensor,
) -> th.Tensor:
    """
    KL divergence between two diagonal Gaussians, in closed form, summed over the action dimensions:

    ``KL(p || q) = sum_d [ log(s_q / s_p) + (s_p^2 + (m_p - m_q)^2) / (2 s_q^2) - 1/2 ]``.

    Applied to the Gaussians *before* a tanh squashing (SAC), it equals the KL between the squashed
    policies, because tanh is a bijection (Hong et al., PIEKD, Eq. 1).

    :param mean_p: means of p, shape (..., action_dim)
    :param log_std_p: log standard deviations of p, broadcastable to ``mean_p``
    :param mean_q: means of q, shape (..., action_dim)
    :param log_std_q: log standard deviations of q, broadcastable to ``mean_q``
    :return: the KL divergence per sample, shape (...)
    """
    log_ratio = log_std_q - log_std_p
    var_ratio = th.exp(-2.0 * log_ratio)  # s_p^2 / s_q^2
    mean_term = ((mean_p - mean_q) * th.exp(-log_std_q)).pow(2)  # (m_p - m_q)^2 / s_q^2
    return (log_ratio + 0.5 * (var_ratio + mean_term - 1.0)).sum(dim=-1)


def check_gaussian_loss_name(loss: str, name: str = "loss") -> None:
    """
    Raise a ``ValueError`` unless ``loss`` names one of :data:`GAUSSIAN_DISTILLATION_LOSSES`.

    :param loss: the loss name
    :param name: the argument name to report in the error
    """
    if loss not in GAUSSIAN_DISTILLATION_LOSSES:
        raise ValueError(f"`{name}` must be one of {GAUSSIAN_DISTILLATION_LOSSES} for continuous actions, got {loss!r}")


def gaussian_distillation_loss(
    student_mean: th.Tensor,
    student_log_std: th.Tensor | None,
    teacher_mean: th.Tensor,
    teacher_log_std: th.Tensor | None,
    loss: str = "forward_kl",
) -> th.Tensor:
    """
    Distillation loss between continuous policies, averaged over the batch (and any leading dims):

    - ``forward_kl``: ``mean_batch KL(N_T || N_S)`` (Hong et al., PIEKD, Eq. 1; Rusu et al.'s KL for
      Gaussian policies), see :func:`diagonal_gaussian_kl`;
    - ``reverse_kl``: ``mean_batch KL(N_S || N_T)``;
    - ``mse``: ``mean_batch sum_d (m_T - m_S)^2``, for deterministic teachers (TD3/DDPG) or to match
      only the means; the log standard deviations are not used and may be None.

    :param student_mean: student means (or actions), shape (..., batch, action_dim); receives gradients
    :param student_log_std: student log standard deviations, broadcastable to ``student_mean``
    :param teacher_mean: teacher means (or actions), broadcastable to ``student_mean``; never receives gradients
    :param teacher_log_std: teacher log standard deviations, broadcastable to ``teacher_mean``
    :param loss: one of ``"forward_kl"``, ``"reverse_kl"``, ``"mse"``
    :return: the loss, a scalar tensor
    """
    check_gaussian_loss_name(loss)
    teacher_mean = teacher_mean.detach()
    if loss == "mse":
        return (teacher_mean - student_mean).pow(2).sum(dim=-1).mean()
    if student_log_std is None or teacher_log_std is None:
        raise ValueError(
            f"`loss={loss!r}` needs the log standard deviations of both policies; use `loss='mse'` for a deterministic one"
        )
    teacher_log_std = teacher_log_std.detach()
    if loss == "forward_kl":
        return diagonal_gaussian_kl(teacher_mean, teacher_log_std, student_mean, student_log_std).mean()
    return diagonal_gaussian_kl(student_mean, student_log_std, teacher_mean, teacher_log_std).mean()


def dqn_td_targets(
    rewards: th.Tensor,
    dones: th.Tensor,
    discounts: th.Tensor | float,
    student_next_q: th.Tensor,
    teacher_next_q: th.Tensor | None = None,
) -> th.Tensor:
    """
    DQN's TD targets for K stacked Q-networks: those of the teachers of EnsembleDistillDQN and of the
    teacher of RealTimeDistillDQN (K = 1), and of the students' own DQN loss ("self-learning") in real-time
    policy distillation (Sun & Fazli, "Real-time Policy Distillation in Deep Reinforcement Learning"):

    - without a teacher (``teacher_next_q=None``, DQN, the paper's Eq. 4): ``y = r + gamma (1 - done) max_a Q^-(s', a)``;
    - with the teacher ("imitation", Eq. 5): ``y = r + gamma (1 - done) Q_S^-(s', argmax_a Q_T^-(s', a))``,
      the teacher's target network picks the action and the student's target network values it.

    :param rewards: (batch, 1)
    :param dones: (batch, 1)
    :param discounts: the discount factor gamma, or per-sample discounts of shape (batch, 1)
    :param student_next_q: the K target networks on s', shape (K, batch, n_actions)
    :param teacher_next_q: the teacher's target network on s', shape (batch, n_actions), or None
    :return: the targets, shape (K, batch), without gradient
    """
    with th.no_grad():
        if teacher_next_q is None:
            next_values = student_next_q.max(dim=-1).values
        else:
            # The teacher's greedy actions, the same for every student: (batch,) -> (K, batch, 1)
            teacher_actions = teacher_next_q.argmax(dim=-1).reshape(1, -1, 1).expand(student_next_q.shape[0], -1, 1)
            next_values = th.gather(student_next_q, dim=-1, index=teacher_actions).squeeze(-1)
        discounts = discounts.T if isinstance(discounts, th.Tensor) else discounts
        # (batch, 1) -> (1, batch), broadcast over students: (K, batch)
        return rewards.T + (1 - dones.T) * discounts * next_values


# --- SAC on K stacked agents and PIEKD (Hong et al., "Periodic Intra-Ensemble Knowledge Distillation for
# Reinforcement Learning", 2020, arXiv:2002.00149). Member k of the ensemble has n_critics Q-networks
# Q_{k,j}, target networks Q^-_{k,j}, a squashed Gaussian policy pi_k and an entropy coefficient alpha_k.
# Each SAC loss is SB3's ``SAC.train`` loss of each member, returned per member, shape (K,).


def sac_critic_targets(
    rewards: th.Tensor,
    dones: th.Tensor,
    discounts: th.Tensor | float,
    next_q_values: th.Tensor,
    next_log_prob: th.Tensor,
    ent_coef: th.Tensor,
) -> th.Tensor:
    """
    SAC's soft TD targets of K stacked agents, with the minimum over the target networks (Haarnoja et al., "Soft
    Actor-Critic Algorithms and Applications", 2018, arXiv:1812.05905), as SB3's ``SAC.train``:

    ``y_k = r + gamma (1 - done) (min_j Q^-_{k,j}(s', a'_k) - alpha_k log pi_k(a'_k | s'))``, ``a'_k ~ pi_k(. | s')``.

    :param rewards: (batch, 1)
    :param dones: (batch, 1)
    :param discounts: the discount factor gamma, or per-sample discounts of shape (batch, 1) (n-step returns)
    :param next_q_values: every agent's target networks on (s', a'_k), shape (K, n_critics, batch)
    :param next_log_prob: ``log pi_k(a'_k | s')``, shape (K, batch)
    :param ent_coef: the entropy coefficients alpha_k, shape (K,)
    :return: the targets, shape (K, batch), without gradient
    """
    with th.no_grad():
        # Min over each agent's target networks, minus its entropy term: (K, batch)
        next_values = next_q_values.min(dim=1).values - ent_coef.unsqueeze(1) * next_log_prob
        discounts = discounts.T if isinstance(discounts, th.Tensor) else discounts
        # (batch, 1) -> (1, batch), broadcast over agents: (K, batch)
        return rewards.T + (1 - dones.T) * discounts * next_values


def sac_critic_loss(q_values: th.Tensor, targets: th.Tensor) -> th.Tensor:
    """
    SAC's critic loss of K stacked agents, SB3's ``0.5 * sum(mse_loss(q, y) for q in current_q_values)``:

    ``L_k = 1/2 sum_j mean_i (Q_{k,j}(s_i, a_i) - y_{k,i})^2``.

    :param q_values: every agent's Q-networks on the buffer's (s, a), shape (K, n_critics, batch)
    :param targets: the TD targets (:func:`sac_critic_targets`), shape (K, batch); never receive gradients
    :return: each agent's loss, shape (K,)
    """
    return 0.5 * (q_values - targets.detach().unsqueeze(1)).pow(2).mean(dim=2).sum(dim=1)


def sac_actor_loss(q_values_pi: th.Tensor, log_prob: th.Tensor, ent_coef: th.Tensor) -> th.Tensor:
    """
    SAC's policy loss of K stacked agents (Haarnoja et al. 2018, arXiv:1812.05905), as SB3's:

    ``J_k = mean_i [alpha_k log pi_k(a~_{k,i} | s_i) - min_j Q_{k,j}(s_i, a~_{k,i})]``, ``a~_{k,i} ~ pi_k(. | s_i)``
    reparametrised.

    :param q_values_pi: every agent's Q-networks on its own actions, shape (K, n_critics, batch); the caller
        decides which parameters get this loss's gradient (SB3: only the actor's are stepped)
    :param log_prob: ``log pi_k(a~_{k,i} | s_i)``, shape (K, batch)
    :param ent_coef: alpha_k, shape (K,); never receives gradients
    :return: each agent's loss, shape (K,)
    """
    return (ent_coef.detach().unsqueeze(1) * log_prob - q_values_pi.min(dim=1).values).mean(dim=1)


def sac_ent_coef_loss(log_ent_coef: th.Tensor, log_prob: th.Tensor, target_entropy: float) -> th.Tensor:
    """
    SAC's entropy-coefficient loss of K stacked agents (Haarnoja et al. 2018, arXiv:1812.05905), on
    ``log alpha`` as in SB3:

    ``J(alpha_k) = -log alpha_k mean_i (log pi_k(a~_{k,i} | s_i) + H_target)``.

    :param log_ent_coef: ``log alpha_k``, shape (K,)
    :param log_prob: ``log pi_k(a~_{k,i} | s_i)``, shape (K, batch); never receives gradients
    :param target_entropy: the target entropy H_target
    :return: each agent's loss, shape (K,)
    """
    return -(log_ent_coef * (log_prob + target_entropy).detach().mean(dim=1))


def _students(n_members: int, teacher: int, like: th.Tensor) -> th.Tensor:
    """1.0 for every member but the teacher, 0.0 for the teacher, shape (K,), on ``like``'s device and dtype."""
    return (th.arange(n_members, device=like.device) != teacher).to(like.dtype)


def piekd_policy_loss(mean: th.Tensor, log_std: th.Tensor, teacher: int) -> th.Tensor:
    """
    PIEKD's policy distillation loss (Hong et al. 2020, arXiv:2002.00149, Eq. 1), summed over the students
    (every member k but the teacher t):

    ``L_pi = sum_{k != t} mean_i KL(N_t(s_i) || N_k(s_i))``,

    between the diagonal Gaussians before the tanh squashing, in closed form (:func:`diagonal_gaussian_kl`),
    which equals the KL between the squashed policies because tanh is a bijection. The teacher's outputs are
    detached and its own term is masked out: the teacher receives no gradient.

    :param mean: every member's Gaussian means, shape (K, batch, action_dim)
    :param log_std: every member's log standard deviations, shape (K, batch, action_dim)
    :param teacher: the teacher's index t, in [0, K)
    :return: the loss, a scalar
    """
    # KL(teacher || member k), averaged over the batch: (K,)
    kl = diagonal_gaussian_kl(mean[teacher].detach(), log_std[teacher].detach(), mean, log_std).mean(dim=1)
    return (kl * _students(mean.shape[0], teacher, kl)).sum()


def piekd_critic_loss(q_values: th.Tensor, teacher: int) -> th.Tensor:
    """
    PIEKD's critic distillation loss (Hong et al. 2020, arXiv:2002.00149, Eq. 2), summed over the students
    and their Q-networks, each matched to the teacher's Q-network of the same index j:

    ``L_Q = sum_{k != t} sum_j mean_i (Q_{t,j}(s_i, a_i) - Q_{k,j}(s_i, a_i))^2``, (s_i, a_i) from the buffer.

    :param q_values: every member's Q-networks on the buffer's (s, a), shape (K, n_critics, batch)
    :param teacher: the teacher's index t, in [0, K); its Q-values are detached and its term masked out
    :return: the loss, a scalar
    """
    # Squared error to the teacher, mean over the batch, summed over the Q-networks: (K,)
    squared_error = (q_values - q_values[teacher].detach()).pow(2).mean(dim=2).sum(dim=1)
    return (squared_error * _students(q_values.shape[0], teacher, squared_error)).sum()


# --- Student-driven distillation updates (Czarnecki et al., "Distilling Policy Distillation", 2019, arXiv:1902.02186)
#
# Eq. (1) of the paper: the update direction of the student pi_theta is
#     E_q [ sum_t -grad log pi_theta(a_t | s_t) R^_t + grad l(pi_theta, s_t) ],   R^_t = sum_{i >= t} r^_i,
# one row of Table 1 (or Sec. 4) per choice of the control policy q, the loss l and the reward r^. The
# functions below give l and r^ for each row; DistillPPO uses them (r^ at rollout time, l in train()).

#: The update rules of Table 1 and Sec. 4 of Czarnecki et al. (2019)
DISTILL_UPDATE_RULES = (
    "teacher_distill",
    "on_policy_distill",
    "entropy_regularised",
    "n_distill",
    "expected_entropy_regularised",
    "teacher_v_reward",
    "teacher_v_bootstrap",
)
#: The rules whose loss l is H^x(pi || pi_theta) (teacher -> student cross-entropy)
TEACHER_CROSS_ENTROPY_RULES = ("teacher_distill", "on_policy_distill", "n_distill")
#: The rules that need the teacher's state value V_pi
VALUE_RULES = ("teacher_v_reward", "teacher_v_bootstrap")


def policy_cross_entropy(p: th.distributions.Distribution, q: th.distributions.Distribution) -> th.Tensor:
    """
    Shannon cross-entropy between two action distributions, per state, in closed form
    (Czarnecki et al. 2019, Table 1): ``H^x(p || q) = -E_{a ~ p} log q(a)``.

    - Categorical: ``H^x(p || q) = -sum_a p(a) log q(a)``;
    - diagonal Gaussian (``Independent(Normal)``, or a ``Normal`` whose last dimension is the action):
      ``H^x(p || q) = sum_d [ log s_q + log(2 pi) / 2 + (s_p^2 + (m_p - m_q)^2) / (2 s_q^2) ]``.

    Gradients flow into both arguments; detach the teacher's side before calling.
    ``H^x(p || q) = H(p) + KL(p || q)``, so with p fixed it has the gradient of the KL.

    :param p: the distribution the actions are drawn from, batch shape (batch,)
        (a ``Normal`` of batch shape (batch, action_dim) is read as a diagonal Gaussian)
    :param q: the distribution that scores them, of the same kind and shape
    :return: the cross-entropy per state, shape (batch,)
    """
    if isinstance(p, th.distributions.Categorical) and isinstance(q, th.distributions.Categorical):
        # torch normalises Categorical.logits to log-probabilities
        return -(p.probs * q.logits).sum(dim=-1)
    p_normal, q_normal = _as_normal(p), _as_normal(q)
    if p_normal is None or q_normal is None:
        raise TypeError(
            "`policy_cross_entropy` takes two Categorical or two diagonal Gaussian distributions, "
            f"got {type(p).__name__} and {type(q).__name__}"
        )
    mean_p, std_p, mean_q, std_q = p_normal.mean, p_normal.stddev, q_normal.mean, q_normal.stddev
    per_dim = std_q.log() + 0.5 * math.log(2 * math.pi) + (std_p.pow(2) + (mean_p - mean_q).pow(2)) / (2 * std_q.pow(2))
    return per_dim.sum(dim=-1)


def _as_normal(distribution: th.distributions.Distribution) -> th.distributions.Normal | None:
    """The Normal of a diagonal Gaussian (``Normal`` or ``Independent(Normal, 1)``), else None."""
    if isinstance(distribution, th.distributions.Independent):
        distribution = distribution.base_dist
    return distribution if isinstance(distribution, th.distributions.Normal) else None


def distill_loss_per_state(
    update_rule: str,
    student: th.distributions.Distribution,
    teacher: th.distributions.Distribution,
) -> th.Tensor | None:
    """
    The loss l(pi_theta, s_t) of an update rule (Czarnecki et al. 2019, Table 1, column l), per state:

    - ``teacher_distill``, ``on_policy_distill``, ``n_distill``: ``H^x(pi(s) || pi_theta(s))``;
    - ``expected_entropy_regularised``: ``H^x(pi_theta(s) || pi(s))``, the one-step expectation of
      ``-log pi(a_t | s_t)`` over the student's action;
    - ``entropy_regularised``, ``teacher_v_reward``, ``teacher_v_bootstrap``: no loss (None).

    :param update_rule: one of :data:`DISTILL_UPDATE_RULES`
    :param student: the student's action distribution pi_theta(s), batch shape (batch,); receives gradients
    :param teacher: the teacher's action distribution pi(s); detached here
    :return: the loss per state, shape (batch,), or None for the rules without a loss
    """
    if update_rule in TEACHER_CROSS_ENTROPY_RULES:
        return policy_cross_entropy(_detached(teacher), student)
    if update_rule == "expected_entropy_regularised":
        return policy_cross_entropy(student, _detached(teacher))
    if update_rule in DISTILL_UPDATE_RULES:
        return None
    raise ValueError(f"`update_rule` must be one of {DISTILL_UPDATE_RULES}, got {update_rule!r}")


def _detached(distribution: th.distributions.Distribution) -> th.distributions.Distribution:
    """The same distribution with its parameters detached (Categorical or diagonal Gaussian)."""
    if isinstance(distribution, th.distributions.Categorical):
        return th.distributions.Categorical(logits=distribution.logits.detach())
    normal = _as_normal(distribution)
    if normal is None:
        raise TypeError(f"Expected a Categorical or diagonal Gaussian distribution, got {type(distribution).__name__}")
    detached = th.distributions.Normal(normal.mean.detach(), normal.stddev.detach())
    return th.distributions.Independent(detached, 1) if isinstance(distribution, th.distributions.Independent) else detached


def entropy_regularised_reward(teacher_log_prob: th.Tensor) -> th.Tensor:
    """
    Reward of *entropy regularised* distillation (Czarnecki et al. 2019, Table 1; Teh et al., Distral, 2017):
    ``r^_i = log pi(a_i | s_i)``, the teacher's log-probability of the action taken.

    :param teacher_log_prob: ``log pi(a_i | s_i)``, shape (batch,)
    :return: the reward, shape (batch,)
    """
    return teacher_log_prob.detach()


def n_distill_reward(
    next_student: th.distributions.Distribution,
    next_teacher: th.distributions.Distribution,
    next_non_terminal: th.Tensor,
) -> th.Tensor:
    """
    Reward of *N-distill* (Czarnecki et al. 2019, Table 1 and Theorem 2):
    ``r^_i = -H^x(pi(s_{i+1}) || pi_theta(s_{i+1}))``, 0 when ``s_{i+1}`` is terminal (it has no loss).
    With ``l = H^x(pi || pi_theta)`` it makes Eq. (1) the gradient of ``E_{pi_theta}[sum_t H^x(pi(s_t) || pi_theta(s_t))]``.

    :param next_student: the student's distribution at ``s_{i+1}``, batch shape (batch,)
    :param next_teacher: the teacher's distribution at ``s_{i+1}``
    :param next_non_terminal: 1 where ``s_{i+1}`` is not terminal, 0 where it is, shape (batch,)
    :return: the reward, shape (batch,), without gradient
    """
    with th.no_grad():
        return -policy_cross_entropy(next_teacher, next_student) * next_non_terminal


def expected_entropy_regularised_reward(next_teacher_log_prob: th.Tensor, next_non_terminal: th.Tensor) -> th.Tensor:
    """
    Reward of *expected entropy regularised* distillation (Czarnecki et al. 2019, Table 1, Sec. 3.3):
    ``r^_i = log pi(a_{i+1} | s_{i+1})``, the teacher's log-probability of the student's *next* action, 0 when
    ``s_{i+1}`` is terminal. With ``l = H^x(pi_theta || pi)`` it makes Eq. (1) the gradient of
    ``E_{pi_theta}[sum_t -log pi(a_t | s_t)]``. Where ``a_{i+1}`` was not drawn (the end of a rollout, a
    time-limit truncation), pass its expectation over the student, ``-H^x(pi_theta(s_{i+1}) || pi(s_{i+1}))``,
    which leaves the expected update unchanged.

    :param next_teacher_log_prob: ``log pi(a_{i+1} | s_{i+1})``, shape (batch,)
    :param next_non_terminal: 1 where ``s_{i+1}`` is not terminal, 0 where it is, shape (batch,)
    :return: the reward, shape (batch,)
    """
    return next_teacher_log_prob.detach() * next_non_terminal


def teacher_value_reward(
    rewards: th.Tensor,
    teacher_values: th.Tensor,
    next_teacher_values: th.Tensor,
    next_non_terminal: th.Tensor,
    gamma: float = 1.0,
) -> th.Tensor:
    """
    Reward of *Teacher V reward* (Czarnecki et al. 2019, Sec. 4.2), the environment reward shaped by the
    teacher's critic as a potential: ``r^_t = r_t + gamma V_pi(s_{t+1}) - V_pi(s_t)``, with ``V_pi = 0`` at a
    terminal state. The paper writes it undiscounted (gamma = 1); Table 1 prints ``V_{pi_theta}(s_t)`` for the
    last term, but Sec. 4.2 (and its footnote 4, where the sum telescopes) uses ``V_pi(s_t)``, which we follow.
    The shaping is potential-based, so the optimal policies are those of the environment reward.

    :param rewards: the environment rewards r_t, shape (batch,)
    :param teacher_values: ``V_pi(s_t)``, shape (batch,)
    :param next_teacher_values: ``V_pi(s_{t+1})``, shape (batch,)
    :param next_non_terminal: 1 where ``s_{t+1}`` is not terminal, 0 where it is, shape (batch,)
    :param gamma: the discount factor
    :return: the reward, shape (batch,), without gradient
    """
    with th.no_grad():
        return rewards + gamma * next_non_terminal * next_teacher_values - teacher_values


def teacher_value_bootstrap_targets(
    rewards: th.Tensor,
    next_teacher_values: th.Tensor,
    next_non_terminal: th.Tensor,
    gamma: float = 1.0,
) -> th.Tensor:
    """
    One-step targets bootstrapped from the teacher's critic, *TD + V_pi* (Czarnecki et al. 2019, Sec. 4.1):
    ``y_t = r_t + gamma V_pi(s_{t+1})`` (0 bootstrap at a terminal state). The actor's update is
    ``grad log pi_theta(a_t | s_t) (y_t - V_theta(s_t))``, with the student's critic as the baseline.

    :param rewards: the environment rewards r_t, shape (batch,)
    :param next_teacher_values: ``V_pi(s_{t+1})``, shape (batch,)
    :param next_non_terminal: 1 where ``s_{t+1}`` is not terminal, 0 where it is, shape (batch,)
    :param gamma: the discount factor
    :return: the targets, shape (batch,), without gradient
    """
    with th.no_grad():
        return rewards + gamma * next_non_terminal * next_teacher_values


def value_gate(teacher_values: th.Tensor, student_values: th.Tensor) -> th.Tensor:
    """
    The gate of value-gated distillation (Czarnecki et al. 2019, Sec. 4, Proposition 2):
    ``[V_pi(s) - V_{pi_theta}(s)]_{>0}``, 1 where the teacher's value exceeds the student's, else 0.
    The distillation loss becomes ``l(s) [V_pi(s) - V_{pi_theta}(s)]_{>0}``: the student imitates the
    teacher only where the teacher is better.

    :param teacher_values: ``V_pi(s)``, shape (batch,)
    :param student_values: ``V_{pi_theta}(s)``, shape (batch,)
    :return: the gate, 0.0 or 1.0, shape (batch,), without gradient
    """
    return (teacher_values.detach() > student_values.detach()).to(teacher_values.dtype)


def stacked_huber_loss(q_values: th.Tensor, actions: th.Tensor, targets: th.Tensor) -> th.Tensor:
    """
    DQN's Huber loss of K stacked Q-networks, each averaged over the batch:
    ``L_k = mean_i huber(Q_k(s_i, a_i) - y_{k,i})``. With K = 1 it is SB3's DQN loss.

    :param q_values: the networks' Q-values on s, shape (K, batch, n_actions)
    :param actions: the actions taken, shape (batch, 1)
    :param targets: the TD targets (:func:`dqn_td_targets`), shape (K, batch)
    :return: each network's loss, shape (K,)
    """
    # The Q-values of the actions taken: (K, batch)
    index = actions.long().unsqueeze(0).expand(q_values.shape[0], -1, -1)
    current = th.gather(q_values, dim=2, index=index).squeeze(2)
    return F.smooth_l1_loss(current, targets, reduction="none").mean(dim=1)


#: How the teachers' Q-values are scaled before the softmax: ``None`` (the paper's raw Q-values) or ``"spread"``
TEMPERATURE_SCALINGS = (None, "spread")


def check_choice(value: object, name: str, choices: tuple[object, ...]) -> None:
    """
    Raise a ``ValueError`` unless ``value`` is one of ``choices``.

    :param value: the value received
    :param name: the argument name to report in the error
    :param choices: the accepted values
    """
    if not any(value is choice or (isinstance(value, str) and value == choice) for choice in choices):
        raise ValueError(f"`{name}` must be one of {choices}, got {value!r}")


def check_positive_number(value: object, name: str, meaning: str) -> None:
    """
    Raise a ``ValueError`` unless ``value`` is a finite number > 0 (Python or numpy; bools rejected).

    :param value: the value received
    :param name: the argument name to report in the error
    :param meaning: what the number is, for the error message
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"`{name}` must be a finite number > 0 ({meaning}), got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"`{name}` must be a finite number > 0 ({meaning}), got {value!r}")


#: Decay of the running estimate of each teacher's Q-value spread, per gradient step (a horizon of ~100 steps)
SPREAD_EMA_DECAY = 0.99


def q_value_spread(q_values: th.Tensor) -> th.Tensor:
    """
    Spread of Q-values across actions, averaged over the batch: ``sigma = mean_batch (max_a q(a) - min_a q(a))``.

    :param q_values: Q-values, shape (..., batch, n_actions), e.g. (n_teachers, batch, n_actions)
    :return: the spread, shape (...), without gradient
    """
    q_values = q_values.detach()
    return (q_values.amax(dim=-1) - q_values.amin(dim=-1)).mean(dim=-1)


def update_running_spread_(
    spread_ema: th.Tensor,
    spread_ema_weight: th.Tensor,
    q_values: th.Tensor,
    decay: float = SPREAD_EMA_DECAY,
) -> th.Tensor:
    """
    Update, in place, a bias-corrected exponential moving average of each member's Q-value spread
    (:func:`q_value_spread`) and return the estimate (as Adam's moments; no device synchronisation):

    ``m <- decay m + (1 - decay) sigma_batch``, ``w <- decay w + (1 - decay)``, ``sigma_hat = m / w``
    (``w = 1 - decay^n`` after n updates; the estimate is 0 before the first update).

    :param spread_ema: the moving average m, shape (...), updated in place
    :param spread_ema_weight: the weight w of the moving average, a scalar tensor, updated in place
    :param q_values: this batch's Q-values, shape (..., batch, n_actions)
    :param decay: the decay of the moving average, in [0, 1)
    :return: the bias-corrected estimate sigma_hat, shape (...), without gradient
    """
    with th.no_grad():
        spread_ema.mul_(decay).add_(q_value_spread(q_values), alpha=1 - decay)
        spread_ema_weight.mul_(decay).add_(1 - decay)
        return spread_ema / spread_ema_weight


def spread_scaled_q_values(q_values: th.Tensor, spread: th.Tensor, eps: float = 1e-6) -> th.Tensor:
    """
    Q-values divided by each member's spread, so that a temperature means the same on every task:

    ``q~_j = q_j / max(sigma_j, eps)``, then ``p_j = softmax(q~_j / tau)``, instead of the paper's
    ``p_j = softmax(q_j / tau)`` (Sun & Fazli, Ensemble Policy Distillation, Eqs. 3-4). With
    ``sigma_j`` the running mean over states of ``max_a q_j - min_a q_j``, ``1 / tau`` is the gap of
    logits between a teacher's best and worst action on an average state, whatever the reward scale
    and whatever the teacher: no teacher is more confident than another only because its Q-values are
    larger.

    :param q_values: Q-values, shape (n_members, batch, n_actions)
    :param spread: each member's spread sigma, shape (n_members,)
    :param eps: the smallest spread divided by (a member with flat Q-values is not blown up)
    :return: the scaled Q-values, shape (n_members, batch, n_actions), without gradient
    """
    return q_values.detach() / spread.clamp_min(eps).reshape(-1, 1, 1)


def per_teacher_distillation_losses(
    student_q: th.Tensor,
    teacher_q: th.Tensor,
    loss: str = "reverse_kl",
    temperature: float = 1.0,
) -> th.Tensor:
    """
    The distillation loss of a student against each of M teachers, ``(loss(S, T_1), ..., loss(S, T_M))``,
    batched over the teachers (the same equations as :func:`forward_kl_loss`, :func:`reverse_kl_loss`,
    :func:`nll_loss` and :func:`mse_loss`, averaged over the batch only).

    :param student_q: student Q-values, shape (batch, n_actions); receives gradients
    :param teacher_q: teacher Q-values, shape (n_teachers, batch, n_actions); never receives gradients
    :param loss: one of :data:`DISTILLATION_LOSSES`
    :param temperature: softmax temperature tau (> 0); ignored by ``mse``
    :return: each teacher's loss, averaged over the batch, shape (n_teachers,)
    """
    teacher_q = teacher_q.detach()
    if loss == "mse":
        return (teacher_q - student_q).pow(2).sum(dim=-1).mean(dim=-1)
    # (batch, n_actions), broadcast against the teachers' (M, batch, n_actions)
    student_log_probs = F.log_softmax(student_q / temperature, dim=-1)
    if loss == "nll":
        teacher_actions = teacher_q.argmax(dim=-1, keepdim=True)
        return -th.gather(student_log_probs.expand(teacher_q.shape), dim=-1, index=teacher_actions).squeeze(-1).mean(dim=-1)
    teacher_log_probs = F.log_softmax(teacher_q / temperature, dim=-1)
    if loss == "forward_kl":
        return (teacher_log_probs.exp() * (teacher_log_probs - student_log_probs)).sum(dim=-1).mean(dim=-1)
    return (student_log_probs.exp() * (student_log_probs - teacher_log_probs)).sum(dim=-1).mean(dim=-1)


def weighted_distillation_loss(
    student_q: th.Tensor,
    teacher_q: th.Tensor,
    weights: th.Tensor | None,
    loss: str = "reverse_kl",
    temperature: float = 1.0,
    reduction: str = "mean_loss",
) -> th.Tensor:
    """
    Distillation from M teachers weighted by ``w`` (``w_j >= 0``, ``sum_j w_j = 1``):

    - ``reduction="mean_loss"``: ``sum_j w_j loss(S, T_j)``, Eq. 4 of Sun & Fazli (Ensemble Policy
      Distillation) with the uniform ``1/M`` replaced by ``w_j``;
    - ``reduction="mean_probs"``: the loss against ``sum_j w_j softmax(q_j / tau)`` (for ``mse``, against
      ``sum_j w_j q_j``).

    ``weights=None`` is the unweighted :func:`distillation_loss`.

    :param student_q: student Q-values, shape (batch, n_actions); receives gradients
    :param teacher_q: teacher Q-values, shape (n_teachers, batch, n_actions); never receives gradients
    :param weights: each teacher's weight, shape (n_teachers,), or None for uniform weights
    :param loss: one of :data:`DISTILLATION_LOSSES`
    :param temperature: softmax temperature tau (> 0); ignored by ``mse``
    :param reduction: ``"mean_loss"`` or ``"mean_probs"``
    :return: the loss, a scalar tensor
    """
    if weights is None:
        return distillation_loss(student_q, teacher_q, loss=loss, temperature=temperature, reduction=reduction)
    check_loss_name(loss)
    check_temperature(temperature)
    check_reduction_name(reduction)
    if reduction == "mean_loss":
        return (weights * per_teacher_distillation_losses(student_q, teacher_q, loss, temperature)).sum()
    teacher_q = teacher_q.detach()
    if loss == "mse":
        averaged_q = (weights.reshape(-1, 1, 1) * teacher_q).sum(dim=0)
    else:
        # tau * log sum_j w_j p_j, whose softmax at temperature tau is the weighted mixture
        log_probs = F.log_softmax(teacher_q / temperature, dim=-1) + weights.clamp_min(1e-30).log().reshape(-1, 1, 1)
        averaged_q = temperature * th.logsumexp(log_probs, dim=0)
    return _LOSS_FUNCTIONS[loss](student_q, averaged_q, temperature=temperature)


#: How the teachers' terms are weighted: ``None`` (uniformly, the paper's Eq. 4) or ``"returns"``
TEACHER_WEIGHTINGS = (None, "returns")


def return_weights(
    mean_returns: th.Tensor,
    return_stds: th.Tensor,
    temperature: float = 0.25,
    eps: float = 1e-8,
) -> th.Tensor:
    """
    Each teacher's weight from its recent returns: a softmax over the standardised mean returns,

    ``z_j = (R_j - mean_k R_k) / (s + eps)``, ``w_j = exp(z_j / beta) / sum_k exp(z_k / beta)``,

    with ``R_j`` teacher j's mean recent return, ``s`` the pooled standard deviation of all teachers'
    returns, ``s^2 = mean_k s_k^2 + var_k R_k`` (within-teacher episode noise plus the spread between
    teachers, so that teachers who differ by less than their episode noise get nearly equal weights) and
    ``beta`` the temperature. A teacher with no return yet (``nan``) is given the mean.

    :param mean_returns: each teacher's mean recent return R_j, shape (n_teachers,)
    :param return_stds: each teacher's standard deviation of its recent returns s_j, shape (n_teachers,)
    :param temperature: beta (> 0): the smaller, the more weight goes to the best teachers
    :param eps: added to the pooled standard deviation (equal returns give uniform weights)
    :return: the weights, shape (n_teachers,), non-negative, summing to 1
    """
    known = ~th.isnan(mean_returns)
    if not known.any():
        return th.full_like(mean_returns, 1.0 / mean_returns.numel())
    center = mean_returns[known].mean()
    mean_returns = th.where(known, mean_returns, center)
    return_stds = th.where(known & ~th.isnan(return_stds), return_stds, th.zeros_like(return_stds))
    pooled_std = (return_stds.pow(2).mean() + mean_returns.var(unbiased=False)).sqrt()
    return F.softmax((mean_returns - center) / (pooled_std + eps) / temperature, dim=0)
