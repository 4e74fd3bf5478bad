"""
ONNX export of what ``model.predict(obs, deterministic=True)`` computes: the observation preprocessing, the
network and the action post-processing in one graph with a dynamic batch dimension, to deploy a student
(or any plain SB3 model) without PyTorch, e.g. with ``onnxruntime``.

The graph (input ``obs``, output ``action``, optional extra outputs), in order:

1. VecNormalize (only when ``vec_normalize`` is given, with ``norm_obs=True``): its frozen statistics,
   ``obs = clip((obs - mean) / sqrt(var + epsilon), -clip_obs, clip_obs)``, as ``VecNormalize.normalize_obs``.
2. Channel order (only with ``channels_last=True``): a (batch, H, W, C) image is transposed to the
   (batch, C, H, W) the policy was built for, as SB3's ``VecTransposeImage`` / ``obs_to_tensor`` do.
3. SB3's ``preprocess_obs``: images (uint8 Box) are cast to float and divided by 255 when the policy's
   ``normalize_images`` is True, Box observations are cast to float32, Discrete ones one-hot encoded.
4. The network: Q-values (DQN), the mean of the quantiles (QR-DQN), the action distribution (PPO/A2C) or
   the actor (SAC/TD3/DDPG).
5. The action ``predict`` returns: the greedy action (DQN, QR-DQN, PPO/A2C Discrete), the mean action
   clipped to the action space bounds (PPO/A2C Box), the tanh-squashed action unscaled from [-1, 1] to the
   action space bounds (SAC/TD3/DDPG, PPO/A2C with gSDE and ``squash_output``).

The description of the graph (algorithm, spaces, preprocessing, outputs) is also written into the file's
metadata (``onnx.load(path).metadata_props``).
"""

import pathlib
import pickle
import warnings
from collections.abc import Sequence
from types import ModuleType

import numpy as np
import torch as th
from gymnasium import spaces
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from sb3_contrib.qrdqn.policies import QRDQNPolicy
from stable_baselines3 import DQN
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.distributions import (
    CategoricalDistribution,
    DiagGaussianDistribution,
    StateDependentNoiseDistribution,
)
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.vec_env import VecNormalize
from stable_baselines3.dqn.policies import DQNPolicy
from stable_baselines3.sac.policies import SACPolicy
from stable_baselines3.td3.policies import TD3Policy
from torch import nn

from sb3_distill.common.save import atomic_save_path, resolve_save_path
from sb3_distill.common.utils import dqn_for_export
from sb3_distill.ensemble_distill_dqn import EnsembleDistillDQN
from sb3_distill.piekd_sac import PIEKDSAC
from sb3_distill.policy_distillation import PolicyDistillation
from sb3_distill.realtime_distill_dqn import RealTimeDistillDQN
from sb3_distill.realtime_distill_dqn.policies import member_names

#: The extra outputs each kind of policy can add after ``action``
EXTRA_OUTPUTS: dict[str, tuple[str, ...]] = {
    "dqn": ("q_values",),
    "qrdqn": ("q_values", "quantiles"),
    "actor_critic": ("logits", "value"),
    "actor": ("q_values",),
}


class ObservationPreprocessing(nn.Module):
    """
    What happens to an observation before the policy's ``preprocess_obs``: the frozen VecNormalize
    statistics, then the channel-last to channel-first transpose of images, then a cast to the dtype the
    policy expects (``preprocess_obs`` itself runs inside the policy's network).

    :param mean: VecNormalize's running mean (shape of one observation), or None for no normalization
    :param var: VecNormalize's running variance
    :param epsilon: VecNormalize's ``epsilon``
    :param clip_obs: VecNormalize's ``clip_obs``
    :param channels_last: transpose (batch, H, W, C) images to (batch, C, H, W)
    :param dtype: the dtype the policy's network receives: ``float32`` for Box and MultiBinary observations
        (uint8 images included: ``preprocess_obs`` divides the floats by 255), ``int64`` for Discrete and
        MultiDiscrete ones (``preprocess_obs`` one-hot encodes them)
    """

    mean: th.Tensor
    std: th.Tensor

    def __init__(
        self,
        mean: np.ndarray | None,
        var: np.ndarray | None,
        epsilon: float,
        clip_obs: float,
        channels_last: bool,
        dtype: th.dtype,
    ) -> None:
        super().__init__()
        self.normalize = mean is not None
        if mean is not None and var is not None:
            self.register_buffer("mean", th.as_tensor(mean, dtype=th.float32))
            # sqrt in float64, as VecNormalize, then rounded once
            self.register_buffer("std", th.as_tensor(np.sqrt(var + epsilon), dtype=th.float32))
        self.clip_obs = float(clip_obs)
        self.channels_last = channels_last
        self.dtype = dtype

    def forward(self, obs: th.Tensor) -> th.Tensor:
        if self.normalize:
            obs = th.clamp((obs.float() - self.mean) / self.std, -self.clip_obs, self.clip_obs)
        if self.channels_last:
            # (batch, H, W, C) -> (batch, C, H, W)
            obs = obs.permute(0, 3, 1, 2)
        return obs.to(self.dtype)


class BoxActionOutput(nn.Module):
    """
    The Box action ``predict`` returns: an action in [-1, 1] unscaled to the bounds (``squash_output``,
    as ``BasePolicy.unscale_action``), or an unsquashed action clipped to the bounds (as ``BasePolicy.predict``).

    :param action_space: the Box action space
    :param squash_output: the policy's ``squash_output``
    """

    low: th.Tensor
    high: th.Tensor

    def __init__(self, action_space: spaces.Box, squash_output: bool) -> None:
        super().__init__()
        self.register_buffer("low", th.as_tensor(action_space.low, dtype=th.float32))
        self.register_buffer("high", th.as_tensor(action_space.high, dtype=th.float32))
        self.squash_output = squash_output

    def forward(self, actions: th.Tensor) -> th.Tensor:
        if self.squash_output:
            return self.low + 0.5 * (actions + 1.0) * (self.high - self.low)
        return th.minimum(th.maximum(actions, self.low), self.high)


class QHead(nn.Module):
    """
    DQN (``q_values``) or QR-DQN (``quantiles``, and their mean as ``q_values``): the greedy action first.

    :param network: ``policy.q_net`` or ``policy.quantile_net``
    :param quantiles: the network gives quantiles (batch, n_quantiles, n_actions)
    :param outputs: the extra outputs, in order
    """

    def __init__(self, network: nn.Module, quantiles: bool, outputs: Sequence[str]) -> None:
        super().__init__()
        self.network = network
        self.quantiles = quantiles
        self.outputs = tuple(outputs)

    def forward(self, obs: th.Tensor) -> tuple[th.Tensor, ...]:
        values = {"quantiles": self.network(obs)} if self.quantiles else {}
        # (batch, n_quantiles, n_actions) -> (batch, n_actions)
        values["q_values"] = values["quantiles"].mean(dim=1) if self.quantiles else self.network(obs)
        return (values["q_values"].argmax(dim=1), *(values[name] for name in self.outputs))


class ActorCriticHead(nn.Module):
    """
    PPO / A2C (``ActorCriticPolicy``): the mode of the action distribution, as ``policy.predict``
    returns it, then ``logits`` (Discrete: the action network's output, log-probabilities up to a
    constant) and ``value`` on request.

    :param policy: the policy
    :param outputs: the extra outputs, in order
    """

    def __init__(self, policy: ActorCriticPolicy, outputs: Sequence[str]) -> None:
        super().__init__()
        self.policy = policy
        self.outputs = tuple(outputs)
        self.discrete = isinstance(policy.action_dist, CategoricalDistribution)
        self.squash = isinstance(policy.action_dist, StateDependentNoiseDistribution) and policy.squash_output
        self.box_output = None if self.discrete else BoxActionOutput(policy.action_space, policy.squash_output)  # type: ignore[arg-type]

    def forward(self, obs: th.Tensor) -> tuple[th.Tensor, ...]:
        # As ActorCriticPolicy.forward
        features = self.policy.extract_features(obs)
        if self.policy.share_features_extractor:
            latent_pi, latent_vf = self.policy.mlp_extractor(features)
        else:
            pi_features, vf_features = features
            latent_pi = self.policy.mlp_extractor.forward_actor(pi_features)
            latent_vf = self.policy.mlp_extractor.forward_critic(vf_features)
        mean_actions = self.policy.action_net(latent_pi)
        if self.discrete:
            action = mean_actions.argmax(dim=1)
        else:
            assert self.box_output is not None
            # gSDE with squash_output: the mode is tanh(mean)
            action = self.box_output(th.tanh(mean_actions) if self.squash else mean_actions)
        values = {"logits": mean_actions, "value": self.policy.value_net(latent_vf)} if self.outputs else {}
        return (action, *(values[name] for name in self.outputs))


class ActorHead(nn.Module):
    """
    SAC / TD3 / DDPG: the deterministic action in [-1, 1] (SAC: tanh of the Gaussian's mean), unscaled to
    the action space bounds, then ``q_values``, the critics' values of that action (batch, n_critics).

    :param policy: the ``SACPolicy`` or ``TD3Policy``
    :param outputs: the extra outputs, in order
    """

    def __init__(self, policy: SACPolicy | TD3Policy, outputs: Sequence[str]) -> None:
        super().__init__()
        self.actor = policy.actor
        self.critic = policy.critic
        self.sac = isinstance(policy, SACPolicy)
        self.outputs = tuple(outputs)
        self.box_output = BoxActionOutput(policy.action_space, squash_output=True)  # type: ignore[arg-type]

    def forward(self, obs: th.Tensor) -> tuple[th.Tensor, ...]:
        if self.sac:
            # The mode of the squashed Gaussian (with or without gSDE): tanh(mean)
            mean_actions, _, _ = self.actor.get_action_dist_params(obs)  # type: ignore[operator]
            scaled_action = th.tanh(mean_actions)
        else:
            scaled_action = self.actor(obs)
        extras = [th.cat(self.critic(obs, scaled_action), dim=1)] if self.outputs else []
        return (self.box_output(scaled_action), *extras)


class OnnxPolicy(nn.Module):
    """The exported graph: :class:`ObservationPreprocessing`, then one of the heads."""

    def __init__(self, preprocessing: ObservationPreprocessing, head: nn.Module) -> None:
        super().__init__()
        self.preprocessing = preprocessing
        self.head = head

    def forward(self, obs: th.Tensor) -> tuple[th.Tensor, ...]:
        return self.head(self.preprocessing(obs))


def deployed_model(model: BaseAlgorithm, member: int | str | None = None) -> BaseAlgorithm:
    """
    The plain SB3 model whose ``predict`` gives the same actions as ``model.predict(..., deterministic=True)``:
    the student of ``EnsembleDistillDQN`` and ``PolicyDistillation`` (``export_student()``), the member
    ``RealTimeDistillDQN`` predicts with (a student, ``export_student(i)``, or its teacher), the best member of
    ``PIEKDSAC`` (``export_member()``), or ``model`` itself for a plain SB3 model.

    :param model: the model
    :param member: another member to deploy: ``"teacher"`` or ``"student_<i>"`` for ``RealTimeDistillDQN``
        (default: its ``predict_member``), a member index or ``"best"`` for ``PIEKDSAC`` (default: the member
        ``predict`` uses); only None (or ``"student"``) for the others
    :return: a plain SB3 model (DQN, QR-DQN, PPO, A2C, SAC, TD3, DDPG, ...)
    """
    if isinstance(model, (EnsembleDistillDQN, PolicyDistillation)):
        if member not in (None, "student"):
            raise ValueError(f"`member` must be None or 'student' for {type(model).__name__}, got {member!r}")
        return model.export_student()
    if isinstance(model, RealTimeDistillDQN):
        member = model.policy.predict_member if member is None else member
        if member not in member_names(model.n_students):
            raise ValueError(f"`member` must be one of {member_names(model.n_students)} or None, got {member!r}")
        if member == "teacher":
            return _realtime_teacher(model)
        return model.export_student(int(str(member).split("_")[1]))
    if isinstance(model, PIEKDSAC):
        return model.export_member(int(model.policy.predict_member) if member is None else member)
    if member is not None:
        raise ValueError(f"`member` is only for sb3_distill models, got {member!r} for a {type(model).__name__}")
    return model


def _realtime_teacher(model: RealTimeDistillDQN) -> DQN:
    """RealTimeDistillDQN's teacher as a plain ``DQN`` (its network and weights; a fresh optimizer)."""
    policy = model.policy
    teacher_kwargs = dict(
        net_arch=policy.net_arch,
        activation_fn=policy.activation_fn,
        features_extractor_class=policy.features_extractor_class,
        features_extractor_kwargs=policy.features_extractor_kwargs,
        normalize_images=policy.normalize_images,
    )
    exported = dqn_for_export(model, teacher_kwargs, model.learning_rate)
    if policy.teacher_in_stack:
        policy.student_stacks[0].copy_member_to(0, exported.q_net)  # type: ignore[operator]
    else:
        exported.q_net.load_state_dict(policy.q_net.state_dict())
    exported.q_net_target.load_state_dict(exported.q_net.state_dict())
    return exported


def _policy_head(policy: BasePolicy, outputs: Sequence[str]) -> tuple[str, nn.Module]:
    """The kind of policy (a key of :data:`EXTRA_OUTPUTS`) and the head that computes its outputs."""
    if isinstance(policy, RecurrentActorCriticPolicy):
        raise ValueError("Recurrent policies cannot be exported: their LSTM states would be extra inputs and outputs")
    head: nn.Module
    if isinstance(policy, QRDQNPolicy):
        kind, head = "qrdqn", QHead(policy.quantile_net, quantiles=True, outputs=outputs)
    elif isinstance(policy, DQNPolicy):
        kind, head = "dqn", QHead(policy.q_net, quantiles=False, outputs=outputs)
    elif isinstance(policy, ActorCriticPolicy):
        supported = (CategoricalDistribution, DiagGaussianDistribution, StateDependentNoiseDistribution)
        if not isinstance(policy.action_dist, supported):
            raise ValueError(
                f"Cannot export a {type(policy.action_dist).__name__} (action space {policy.action_space}): "
                "supported action spaces are Discrete and Box"
            )
        if "logits" in outputs and not isinstance(policy.action_dist, CategoricalDistribution):
            raise ValueError(f"`outputs` 'logits' needs a Discrete action space, got {policy.action_space}")
        kind, head = "actor_critic", ActorCriticHead(policy, outputs)
    elif isinstance(policy, (SACPolicy, TD3Policy)):
        kind, head = "actor", ActorHead(policy, outputs)
    else:
        raise ValueError(
            f"Cannot export a {type(policy).__name__}: supported policies are those of DQN, QR-DQN, PPO, A2C, "
            "SAC, TD3 and DDPG (and the sb3_distill algorithms)"
        )
    unknown = [name for name in outputs if name not in EXTRA_OUTPUTS[kind]]
    if unknown or len(set(outputs)) != len(outputs):
        raise ValueError(
            f"`outputs` must be distinct names among {list(EXTRA_OUTPUTS[kind])} for a {kind} policy, got {outputs!r}"
        )
    return kind, head


def _observation_input(
    space: spaces.Space, channels_last: bool, normalized: bool
) -> tuple[tuple[int, ...], th.dtype, th.dtype]:
    """Shape of one observation fed to the graph, its dtype, and the dtype the policy's network receives."""
    if isinstance(space, spaces.Dict):
        raise ValueError("Dict observation spaces cannot be exported (one graph input only): flatten the observations")
    if not isinstance(space, (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)):
        raise ValueError(f"Cannot export a policy for the observation space {space}")
    shape: tuple[int, ...] = space.shape or ()
    if channels_last:
        if not isinstance(space, spaces.Box) or len(shape) != 3:
            raise ValueError(f"`channels_last=True` needs an image (3-D Box) observation space, got {space}")
        shape = (shape[1], shape[2], shape[0])
    if isinstance(space, (spaces.Discrete, spaces.MultiDiscrete)):
        return shape, th.int64, th.int64
    # SB3's preprocess_obs casts uint8 images to float itself: one cast in the graph gives the same numbers
    uint8 = isinstance(space, spaces.Box) and space.dtype == np.uint8 and not normalized
    return shape, (th.uint8 if uint8 else th.float32), th.float32


def _teacher_statistics(model: BaseAlgorithm) -> tuple[np.ndarray, np.ndarray, float, float] | None:
    """
    The frozen VecNormalize statistics ``PolicyDistillation.predict`` applies itself (its teacher's), as
    (mean, var, epsilon, clip_obs); None for other models.
    """
    preprocessing = getattr(model, "teacher_preprocessing", None) if isinstance(model, PolicyDistillation) else None
    if preprocessing is None or preprocessing.obs_mean is None or preprocessing.obs_var is None:
        return None
    return preprocessing.obs_mean, preprocessing.obs_var, float(preprocessing.epsilon), float(preprocessing.clip_obs)


def _vec_normalize_stats(
    vec_normalize: VecNormalize | str | pathlib.Path | None, input_shape: tuple[int, ...]
) -> tuple[np.ndarray | None, np.ndarray | None, float, float]:
    """VecNormalize's frozen observation statistics (mean, var, epsilon, clip_obs), or Nones."""
    if vec_normalize is None:
        return None, None, 0.0, np.inf
    if isinstance(vec_normalize, (str, pathlib.Path)):
        # As VecNormalize.load, without attaching an environment (unpickle only files you trust)
        with open(vec_normalize, "rb") as file_handler:
            vec_normalize = pickle.load(file_handler)
    if not isinstance(vec_normalize, VecNormalize):
        raise TypeError(
            f"`vec_normalize` must be a VecNormalize, the path of its .pkl, or None, got {type(vec_normalize).__name__}"
        )
    if not vec_normalize.norm_obs:
        return None, None, 0.0, np.inf
    if isinstance(vec_normalize.obs_rms, dict):
        raise ValueError("`vec_normalize` normalizes Dict observations, which cannot be exported")
    mean, var = vec_normalize.obs_rms.mean, vec_normalize.obs_rms.var
    if tuple(mean.shape) != input_shape:
        raise ValueError(
            f"`vec_normalize` has statistics of shape {tuple(mean.shape)}, but the graph input is {input_shape}: "
            "wrong VecNormalize, or images that need `channels_last=True`"
        )
    return mean, var, float(vec_normalize.epsilon), float(vec_normalize.clip_obs)


def export_onnx(
    model: BaseAlgorithm,
    path: str | pathlib.Path,
    outputs: Sequence[str] = (),
    member: int | str | None = None,
    vec_normalize: VecNormalize | str | pathlib.Path | None = None,
    channels_last: bool = False,
    opset_version: int = 17,
) -> pathlib.Path:
    """
    Export what ``model.predict(obs, deterministic=True)`` computes to an ONNX file: observations in
    (input ``obs``, shape (batch, *observation shape)), actions out (output ``action``, shape (batch,) int64
    for Discrete actions, (batch, *action shape) float32 for Box), with a dynamic batch dimension. The
    observation preprocessing and the action post-processing are inside the graph (see the module docstring).

    Supported: the sb3_distill algorithms (their deployed network: see :func:`deployed_model`) and plain SB3
    DQN, QR-DQN, PPO and A2C (Discrete or Box actions), SAC, TD3 and DDPG, with MLP or CNN policies, and
    Box, Discrete, MultiDiscrete or MultiBinary observations. Not supported (``ValueError``): Dict
    observations, recurrent policies, MultiDiscrete / MultiBinary actions of PPO/A2C, action masking.

    Needs the ``onnx`` extra (``pip install sb3-distill[onnx]``); run the file with ``onnxruntime``::

        session = onnxruntime.InferenceSession(path)
        action = session.run(["action"], {"obs": obs.astype(np.float32)})[0]

    :param model: the model to export
    :param path: the .onnx file to write
    :param outputs: extra outputs after ``action``: ``"q_values"`` (DQN: (batch, n_actions); QR-DQN: the
        mean of the quantiles; SAC/TD3/DDPG: the critics' values of the action, (batch, n_critics)),
        ``"quantiles"`` (QR-DQN: (batch, n_quantiles, n_actions)), ``"logits"`` (PPO/A2C with Discrete
        actions: the action network's output, log-probabilities up to a constant) and ``"value"`` (PPO/A2C:
        (batch, 1))
    :param member: the member to export, for the sb3_distill algorithms (see :func:`deployed_model`)
    :param vec_normalize: the ``VecNormalize`` the model was trained with, or the path of its .pkl: its
        observation statistics are frozen into the graph, which then takes raw observations. A
        ``PolicyDistillation`` whose teacher normalized its observations puts that teacher's statistics into
        the graph itself (its ``predict`` takes raw observations): leave this None
    :param channels_last: the graph takes (batch, H, W, C) images, as the environment gives them before
        SB3's ``VecTransposeImage``, and transposes them
    :param opset_version: the ONNX opset (at least 13)
    :return: the path of the file written
    """
    onnx = import_onnx()
    if not isinstance(model, BaseAlgorithm):
        raise TypeError(f"`model` must be an SB3 model (BaseAlgorithm), got {type(model).__name__}")
    if isinstance(outputs, str) or not all(isinstance(name, str) for name in outputs):
        raise TypeError(f"`outputs` must be a list of output names, got {outputs!r}")
    if isinstance(opset_version, bool) or not isinstance(opset_version, (int, np.integer)) or opset_version < 13:
        raise ValueError(f"`opset_version` must be an integer of at least 13, got {opset_version!r}")
    if not isinstance(channels_last, bool):
        raise TypeError(f"`channels_last` must be a bool, got {channels_last!r}")
    outputs = tuple(outputs)
    deployed = deployed_model(model, member)
    kind, head = _policy_head(deployed.policy, outputs)
    teacher_stats = _teacher_statistics(model)
    if teacher_stats is not None and vec_normalize is not None:
        raise ValueError(
            "`vec_normalize` must be None for a PolicyDistillation whose teacher normalizes observations: "
            "its statistics go into the graph already (predict() applies them too)"
        )
    input_shape, input_dtype, network_dtype = _observation_input(
        deployed.observation_space, channels_last, normalized=vec_normalize is not None or teacher_stats is not None
    )
    stats = _vec_normalize_stats(vec_normalize, input_shape) if teacher_stats is None else teacher_stats
    preprocessing = ObservationPreprocessing(*stats, channels_last=channels_last, dtype=network_dtype)
    deployed.policy.set_training_mode(False)
    # Traced on the model's device (the policy's networks are not copied; the new buffers follow them)
    graph = OnnxPolicy(preprocessing, head).to(deployed.device)
    names = ["action", *outputs]
    metadata = _metadata(model, deployed, kind, names, input_shape, input_dtype, stats[0] is not None, channels_last)
    dummy_obs = th.zeros((2, *input_shape), dtype=input_dtype, device=deployed.device)
    # Written to a temporary file and renamed over ``path``: a crash leaves a previous export intact
    with atomic_save_path(path, None) as temporary:
        _write_onnx(onnx, graph, dummy_obs, str(temporary), names, int(opset_version), metadata)
    return resolve_save_path(path, None)


def _write_onnx(
    onnx: ModuleType,
    graph: nn.Module,
    dummy_obs: th.Tensor,
    path: str,
    names: list[str],
    opset_version: int,
    metadata: dict[str, str],
) -> None:
    """Trace ``graph`` into an ONNX file at ``path`` (dynamic batch dimension) and add ``metadata`` to it."""
    with th.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter (dynamo=False) is deprecated in favour of torch.export, which needs onnxscript
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        th.onnx.export(
            graph,
            (dummy_obs,),
            path,
            input_names=["obs"],
            output_names=names,
            dynamic_axes={name: {0: "batch"} for name in ["obs", *names]},
            opset_version=opset_version,
            dynamo=False,
        )
    onnx_model = onnx.load(path)
    onnx.helper.set_model_props(onnx_model, metadata)
    onnx.save(onnx_model, path)


def import_onnx() -> ModuleType:
    """The ``onnx`` package, or an ``ImportError`` that says which extra to install."""
    try:
        import onnx
    except ImportError as error:  # pragma: no cover
        raise ImportError("export_onnx needs the onnx package: pip install 'sb3-distill[onnx]'") from error
    return onnx


def _metadata(
    model: BaseAlgorithm,
    deployed: BaseAlgorithm,
    kind: str,
    names: list[str],
    input_shape: tuple[int, ...],
    input_dtype: th.dtype,
    normalized: bool,
    channels_last: bool,
) -> dict[str, str]:
    """The description of the graph written into the file's ``metadata_props``."""
    policy = deployed.policy
    steps = ["VecNormalize (frozen statistics)"] if normalized else []
    steps += ["channels-last to channels-first"] if channels_last else []
    if is_image_space(deployed.observation_space) and policy.normalize_images:
        steps.append("divide by 255")
    return {
        "sb3_distill.algorithm": type(model).__name__,
        "sb3_distill.deployed": f"{type(deployed).__name__} ({kind})",
        "sb3_distill.observation_space": repr(deployed.observation_space),
        "sb3_distill.action_space": repr(deployed.action_space),
        "sb3_distill.input": f"obs: {str(input_dtype).replace('torch.', '')} (batch, {', '.join(map(str, input_shape))})",
        "sb3_distill.outputs": ", ".join(names),
        "sb3_distill.preprocessing": ", ".join(steps) or "none",
    }


class OnnxPredictor:
    """
    A file written by :func:`export_onnx` behind SB3's ``predict`` signature (numpy in and out), run by
    onnxruntime on the CPU, e.g. to score the deployed file with ``evaluate_policy``. Like the graph, it is
    deterministic: ``predict(..., deterministic=False)`` raises a ``ValueError``.

    :param path: the .onnx file
    :param n_threads: onnxruntime's intra-op threads (1 is the fastest for a single small network per process)
    """

    def __init__(self, path: str | pathlib.Path, n_threads: int = 1) -> None:
        try:
            import onnxruntime as ort
        except ImportError as error:  # pragma: no cover
            raise ImportError("OnnxPredictor needs onnxruntime: pip install 'sb3-distill[onnx]'") from error
        if isinstance(n_threads, bool) or not isinstance(n_threads, (int, np.integer)) or n_threads < 1:
            raise ValueError(f"`n_threads` must be a positive integer, got {n_threads!r}")
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = int(n_threads), 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        obs_input = self.session.get_inputs()[0]
        self.input_dtype = {"tensor(float)": np.float32, "tensor(uint8)": np.uint8, "tensor(int64)": np.int64}[obs_input.type]
        # Dimensions of one observation (the first of the input is the batch)
        self.observation_ndim = len(obs_input.shape) - 1

    def predict(
        self,
        observation: np.ndarray,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """
        The action(s) of the exported policy, as ``model.predict(observation, deterministic=True)`` gives them.

        :param observation: one observation, or a batch of them
        :param state: returned unchanged (no recurrent policy)
        :param episode_start: unused
        :param deterministic: must be True
        :return: the action(s) and ``state``
        """
        if not deterministic:
            raise ValueError("`deterministic` must be True: the exported graph gives the deterministic action only")
        obs = np.asarray(observation, dtype=self.input_dtype)
        batched = obs.ndim > self.observation_ndim
        actions = self.session.run(["action"], {"obs": obs if batched else obs[None]})[0]
        return (actions if batched else actions[0]), state
