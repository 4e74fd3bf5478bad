from collections import deque
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import SAC
from stable_baselines3.common.base_class import maybe_make_env
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, ReplayBufferSamples, Schedule
from stable_baselines3.common.utils import polyak_update

from sb3_distill.common.base import PolicyLayoutMixin
from sb3_distill.common.losses import (
    check_choice,
    piekd_critic_loss,
    piekd_policy_loss,
    sac_actor_loss,
    sac_critic_loss,
    sac_critic_targets,
    sac_ent_coef_loss,
)
from sb3_distill.common.save import AtomicSaveMixin
from sb3_distill.common.torch_layers import copy_member_parameter, member_polyak_update
from sb3_distill.common.utils import fast_optimizer_kwargs
from sb3_distill.common.validation import (
    SAC_NUMBERS,
    Choice,
    Number,
    UnsupportedSpaceError,
    check_arguments,
    check_finite_losses,
)
from sb3_distill.piekd_sac.policies import MlpPolicy, PIEKDSACPolicy, StackedActor, StackedCritic

SelfPIEKDSAC = TypeVar("SelfPIEKDSAC", bound="PIEKDSAC")

POLICY_SELECTIONS = ("uniform",)
TEACHER_SELECTIONS = ("best", "random")
KNOWLEDGE_SHARINGS = ("distill", "hardcopy", "none", "extra_updates")
#: The numeric arguments and what they accept (see :func:`sb3_distill.common.validation.check_arguments`)
NUMBERS = {
    **SAC_NUMBERS,
    "ensemble_size": Number(low=1, integer=True, meaning="K, the number of SAC agents"),
    "n_recent_episodes": Number(low=1, integer=True, meaning="M, the episodes of a member's statistic"),
    "distill_interval": Number(low=1, integer=True, meaning="I, environment steps between sharing phases"),
    "distill_epochs": Number(low=1, integer=True, meaning="epochs of a distillation phase"),
    "distill_batch_size": Number(low=1, integer=True, meaning="minibatch size of distillation"),
    "distill_gradient_steps": Choice(("buffer",), number=Number(low=1, integer=True, meaning="minibatches per epoch")),
    "distill_learning_rate": Number(low=0, low_open=True),
}


class PIEKDSAC(AtomicSaveMixin, PolicyLayoutMixin, SAC):
    """
    Periodic Intra-Ensemble Knowledge Distillation on SAC (Hong et al., "Periodic Intra-Ensemble Knowledge
    Distillation for Reinforcement Learning", Algorithm 1): an ensemble of K SAC agents (actor, twin critics,
    target critics and entropy coefficient each), randomly initialised, shares one replay buffer. At the
    start of every episode one member, drawn uniformly, acts for the whole episode; every gradient step
    samples one batch and updates all K members with their SAC losses. Every I steps the member with the
    best mean return over its last M training episodes is elected teacher and distilled into the others:
    their actors by the forward KL(teacher || student) between the Gaussians before the tanh squashing
    (Eq. 1; exact, tanh is a bijection), their critics by the squared error of each Q head to the teacher's on
    buffer (s, a) pairs (Eq. 2). The entropy coefficients are not distilled.

    The K members are stacked modules (weights (K, ...), critics (K * n_critics, ...), batched matmul), with
    one optimizer over each stack, so the ensemble costs no Python loop over members. One difference from
    SB3's ``SAC.train``, made for speed: the critic, actor and entropy-coefficient losses of a gradient step
    are computed on the same parameters before any optimizer step (the actor loss is back-propagated to the
    actors only), i.e. the actor is updated against the critics of before (not after) their update of the
    same step, as in the original SAC implementation. The target networks of all members are updated by one
    ``polyak_update`` over the stacked parameters, then the batch-norm statistics are copied as in SAC.
    ``predict()`` uses the member with the best recent return; ``model.actor.member(k)`` is member k as an SB3
    policy, and :meth:`export_member` turns a member into a plain SB3 ``SAC``.

    Default hyperparameters are SAC's (SB3), except the PIEKD ones, which follow the paper and the
    authors' code: K=3, I=5000, M=5, 5 distillation epochs of batches of 256 with a fresh Adam (lr 1e-3).

    :param policy: The policy model to use (MlpPolicy)
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param learning_rate: learning rate for adam optimizer,
        the same learning rate will be used for all networks (Q-Values, Actor and Value function)
        it can be a function of the current progress remaining (from 1 to 0)
    :param buffer_size: size of the replay buffer (D in the paper, shared by every member)
    :param learning_starts: how many steps of the model to collect transitions for before learning starts
    :param batch_size: Minibatch size for each gradient update (one batch feeds every member)
    :param tau: the soft update coefficient ("Polyak update", between 0 and 1)
    :param gamma: the discount factor
    :param train_freq: Update the model every ``train_freq`` steps. Alternatively pass a tuple of frequency and unit
        like ``(5, "step")`` or ``(2, "episode")``.
    :param gradient_steps: How many gradient steps to do after each rollout (see ``train_freq``)
        Set to ``-1`` means to do as many gradient steps as steps done in the environment
        during the rollout.
    :param action_noise: the action noise type (None by default), this can help
        for hard exploration problem. Cf common.noise for the different action noise type.
    :param replay_buffer_class: Replay buffer class to use (for instance ``HerReplayBuffer``).
        If ``None``, it will be automatically selected.
    :param replay_buffer_kwargs: Keyword arguments to pass to the replay buffer on creation.
    :param optimize_memory_usage: Enable a memory efficient variant of the replay buffer
        at a cost of more complexity.
    :param n_steps: When n_step > 1, uses n-step return (with the NStepReplayBuffer) when updating the Q-value network.
    :param ent_coef: Entropy regularization coefficient, one per member. (Equivalent to
        inverse of reward scale in the original SAC paper.)  Controlling exploration/exploitation trade-off.
        Set it to 'auto' to learn it automatically (and 'auto_0.1' for using 0.1 as initial value)
    :param target_update_interval: update the target network every ``target_network_update_freq``
        gradient steps.
    :param target_entropy: target entropy when learning ``ent_coef`` (``ent_coef = 'auto'``)
    :param use_sde: Must be False (gSDE is not supported)
    :param sde_sample_freq: Unused (gSDE is not supported)
    :param use_sde_at_warmup: Unused (gSDE is not supported)
    :param ensemble_size: Number of SAC agents (K in the paper; 3 in its experiments)
    :param n_recent_episodes: Number of recent training episodes whose mean return is a member's performance
        statistic R_k (M in the paper; 5, the authors' code)
    :param distill_interval: Number of environment steps between two knowledge-sharing phases (I in the paper;
        5000, the paper's grid-search value). The first phase comes I steps after the start of training,
        once ``learning_starts`` is past and the elected teacher has a statistic.
    :param policy_selection: How the member that acts for an episode is picked: ``"uniform"``, uniformly at
        random at the start of every episode, for each env separately (the paper's choice)
    :param teacher_selection: How the teacher is elected: ``"best"``, the member with the highest statistic
        R_k (the paper's choice), or ``"random"`` (the ablation of Sec. 5.4)
    :param knowledge_sharing: What a sharing phase does: ``"distill"`` (PIEKD, Eq. 1 and 2), ``"hardcopy"``
        (copy the teacher's actor and critics into the others, Sec. 5.3), ``"extra_updates"`` (as many extra SAC
        updates of every member as a distillation phase has gradient steps, Sec. 5.3) or ``"none"`` (the
        Ensemble-SAC baseline of Sec. 5.2)
    :param distill_epochs: Number of epochs of a distillation phase (5, the authors' code)
    :param distill_batch_size: Minibatch size of a distillation phase (256, the authors' code)
    :param distill_learning_rate: Learning rate of the fresh Adam optimizer of each distillation phase
        (1e-3, the authors' code); the members' SAC optimizers are not touched by distillation
    :param distill_gradient_steps: Number of minibatches per distillation epoch, or ``"buffer"`` for as many
        as the replay buffer holds (``buffer size // distill_batch_size``, drawn with replacement), the authors'
        sweep over the whole buffer, which costs about 20 000 gradient steps per phase at 1M transitions.
        The default, 200 (1000 gradient steps per phase, a fifth of the 5000 SAC updates between two phases),
        lowers the mean KL(teacher || student) by a factor of more than 10 in the tests.
    :param stats_window_size: Window size for the rollout logging, specifying the number of episodes to average
        the reported success rate, mean episode length, and mean reward over
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments to be passed to the policy on creation (each member's networks)
    :param verbose: Verbosity level: 0 for no output, 1 for info messages (such as device or wrappers used), 2 for
        debug messages
    :param seed: Seed for the pseudo random generators
    :param device: Device (cpu, cuda, ...) on which the code should be run.
        Setting it to auto, the code will be run on the GPU if possible.
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    """

    layout_arguments: ClassVar[dict[str, str]] = {"ensemble_size": "n_members"}
    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {  # type: ignore[assignment]
        "MlpPolicy": MlpPolicy,
    }
    policy: PIEKDSACPolicy  # type: ignore[assignment]
    actor: StackedActor  # type: ignore[assignment]
    critic: StackedCritic  # type: ignore[assignment]
    critic_target: StackedCritic  # type: ignore[assignment]
    log_ent_coef: th.Tensor | None
    recent_returns: list[deque[float]]
    acting_members: np.ndarray

    def __init__(
        self,
        policy: str | type[PIEKDSACPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 3e-4,
        buffer_size: int = 1_000_000,  # 1e6
        learning_starts: int = 100,
        batch_size: int = 256,
        tau: float = 0.005,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 1,
        gradient_steps: int = 1,
        action_noise: ActionNoise | None = None,
        replay_buffer_class: type[ReplayBuffer] | None = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        optimize_memory_usage: bool = False,
        n_steps: int = 1,
        ent_coef: str | float = "auto",
        target_update_interval: int = 1,
        target_entropy: str | float = "auto",
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        use_sde_at_warmup: bool = False,
        ensemble_size: int = 3,
        n_recent_episodes: int = 5,
        distill_interval: int = 5000,
        policy_selection: str = "uniform",
        teacher_selection: str = "best",
        knowledge_sharing: str = "distill",
        distill_epochs: int = 5,
        distill_batch_size: int = 256,
        distill_learning_rate: float = 1e-3,
        distill_gradient_steps: int | str = 200,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        # Make the env here (as SB3 would) so that a bad action space gets a clear error
        if env is not None:
            env = maybe_make_env(env, verbose)
            if not isinstance(env.action_space, spaces.Box):
                raise UnsupportedSpaceError(
                    f"PIEKDSAC needs a Box (continuous) action space, as SAC, got {env.action_space}; "
                    "for discrete actions see EnsembleDistillDQN"
                )
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            buffer_size=buffer_size,
            learning_starts=learning_starts,
            batch_size=batch_size,
            tau=tau,
            gamma=gamma,
            train_freq=train_freq,
            gradient_steps=gradient_steps,
            action_noise=action_noise,
            replay_buffer_class=replay_buffer_class,
            replay_buffer_kwargs=replay_buffer_kwargs,
            optimize_memory_usage=optimize_memory_usage,
            n_steps=n_steps,
            ent_coef=ent_coef,
            target_update_interval=target_update_interval,
            target_entropy=target_entropy,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            use_sde_at_warmup=use_sde_at_warmup,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=False,
        )
        self.ensemble_size = ensemble_size
        self.n_recent_episodes = n_recent_episodes
        self.distill_interval = distill_interval
        self.policy_selection = policy_selection
        self.teacher_selection = teacher_selection
        self.knowledge_sharing = knowledge_sharing
        self.distill_epochs = distill_epochs
        self.distill_batch_size = distill_batch_size
        self.distill_learning_rate = distill_learning_rate
        self.distill_gradient_steps = distill_gradient_steps
        # The state of the ensemble (saved; `_setup_model` keeps what `load()` restored)
        self.recent_returns = []
        self.acting_members = np.zeros(0, dtype=np.int64)
        self._episode_returns = np.zeros(0)
        # Whether each env's current episode is played by its member from its first step (not by the warm-up)
        self._member_played = np.zeros(0, dtype=bool)
        self.teacher: int | None = None
        self.n_sharing_phases = 0
        self._last_sharing_timestep = 0

        if _init_setup_model:
            self._setup_model()

    def _check_arguments(self) -> None:
        """Raise a ``ValueError`` or ``TypeError`` for a bad PIEKD argument (also after ``load(**kwargs)``)."""
        check_arguments(self, NUMBERS)
        check_choice(self.policy_selection, "policy_selection", POLICY_SELECTIONS)
        check_choice(self.teacher_selection, "teacher_selection", TEACHER_SELECTIONS)
        check_choice(self.knowledge_sharing, "knowledge_sharing", KNOWLEDGE_SHARINGS)
        if self.use_sde:
            raise ValueError("`use_sde=True` is not supported by PIEKDSAC: its members are squashed Gaussian policies")
        if not issubclass(self.policy_class, PIEKDSACPolicy):
            raise TypeError(f"`policy` must be 'MlpPolicy' or a subclass of PIEKDSACPolicy, got {self.policy_class.__name__}")

    def _setup_model(self) -> None:
        # Validate here, not in __init__: `load()` and rl-zoo's `--trained-agent` bypass __init__
        self._check_arguments()
        # The policy builds the K stacked members (`policy_kwargs` stays the user's)
        self._setup_policy_with_layout(super()._setup_model)
        # One entropy coefficient per member, shape (K,), and one Adam over them (K independent Adams)
        if self.log_ent_coef is not None:
            init_log_ent_coef = self.log_ent_coef.detach()
            self.log_ent_coef = init_log_ent_coef.repeat(self.ensemble_size).requires_grad_(True)
            self.ent_coef_optimizer = th.optim.Adam(  # type: ignore[assignment]
                [self.log_ent_coef],
                lr=self.lr_schedule(1),
                **fast_optimizer_kwargs(th.optim.Adam, {}, self.device),
            )
        # Each member's last M training returns (the statistic R_k); kept when `load()` restored them
        previous: list[Any] = (
            self.recent_returns if len(self.recent_returns) == self.ensemble_size else [[] for _ in range(self.ensemble_size)]
        )
        self.recent_returns = [deque(returns, maxlen=self.n_recent_episodes) for returns in previous]
        self._update_predict_member()

    def _setup_learn(
        self,
        total_timesteps: int,
        callback: MaybeCallback = None,
        reset_num_timesteps: bool = True,
        tb_log_name: str = "run",
        progress_bar: bool = False,
    ) -> tuple[int, BaseCallback]:
        total_timesteps, callback = super()._setup_learn(
            total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar
        )
        if reset_num_timesteps:
            self._last_sharing_timestep = 0
        # Policy selection (Algorithm 1, line 8) for the first episode of each env
        if reset_num_timesteps or len(self.acting_members) != self.n_envs:
            self.acting_members = np.random.randint(self.ensemble_size, size=self.n_envs)
            self._episode_returns = np.zeros(self.n_envs)
        if reset_num_timesteps or len(self._member_played) != self.n_envs:
            self._member_played = np.full(self.n_envs, self.num_timesteps >= self.learning_starts)
        return total_timesteps, callback

    def _sample_action(
        self,
        learning_starts: int,
        action_noise: ActionNoise | None = None,
        n_envs: int = 1,
    ) -> tuple[np.ndarray, np.ndarray]:
        """
        Each env's acting member (picked at the start of its episode) samples the action from its squashed
        Gaussian. Before ``learning_starts``, actions are uniformly random, as in SAC.

        :param learning_starts: Number of steps before learning for the warm-up phase.
        :param action_noise: Action noise that will be used for exploration
        :param n_envs: number of environments
        :return: action to take in the environment
            and scaled action that will be stored in the replay buffer.
        """
        if self.num_timesteps < learning_starts:
            scaled_action = self.policy.scale_action(np.array([self.action_space.sample() for _ in range(n_envs)]))
        else:
            assert self._last_obs is not None, "self._last_obs was not set"
            obs_tensor, _ = self.policy.obs_to_tensor(self._last_obs)
            members = th.as_tensor(self.acting_members, device=self.device)
            with th.no_grad():
                # Every member's Gaussian in one stacked pass, then each env's own member: (n_envs, action_dim)
                scaled_action = self.actor(obs_tensor, members).cpu().numpy()
            # (n_envs, action_dim) -> (n_envs, *action_space.shape), as SB3's predict() does for Box actions
            scaled_action = scaled_action.reshape((-1, *self.action_space.shape))  # type: ignore[misc]
        # Add noise to the action (improve exploration)
        if action_noise is not None:
            scaled_action = np.clip(scaled_action + action_noise(), -1, 1)
        # We store the scaled action in the buffer
        buffer_action = scaled_action
        action = self.policy.unscale_action(scaled_action)
        return action, buffer_action

    def _store_transition(
        self,
        replay_buffer: ReplayBuffer,
        buffer_action: np.ndarray,
        new_obs: np.ndarray | dict[str, np.ndarray],
        reward: np.ndarray,
        dones: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        super()._store_transition(replay_buffer, buffer_action, new_obs, reward, dones, infos)
        # The running return of each env's episode, in original (not normalized) rewards
        original_reward = self._vec_normalize_env.get_original_reward() if self._vec_normalize_env is not None else reward
        self._episode_returns += original_reward
        for env_idx in np.flatnonzero(dones):
            # The statistic R_k of the member that played the episode (Algorithm 1, line 14): the Monitor
            # wrapper's return when there is one (it counts the rewards of unwrapped env), else the running sum
            episode_info = infos[env_idx].get("episode")
            episode_return = float(episode_info["r"]) if episode_info is not None else float(self._episode_returns[env_idx])
            # Episodes (or their first steps) of the random warm-up were not the member's: not credited
            if self._member_played[env_idx]:
                self.recent_returns[self.acting_members[env_idx]].append(episode_return)
            self._episode_returns[env_idx] = 0.0
            # The next episode's first action is the member's unless the warm-up is still on (see `_sample_action`)
            self._member_played[env_idx] = self.num_timesteps >= self.learning_starts
            # Policy selection for the env's next episode (Algorithm 1, line 8)
            self.acting_members[env_idx] = np.random.randint(self.ensemble_size)
        if np.any(dones):
            self._update_predict_member()

    def dump_logs(self) -> None:
        # Each member's statistic R_k with the rollout logs
        for member, statistic in enumerate(self.recent_return_statistics()):
            self.logger.record(f"rollout/recent_return_member_{member}", float(statistic))
        super().dump_logs()

    def recent_return_statistics(self) -> np.ndarray:
        """
        Each member's performance statistic R_k: its mean return over its last M training episodes.

        :return: shape (K,), ``nan`` for a member without a finished episode
        """
        return np.array([np.mean(returns) if len(returns) > 0 else np.nan for returns in self.recent_returns])

    @property
    def best_member(self) -> int:
        """The member with the highest statistic R_k (member 0 while no member has finished an episode)."""
        statistics = self.recent_return_statistics()
        return 0 if np.all(np.isnan(statistics)) else int(np.nanargmax(statistics))

    def _update_predict_member(self) -> None:
        self.policy.predict_member = self.best_member

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        # Switch to train mode (this affects batch norm / dropout)
        self.policy.set_training_mode(True)
        # Update optimizers learning rate
        optimizers = [self.actor.optimizer, self.critic.optimizer]
        if self.ent_coef_optimizer is not None:
            optimizers += [self.ent_coef_optimizer]

        # Update learning rate according to lr schedule
        self._update_learning_rate(optimizers)

        # Joint training: every member's SAC update on each batch (Algorithm 1, lines 12-13)
        step_losses = []
        for gradient_step in range(gradient_steps):
            # Sample replay buffer: one batch for every member
            replay_data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            critic_loss, actor_loss, ent_coef, ent_coef_loss = self._sac_losses(replay_data)
            # Optimize every member's critics, actor and entropy coefficient (see `_optimize`)
            self._optimize(critic_loss, actor_loss, ent_coef_loss)

            # Update target networks
            if gradient_step % self.target_update_interval == 0:
                polyak_update(self.critic.parameters(), self.critic_target.parameters(), self.tau)
                # Copy running stats, see GH issue #996
                polyak_update(self.batch_norm_stats, self.batch_norm_stats_target, 1.0)
            step_losses.append(th.stack([critic_loss, actor_loss, ent_coef, ent_coef_loss]).detach())

        self._n_updates += gradient_steps
        # Each member's critic loss, actor loss, entropy coefficient and its loss, averaged over the steps: (4, K)
        critic_losses, actor_losses, ent_coefs, ent_coef_losses = self._mean_losses(step_losses)

        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/ent_coef", float(ent_coefs.mean()))
        self.logger.record("train/actor_loss", float(actor_losses.mean()))
        self.logger.record("train/critic_loss", float(critic_losses.mean()))
        if self.ent_coef_optimizer is not None:
            self.logger.record("train/ent_coef_loss", float(ent_coef_losses.mean()))

        # Intra-ensemble knowledge distillation every I steps (Algorithm 1, lines 16-22)
        if self.knowledge_sharing != "none" and self.num_timesteps - self._last_sharing_timestep >= self.distill_interval:
            self.share_knowledge()

    def _mean_losses(self, step_losses: list[th.Tensor]) -> np.ndarray:
        """
        Stop on a NaN or infinite loss, naming the member (one device synchronisation per call), else average.

        :param step_losses: each gradient step's losses, shape (4, K)
        :return: the losses averaged over the gradient steps, shape (4, K) (NaN without a gradient step)
        """
        if len(step_losses) == 0:
            return np.full((4, self.ensemble_size), np.nan)
        stats, members = th.stack(step_losses), [f"member_{k}" for k in range(self.ensemble_size)]
        names = ("critic_loss", "actor_loss", "ent_coef", "ent_coef_loss")
        check_finite_losses({name: (members, stats[:, i]) for i, name in enumerate(names)}, self._n_updates)
        # One transfer for all gradient steps: (gradient_steps, 4, K) -> (4, K)
        return stats.mean(dim=0).cpu().numpy()

    def _optimize(self, critic_loss: th.Tensor, actor_loss: th.Tensor, ent_coef_loss: th.Tensor) -> None:
        """
        One optimizer step of every member's critics, actor and entropy coefficient. Each member's losses depend
        only on its own stacked slots, so a backward pass of the losses summed over members gives each member its
        own gradients: one for the critic losses, one for the actor and entropy-coefficient losses. As in SB3, the
        critics get only the critic loss's gradient: the actor loss goes back to the actors' parameters only
        (``backward(inputs=...)``), through the critics of before their step.

        :param critic_loss: each member's critic loss, shape (K,)
        :param actor_loss: each member's actor loss, shape (K,)
        :param ent_coef_loss: each member's entropy-coefficient loss, shape (K,)
        """
        actor_parameters: list[th.Tensor] = list(self.actor.parameters())
        if self.log_ent_coef is not None:
            actor_parameters.append(self.log_ent_coef)
        # Clear the gradients (what zero_grad() does, without its per-call overhead)
        for param in [*actor_parameters, *self.critic.parameters()]:
            param.grad = None
        critic_loss.sum().backward()
        (actor_loss.sum() + ent_coef_loss.sum()).backward(inputs=actor_parameters)
        self.critic.optimizer.step()
        self.actor.optimizer.step()
        if self.ent_coef_optimizer is not None:
            self.ent_coef_optimizer.step()

    def _sac_losses(self, replay_data: ReplayBufferSamples) -> tuple[th.Tensor, th.Tensor, th.Tensor, th.Tensor]:
        """
        SAC's losses of every member on one batch, as in SB3's ``SAC.train`` (the math is in ``common/losses.py``).

        :param replay_data: the batch
        :return: each member's critic loss, actor loss, entropy coefficient and entropy coefficient loss, shape (K,)
        """
        # Action by each member's current actor for the sampled states: (K, batch, action_dim), (K, batch)
        actions_pi, log_prob = self.actor.action_log_prob(replay_data.observations)
        if self.ent_coef_optimizer is not None and self.log_ent_coef is not None:
            # Important: detach the variable from the graph so we don't change it with other losses
            ent_coef = th.exp(self.log_ent_coef.detach())
            assert isinstance(self.target_entropy, float)
            ent_coef_loss = sac_ent_coef_loss(self.log_ent_coef, log_prob, self.target_entropy)
        else:
            ent_coef = self.ent_coef_tensor.expand(self.ensemble_size)
            ent_coef_loss = th.zeros(self.ensemble_size, device=self.device)

        with th.no_grad():
            # Select action according to each member's policy: (K, batch, action_dim)
            next_actions, next_log_prob = self.actor.action_log_prob(replay_data.next_observations)
            # Compute the next Q values of each member's critic targets: (K, n_critics, batch)
            next_q_values = self.critic_target(replay_data.next_observations, next_actions)
            # For n-step replay, discount factor is gamma**n_steps (when no early termination)
            discounts = replay_data.discounts if replay_data.discounts is not None else self.gamma
            target_q_values = sac_critic_targets(
                replay_data.rewards, replay_data.dones, discounts, next_q_values, next_log_prob, ent_coef
            )

        # Current Q-values of each member's critics for the replay actions: (K, n_critics, batch)
        critic_loss = sac_critic_loss(self.critic(replay_data.observations, replay_data.actions), target_q_values)
        # Each member's actor loss, through its own critics: (K, n_critics, batch) -> (K,)
        actor_loss = sac_actor_loss(self.critic(replay_data.observations, actions_pi), log_prob, ent_coef)
        return critic_loss, actor_loss, ent_coef, ent_coef_loss

    def elect_teacher(self) -> int | None:
        """
        Teacher election (Algorithm 1, line 18): the member with the highest statistic R_k
        (``teacher_selection="best"``) or a uniformly random member (``"random"``).

        :return: the teacher's index, or None when no member has a statistic yet (``"best"``)
        """
        if self.teacher_selection == "random":
            return int(np.random.randint(self.ensemble_size))
        statistics = self.recent_return_statistics()
        if np.all(np.isnan(statistics)):
            return None
        return int(np.nanargmax(statistics))

    def share_knowledge(self) -> None:
        """
        One knowledge-sharing phase: teacher election, then ``knowledge_sharing`` from the teacher to every other
        member. Logs the teacher, each member's statistic and the policy KL and critic MSE between teacher and
        students before and after the phase.
        """
        teacher = self.elect_teacher()
        if teacher is None:
            # No member has finished a training episode: try again at the next gradient step
            return
        self.teacher = teacher
        self._last_sharing_timestep = self.num_timesteps
        self.n_sharing_phases += 1
        self.logger.record("train/teacher", teacher)
        self.logger.record("train/n_sharing_phases", self.n_sharing_phases)
        for member, statistic in enumerate(self.recent_return_statistics()):
            self.logger.record(f"train/recent_return_member_{member}", float(statistic))
        if self.ensemble_size == 1:
            # Nothing to distill or copy; the extra updates still run (the paper's Vanilla-SAC (extra), Sec. 5.3)
            if self.knowledge_sharing == "extra_updates":
                self._extra_updates()
            return
        policy_kl, critic_mse = self.distillation_gaps(teacher)
        self.logger.record("train/distill_policy_kl_before", policy_kl)
        self.logger.record("train/distill_critic_mse_before", critic_mse)
        if self.knowledge_sharing == "distill":
            self.distill(teacher)
        elif self.knowledge_sharing == "hardcopy":
            self.hard_copy(teacher)
        elif self.knowledge_sharing == "extra_updates":
            self._extra_updates()
        policy_kl, critic_mse = self.distillation_gaps(teacher)
        self.logger.record("train/distill_policy_kl_after", policy_kl)
        self.logger.record("train/distill_critic_mse_after", critic_mse)

    def _extra_updates(self) -> None:
        """
        As many SAC updates of every member, with the same batch size, as a distillation phase has steps (through
        :meth:`train`, whose ``train/`` losses then report these updates).
        """
        n_updates = self.distill_epochs * self._distill_batches_per_epoch()
        self.train(n_updates, self.distill_batch_size)
        self.logger.record("train/n_extra_updates", n_updates)

    def _distill_batches_per_epoch(self) -> int:
        if self.distill_gradient_steps == "buffer":
            assert self.replay_buffer is not None
            return max(1, self.replay_buffer.size() * self.n_envs // self.distill_batch_size)
        return int(self.distill_gradient_steps)

    def distillation_losses(self, observations: th.Tensor, actions: th.Tensor, teacher: int) -> tuple[th.Tensor, th.Tensor]:
        """
        The distillation losses of the students (every member but the teacher) on one batch.

        - Policy (Eq. 1): ``sum_students mean_batch KL(N_teacher || N_student)`` between the Gaussians before the
          tanh squashing, in closed form (:func:`~sb3_distill.common.losses.piekd_policy_loss`).
        - Critic (Eq. 2): ``sum_students sum_j mean_batch (Q_teacher,j(s, a) - Q_student,j(s, a))^2``, critic j of
          each student to the teacher's critic j (:func:`~sb3_distill.common.losses.piekd_critic_loss`).

        The teacher's outputs are detached: only the students receive gradients.

        :param observations: buffer states, shape (batch, *obs_shape)
        :param actions: buffer actions, shape (batch, action_dim)
        :param teacher: the teacher's index
        :return: the policy loss and the critic loss, scalars
        """
        # Every member's Gaussian: (K, batch, action_dim)
        mean, log_std = self.actor.get_action_dist_params(observations)
        # Every member's Q heads: (K, n_critics, batch)
        q_values = self.critic(observations, actions)
        return piekd_policy_loss(mean, log_std, teacher), piekd_critic_loss(q_values, teacher)

    def distillation_gaps(self, teacher: int, batch_size: int | None = None) -> tuple[float, float]:
        """
        The mean KL(teacher || student) of the policies and the mean squared error of the Q heads between the
        teacher and the students, on a fresh buffer batch (logged before and after each sharing phase).

        :param teacher: the teacher's index
        :param batch_size: the batch size (default: ``distill_batch_size``)
        :return: the mean policy KL and the mean critic squared error, over students, heads and the batch
        """
        assert self.replay_buffer is not None
        replay_data = self.replay_buffer.sample(batch_size or self.distill_batch_size, env=self._vec_normalize_env)
        n_students = self.ensemble_size - 1
        with th.no_grad():
            policy_loss, critic_loss = self.distillation_losses(replay_data.observations, replay_data.actions, teacher)
        return policy_loss.item() / n_students, critic_loss.item() / (n_students * self.critic.n_critics)

    def distill(self, teacher: int) -> None:
        """
        Knowledge distillation from the teacher to every other member (Algorithm 1, lines 19-20): ``distill_epochs``
        epochs of ``distill_gradient_steps`` minibatches, minimising the policy and critic losses of
        :meth:`distillation_losses` with a fresh Adam (``distill_learning_rate``). Then one soft update of the
        students' critic targets.

        The teacher's parameters, target critics, and every member's SAC optimizer state and entropy coefficient
        are left bit-identical: the teacher's slices get zero gradients, and a fresh Adam moves a parameter with
        zero gradients (and zero moments) by exactly 0.

        :param teacher: the teacher's index
        """
        assert self.replay_buffer is not None
        parameters = list(self.actor.parameters()) + list(self.critic.parameters())
        optimizer = th.optim.Adam(
            parameters, lr=self.distill_learning_rate, **fast_optimizer_kwargs(th.optim.Adam, {}, self.device)
        )
        self.policy.set_training_mode(True)
        for _ in range(self.distill_epochs):
            for _ in range(self._distill_batches_per_epoch()):
                replay_data = self.replay_buffer.sample(self.distill_batch_size, env=self._vec_normalize_env)
                policy_loss, critic_loss = self.distillation_losses(replay_data.observations, replay_data.actions, teacher)
                for param in parameters:
                    param.grad = None
                (policy_loss + critic_loss).backward()
                optimizer.step()
        # One soft update of the students' critic targets; the teacher's coefficient is 0 (its target is untouched)
        student_taus = self.critic.member_mask(self._students(teacher).float() * self.tau)
        member_polyak_update(list(self.critic.parameters()), list(self.critic_target.parameters()), student_taus)

    def _students(self, teacher: int) -> th.Tensor:
        """True for every student and False for the teacher, shape (K,)."""
        return th.arange(self.ensemble_size, device=self.device) != teacher

    def hard_copy(self, teacher: int) -> None:
        """
        Copy the teacher's actor, critics and target critics into every other member (the "hardcopy" ablation,
        Sec. 5.3). Entropy coefficients and optimizer states stay each member's own.

        :param teacher: the teacher's index
        """
        for stack in (self.actor, self.critic, self.critic_target):
            stack.copy_member_within_(teacher, self._students(teacher))

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """
        Get the action of the member with the best recent return (:attr:`best_member`) from an observation.
        Unlike SB3's default, the action is deterministic (the tanh of the Gaussian's mean) by default.

        :param observation: the input observation
        :param state: The last hidden states (unused, no recurrent policy)
        :param episode_start: The last masks (unused)
        :param deterministic: Whether or not to return deterministic actions.
        :return: the model's action and the next hidden state
        """
        return self.policy.predict(observation, state, episode_start, deterministic)

    def evaluate_members(
        self,
        env: GymEnv,
        n_eval_episodes: int = 10,
    ) -> dict[str, tuple[float, float]]:
        """
        Evaluate every member, each acting deterministically (the tanh of its Gaussian's mean).

        :param env: The evaluation environment (wrap it with ``Monitor`` to count the original rewards)
        :param n_eval_episodes: Number of episodes per member
        :return: member name (``"member_0"``, ...) -> (mean return, std of the return)
        """
        if isinstance(n_eval_episodes, bool) or not isinstance(n_eval_episodes, int) or n_eval_episodes < 1:
            raise ValueError(f"`n_eval_episodes` must be a positive integer, got {n_eval_episodes!r}")
        self.policy.set_training_mode(False)
        results = {}
        for member in range(self.ensemble_size):
            mean, std = evaluate_policy(
                self.actor.member(member),
                env,
                n_eval_episodes=n_eval_episodes,
                deterministic=True,
                warn=False,
            )
            results[f"member_{member}"] = (float(mean), float(std))  # type: ignore[arg-type]
        return results

    def export_member(self, member: int | str = "best") -> SAC:
        """
        One member as a plain SB3 ``SAC``, to deploy or fine-tune without sb3_distill: its actor, critics, target
        critics, entropy coefficient and the member's slices of the optimizer states. It acts exactly as the
        member (``predict(..., deterministic=True)``), ``save()``s and reloads with ``SAC.load``. The
        hyperparameters are this model's; no environment and no replay buffer content are attached.

        :param member: the member's index, or ``"best"`` for :attr:`best_member`
        :return: the exported ``SAC``
        """
        index = self.best_member if member == "best" else member
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < self.ensemble_size:
            raise ValueError(f"`member` must be 'best' or an integer in [0, {self.ensemble_size}), got {member!r}")
        index = int(index)
        policy_kwargs = dict(self.policy_kwargs)
        exported = SAC(
            "MlpPolicy",
            env=None,  # type: ignore[arg-type]
            learning_rate=self.learning_rate,
            buffer_size=self.buffer_size,
            learning_starts=self.learning_starts,
            batch_size=self.batch_size,
            tau=self.tau,
            gamma=self.gamma,
            train_freq=self.train_freq,  # type: ignore[arg-type]
            gradient_steps=self.gradient_steps,
            action_noise=self.action_noise,
            optimize_memory_usage=self.optimize_memory_usage,
            ent_coef=self.ent_coef,
            target_update_interval=self.target_update_interval,
            target_entropy=self.target_entropy,
            policy_kwargs=policy_kwargs,
            seed=self.seed,
            device=self.device,
            _init_setup_model=False,
        )
        # No env: give the spaces directly, as `load()` does
        exported.observation_space = self.observation_space
        exported.action_space = self.action_space
        exported.n_envs = 1
        exported._setup_model()
        # The member's actor, critics and targets, with its slices of the optimizer states (Adam moments, step count)
        self.actor.copy_member_to(index, exported.actor, self.actor.optimizer, exported.actor.optimizer)
        self.critic.copy_member_to(index, exported.critic, self.critic.optimizer, exported.critic.optimizer)
        self.critic_target.copy_member_to(index, exported.critic_target)
        if self.log_ent_coef is not None and exported.log_ent_coef is not None:
            copy_member_parameter(
                self.log_ent_coef, exported.log_ent_coef, index, self.ent_coef_optimizer, exported.ent_coef_optimizer
            )
        exported._n_updates = self._n_updates
        exported.num_timesteps = self.num_timesteps
        return exported

    def learn(
        self: SelfPIEKDSAC,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "PIEKDSAC",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfPIEKDSAC:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
