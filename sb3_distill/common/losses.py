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

The teacher side never receives gradients: the teacher tensor is detached inside each function.
A teacher tensor with a leading member dimension, ``(n_teachers, batch, n_actions)``, is broadcast
against the student's ``(batch, n_actions)`` and the loss is averaged over teachers and batch,
which is ``(1/M) sum_j loss(S, T_j)``.
"""

import torch as th
from torch.nn import functional as F

DISTILLATION_LOSSES = ("forward_kl", "reverse_kl", "nll", "mse")
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
    student_log_probs = student_log_probs.expand(*teacher_q.shape)
    return -th.gather(student_log_probs, dim=-1, index=teacher_actions).mean()


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

    :param student_q: student Q-values (logits), shape (batch, n_actions); receives gradients
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
    if student_q.dim() != 2:
        raise ValueError(f"`student_q` must have shape (batch, n_actions), got {tuple(student_q.shape)}")
    if teacher_q.dim() not in (2, 3) or teacher_q.shape[-2:] != student_q.shape:
        raise ValueError(
            "`teacher_q` must have shape (batch, n_actions) or (n_teachers, batch, n_actions) "
            f"matching `student_q` {tuple(student_q.shape)}, got {tuple(teacher_q.shape)}"
        )
    if teacher_q.dim() == 3 and reduction == "mean_probs":
        teacher_q = ensemble_teacher_q(teacher_q, loss, temperature)
    return _LOSS_FUNCTIONS[loss](student_q, teacher_q, temperature=temperature)
