"""
Policies of MultiTaskPolicyDistillation: one frozen teacher policy per task and one student, a shared trunk
with one output head per task (Rusu et al. 2015), in one module so that all are saved with the model.
"""

from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.torch_layers import create_mlp
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

from sb3_distill.common.teachers import Teacher


class MultiTaskQNetwork(nn.Module):
    """
    A shared trunk (an MLP on the flattened padded observation) and one linear head per task, giving the
    task's scores (Q-values, or logits for a logit teacher). Laid out as SB3's ``QNetwork`` (``create_mlp``) so
    that trunk + one head is a DQN's ``q_net``.

    :param input_dim: size of the flattened padded observation
    :param n_actions: each task's number of actions
    :param net_arch: the trunk's hidden layer sizes (empty: the heads are linear in the observation)
    :param activation_fn: the trunk's activation
    """

    def __init__(
        self, input_dim: int, n_actions: list[int], net_arch: list[int], activation_fn: type[nn.Module] = nn.ReLU
    ) -> None:
        super().__init__()
        self.n_actions = list(n_actions)
        # output_dim -1: the hidden layers and their activations only
        self.trunk = nn.Sequential(*create_mlp(input_dim, -1, net_arch, activation_fn))
        features_dim = net_arch[-1] if net_arch else input_dim
        self.heads = nn.ModuleList(nn.Linear(features_dim, n) for n in n_actions)

    def features(self, observations: th.Tensor) -> th.Tensor:
        """The shared trunk's output, (batch, features_dim), from padded observations (batch, *shape)."""
        return self.trunk(observations.flatten(start_dim=1).float())

    def forward(self, observations: th.Tensor, tasks: th.Tensor) -> th.Tensor:
        """
        Each observation's scores by its own task's head.

        :param observations: padded observations, shape (batch, *shape)
        :param tasks: the task index of each, shape (batch,)
        :return: scores, shape (batch, max n_actions), ``-inf`` beyond a task's actions
        """
        features = self.features(observations)
        scores = th.full((len(features), max(self.n_actions)), -th.inf, device=features.device)
        for task, head in enumerate(self.heads):
            rows = tasks == task
            if rows.any():
                scores[rows, : self.n_actions[task]] = head(features[rows])
        return scores


class MultiTaskDistillationPolicy(BasePolicy):
    """
    One frozen teacher policy per task (plain SB3 policies, on each task's own spaces) and the multi-task
    student :class:`MultiTaskQNetwork`. ``predict()`` takes :class:`~sb3_distill.common.multitask.MultiTaskVecEnv`
    observations (``{"obs": padded, "task": index}``) and acts greedily with the student's head of each task.

    :param observation_space: the multi-task ``Dict`` observation space
    :param action_space: ``Discrete(max n_actions)``
    :param lr_schedule: Learning rate schedule (the teachers need one to be built; the student is trained
        by this policy's ``optimizer``)
    :param tasks: the task names, in order
    :param task_observation_spaces: each task's own observation space (the teacher's)
    :param task_action_spaces: each task's own action space
    :param teacher_policy_classes: each teacher's SB3 policy class
    :param teacher_policy_kwargs: each teacher policy's constructor parameters
    :param net_arch: the student trunk's hidden layer sizes
    :param activation_fn: the student trunk's activation
    :param optimizer_class: The optimizer of the student
    :param optimizer_kwargs: Additional keyword arguments, excluding the learning rate, to pass to the optimizer
    """

    teachers: nn.ModuleList
    student: MultiTaskQNetwork

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_space: spaces.Discrete,
        lr_schedule: Schedule,
        tasks: list[str],
        task_observation_spaces: list[spaces.Box],
        task_action_spaces: list[spaces.Discrete],
        teacher_policy_classes: list[type[BasePolicy]],
        teacher_policy_kwargs: list[dict[str, Any]],
        net_arch: list[int],
        activation_fn: type[nn.Module] = nn.ReLU,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(observation_space, action_space, optimizer_class=optimizer_class, optimizer_kwargs=optimizer_kwargs)
        self.tasks = list(tasks)
        self.task_observation_spaces = list(task_observation_spaces)
        self.task_action_spaces = list(task_action_spaces)
        self.teacher_policy_classes = list(teacher_policy_classes)
        self.teacher_policy_kwargs = list(teacher_policy_kwargs)
        self.net_arch = list(net_arch)
        self.activation_fn = activation_fn
        self.teachers = nn.ModuleList(
            policy_class(obs_space, action_space_, lr_schedule, **kwargs)
            for policy_class, obs_space, action_space_, kwargs in zip(
                teacher_policy_classes, task_observation_spaces, task_action_spaces, teacher_policy_kwargs, strict=True
            )
        )
        for teacher in self.teachers:
            teacher.set_training_mode(False)  # type: ignore[operator]
        self.teachers.requires_grad_(False)
        shape = observation_space["obs"].shape
        assert shape is not None
        self.student = MultiTaskQNetwork(
            int(np.prod(shape)), [int(space.n) for space in task_action_spaces], self.net_arch, activation_fn
        )
        self.optimizer = self.optimizer_class(self.student.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)  # type: ignore[call-arg]

    @property
    def teacher_adapters(self) -> list[Teacher]:
        """Each task's teacher seen through its :class:`~sb3_distill.common.teachers.Teacher` adapter."""
        return [Teacher.for_policy(teacher) for teacher in self.teachers]  # type: ignore[arg-type]

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return dict(
            observation_space=self.observation_space,
            action_space=self.action_space,
            lr_schedule=self._dummy_schedule,
            tasks=self.tasks,
            task_observation_spaces=self.task_observation_spaces,
            task_action_spaces=self.task_action_spaces,
            teacher_policy_classes=self.teacher_policy_classes,
            teacher_policy_kwargs=self.teacher_policy_kwargs,
            net_arch=self.net_arch,
            activation_fn=self.activation_fn,
            optimizer_class=self.optimizer_class,
            optimizer_kwargs=self.optimizer_kwargs,
        )

    @staticmethod
    def _dummy_schedule(_: float) -> float:
        return 0.0

    def set_training_mode(self, mode: bool) -> None:
        """
        Put the student in training or evaluation mode; the teachers stay in evaluation mode.

        :param mode: True for training mode
        """
        self.student.train(mode)
        self.training = mode

    def forward(self, obs: PyTorchObs, deterministic: bool = True) -> th.Tensor:
        return self._predict(obs, deterministic=deterministic)

    def _predict(self, observation: PyTorchObs, deterministic: bool = True) -> th.Tensor:
        assert isinstance(observation, dict), "MultiTaskVecEnv observations are a dict"
        # The greedy action of each observation's task head
        return self.student(observation["obs"], observation["task"].long().flatten()).argmax(dim=1)


MultiInputPolicy = MultiTaskDistillationPolicy
