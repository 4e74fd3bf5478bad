"""
Policies of MultiTaskPolicyDistillation: one frozen teacher policy per task and one student, a shared trunk
with one output head per task (Rusu et al. 2015), in one module so that all are saved with the model.
"""

from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, FlattenExtractor, create_mlp
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

from sb3_distill.common.teachers import Teacher


class MultiTaskQNetwork(nn.Module):
    """
    A shared trunk (a features extractor on the padded observation, then an MLP) and one linear head per task,
    giving the task's scores (Q-values, or logits for a logit teacher). Laid out as SB3's ``QNetwork``
    (``features_extractor``, then ``create_mlp``) so that trunk + one head is a DQN's ``q_net``: vector tasks use
    SB3's ``FlattenExtractor`` (an MLP trunk), image tasks a CNN (e.g. ``NatureCNN``, ``CompactNatureCNN`` or the
    MinAtar network), each on the channel-padded images.

    :param observation_space: the padded observation space (a vector ``Box``, or channel-first images)
    :param n_actions: each task's number of actions
    :param features_extractor: the trunk's features extractor (built on ``observation_space``)
    :param net_arch: the hidden layer sizes after the extractor (empty: the heads are linear in its features)
    :param activation_fn: the activation of those hidden layers
    :param normalize_images: whether to divide image observations by 255 first (as SB3's policies)
    """

    def __init__(
        self,
        observation_space: spaces.Box,
        n_actions: list[int],
        features_extractor: BaseFeaturesExtractor,
        net_arch: list[int],
        activation_fn: type[nn.Module] = nn.ReLU,
        normalize_images: bool = True,
    ) -> None:
        super().__init__()
        self.observation_space = observation_space
        self.n_actions = list(n_actions)
        self.normalize_images = normalize_images
        self.features_extractor = features_extractor
        # output_dim -1: the hidden layers and their activations only
        self.trunk = nn.Sequential(*create_mlp(features_extractor.features_dim, -1, net_arch, activation_fn))
        features_dim = net_arch[-1] if net_arch else features_extractor.features_dim
        self.heads = nn.ModuleList(nn.Linear(features_dim, n) for n in n_actions)

    def features(self, observations: th.Tensor) -> th.Tensor:
        """The shared trunk's output, (batch, features_dim), from padded observations (batch, *shape)."""
        # As SB3's BaseModel.extract_features: images / 255 (if normalize_images), vectors as float
        preprocessed = preprocess_obs(observations, self.observation_space, normalize_images=self.normalize_images)
        return self.trunk(self.features_extractor(preprocessed))

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
    :param net_arch: the student trunk's hidden layer sizes after its features extractor
    :param activation_fn: the activation of those hidden layers
    :param features_extractor_class: the student trunk's features extractor (``FlattenExtractor``: an MLP trunk
        on vectors; a CNN for images)
    :param features_extractor_kwargs: its keyword arguments
    :param normalize_images: whether the student divides image observations by 255 (as SB3's ``CnnPolicy``)
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
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            observation_space,
            action_space,
            features_extractor_class=features_extractor_class,
            features_extractor_kwargs=features_extractor_kwargs,
            normalize_images=normalize_images,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
        )
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
        # Frozen, in evaluation mode for good (the list itself too: set_training_mode never switches it)
        self.teachers.eval()
        self.teachers.requires_grad_(False)
        padded_space = observation_space["obs"]
        assert isinstance(padded_space, spaces.Box)
        # `features_extractor_kwargs` as BaseModel completed it (`normalized_image=True` without normalize_images)
        self.student = MultiTaskQNetwork(
            padded_space,
            [int(space.n) for space in task_action_spaces],
            features_extractor_class(padded_space, **self.features_extractor_kwargs),
            self.net_arch,
            activation_fn,
            normalize_images,
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
            features_extractor_class=self.features_extractor_class,
            features_extractor_kwargs=self.features_extractor_kwargs,
            normalize_images=self.normalize_images,
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
