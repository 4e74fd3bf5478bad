"""
Several tasks seen as one SB3 ``VecEnv``, for multi-task distillation (Rusu et al. 2015, "Policy
Distillation", arXiv:1511.06295: one student, one output head per game, the game known).

:class:`MultiTaskVecEnv` steps every task's vectorised env together (so that each task gets the same number of
steps) and gives SB3 one observation space: a ``Dict`` with the task's observation, normalised with its
teacher's frozen ``VecNormalize`` statistics (if any) and zero-padded to a common shape, and the task's index.
Image tasks (channel-first ``uint8`` images, e.g. MinAtar's 10x10 frames with 4 to 10 channels per game) must
share height and width; their channels are zero-padded at the end to the largest count (a padded channel is an
empty object layer, as MinAtar's channels are), and they stay ``uint8`` images so that a CNN student
normalises them as SB3 does.
"""

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from sb3_distill.common.teachers import TeacherPreprocessing


def padded_shape(shapes: Sequence[tuple[int, ...]]) -> tuple[int, ...]:
    """
    The smallest shape that holds every one of ``shapes`` (the largest size along each axis).

    :param shapes: observation shapes with the same number of axes, e.g. ``[(4,), (6,)]``
    :return: the common shape, e.g. ``(6,)``
    """
    if len({len(shape) for shape in shapes}) != 1:
        raise ValueError(f"The tasks' observations must have the same number of axes to be padded, got shapes {list(shapes)}")
    return tuple(int(size) for size in np.max(np.array(shapes), axis=0))


def pad_observations(observations: np.ndarray, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
    """
    A batch of observations zero-padded at the end of every axis to ``shape``.

    :param observations: shape (batch, *task_shape)
    :param shape: the common shape (each axis at least the task's)
    :param dtype: the padded array's dtype (float32 for vectors; uint8 for images)
    :return: shape (batch, *shape)
    """
    padded = np.zeros((len(observations), *shape), dtype=dtype)
    padded[(slice(None), *(slice(0, size) for size in observations.shape[1:]))] = observations
    return padded


def unpad_observations(observations: th.Tensor | np.ndarray, task_shape: tuple[int, ...]) -> Any:
    """
    The inverse of :func:`pad_observations`: a task's own observations out of padded ones.

    :param observations: shape (batch, *shape)
    :param task_shape: the task's observation shape
    :return: shape (batch, *task_shape) (a view)
    """
    return observations[(slice(None), *(slice(0, size) for size in task_shape))]


def padded_indices(shape: tuple[int, ...], task_shape: tuple[int, ...]) -> np.ndarray:
    """
    Where a task's flattened observation sits in the flattened padded observation: the columns of a first
    linear layer on padded inputs that a network on the task's own inputs keeps (the others see zeros).

    :param shape: the common (padded) shape
    :param task_shape: the task's shape
    :return: indices into the flattened padded observation, in the task's flattening order
    """
    return np.arange(int(np.prod(shape))).reshape(shape)[tuple(slice(0, size) for size in task_shape)].ravel()


class MultiTaskVecEnv(VecEnv):
    """
    Several tasks' vectorised envs stepped together as one ``VecEnv``: env ``i`` is env ``i % n_envs_per_task``
    of task ``i // n_envs_per_task``, so every task gets the same number of steps (balanced experience).

    Observations are a ``Dict``: ``"obs"``, the task's observation normalised with its teacher's frozen
    ``VecNormalize`` statistics (if any), as float32, zero-padded at the end of every axis to the largest
    size among the tasks (e.g. CartPole's 4 values and Acrobot's 6 give 6 values); ``"task"``, the task's
    index. Image tasks (all tasks channel-first ``uint8`` images of the same height and width, none normalised
    by ``VecNormalize``) keep ``uint8`` images, their channels zero-padded at the end to the largest count (e.g.
    MinAtar Breakout's 4 channels and SpaceInvaders' 6 give 6). Actions are ``Discrete(max n_actions)``; an
    action outside a task's own action space is an error.
    Each step's ``info`` holds ``"task"`` (its name); a ``"terminal_observation"`` is padded the same way.

    :param task_envs: task name -> its vectorised env (a discrete action space, a ``Box`` observation space:
        vectors for every task, or channel-first images of one height and width for every task; the same number of
        envs for every task)
    :param preprocessings: task name -> its teacher's preprocessing (None: none)
    :param env_ids: task name -> the env id its envs were made from (None: unknown), so that a model can build
        evaluation envs and this env again after ``load()``
    """

    def __init__(
        self,
        task_envs: dict[str, VecEnv],
        preprocessings: Mapping[str, TeacherPreprocessing | None] | None = None,
        env_ids: Mapping[str, str | None] | None = None,
    ) -> None:
        _check_task_envs(task_envs)
        self.tasks = list(task_envs)
        self.env_ids = {task: (env_ids or {}).get(task) for task in self.tasks}
        self.task_envs = list(task_envs.values())
        self.preprocessings = [(preprocessings or {}).get(task) for task in self.tasks]
        self.n_envs_per_task = self.task_envs[0].num_envs
        self.task_observation_spaces: list[spaces.Box] = [env.observation_space for env in self.task_envs]  # type: ignore[misc]
        self.task_action_spaces: list[spaces.Discrete] = [env.action_space for env in self.task_envs]  # type: ignore[misc]
        self.shape = padded_shape([space.shape for space in self.task_observation_spaces])
        self.images = is_image_space(self.task_observation_spaces[0])
        _check_preprocessings(self.tasks, self.preprocessings, self.images)
        padded_space = (
            spaces.Box(0, 255, shape=self.shape, dtype=np.uint8)
            if self.images
            else spaces.Box(-np.inf, np.inf, shape=self.shape, dtype=np.float32)
        )
        observation_space = spaces.Dict({"obs": padded_space, "task": spaces.Discrete(len(self.tasks))})
        action_space = spaces.Discrete(max(int(space.n) for space in self.task_action_spaces))
        self.task_index = np.repeat(np.arange(len(self.tasks)), self.n_envs_per_task)
        # SB3's VecEnv needs one render mode: tasks built differently (an env id, an env object) may differ
        self._one_render_mode = len({str(env.render_mode) for env in self.task_envs}) == 1
        super().__init__(len(self.tasks) * self.n_envs_per_task, observation_space, action_space)
        self._actions: np.ndarray | None = None

    def _task_slice(self, task: int) -> slice:
        return slice(task * self.n_envs_per_task, (task + 1) * self.n_envs_per_task)

    def process(self, task: int, observations: np.ndarray) -> np.ndarray:
        """
        A task's raw observations as this env gives them: normalised with the teacher's statistics and padded.

        :param task: the task's index
        :param observations: shape (batch, *task_shape)
        :return: shape (batch, *shape), float32 (uint8 for images)
        """
        preprocessing = self.preprocessings[task]
        if preprocessing is not None:
            observations = preprocessing.normalize(observations)
        return pad_observations(np.asarray(observations), self.shape, self.observation_space["obs"].dtype)  # type: ignore[index]

    def _dict_obs(self, task_observations: Iterable[Any]) -> dict[str, np.ndarray]:
        padded = [self.process(task, obs) for task, obs in enumerate(task_observations)]
        return {"obs": np.concatenate(padded), "task": self.task_index.copy()}

    def reset(self) -> VecEnvObs:
        observations, self.reset_infos = [], []
        for env in self.task_envs:
            observations.append(env.reset())
            self.reset_infos.extend(env.reset_infos)
        return self._dict_obs(observations)

    def step_async(self, actions: np.ndarray) -> None:
        actions = np.asarray(actions).reshape(self.num_envs)
        for task, space in enumerate(self.task_action_spaces):
            task_actions = actions[self._task_slice(task)]
            if np.any(task_actions < 0) or np.any(task_actions >= space.n):
                raise ValueError(f"Actions {task_actions} are outside task {self.tasks[task]!r}'s action space {space}")
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        assert self._actions is not None, "step_async() was not called"
        observations, rewards, dones, infos = [], [], [], []
        for task, env in enumerate(self.task_envs):
            obs, reward, done, task_infos = env.step(self._actions[self._task_slice(task)])
            for info in task_infos:
                info["task"] = self.tasks[task]
                if "terminal_observation" in info:
                    terminal = self.process(task, np.asarray(info["terminal_observation"])[None])[0]
                    info["terminal_observation"] = {"obs": terminal, "task": np.int64(task)}
            observations.append(obs)
            rewards.append(reward)
            dones.append(done)
            infos.extend(task_infos)
        self._actions = None
        return self._dict_obs(observations), np.concatenate(rewards), np.concatenate(dones), infos

    def close(self) -> None:
        for env in self.task_envs:
            env.close()

    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        # Each task's envs get their own seeds, seed + i for env i as SB3's VecEnv.seed
        return [
            value
            for task, env in enumerate(self.task_envs)
            for value in env.seed(None if seed is None else seed + task * self.n_envs_per_task)
        ]

    def _route(self, indices: VecEnvIndices) -> list[tuple[int, int]]:
        """(task, env index within the task) of each of ``indices``."""
        if indices is None:
            indices = range(self.num_envs)
        elif isinstance(indices, int):
            indices = [indices]
        return [divmod(int(index), self.n_envs_per_task) for index in indices]

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        if attr_name == "render_mode" and not self._one_render_mode:
            return [None] * len(self._route(indices))  # no rendering when the tasks' render modes differ
        return [self.task_envs[task].get_attr(attr_name, [index])[0] for task, index in self._route(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        for task, index in self._route(indices):
            self.task_envs[task].set_attr(attr_name, value, [index])

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        return [
            self.task_envs[task].env_method(method_name, *method_args, indices=[index], **method_kwargs)[0]
            for task, index in self._route(indices)
        ]

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        return [self.task_envs[task].env_is_wrapped(wrapper_class, [index])[0] for task, index in self._route(indices)]


def _check_task_envs(task_envs: Any) -> None:
    """A clear error for a mapping of task envs :class:`MultiTaskVecEnv` cannot combine."""
    if not isinstance(task_envs, dict) or not task_envs:
        raise ValueError(f"The task envs must be a non-empty dict of task name -> VecEnv, got {task_envs!r}")
    for task, env in task_envs.items():
        if not isinstance(env, VecEnv):
            raise TypeError(f"The env of task {task!r} must be a VecEnv, got {type(env).__name__}")
        if not isinstance(env.action_space, spaces.Discrete):
            raise ValueError(
                f"Task {task!r} has action space {env.action_space}: multi-task distillation supports Discrete actions only"
            )
        if not isinstance(env.observation_space, spaces.Box):
            raise ValueError(
                f"Task {task!r} has observation space {env.observation_space}: multi-task distillation supports Box "
                "observations only (vectors, or channel-first images)"
            )
    n_envs = {task: env.num_envs for task, env in task_envs.items()}
    if len(set(n_envs.values())) != 1:
        raise ValueError(f"Every task needs the same number of envs (balanced experience), got {n_envs}")
    observation_spaces = {task: env.observation_space for task, env in task_envs.items()}
    images = {task: is_image_space(space) for task, space in observation_spaces.items()}
    if len(set(images.values())) != 1:
        raise ValueError(
            f"The tasks mix image and vector observations ({observation_spaces}): give every task images, or every "
            "task vectors"
        )
    if all(images.values()):
        _check_image_spaces(observation_spaces)


def _check_image_spaces(observation_spaces: dict[str, Any]) -> None:
    """Image tasks: channel-first, one height and width (only channels are padded: a CNN then sees one frame size)."""
    for task, space in observation_spaces.items():
        if not is_image_space_channels_first(space):
            raise ValueError(
                f"Task {task!r} has images of shape {space.shape}: multi-task distillation needs channel-first images "
                "(wrap the env with SB3's `VecTransposeImage`, as the teacher was)"
            )
    frame_sizes = {task: tuple(space.shape[1:]) for task, space in observation_spaces.items()}
    if len(set(frame_sizes.values())) != 1:
        raise ValueError(
            f"Image tasks must share height and width (only channels are padded), got (height, width) {frame_sizes}"
        )


def _check_preprocessings(tasks: list[str], preprocessings: list[TeacherPreprocessing | None], images: bool) -> None:
    """Image observations stay uint8 images: a teacher normalising them with ``VecNormalize`` is not supported."""
    if not images:
        return
    for task, preprocessing in zip(tasks, preprocessings, strict=True):
        if preprocessing is not None and preprocessing.normalizes:
            raise ValueError(
                f"The teacher of image task {task!r} normalises observations with VecNormalize: multi-task "
                "distillation of images supports teachers trained on the raw uint8 images only"
            )
