"""
Cheap diagnostics of a distillation, shared by EnsembleDistillDQN and RealTimeDistillDQN.

They are computed from Q-values a gradient step already has (no extra forward pass), once per ``train()``
call, and moved to the CPU in one transfer. They answer "whom does the student follow?":

- ``agreement``: the rate at which a teacher's greedy action is the student's greedy action;
- ``entropy``: the mean entropy of a member's distribution ``softmax(q / tau)`` at the distillation
  temperature (``log(n_actions)`` for a uniform distribution, 0 for a one-hot one);
- ``one_hot_rate``: the fraction of states on which that distribution puts more than
  :data:`ONE_HOT_PROBABILITY` on one action.

A teacher whose distribution is near one-hot on most states while another teacher's is not dominates a
reverse-KL vote (Sun & Fazli, Ensemble Policy Distillation, Eq. 4) because of the scale of its Q-values,
not because it is better: :func:`one_hot_dominance` detects it.
"""

import warnings

import numpy as np
import torch as th
from stable_baselines3.common.logger import Logger
from torch.nn import functional as F

#: A distribution is "near one-hot" when its largest probability is above this
ONE_HOT_PROBABILITY = 0.99
#: A teacher dominates when it is near one-hot on more than this fraction of states and another teacher is not
ONE_HOT_STATES_FRACTION = 0.5


def agreement_rate(q_values: th.Tensor, other_q_values: th.Tensor) -> th.Tensor:
    """
    Rate at which two sets of Q-values have the same greedy action, ``mean_batch 1[argmax q = argmax q']``.

    :param q_values: shape (..., batch, n_actions)
    :param other_q_values: broadcastable to ``q_values``
    :return: shape (...) broadcast, in [0, 1]
    """
    return (q_values.argmax(dim=-1) == other_q_values.argmax(dim=-1)).float().mean(dim=-1)


def softmax_entropy(q_values: th.Tensor, temperature: float) -> th.Tensor:
    """
    Mean entropy of ``p = softmax(q / tau)``: ``mean_batch -sum_a p(a) log p(a)``.

    :param q_values: shape (..., batch, n_actions)
    :param temperature: the softmax temperature tau (> 0)
    :return: shape (...), in [0, log(n_actions)]
    """
    log_probs = F.log_softmax(q_values / temperature, dim=-1)
    return -(log_probs.exp() * log_probs).sum(dim=-1).mean(dim=-1)


def one_hot_rate(q_values: th.Tensor, temperature: float, threshold: float = ONE_HOT_PROBABILITY) -> th.Tensor:
    """
    Fraction of states on which ``softmax(q / tau)`` puts more than ``threshold`` on one action.

    :param q_values: shape (..., batch, n_actions)
    :param temperature: the softmax temperature tau (> 0)
    :param threshold: the probability above which a distribution is near one-hot
    :return: shape (...), in [0, 1]
    """
    return (F.softmax(q_values / temperature, dim=-1).amax(dim=-1) > threshold).float().mean(dim=-1)


def one_hot_dominance(one_hot_rates: np.ndarray, fraction: float = ONE_HOT_STATES_FRACTION) -> int | None:
    """
    The teacher whose distribution is near one-hot on most states while the other teachers' are not.

    :param one_hot_rates: each teacher's :func:`one_hot_rate`, shape (n_teachers,)
    :param fraction: "most states": the fraction above which a teacher counts as near one-hot
    :return: the index of the most one-hot teacher, if it is above ``fraction`` and every other teacher is
        at or below it; else None
    """
    above = np.flatnonzero(one_hot_rates > fraction)
    if len(above) == 1 and len(one_hot_rates) > 1:
        return int(above[0])
    return None


def record_ensemble_diagnostics(
    logger: Logger,
    teacher_q: th.Tensor,
    student_q: th.Tensor,
    temperature: float,
    teacher_spread: th.Tensor | None = None,
    teacher_weights: th.Tensor | None = None,
) -> np.ndarray:
    """
    Log, for each teacher j of an ensemble, ``train/agreement_teacher_j`` (its greedy action is the student's),
    ``train/entropy_teacher_j`` and ``train/one_hot_rate_teacher_j`` of its distribution at the temperature,
    with ``train/q_spread_teacher_j`` and ``train/weight_teacher_j`` when given, and the student's
    ``train/entropy_student``. Warn when one teacher is near one-hot on most states while the others are not.
    One device-to-host transfer.

    :param logger: the model's logger
    :param teacher_q: the teachers' Q-values as the loss sees them (scaled if scaled), shape (M, batch, n_actions)
    :param student_q: the student's Q-values, shape (batch, n_actions)
    :param temperature: the distillation temperature tau
    :param teacher_spread: each teacher's running Q-value spread, shape (M,), or None
    :param teacher_weights: each teacher's weight in the loss, shape (M,), or None
    :return: the one-hot rates, shape (M,)
    """
    n_teachers = teacher_q.shape[0]
    with th.no_grad():
        columns = {
            "agreement": agreement_rate(teacher_q, student_q),
            "entropy": softmax_entropy(teacher_q, temperature),
            "one_hot_rate": one_hot_rate(teacher_q, temperature),
        }
        if teacher_spread is not None:
            columns["q_spread"] = teacher_spread
        if teacher_weights is not None:
            columns["weight"] = teacher_weights
        # (n_columns + 1, M): the student's entropy in the last row, repeated; one transfer
        student_entropy = softmax_entropy(student_q, temperature).expand(n_teachers)
        table = th.stack([*(column.float() for column in columns.values()), student_entropy]).cpu().numpy()
    for row, name in enumerate(columns):
        for teacher_idx in range(n_teachers):
            logger.record(f"train/{name}_teacher_{teacher_idx}", float(table[row, teacher_idx]))
    logger.record("train/entropy_student", float(table[-1, 0]))
    one_hot_rates = table[list(columns).index("one_hot_rate")]
    dominant = one_hot_dominance(one_hot_rates)
    if dominant is not None:
        warnings.warn(
            f"Teacher {dominant}'s distribution at temperature {temperature} is near one-hot on most states "
            "while the other teachers' are not: it dominates the student's reverse-KL vote because of the scale "
            "of its Q-values, whether or not it is the best (see train/one_hot_rate_teacher_* and "
            "train/q_spread_teacher_*). Consider `temperature_scaling='spread'`.",
            stacklevel=2,
        )
    return one_hot_rates


def record_students_diagnostics(
    logger: Logger,
    teacher_q: th.Tensor,
    students_q: th.Tensor,
    temperature: float,
) -> None:
    """
    Log, for each student k distilled from one teacher, ``train/agreement_student_k`` (its greedy action is
    the teacher's) and ``train/entropy_student_k``, and the teacher's ``train/entropy_teacher`` and
    ``train/one_hot_rate_teacher``. One device-to-host transfer.

    :param logger: the model's logger
    :param teacher_q: the teacher's Q-values, shape (batch, n_actions)
    :param students_q: the students' Q-values, shape (K, batch, n_actions)
    :param temperature: the distillation temperature tau
    """
    n_students = students_q.shape[0]
    with th.no_grad():
        teacher_stats = th.stack([softmax_entropy(teacher_q, temperature), one_hot_rate(teacher_q, temperature)])
        table = th.stack(
            [
                agreement_rate(students_q, teacher_q),
                softmax_entropy(students_q, temperature),
                *teacher_stats.reshape(2, 1).expand(2, n_students),
            ]
        )
        table_np = table.float().cpu().numpy()
    for student_idx in range(n_students):
        logger.record(f"train/agreement_student_{student_idx}", float(table_np[0, student_idx]))
        logger.record(f"train/entropy_student_{student_idx}", float(table_np[1, student_idx]))
    logger.record("train/entropy_teacher", float(table_np[2, 0]))
    logger.record("train/one_hot_rate_teacher", float(table_np[3, 0]))
