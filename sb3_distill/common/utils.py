"""Helpers shared by the sb3_distill algorithms."""

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import DQN
from stable_baselines3.common.base_class import BaseAlgorithm, maybe_make_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from stable_baselines3.dqn.policies import DQNPolicy
from torch import nn

from sb3_distill.common.validation import LEARNING_RATE, UnsupportedSpaceError

BaseAlgorithmT = TypeVar("BaseAlgorithmT", bound=BaseAlgorithm)


def clip_grad_norm_per_member_(parameters: Iterable[th.Tensor], max_norm: float, n_members: int) -> th.Tensor:
    """
    Gradient-norm clipping of each member of a stacked ensemble, as if
    ``th.nn.utils.clip_grad_norm_(member_j.parameters(), max_norm)`` were called for every member j.

    Every parameter holds the M members stacked along its first dimension. For member j,
    ``norm_j = sqrt(sum_p ||grad_p[j]||^2)`` and its gradients are scaled by
    ``min(1, max_norm / (norm_j + 1e-6))``, the coefficient PyTorch uses. With ``n_members=1`` this is
    ``clip_grad_norm_`` of an ordinary network, with a few operations fewer than PyTorch's.

    :param parameters: stacked parameters, each of shape (M, ...)
    :param max_norm: maximum gradient norm of one member
    :param n_members: number of members M
    :return: the per-member gradient norms before clipping, shape (M,)
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if len(grads) == 0:
        return th.zeros(n_members)
    # (M, total number of parameters of one member) -> (M,) gradient norm of each member
    norms = th.linalg.vector_norm(th.cat([g.reshape(n_members, -1) for g in grads], dim=1), dim=1)
    clip_coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    # One in-place multiply per parameter tensor (each holding every member): no Python loop over members
    for grad in grads:
        grad.mul_(clip_coef.reshape(n_members, *([1] * (grad.dim() - 1))))
    return norms


def clipped_per_member(gradients: Sequence[th.Tensor], max_norm: float, n_members: int) -> list[th.Tensor]:
    """
    The gradients of a stacked ensemble clipped member by member, out of place: what
    :func:`clip_grad_norm_per_member_` does to the ``.grad`` of the parameters, as a pure function of the
    gradients (for a compiled gradient step). Member j's gradients are scaled by
    ``min(1, max_norm / (norm_j + 1e-6))`` with ``norm_j = sqrt(sum_p ||grad_p[j]||^2)``.

    :param gradients: the gradients of the stacked parameters, each of shape (M, ...)
    :param max_norm: maximum gradient norm of one member
    :param n_members: number of members M
    :return: the clipped gradients, contiguous (the layout of their parameters, which fused optimizers expect)
    """
    # (M, total number of parameters of one member) -> (M,) gradient norm of each member
    norms = th.linalg.vector_norm(th.cat([g.reshape(n_members, -1) for g in gradients], dim=1), dim=1)
    clip_coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    return [(g * clip_coef.reshape(n_members, *([1] * (g.dim() - 1)))).contiguous() for g in gradients]


def step_with_member_learning_rates(
    optimizer: th.optim.Optimizer, stacks: Sequence[Sequence[th.Tensor]], factors: Sequence[th.Tensor]
) -> None:
    """
    One optimizer step in which member j of stack i moves ``factors[i][j]`` times as far as the optimizer
    moves it: ``p <- p_old + f_j * (p_new - p_old)``, i.e. member j gets learning rate ``f_j * lr``. Exact for
    optimizers whose step is linear in the learning rate given their state (Adam, AdamW, SGD, RMSprop: the
    moment estimates do not depend on it), up to rounding.

    :param optimizer: the optimizer over the stacked parameters
    :param stacks: the stacked parameters of each stack, each of shape (K_i, ...)
    :param factors: each stack's factors, shape (K_i,)
    """
    previous = [[param.detach().clone() for param in parameters] for parameters in stacks]
    optimizer.step()
    with th.no_grad():
        for parameters, old_values, member_factors in zip(stacks, previous, factors, strict=True):
            for param, old in zip(parameters, old_values, strict=True):
                # (K,) -> (K, 1, ..., 1) to scale each member's slice
                scale = member_factors.reshape(-1, *([1] * (param.dim() - 1)))
                param.sub_(old).mul_(scale).add_(old)


class FusedAdamStep:
    """
    The steps of one or more fused Adam / AdamW optimizers (``fused=True``, sb3_distill's default, see
    :func:`fast_optimizer_kwargs`) as direct calls of PyTorch's fused kernel: one call per distinct set of
    hyperparameters (so teachers and students at the same learning rate share one call), without
    ``Optimizer.step``'s per-call Python work (hooks, profiler records, state grouping), which on small
    networks costs more than the update itself. The update is the kernel ``optimizer.step()`` runs, on the
    same state tensors: ``optimizer.state_dict()``, saving and loading are unchanged.

    ``optimizer.step()`` is called instead whenever the direct call does not apply: an optimizer that is not
    fused Adam/AdamW with one parameter group, float hyperparameters and no AMSGrad, step hooks or
    ``differentiable``/``capturable``; a parameter without a gradient; state not created yet (the first step)
    or replaced (``load_state_dict``).

    :param optimizers: the optimizers to step (the same optimizer given twice is stepped once)
    """

    def __init__(self, optimizers: Sequence[th.optim.Optimizer]) -> None:
        self.optimizers = list(dict.fromkeys(optimizers))
        # Per optimizer: its params and their (exp_avg, exp_avg_sq, step) state tensors, once the state exists
        self._state: dict[int, tuple[list[th.Tensor], list[th.Tensor], list[th.Tensor], list[th.Tensor]]] = {}

    @staticmethod
    def supports(optimizer: th.optim.Optimizer) -> bool:
        """Whether ``optimizer`` can be stepped by the direct kernel call."""
        if not isinstance(optimizer, th.optim.Adam) or len(optimizer.param_groups) != 1:
            return False
        group = optimizer.param_groups[0]
        hooks = (optimizer._optimizer_step_pre_hooks, optimizer._optimizer_step_post_hooks)
        return (
            bool(group.get("fused"))
            and not any(group.get(flag) for flag in ("amsgrad", "differentiable", "capturable"))
            and not any(isinstance(group[key], th.Tensor) for key in ("lr", "eps", "weight_decay"))
            and not any(isinstance(beta, th.Tensor) for beta in group["betas"])
            and not any(len(hook) for hook in hooks)
        )

    def _tensors(self, optimizer: th.optim.Optimizer) -> tuple[list[th.Tensor], ...] | None:
        """The optimizer's params, gradients and state tensors, or None when the direct call does not apply."""
        params = optimizer.param_groups[0]["params"]
        grads = [param.grad for param in params]
        if any(grad is None for grad in grads) or not self.supports(optimizer):
            return None
        cached = self._state.get(id(optimizer))
        state = optimizer.state
        if (
            cached is None
            or cached[0] is not params
            or any(state[p].get("exp_avg") is not e for p, e in zip(params, cached[1], strict=True))
        ):
            if any("exp_avg" not in state[param] for param in params):
                return None
            # One kernel call needs one device and one dtype (PyTorch's step groups them otherwise)
            if len({(param.device, param.dtype) for param in params}) > 1:
                return None
            cached = (params, *([state[param][key] for param in params] for key in ("exp_avg", "exp_avg_sq", "step")))
            self._state[id(optimizer)] = cached  # type: ignore[assignment]
        return (params, grads, *cached[1:])  # type: ignore[arg-type]

    def step(self) -> None:
        """One step of every optimizer."""
        calls: dict[tuple, list[list[th.Tensor]]] = {}
        for optimizer in self.optimizers:
            tensors = self._tensors(optimizer)
            if tensors is None:
                optimizer.step()
                continue
            group = optimizer.param_groups[0]
            decoupled = group.get("decoupled_weight_decay", isinstance(optimizer, th.optim.AdamW))
            hyperparameters = (group["lr"], *group["betas"], group["weight_decay"], group["eps"], group["maximize"], decoupled)
            key = (*hyperparameters, tensors[0][0].device, tensors[0][0].dtype)
            lists = calls.setdefault(key, [[], [], [], [], []])
            for merged, part in zip(lists, tensors, strict=True):
                merged.extend(part)
        for (lr, beta1, beta2, weight_decay, eps, maximize, decoupled, *_), (params, grads, m, v, steps) in calls.items():
            th._foreach_add_(steps, 1)
            kernel = th._fused_adamw_ if decoupled else th._fused_adam_
            kernel(
                params, grads, m, v, [], steps, amsgrad=False, lr=lr, beta1=beta1, beta2=beta2,
                weight_decay=weight_decay, eps=eps, maximize=maximize, grad_scale=None, found_inf=None,
            )  # fmt: skip


class QValuePredictor:
    """
    A minimal object with SB3's ``predict()`` signature that acts greedily with respect to a
    Q-value function, so that ``evaluate_policy`` can score one member of an ensemble.

    :param policy: the policy whose ``obs_to_tensor`` prepares observations
    :param q_function: maps an observation tensor (batch, ...) to Q-values (batch, n_actions)
    """

    def __init__(self, policy: BasePolicy, q_function: Callable[[PyTorchObs], th.Tensor]) -> None:
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


def fast_optimizer_kwargs(
    optimizer_class: type[th.optim.Optimizer],
    optimizer_kwargs: dict[str, Any],
    device: th.device,
) -> dict[str, Any]:
    """
    Optimizer keyword arguments with PyTorch's fused implementation switched on for Adam and AdamW,
    unless the user chose an implementation (``fused`` or ``foreach``) already.

    The fused kernel updates every tensor of the optimizer in one call; it computes the same update as
    the default per-tensor loop (Adam is elementwise), and on a stacked ensemble it is exactly one Adam
    per member. Fused CPU kernels exist from torch 2.4; elsewhere the kwargs are returned unchanged.

    :param optimizer_class: the optimizer class
    :param optimizer_kwargs: the user's keyword arguments (not modified)
    :param device: the device of the parameters
    :return: the keyword arguments to build the optimizer with
    """
    if optimizer_class not in (th.optim.Adam, th.optim.AdamW) or {"fused", "foreach"} & set(optimizer_kwargs):
        return optimizer_kwargs
    torch_version = tuple(int(part) for part in th.__version__.split("+")[0].split(".")[:2])
    if th.device(device).type == "cuda" or (th.device(device).type == "cpu" and torch_version >= (2, 4)):
        return {**optimizer_kwargs, "fused": True}
    return optimizer_kwargs


def set_training_flag(modules: Iterable[nn.Module], mode: bool) -> None:
    """
    The same as ``module.train(mode)`` on each module and all its submodules, without ``nn.Module.train()``'s
    recursive walk through ``nn.Module.__setattr__``: SB3 switches modes twice per rollout, and on small
    networks that walk costs more than a forward pass. Each module's list of submodules is found on the first
    call and kept in the module (for modules whose structure no longer changes, such as a built policy).

    :param modules: the modules to switch (their submodules are included)
    :param mode: True for training mode, False for evaluation mode
    """
    for module in modules:
        submodules = module.__dict__.get(SUBMODULES_ATTRIBUTE)
        if submodules is None:
            submodules = list(module.modules())
            module.__dict__[SUBMODULES_ATTRIBUTE] = submodules
        for submodule in submodules:
            submodule.__dict__["training"] = mode


#: Where :func:`set_training_flag` keeps a module's submodules
SUBMODULES_ATTRIBUTE = "_sb3_distill_submodules"


def model_for_export(
    algorithm: type[BaseAlgorithmT],
    policy_class: type[BasePolicy],
    policy_kwargs: dict[str, Any],
    observation_space: spaces.Space,
    action_space: spaces.Space,
    **algorithm_kwargs: Any,
) -> BaseAlgorithmT:
    """
    A plain SB3 model with no environment attached, built for the given spaces as ``load()`` builds one,
    to receive a distilled network's weights (``export_student``).

    :param algorithm: the SB3 algorithm class (DQN, PPO, SAC, ...)
    :param policy_class: its policy class
    :param policy_kwargs: the network (keys of the algorithm's ``policy_kwargs``)
    :param observation_space: Observation space
    :param action_space: Action space
    :param algorithm_kwargs: other constructor arguments of the algorithm (hyperparameters, device, seed)
    :return: the model, its networks freshly initialised
    """
    if "learning_rate" in algorithm_kwargs:
        # The caller's (``export_student(learning_rate=...)``): checked before SB3's assertion would fail on it
        algorithm_kwargs["learning_rate"] = LEARNING_RATE.check(algorithm_kwargs["learning_rate"], "learning_rate")
    exported = algorithm(
        policy_class,
        env=None,  # type: ignore[arg-type]
        policy_kwargs=dict(policy_kwargs),
        _init_setup_model=False,  # type: ignore[call-arg]
        **algorithm_kwargs,
    )
    # No env: give the spaces directly, as `load()` does
    exported.observation_space = observation_space
    exported.action_space = action_space
    exported.n_envs = 1
    exported._setup_model()
    return exported


def dqn_for_export(model: DQN, policy_kwargs: dict[str, Any], learning_rate: float | Schedule) -> DQN:
    """
    A plain SB3 ``DQN`` with ``model``'s hyperparameters and spaces and a network described by
    ``policy_kwargs``, to receive a student's weights (``export_student``). No environment is attached.

    :param model: the distillation model whose hyperparameters are copied
    :param policy_kwargs: the student's network (keys of DQN's ``policy_kwargs``)
    :param learning_rate: the exported model's learning rate
    :return: the DQN, its networks freshly initialised
    """
    exported = model_for_export(
        DQN,
        DQNPolicy,
        policy_kwargs,
        model.observation_space,
        model.action_space,
        learning_rate=learning_rate,
        buffer_size=model.buffer_size,
        learning_starts=model.learning_starts,
        batch_size=model.batch_size,
        tau=model.tau,
        gamma=model.gamma,
        train_freq=model.train_freq,
        gradient_steps=model.gradient_steps,
        optimize_memory_usage=model.optimize_memory_usage,
        target_update_interval=model.target_update_interval,
        exploration_fraction=model.exploration_fraction,
        exploration_initial_eps=model.exploration_initial_eps,
        exploration_final_eps=model.exploration_final_eps,
        max_grad_norm=model.max_grad_norm,
        seed=model.seed,
        device=model.device,
    )
    exported.exploration_rate = model.exploration_rate
    return exported


def epsilon_greedy(actions: np.ndarray, exploration_rate: float, action_space: spaces.Discrete) -> np.ndarray:
    """
    Replace each env's greedy action by a uniformly random one with probability ``exploration_rate``
    (one draw per env, unlike ``DQN.predict`` which draws once for the whole batch).

    :param actions: greedy actions, shape (n_envs,); modified in place
    :param exploration_rate: epsilon
    :param action_space: the space random actions are drawn from
    :return: ``actions``
    """
    explore = np.random.rand(len(actions)) < exploration_rate
    for env_idx in np.flatnonzero(explore):
        actions[env_idx] = action_space.sample()
    return actions


def evaluate_q_functions(
    policy: BasePolicy,
    q_functions: dict[str, Callable[[PyTorchObs], th.Tensor]],
    env: Any,
    n_eval_episodes: int,
) -> dict[str, tuple[float, float]]:
    """
    Evaluate several greedy Q-value functions (the members of a distillation model) with SB3's
    ``evaluate_policy``, one after the other.

    :param policy: the policy whose ``obs_to_tensor`` prepares observations (put in evaluation mode)
    :param q_functions: member name -> function from an observation tensor to Q-values (batch, n_actions)
    :param env: The evaluation environment (wrap it with ``Monitor`` to count the original rewards)
    :param n_eval_episodes: Number of episodes per member
    :return: member name -> (mean return, std of the return)
    """
    if n_eval_episodes < 1:
        raise ValueError(f"`n_eval_episodes` must be a positive integer, got {n_eval_episodes!r}")
    policy.set_training_mode(False)
    results = {}
    for name, q_function in q_functions.items():
        mean, std = evaluate_policy(
            QValuePredictor(policy, q_function),  # type: ignore[arg-type]
            env,
            n_eval_episodes=n_eval_episodes,
            warn=False,
        )
        results[name] = (float(mean), float(std))  # type: ignore[arg-type]
    return results


def make_discrete_env(env: Any, verbose: int, algorithm: str) -> Any:
    """
    Make the env from its id if needed (as SB3's ``maybe_make_env``) and check that its actions are discrete,
    so that a DQN-based algorithm gives a clear error instead of SB3's assertion.

    :param env: an env, an env id or None
    :param verbose: verbosity level
    :param algorithm: the algorithm's name, for the error
    :return: the env
    """
    if env is None:
        return env
    env = maybe_make_env(env, verbose)
    if not isinstance(env.action_space, spaces.Discrete):
        raise UnsupportedSpaceError(
            f"{algorithm} needs a Discrete action space (its teachers are DQNs), got {env.action_space}"
        )
    return env


@dataclass(frozen=True)
class LinearDecay:
    """
    A weight decaying linearly from ``initial`` to 0 over training, as a schedule of the progress remaining (from
    1 to 0): kickstarting's decaying distillation weight (``DistillPPO(distill_coef=LinearDecay(1.0))``).
    Picklable, and equal to another with the same value (rl-zoo3's ``--trial-id`` compares them).

    :param initial: the value at the start of training
    """

    initial: float

    def __call__(self, progress_remaining: float) -> float:
        return self.initial * progress_remaining
