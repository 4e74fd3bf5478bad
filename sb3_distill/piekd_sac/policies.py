import re
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy, ContinuousCritic
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, FlattenExtractor
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from stable_baselines3.sac.policies import LOG_STD_MAX, LOG_STD_MIN, Actor, SACPolicy
from torch import nn

from sb3_distill.common.torch_layers import MemberStack, StackedLinear, stack_mlps
from sb3_distill.common.utils import fast_optimizer_kwargs, set_training_flag


class StackedActor(MemberStack):
    """
    The actors of K SAC agents (squashed diagonal Gaussian policies, SB3's ``Actor`` without gSDE) as one
    module: a stacked MLP trunk and stacked mean and log-std heads, shape (K, batch, action_dim).

    Build it with :meth:`from_actors` from K SB3 ``Actor`` objects, which gives each member SB3's own
    initialisation. :meth:`member` gives one member as an SB3 policy (``predict``, ``evaluate_policy``);
    :meth:`copy_member_to` / :meth:`copy_member_from` copy a member to and from an SB3 ``Actor``.

    :param observation_space: Observation space
    :param action_space: Action space
    :param latent_pi: the stacked hidden layers (:func:`stack_mlps`; empty when ``net_arch`` is empty)
    :param mu: the stacked mean head
    :param log_std: the stacked log-std head
    :param normalize_images: Whether to divide image observations by 255
    """

    optimizer: th.optim.Optimizer

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        latent_pi: nn.Sequential,
        mu: StackedLinear,
        log_std: StackedLinear,
        normalize_images: bool = True,
    ) -> None:
        super().__init__(mu.n_members)
        self.observation_space = observation_space
        self.action_space = action_space
        self.latent_pi = latent_pi
        self.mu = mu
        self.log_std = log_std
        self.normalize_images = normalize_images

    @classmethod
    def from_actors(cls, actors: Sequence[Actor]) -> "StackedActor":
        """
        Stack K SB3 SAC ``Actor`` objects with one architecture (``FlattenExtractor``, no gSDE).

        :param actors: the members; their current weights become the stacked weights
        :return: the stacked actors
        """
        first = actors[0]
        latent_pi = stack_mlps([actor.latent_pi for actor in actors])
        # The heads read the last hidden layer of their own member, or the observation when there is none
        shared = len(latent_pi) == 0
        mu = StackedLinear.from_modules([actor.mu for actor in actors], shared_input=shared)  # type: ignore[misc]
        log_std = StackedLinear.from_modules([actor.log_std for actor in actors], shared_input=shared)  # type: ignore[misc]
        return cls(first.observation_space, first.action_space, latent_pi, mu, log_std, first.normalize_images)

    def _paired_layers(self, module: nn.Module) -> list[tuple[Any, Any, int]]:
        """The stacked linear layers, each paired with the layer of an SB3 ``Actor`` it stacks."""
        actor = cast(Actor, module)
        stacked = [layer for layer in self.latent_pi if isinstance(layer, StackedLinear)] + [self.mu, self.log_std]
        plain = [layer for layer in actor.latent_pi if isinstance(layer, nn.Linear)] + [actor.mu, actor.log_std]
        if len(stacked) != len(plain):
            raise ValueError(f"`{type(module).__name__}` does not have the architecture of the stacked members")
        return [(stacked_layer, plain_layer, 0) for stacked_layer, plain_layer in zip(stacked, plain, strict=True)]

    def member(self, member: int) -> "ActorMemberView":
        """
        One member seen as an SB3 policy (see :class:`ActorMemberView`).

        :param member: index of the member, in [0, K)
        :return: the view
        """
        self._check_member(member)
        return ActorMemberView(self, member)

    def get_action_dist_params(self, obs: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """
        Mean and log standard deviation of every member's Gaussian, before the tanh squashing.

        :param obs: observations, shape (batch, *obs_shape)
        :return: means and clamped log standard deviations, each of shape (K, batch, action_dim)
        """
        features = cast(th.Tensor, preprocess_obs(obs, self.observation_space, normalize_images=self.normalize_images)).float()
        # (batch, obs_dim) -> (K, batch, hidden), or (batch, obs_dim) seen by both heads without hidden layers
        latent = self.latent_pi(features.flatten(1))
        log_std = th.clamp(self.log_std(latent), LOG_STD_MIN, LOG_STD_MAX)
        return self.mu(latent), log_std

    def action_log_prob(self, obs: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """
        Sample a squashed action of every member (reparametrised) with its log-probability,
        as ``SquashedDiagGaussianDistribution.log_prob_from_params``.

        :param obs: observations, shape (batch, *obs_shape)
        :return: actions in [-1, 1], shape (K, batch, action_dim), and log-probabilities, shape (K, batch)
        """
        mean, log_std = self.get_action_dist_params(obs)
        std = log_std.exp()
        gaussian_actions = mean + std * th.randn_like(mean)
        actions = th.tanh(gaussian_actions)
        # Gaussian log-density, summed over action dimensions: (K, batch)
        log_prob = (-0.5 * ((gaussian_actions - mean) / std).pow(2) - log_std - 0.5 * np.log(2 * np.pi)).sum(dim=-1)
        # Change of variables of the tanh squashing (SB3's TanhBijector.log_prob_correction, epsilon 1e-6)
        log_prob = log_prob - th.log(1 - actions.pow(2) + 1e-6).sum(dim=-1)
        return actions, log_prob

    def forward(self, obs: th.Tensor, members: th.Tensor | int, deterministic: bool = False) -> th.Tensor:
        """
        One squashed action per observation, each from its own member.

        :param obs: observations, shape (batch, *obs_shape)
        :param members: the member acting for each observation, shape (batch,) (long), or one member for all
        :param deterministic: the tanh of the mean instead of a sample
        :return: actions in [-1, 1], shape (batch, action_dim)
        """
        mean, log_std = self.get_action_dist_params(obs)
        rows = th.arange(mean.shape[1], device=mean.device)
        # (K, batch, action_dim) -> (batch, action_dim): each observation's own member
        mean, log_std = mean[members, rows], log_std[members, rows]
        if deterministic:
            return th.tanh(mean)
        return th.tanh(mean + log_std.exp() * th.randn_like(mean))

    def set_training_mode(self, mode: bool) -> None:
        """Put the actors in training or evaluation mode (as ``BasePolicy.set_training_mode``)."""
        set_training_flag((self,), mode)


class StackedCritic(MemberStack):
    """
    The critics of K SAC agents, ``n_critics`` Q-networks each (twin critics: 2K), as one stacked MLP
    (:func:`stack_mlps`). Member k owns the ``n_critics`` consecutive stacked Q-networks from ``k * n_critics``.

    :param observation_space: Observation space
    :param q_net: the stacked Q-networks (K * n_critics members)
    :param n_members: number of SAC agents K
    :param n_critics: number of Q-networks of each agent
    :param normalize_images: Whether to divide image observations by 255
    """

    optimizer: th.optim.Optimizer

    def __init__(
        self,
        observation_space: spaces.Space,
        q_net: nn.Sequential,
        n_members: int,
        n_critics: int,
        normalize_images: bool = True,
    ) -> None:
        super().__init__(n_members, group_size=n_critics)
        self.observation_space = observation_space
        self.q_net = q_net
        self.n_critics = n_critics
        self.normalize_images = normalize_images

    @classmethod
    def from_critics(cls, critics: Sequence[ContinuousCritic]) -> "StackedCritic":
        """
        Stack K SB3 ``ContinuousCritic`` objects (each with ``n_critics`` Q-networks, ``FlattenExtractor``).

        :param critics: the members; their current weights become the stacked weights
        :return: the stacked critics
        """
        q_net = stack_mlps([q_net for critic in critics for q_net in critic.q_networks])  # type: ignore[misc]
        first = critics[0]
        return cls(first.observation_space, q_net, len(critics), first.n_critics, first.normalize_images)

    def _paired_layers(self, module: nn.Module) -> list[tuple[Any, Any, int]]:
        """The stacked linear layers, each paired with the layer of Q-network j of an SB3 ``ContinuousCritic``."""
        stacked = [layer for layer in self.q_net if isinstance(layer, StackedLinear)]
        pairs = []
        for j, q_net in enumerate(cast(ContinuousCritic, module).q_networks):
            plain = [layer for layer in q_net if isinstance(layer, nn.Linear)]  # type: ignore[attr-defined]
            if len(plain) != len(stacked) or j >= self.n_critics:
                raise ValueError(f"`{type(module).__name__}` does not have the architecture of the stacked members")
            pairs += [(stacked_layer, plain_layer, j) for stacked_layer, plain_layer in zip(stacked, plain, strict=True)]
        return pairs

    def forward(self, obs: th.Tensor, actions: th.Tensor) -> th.Tensor:
        """
        Q-values of every critic of every member.

        :param obs: observations, shape (batch, *obs_shape)
        :param actions: actions in [-1, 1], shape (batch, action_dim) (the same for every member, e.g. from the
            replay buffer) or (K, batch, action_dim) (each member's own, e.g. from its actor)
        :return: Q-values, shape (K, n_critics, batch)
        """
        features = cast(th.Tensor, preprocess_obs(obs, self.observation_space, normalize_images=self.normalize_images))
        features = features.float().flatten(1)
        if actions.dim() == 3:
            # Each member's actions, seen by its n_critics Q-networks: (K, batch, obs_dim + action_dim)
            features = features.unsqueeze(0).expand(actions.shape[0], -1, -1)
        q_values = self.q_net(th.cat([features, actions], dim=-1))
        # (K * n_critics, batch, 1) -> (K, n_critics, batch)
        return q_values.reshape(self.n_members, self.n_critics, -1)

    def set_training_mode(self, mode: bool) -> None:
        """Put the critics in training or evaluation mode (as ``BasePolicy.set_training_mode``)."""
        set_training_flag((self,), mode)


class PIEKDSACPolicy(SACPolicy):
    """
    Policy for PIEKDSAC: the actors, critics and target critics of K SAC agents, each set stacked into one
    module (weights (K, ...), critics (K * n_critics, ...)), with one optimizer per set (Adam is elementwise,
    so one Adam over a stack is K independent Adams). ``predict()`` uses the member ``predict_member``
    (the algorithm keeps it on the member with the best recent return).

    Only vector observations (``FlattenExtractor``) and no gSDE are supported.

    :param observation_space: Observation space
    :param action_space: Action space
    :param lr_schedule: Learning rate schedule (could be constant)
    :param net_arch: The specification of the policy and value networks (as SAC's).
    :param activation_fn: Activation function
    :param use_sde: Must be False (gSDE is not supported)
    :param log_std_init: Initial value for the log standard deviation (unused without gSDE)
    :param use_expln: Unused without gSDE
    :param clip_mean: Unused without gSDE
    :param features_extractor_class: Features extractor to use; must be ``FlattenExtractor``
    :param features_extractor_kwargs: Keyword arguments to pass to the features extractor.
    :param normalize_images: Whether to normalize images or not,
         dividing by 255.0 (True by default)
    :param optimizer_class: The optimizer to use, ``th.optim.Adam`` by default
    :param optimizer_kwargs: Additional keyword arguments, excluding the learning rate, to pass to the optimizer.
        Adam and AdamW use PyTorch's fused implementation unless ``fused`` or ``foreach`` is given here.
    :param n_critics: Number of critic networks of each member.
    :param share_features_extractor: Must be False (a flatten layer has nothing to share)
    :param n_members: Number of SAC agents in the ensemble (K in Hong et al.)
    :param predict_member: The member ``predict()`` uses (a plain attribute, saved with the constructor
        parameters: an integer tensor in the state dict would break code that treats every entry as a float
        parameter, such as SB3's ``set_parameters`` round trips)
    """

    actor: StackedActor  # type: ignore[assignment]
    critic: StackedCritic  # type: ignore[assignment]
    critic_target: StackedCritic  # type: ignore[assignment]
    predict_member: int

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        use_sde: bool = False,
        log_std_init: float = -3,
        use_expln: bool = False,
        clip_mean: float = 2.0,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        n_critics: int = 2,
        share_features_extractor: bool = False,
        n_members: int = 3,
        predict_member: int = 0,
    ) -> None:
        if isinstance(n_members, bool) or not isinstance(n_members, int) or n_members < 1:
            raise ValueError(f"`n_members` must be an integer >= 1 (K, the ensemble size), got {n_members!r}")
        if use_sde:
            raise ValueError("`use_sde=True` is not supported by PIEKDSAC: its members are squashed Gaussian policies")
        if features_extractor_class is not FlattenExtractor:
            raise ValueError(
                f"PIEKDSAC's members are stacked MLPs on flat observations: `features_extractor_class` must be "
                f"FlattenExtractor (MlpPolicy), got {features_extractor_class.__name__}"
            )
        if share_features_extractor:
            raise ValueError("`share_features_extractor=True` is not supported by PIEKDSAC (a flatten layer has no weights)")
        self.n_members = n_members
        self.predict_member = int(predict_member)
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch=net_arch,
            activation_fn=activation_fn,
            use_sde=use_sde,
            log_std_init=log_std_init,
            use_expln=use_expln,
            clip_mean=clip_mean,
            features_extractor_class=features_extractor_class,
            features_extractor_kwargs=features_extractor_kwargs,
            normalize_images=normalize_images,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
            n_critics=n_critics,
            share_features_extractor=share_features_extractor,
        )

    def _build(self, lr_schedule: Schedule) -> None:
        """
        Create K SB3 actors and critics (each with SB3's initialisation), stack them, copy the critics into the
        stacked targets and create one optimizer for the actors and one for the critics.

        :param lr_schedule: Learning rate schedule; lr_schedule(1) is the initial learning rate
        """
        self.actor = StackedActor.from_actors([self.make_actor() for _ in range(self.n_members)]).to(self.device)
        critics = [self.make_critic() for _ in range(self.n_members)]
        self.critic = StackedCritic.from_critics(critics).to(self.device)
        self.critic_target = StackedCritic.from_critics(critics).to(self.device)
        # Target networks should always be in eval mode
        self.critic_target.set_training_mode(False)
        optimizer_kwargs = fast_optimizer_kwargs(self.optimizer_class, self.optimizer_kwargs, self.device)
        self.actor.optimizer = self.optimizer_class(self.actor.parameters(), lr=lr_schedule(1), **optimizer_kwargs)  # type: ignore[call-arg]
        self.critic.optimizer = self.optimizer_class(self.critic.parameters(), lr=lr_schedule(1), **optimizer_kwargs)  # type: ignore[call-arg]

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        # The member with the best recent return acts
        return self.actor(observation, self.predict_member, deterministic=deterministic)

    def set_training_mode(self, mode: bool) -> None:
        """
        Put the actors and critics in either training or evaluation mode (the targets stay in evaluation mode).

        :param mode: if true, set to training mode, else set to evaluation mode
        """
        set_training_flag((self.actor, self.critic), mode)
        self.training = mode

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(dict(n_members=self.n_members, predict_member=self.predict_member))
        return data

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        state_dict = _upgrade_state_dict(state_dict)
        # Files saved before `predict_member` was a plain attribute hold it as an integer buffer
        if "predict_member" in state_dict:
            self.predict_member = int(state_dict.pop("predict_member"))
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


# Files saved before the stacks were `nn.Sequential`s (sb3_distill <= the `StackedMlp` layout) name the i-th stacked
# linear layer `layers.{i}`; it is now entry 2 i of the Sequential (each linear layer is followed by its activation)
_OLD_STACK_KEY = re.compile(r"^(actor\.latent_pi|critic\.q_net|critic_target\.q_net)\.layers\.(\d+)\.")


def _upgrade_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``state_dict`` with the keys of files saved by earlier versions renamed to the current ones."""
    return {
        _OLD_STACK_KEY.sub(lambda match: f"{match.group(1)}.{2 * int(match.group(2))}.", key): value
        for key, value in state_dict.items()
    }


MlpPolicy = PIEKDSACPolicy


class ActorMemberView(BasePolicy):
    """
    One member of a :class:`StackedActor` seen as an SB3 policy: ``predict()`` (unscaled actions), ``forward``
    and ``evaluate_policy`` work as with SAC's ``Actor``, acting with that member alone. It holds no parameters
    of its own: the stack belongs to (and is saved, moved and optimized by) the policy, so its ``state_dict()``
    is empty. To get the member as a plain SB3 ``SAC`` (weights, optimizer state), use
    ``PIEKDSAC.export_member``, which calls :meth:`StackedActor.copy_member_to`.

    :param stack: the stacked actors
    :param member: index of the member, in [0, K)
    """

    stack: StackedActor

    def __init__(self, stack: StackedActor, member: int) -> None:
        super().__init__(
            stack.observation_space, stack.action_space, squash_output=True, normalize_images=stack.normalize_images
        )
        # Not registered as a submodule: the stack's parameters are not this module's
        self.__dict__["stack"] = stack
        self.member = member

    @property
    def device(self) -> th.device:
        """The stack's device (the view has no parameters to read it from)."""
        return self.stack.device_of_parameters()

    def forward(self, obs: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return self._predict(obs, deterministic=deterministic)

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        # The member's squashed action, in [-1, 1]: (batch, action_dim)
        return self.stack(observation, self.member, deterministic=deterministic)

    def extra_repr(self) -> str:
        return f"member={self.member} of {self.stack.n_members}"
