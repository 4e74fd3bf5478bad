"""
Policies of DistillPPO: PPO's own actor-critic (the student, trained by PPO and the distillation loss) with
the frozen teacher's SB3 policy as a submodule, so that the teacher is saved and loaded with the model.
"""

from typing import Any, ClassVar

import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.torch_layers import NatureCNN
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule


class DistillActorCriticPolicy(ActorCriticPolicy):
    """
    PPO's ``ActorCriticPolicy`` (the student pi_theta and its critic V_theta) holding a frozen teacher policy
    in ``self.teacher``. ``predict()``, ``forward()`` and the optimizer use the student only; the teacher is
    built after the student, outside its optimizer, and stays in evaluation mode without gradients.

    :param observation_space: Observation space
    :param action_space: Action space
    :param lr_schedule: Learning rate schedule (could be constant)
    :param teacher_policy_class: the teacher's SB3 policy class
    :param teacher_policy_kwargs: the teacher policy's constructor parameters (its ``_get_constructor_parameters()``
        without the spaces and schedule)
    :param kwargs: the student's network and optimizer: the keyword arguments of ``ActorCriticPolicy``
        (``net_arch``, ``activation_fn``, ``features_extractor_class``, ``optimizer_class``, ...)
    """

    #: The alias of the plain PPO policy that :meth:`DistillPPO.export_student` gives the student
    student_policy_alias: ClassVar[str] = "MlpPolicy"
    teacher: BasePolicy

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        *,
        teacher_policy_class: type[BasePolicy],
        teacher_policy_kwargs: dict[str, Any],
        **kwargs: Any,
    ) -> None:
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)
        self.teacher_policy_class = teacher_policy_class
        self.teacher_policy_kwargs = teacher_policy_kwargs
        # Built after the student: its parameters are not in the student's optimizer
        self.teacher = teacher_policy_class(observation_space, action_space, self._dummy_schedule, **teacher_policy_kwargs)
        self.teacher.set_training_mode(False)
        self.teacher.requires_grad_(False)

    @staticmethod
    def _dummy_schedule(_: float) -> float:
        return 0.0

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(teacher_policy_class=self.teacher_policy_class, teacher_policy_kwargs=self.teacher_policy_kwargs)
        return data

    def student_state_dict(self) -> dict[str, th.Tensor]:
        """The student's weights: the state dict without the teacher's entries (what a plain PPO policy loads)."""
        return {key: value for key, value in self.state_dict().items() if not key.startswith("teacher.")}

    def set_training_mode(self, mode: bool) -> None:
        """
        Put the student in training or evaluation mode; the teacher stays in evaluation mode.

        :param mode: True for training mode
        """
        super().set_training_mode(mode)
        self.teacher.set_training_mode(False)

    def evaluate_actions_and_distribution(
        self, obs: PyTorchObs, actions: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor | None, Distribution]:
        """
        ``evaluate_actions`` of ``ActorCriticPolicy`` that also returns the action distribution, so that the
        distillation loss needs no second forward pass.

        :param obs: Observation
        :param actions: Actions
        :return: estimated value, log likelihood of taking those actions, entropy of the action distribution,
            and the distribution pi_theta(s)
        """
        features = self.extract_features(obs)
        if self.share_features_extractor:
            latent_pi, latent_vf = self.mlp_extractor(features)
        else:
            pi_features, vf_features = features
            latent_pi = self.mlp_extractor.forward_actor(pi_features)
            latent_vf = self.mlp_extractor.forward_critic(vf_features)
        distribution = self._get_action_dist_from_latent(latent_pi)
        log_prob = distribution.log_prob(actions)
        values = self.value_net(latent_vf)
        return values, log_prob, distribution.entropy(), distribution


MlpPolicy = DistillActorCriticPolicy


class CnnPolicy(DistillActorCriticPolicy):
    """A :class:`DistillActorCriticPolicy` whose student uses PPO's ``CnnPolicy`` (``NatureCNN`` by default)."""

    student_policy_alias = "CnnPolicy"

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        *,
        teacher_policy_class: type[BasePolicy],
        teacher_policy_kwargs: dict[str, Any],
        features_extractor_class: type = NatureCNN,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            teacher_policy_class=teacher_policy_class,
            teacher_policy_kwargs=teacher_policy_kwargs,
            features_extractor_class=features_extractor_class,
            **kwargs,
        )
