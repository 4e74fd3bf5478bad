"""
Atari-like evidence at CPU scale: the distillation papers' tables on MinAtar.

MinAtar (Young & Tian, "MinAtar: An Atari-Inspired Testbed for Thorough and Reproducible Reinforcement
Learning Experiments", 2019, arXiv:1903.03176) keeps Atari's image input and game structure at 10x10xC.
This script trains, for each game and seed:

- ``teacher``: plain SB3 DQN with the MinAtar paper's network (one 3x3 conv of 16 filters, 128 units),
  cached under ``--output``/models so that every variant of a game and seed compares with (and
  PolicyDistillation distils from) the same teacher run;
- ``rtpd-fkl`` / ``rtpd-rkl``: RealTimeDistillDQN (Sun & Fazli, "Real-time Policy Distillation in Deep
  Reinforcement Learning", 2019, arXiv:1912.12630) with forward / reverse KL, imitation on, one teacher and
  the students ``STUDENTS_RUN`` trained together; ``rtpd``: both losses' students in ONE run on one teacher
  (:class:`SharedTeacherRealTime`), saved as the two variants above: only the teacher acts and it learns from
  its own TD loss, so each student trains exactly as in a separate run of its loss, at half the cost;
- ``ensemble-mean_loss`` / ``ensemble-mean_probs``: EnsembleDistillDQN (Sun & Fazli, "Ensemble Policy
  Distillation in Deep Reinforcement Learning", 2020), M=3 teachers, reverse KL, both reductions, one run per
  student; ``ensemble``: the same four students (two reductions x ``STUDENTS_RUN``) in ONE run on the same
  teachers (extra "shadow" students, ``benchmarks/ensemble_scale.py``), saved as the two variants above: the
  teachers act and learn from their own TD loss only, so each student gets the batches and teachers a separate
  run would give it, at about a third of the cost;
- ``pd``: PolicyDistillation (Rusu et al., "Policy Distillation", 2015, arXiv:1511.06295) from the cached
  teacher, student-driven (Czarnecki et al., "Distilling Policy Distillation", 2019, arXiv:1902.02186),
  scored against that teacher's final network: on ``--evaluate-teachers`` episodes once they are saved
  (:func:`pd_reference`), else on the teacher run's last evaluation.

Every ``--eval-freq`` env steps each member is evaluated greedily on ``--eval-episodes`` episodes. Reported,
as in the papers: a student's max evaluation return as % of its teacher's max, and the mean over the last
10 evaluations of the student's return as % of its teacher's at the same evaluation; medians over seeds and
the range. Results are written to ``--output``/minatar_<game>.json after every run (``--append`` keeps the
saved runs and skips those already there), then the markdown table and the plot; at the end, the summary
across games and seeds with the papers' orderings checked seed by seed (``benchmarks/minatar_summary.py``).

    python -m benchmarks.minatar --games Breakout SpaceInvaders --seeds 0 1 2 --variants teacher
    python -m benchmarks.minatar --games Breakout --seeds 0 --variants rtpd --append
    python -m benchmarks.minatar --games Breakout SpaceInvaders --evaluate-teachers 100
    python -m benchmarks.minatar --games Breakout SpaceInvaders --report-only
    python -m benchmarks.minatar --param-counts
"""

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import DQN
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from benchmarks.ensemble_scale import SharedTeachersEnsemble
from benchmarks.results_io import locked, write_json_atomic
from sb3_distill import EnsembleDistillDQN, PolicyDistillation, RealTimeDistillDQN
from sb3_distill.common.losses import distillation_loss
from sb3_distill.common.torch_layers import CompactNatureCNN, count_parameters, make_q_network, resolve_student_kwargs
from sb3_distill.common.utils import evaluate_q_functions

GAMES = ("Breakout", "SpaceInvaders", "Freeway", "Asterix", "Seaquest")
# Our env ids: MinAtar's own `MinAtar/<Game>-v1` (minimal action set, sticky actions 0.1, difficulty
# ramping, as the MinAtar paper) seen through `MinAtarImage`, with a time limit that keeps evaluation bounded
ENV_PREFIX = "MinAtarImage"
MAX_EPISODE_STEPS = 10_000


def env_id(game: str) -> str:
    """Our gymnasium id of a MinAtar game, e.g. ``MinAtarImage/Breakout-v1``."""
    return f"{ENV_PREFIX}/{game}-v1"


class MinAtarImage(gym.ObservationWrapper):
    """
    MinAtar's boolean ``(10, 10, C)`` frames as the channel-first ``uint8`` images in {0, 255} that SB3's
    ``is_image_space`` accepts, so that ``CnnPolicy`` divides them by 255 back to {0, 1} (``normalize_images``)
    and does not add a ``VecTransposeImage``.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        height, width, channels = env.observation_space.shape  # type: ignore[misc]
        self.observation_space = spaces.Box(0, 255, shape=(channels, height, width), dtype=np.uint8)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return np.transpose(observation, (2, 0, 1)).astype(np.uint8) * np.uint8(255)


def make_minatar_image(game: str, **kwargs: Any) -> gym.Env:
    """MinAtar's gymnasium env of ``game`` (minimal action set) wrapped by :class:`MinAtarImage`."""
    from minatar.gym import BaseEnv

    snake_case = {"SpaceInvaders": "space_invaders"}.get(game, game.lower())
    return MinAtarImage(BaseEnv(snake_case, use_minimal_action_set=True, **kwargs))


def register_minatar_envs() -> None:
    """Register ``MinAtarImage/<Game>-v1`` for every MinAtar game (once; later calls do nothing)."""
    for game in GAMES:
        if env_id(game) not in gym.registry:
            gym.register(
                env_id(game),
                entry_point=make_minatar_image,  # type: ignore[arg-type]
                kwargs=dict(game=game),
                max_episode_steps=MAX_EPISODE_STEPS,
            )


register_minatar_envs()


class MinAtarCNN(CompactNatureCNN):
    """
    The MinAtar paper's DQN network body: one 3x3 convolution of ``filters`` filters (stride 1, no padding),
    ReLU, then a fully connected layer of ``features_dim`` units and ReLU (the Q head is SB3's). Teacher:
    ``filters=16, features_dim=128``.

    It subclasses ``CompactNatureCNN`` only so that sb3_distill stacks it (``StackedQNetwork`` accepts
    ``NatureCNN``/``CompactNatureCNN``, whose layers are ``cnn`` then ``linear``); Nature-DQN's 8x8 stride-4
    convolution does not fit a 10x10 frame, so the parent's constructor is skipped.

    :param observation_space: channel-first image observation space (``MinAtarImage``)
    :param features_dim: number of units of the fully connected layer
    :param filters: number of filters of the convolution
    """

    def __init__(self, observation_space: gym.Space, features_dim: int = 128, filters: int = 16) -> None:
        if not isinstance(observation_space, spaces.Box) or len(observation_space.shape) != 3:
            raise ValueError(f"`MinAtarCNN` needs a channel-first image Box observation space, got {observation_space}")
        BaseFeaturesExtractor.__init__(self, observation_space, features_dim)
        self.filters = (int(filters),)
        n_channels, height, width = observation_space.shape
        self.cnn = nn.Sequential(nn.Conv2d(n_channels, filters, kernel_size=3, stride=1), nn.ReLU(), nn.Flatten())
        n_flatten = filters * (height - 2) * (width - 2)
        self.linear = nn.Sequential(nn.Linear(n_flatten, features_dim), nn.ReLU())


def network(filters: int, units: int) -> dict[str, Any]:
    """The policy kwargs of a MinAtar network ``{filters, units}`` (no hidden layer after the extractor)."""
    return dict(
        features_extractor_class=MinAtarCNN, features_extractor_kwargs=dict(filters=filters, features_dim=units), net_arch=[]
    )


# {filters, units}: the teacher (the MinAtar paper's DQN) and students at about the papers' ratios
# (25.2 %, 6.7 %, 3.7 %, 1.7 % of the teacher's parameters; exact counts: `--param-counts`)
TEACHER_NET = (16, 128)
STUDENT_NETS: dict[str, tuple[int, int]] = {
    "net1": (8, 64),  # ~25 %
    "net2": (4, 34),  # ~7 %
    "student1": (4, 18),  # ~3.6 %
    "student2": (2, 16),  # ~1.8 %
}
# The students every distillation run trains (RealTimeDistillDQN trains both in one run; the others one run each)
STUDENTS_RUN = ("student1", "student2")

# The MinAtar paper's DQN (Young & Tian 2019, Sec. 4): RMSProp (lr 2.5e-4, alpha 0.95, eps 0.01, centered),
# batch 32, replay 100k, target update every 1000 updates, epsilon 1 -> 0.1 over the first 100k frames,
# 5000 random steps first, gamma 0.99. `train_freq` is a command-line option (the paper: 1).
OPTIMIZER = dict(optimizer_class=th.optim.RMSprop, optimizer_kwargs=dict(alpha=0.95, eps=0.01, centered=True))


def dqn_settings(timesteps: int, train_freq: int) -> dict[str, Any]:
    """The teacher's DQN settings for a run of ``timesteps`` env steps."""
    return dict(
        learning_rate=2.5e-4,
        buffer_size=100_000,
        learning_starts=5_000,
        batch_size=32,
        gamma=0.99,
        train_freq=train_freq,
        gradient_steps=1,
        # every 1000 gradient steps, in env steps
        target_update_interval=1_000 * train_freq,
        exploration_initial_eps=1.0,
        exploration_final_eps=0.1,
        exploration_fraction=min(1.0, 100_000 / timesteps),
        max_grad_norm=10,
    )


def parameter_counts(game: str) -> dict[str, int]:
    """Parameter count of the teacher and every student (the whole Q-network, head included) on ``game``."""
    env = gym.make(env_id(game))
    counts = {}
    for name, (filters, units) in {"teacher": TEACHER_NET, **STUDENT_NETS}.items():
        kwargs = resolve_student_kwargs(network(filters, units), MinAtarCNN, True, th.optim.RMSprop, None)
        counts[name] = count_parameters(make_q_network(env.observation_space, env.action_space, kwargs))  # type: ignore[arg-type]
    return counts


def parameter_table(games: list[str]) -> str:
    lines = [
        "| network {filters, units} | " + " | ".join(games) + " |",
        "|---|" + "---|" * len(games),
    ]
    counts = {game: parameter_counts(game) for game in games}
    for name, net in {"teacher": TEACHER_NET, **STUDENT_NETS}.items():
        cells = [f"{counts[g][name]} ({100 * counts[g][name] / counts[g]['teacher']:.1f} %)" for g in games]
        lines.append(f"| {name} {{{net[0]}, {net[1]}}} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


class EvalCurve(BaseCallback):
    """
    Every ``eval_freq`` env steps, evaluate members greedily on ``n_episodes`` episodes and record the mean returns.

    :param evaluate: model -> {member name: mean return}
    """

    def __init__(self, game: str, eval_freq: int, n_episodes: int, seed: int, evaluate: Callable[[Any], dict[str, float]]):
        super().__init__()
        self.env = Monitor(gym.make(env_id(game)))
        self.env.reset(seed=seed + 1000)
        self.eval_freq, self.n_episodes, self.evaluate = eval_freq, n_episodes, evaluate
        self.steps: list[int] = []
        self.returns: dict[str, list[float]] = {}

    def _on_step(self) -> bool:
        if self.num_timesteps % self.eval_freq == 0:
            for name, value in self.evaluate(self).items():
                self.returns.setdefault(name, []).append(value)
            self.steps.append(self.num_timesteps)
            latest = {name: round(values[-1], 2) for name, values in self.returns.items()}
            print(f"  {self.num_timesteps} steps, {time.strftime('%H:%M:%S')}: {latest}", flush=True)
        return True


def _evaluate_members(rename: dict[str, str]) -> Callable[[EvalCurve], dict[str, float]]:
    """Evaluate with the model's ``evaluate_members`` and rename its members (e.g. student_0 -> student1)."""

    def evaluate(curve: EvalCurve) -> dict[str, float]:
        results = curve.model.evaluate_members(curve.env, curve.n_episodes)  # type: ignore[attr-defined]
        return {rename.get(name, name): mean for name, (mean, _) in results.items()}

    return evaluate


def _evaluate_policy(name: str, get_policy: Callable[[Any], Any]) -> Callable[[EvalCurve], dict[str, float]]:
    def evaluate(curve: EvalCurve) -> dict[str, float]:
        policy = get_policy(curve.model)
        policy.set_training_mode(False)
        mean, _ = evaluate_policy(policy, curve.env, curve.n_episodes, warn=False)
        return {name: float(mean)}  # type: ignore[arg-type]

    return evaluate


def teacher_path(folder: Path, game: str, seed: int, args: argparse.Namespace) -> Path:
    return folder / "models" / f"dqn_{game}_seed{seed}_{args.timesteps}steps_tf{args.train_freq}.zip"


#: EnsembleDistillDQN's two reductions of the teachers (``ensemble_reduction``)
REDUCTIONS = ("mean_loss", "mean_probs")
#: The real-time variants' distillation losses
RT_LOSSES = {"rtpd-fkl": "forward_kl", "rtpd-rkl": "reverse_kl"}
VARIANTS = ("teacher", *RT_LOSSES, "rtpd", *(f"ensemble-{reduction}" for reduction in REDUCTIONS), "ensemble", "pd")
#: The variants trained in one run on the same teacher(s) (:func:`run_shared`), and the variants they are saved
#: as, as separate runs would be: "rtpd", both losses and both students; "ensemble", both reductions and both students
SHARED_VARIANTS = {"rtpd": tuple(RT_LOSSES), "ensemble": tuple(f"ensemble-{reduction}" for reduction in REDUCTIONS)}


def build_realtime(
    game: str,
    seed: int,
    args: argparse.Namespace,
    model_class: type[RealTimeDistillDQN],
    students: list[str],
    distill_loss: str,
) -> RealTimeDistillDQN:
    """RealTimeDistillDQN (imitation on, temperature 0.1) with the teacher's settings and the students named."""
    return model_class(
        "CnnPolicy",
        env_id(game),
        policy_kwargs=dict(**network(*TEACHER_NET), **OPTIMIZER),
        students=[network(*STUDENT_NETS[name]) for name in students],
        distill_loss=distill_loss,
        imitation=True,
        temperature=0.1,
        # The teacher on its own: stacked with the students, they would be zero-padded to its width
        # and cost as much as the teacher each
        stack_teacher=False,
        seed=seed,
        device="cpu",
        **dqn_settings(args.timesteps, args.train_freq),
    )


def build(variant: str, game: str, seed: int, args: argparse.Namespace) -> tuple[list[BaseAlgorithm], list[EvalCurve]]:
    """
    The models of one variant (one per student where the method trains one student per run) and their
    evaluation callbacks.
    """
    settings = dqn_settings(args.timesteps, args.train_freq)
    teacher_kwargs = dict(**network(*TEACHER_NET), **OPTIMIZER)
    common = dict(seed=seed, device="cpu")

    def curve(evaluate: Callable[[EvalCurve], dict[str, float]]) -> EvalCurve:
        return EvalCurve(game, args.eval_freq, args.eval_episodes, seed, evaluate)

    if variant == "teacher":
        model = DQN("CnnPolicy", env_id(game), policy_kwargs=teacher_kwargs, **settings, **common)
        return [model], [curve(_evaluate_policy("teacher", lambda m: m.policy))]
    if variant in RT_LOSSES:
        model = build_realtime(game, seed, args, RealTimeDistillDQN, list(STUDENTS_RUN), RT_LOSSES[variant])
        rename = {f"student_{i}": name for i, name in enumerate(STUDENTS_RUN)}
        return [model], [curve(_evaluate_members(rename))]
    models: list[BaseAlgorithm] = []
    curves = []
    for name in STUDENTS_RUN:
        if variant.startswith("ensemble-"):
            model = EnsembleDistillDQN(
                "CnnPolicy",
                env_id(game),
                policy_kwargs=teacher_kwargs,
                student_policy_kwargs=network(*STUDENT_NETS[name]),
                n_teachers=3,
                distill_loss="reverse_kl",
                ensemble_reduction=variant.removeprefix("ensemble-"),
                temperature=0.1,
                **settings,
                **common,
            )
            rename = {"student": name}
            curves.append(curve(_evaluate_members(rename)))
        elif variant == "pd":
            teacher = DQN.load(teacher_path(args.output, game, seed, args), device="cpu")
            model = PolicyDistillation(
                "CnnPolicy",
                env_id(game),
                teacher=teacher,
                student_policy_kwargs=dict(**network(*STUDENT_NETS[name]), **OPTIMIZER),
                control="student",
                loss="forward_kl",
                temperature=0.1,
                **{
                    key: settings[key]
                    for key in ("learning_rate", "buffer_size", "learning_starts", "batch_size", "train_freq")
                },
                **common,
            )
            curves.append(curve(_evaluate_policy(name, lambda m: m.policy.student)))
        else:
            raise ValueError(f"`variant` must be one of {VARIANTS}, got {variant!r}")
        models.append(model)
    return models, curves


def build_shared_ensemble(game: str, seed: int, args: argparse.Namespace) -> SharedTeachersEnsemble:
    """
    One EnsembleDistillDQN (M=3, reverse KL) whose student is the first of :data:`STUDENTS_RUN` with the first of
    :data:`REDUCTIONS`, and a shadow student (``benchmarks/ensemble_scale.py``) for every other student and
    reduction, named "<reduction>/<student>": each trained on the same batches against the same teachers. The
    teachers act and learn from their own TD loss only, so each student gets what a separate run would give it.
    """
    first = STUDENTS_RUN[0]
    model = SharedTeachersEnsemble(
        "CnnPolicy",
        env_id(game),
        policy_kwargs=dict(**network(*TEACHER_NET), **OPTIMIZER),
        student_policy_kwargs=network(*STUDENT_NETS[first]),
        n_teachers=3,
        distill_loss="reverse_kl",
        ensemble_reduction=REDUCTIONS[0],
        temperature=0.1,
        seed=seed,
        device="cpu",
        **dqn_settings(args.timesteps, args.train_freq),
    )
    shadows = {}
    for reduction in REDUCTIONS:
        for name in STUDENTS_RUN:
            if (reduction, name) != (REDUCTIONS[0], first):
                kwargs = resolve_student_kwargs(network(*STUDENT_NETS[name]), MinAtarCNN, True, th.optim.RMSprop, None)
                student = make_q_network(model.observation_space, model.action_space, kwargs)  # type: ignore[arg-type]
                shadows[f"{reduction}/{name}"] = {"ensemble_reduction": reduction, "student": student}
    model.attach_shadow_students(shadows)
    return model


def _evaluate_shared_ensemble(curve: EvalCurve) -> dict[str, float]:
    """The teachers (``teacher_j``) and every student of :func:`build_shared_ensemble` ("<reduction>/<student>")."""
    model: SharedTeachersEnsemble = curve.model  # type: ignore[assignment]
    functions = {name: q for name, q in model.member_q_functions().items() if name.startswith("teacher_")}
    functions[f"{REDUCTIONS[0]}/{STUDENTS_RUN[0]}"] = model.student
    functions.update({name: student for name, (student, _) in model.shadows.items()})
    results = evaluate_q_functions(model.policy, functions, curve.env, curve.n_episodes)
    return {name: mean for name, (mean, _) in results.items()}


def new_result(variant: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """A result of ``variant`` with the run's settings, before its curves."""
    return dict(
        variant=variant,
        seed=seed,
        timesteps=args.timesteps,
        train_freq=args.train_freq,
        eval_freq=args.eval_freq,
        eval_episodes=args.eval_episodes,
        returns={},
        seconds=0.0,
    )


class SharedTeacherRealTime(RealTimeDistillDQN):
    """
    ``RealTimeDistillDQN`` whose students are distilled with different losses (:meth:`set_student_losses`) and
    may start from the same initial weights (:meth:`tie_initial_weights`). Only the teacher acts and it learns
    from its own TD loss; each student's update depends on its own losses only (its distillation loss, its TD
    loss, its own clipping). So a group of students with one loss trains exactly as a separate run with that
    ``distill_loss`` would train them (``tests/test_minatar.py`` checks this), at the cost of one teacher.
    """

    def set_student_losses(self, losses: list[str]) -> None:
        """
        Distil student i with ``losses[i]`` (``distill_loss`` is then unused); call before ``learn``.

        :param losses: one of ``"forward_kl"``, ``"reverse_kl"``, ``"nll"``, ``"mse"`` per student
        """
        if len(losses) != self.n_students:
            raise ValueError(f"`losses` must name one loss per student ({self.n_students}), got {losses!r}")
        groups: dict[int, dict[str, list[int]]] = {}
        for loss, (stack, member) in zip(losses, self.policy.student_members, strict=True):
            # Positions among the stack's students (stack 0's member 0 is the teacher when it is stacked)
            position = member - (1 if stack == 0 and self.policy.teacher_in_stack else 0)
            groups.setdefault(stack, {}).setdefault(loss, []).append(position)
        self.student_losses = {
            stack: {loss: th.as_tensor(positions, device=self.device) for loss, positions in by_loss.items()}
            for stack, by_loss in groups.items()
        }

    def tie_initial_weights(self, copies: dict[int, int]) -> None:
        """
        Before ``learn``: student ``target`` starts from student ``source``'s weights, for each ``target: source``
        (both in one stack), and its target network likewise.
        """
        stacks, targets = self.policy.student_stacks, self.policy.student_stack_targets
        for target, source in copies.items():
            stack, member = self.policy.student_members[target]
            source_stack, source_member = self.policy.student_members[source]
            if stack != source_stack:
                raise ValueError(f"students {source} and {target} are in different stacks: their weights cannot be tied")
            stacks[stack].copy_member_within_(source_member, th.arange(stacks[stack].n_members) == member)
        for online, target_stack in zip(stacks, targets, strict=True):
            target_stack.load_state_dict(online.state_dict())

    def _stack_distillation_loss(self, stack: int, student_q: th.Tensor, teacher_q: th.Tensor) -> th.Tensor:
        # The mean over the stack's K_i students of each one's own loss, as the library's single loss gives
        total = sum(
            len(positions) * distillation_loss(student_q[positions], teacher_q, loss=loss, temperature=self.temperature)
            for loss, positions in self.student_losses[stack].items()
        )
        return total / student_q.shape[0]  # type: ignore[return-value]


def build_shared_realtime(game: str, seed: int, args: argparse.Namespace) -> SharedTeacherRealTime:
    """
    One RealTimeDistillDQN teacher with the students :data:`STUDENTS_RUN` once per loss of :data:`RT_LOSSES`
    (student ``i * len(STUDENTS_RUN) + j`` is student j with the i-th loss); every loss's students start from
    the first loss's initial weights, as separate runs of the same seed would.
    """
    names = [name for _ in RT_LOSSES for name in STUDENTS_RUN]
    model = build_realtime(game, seed, args, SharedTeacherRealTime, names, "reverse_kl")
    assert isinstance(model, SharedTeacherRealTime)
    model.set_student_losses([loss for loss in RT_LOSSES.values() for _ in STUDENTS_RUN])
    model.tie_initial_weights({i: i % len(STUDENTS_RUN) for i in range(len(STUDENTS_RUN), len(names))})
    return model


def shared_member_names(variant: str) -> dict[str, str]:
    """
    The students of a shared run of ``variant``, by their names in its evaluations, -> "<saved variant>/<student>"
    (the teachers keep their names).
    """
    if variant == "rtpd":
        students = [f"{saved_as}/{name}" for saved_as in RT_LOSSES for name in STUDENTS_RUN]
        return {f"student_{i}": name for i, name in enumerate(students)}
    return {f"{reduction}/{name}": f"ensemble-{reduction}/{name}" for reduction in REDUCTIONS for name in STUDENTS_RUN}


def run_shared(variant: str, game: str, seed: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    """A variant of :data:`SHARED_VARIANTS`: one run, one result per variant it is saved as."""
    th.manual_seed(seed)
    model: BaseAlgorithm
    if variant == "ensemble":
        model, evaluate = build_shared_ensemble(game, seed, args), _evaluate_shared_ensemble
    else:
        model, evaluate = build_shared_realtime(game, seed, args), _evaluate_members({})
    curve = EvalCurve(game, args.eval_freq, args.eval_episodes, seed, evaluate)
    start = time.perf_counter()
    model.learn(args.timesteps, callback=curve)
    seconds = time.perf_counter() - start
    member_of = shared_member_names(variant)
    returns = {member_of.get(name, name): values for name, values in curve.returns.items()}
    results = []
    for saved_as in SHARED_VARIANTS[variant]:
        result = new_result(saved_as, seed, args)
        # The shared teachers' curves, then this variant's students under their own names
        result["returns"] = {name: values for name, values in returns.items() if "/" not in name}
        result["returns"].update({name: returns[f"{saved_as}/{name}"] for name in STUDENTS_RUN})
        result.update(seconds=seconds, steps=curve.steps, shared_teachers_with=list(SHARED_VARIANTS[variant]))
        results.append(result)
    summary = {name: round(values[-1], 1) for name, values in returns.items()}
    print(f"{game} seed {seed} {variant} (shared teachers): final {summary}, {seconds:.0f} s", flush=True)
    return results


def run(variant: str, game: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train one variant on one game and seed; return its evaluation curves."""
    th.manual_seed(seed)
    if variant == "pd" and not teacher_path(args.output, game, seed, args).exists():
        run_teacher = run("teacher", game, seed, args)
        save_run(args.output, game, run_teacher, args)
    models, curves = build(variant, game, seed, args)
    result = new_result(variant, seed, args)
    for model, eval_curve in zip(models, curves, strict=True):
        start = time.perf_counter()
        model.learn(args.timesteps, callback=eval_curve)
        result["seconds"] += time.perf_counter() - start
        result["steps"] = eval_curve.steps
        result["returns"].update(eval_curve.returns)
        if variant == "teacher":
            path = teacher_path(args.output, game, seed, args)
            path.parent.mkdir(parents=True, exist_ok=True)
            model.save(path)
    summary = {name: round(values[-1], 1) for name, values in result["returns"].items()}
    print(f"{game} seed {seed} {variant}: final {summary}, {result['seconds']:.0f} s", flush=True)
    return result


def results_path(folder: Path, game: str) -> Path:
    return folder / f"minatar_{game}.json"


def load_runs(folder: Path, game: str) -> list[dict[str, Any]]:
    path = results_path(folder, game)
    return json.loads(path.read_text())["runs"] if path.exists() else []


def save_run(folder: Path, game: str, result: dict[str, Any], args: argparse.Namespace) -> None:
    """Add one run to the saved results of ``game`` (re-read first, so that runs saved meanwhile are kept)."""
    path = results_path(folder, game)
    with locked(path):
        runs = [
            saved
            for saved in load_runs(folder, game)
            if not (saved["variant"] == result["variant"] and saved["seed"] == result["seed"] and same_budget(saved, args))
        ]
        write_json_atomic(path, {"game": game, "runs": [*runs, result]})


def evaluate_final_teacher(game: str, seed: int, args: argparse.Namespace, n_episodes: int) -> dict[str, Any]:
    """The cached teacher's final network, greedy, on ``n_episodes`` episodes of its own seeded env."""
    model = DQN.load(teacher_path(args.output, game, seed, args), device="cpu")
    env = Monitor(gym.make(env_id(game)))
    env.reset(seed=seed + 2000)
    returns, _ = evaluate_policy(model, env, n_episodes, deterministic=True, return_episode_rewards=True, warn=False)
    return {"episodes": n_episodes, "mean": float(np.mean(returns)), "std": float(np.std(returns))}


def add_final_evaluations(game: str, seeds: list[int], args: argparse.Namespace) -> None:
    """
    Evaluate each seed's cached teacher on ``--evaluate-teachers`` episodes and save the result in its run
    (``final_evaluation``): a steadier reference for PolicyDistillation's students than one evaluation of
    ``--eval-episodes`` episodes. Seeds without a saved teacher run and cached model are skipped.
    """
    path = results_path(args.output, game)
    for seed in seeds:
        saved = [r for r in load_runs(args.output, game) if r["variant"] == "teacher" and r["seed"] == seed]
        if not any(same_budget(r, args) for r in saved) or not teacher_path(args.output, game, seed, args).exists():
            print(f"{game} seed {seed}: no saved teacher run with its cached model at this budget, skipped", flush=True)
            continue
        evaluation = evaluate_final_teacher(game, seed, args, args.evaluate_teachers)
        with locked(path):
            runs = load_runs(args.output, game)
            for run in runs:
                if run["variant"] == "teacher" and run["seed"] == seed and same_budget(run, args):
                    run["final_evaluation"] = evaluation
            write_json_atomic(path, {"game": game, "runs": runs})
        print(f"{game} seed {seed} teacher's final network: {evaluation}", flush=True)


def is_done(variant: str, game: str, seed: int, args: argparse.Namespace) -> bool:
    """
    Whether ``--append`` may skip this run: it is saved with the same budget, and, for a teacher, its model is
    still cached (the variants that reuse it need the file, which is not committed).
    """
    if variant in SHARED_VARIANTS:
        return all(is_done(saved_as, game, seed, args) for saved_as in SHARED_VARIANTS[variant])
    done = [r for r in load_runs(args.output, game) if r["variant"] == variant and r["seed"] == seed]
    if not any(same_budget(r, args) for r in done):
        return False
    return variant != "teacher" or teacher_path(args.output, game, seed, args).exists()


def same_budget(saved: dict[str, Any], args: argparse.Namespace) -> bool:
    return saved["timesteps"] == args.timesteps and saved["train_freq"] == args.train_freq


def percentages(student: list[float], teacher: list[float], last: int = 10) -> tuple[float, float]:
    """
    The papers' two scores (Sun & Fazli 2019, Sec. 3): the student's max evaluation return as % of the teacher's
    max, and the mean over the last ``last`` evaluations of the student's return as % of the teacher's.
    Evaluations where the teacher scored 0 are left out of the mean (nan if none is left).
    """
    max_pct = 100 * max(student) / max(teacher) if max(teacher) > 0 else float("nan")
    pairs = [(s, t) for s, t in zip(student[-last:], teacher[-last:], strict=True) if t > 0]
    mean_pct = float(np.mean([100 * s / t for s, t in pairs])) if pairs else float("nan")
    return max_pct, mean_pct


def pd_reference(teacher_run: dict[str, Any]) -> float:
    """
    The return PolicyDistillation's students' mean is scored against: the network they distil, the teacher's
    final one, on the ``--evaluate-teachers`` evaluation (many episodes) when one is saved, else on the
    teacher run's last evaluation (``--eval-episodes`` episodes).
    """
    final = teacher_run.get("final_evaluation")
    return float(final["mean"]) if final else float(teacher_run["returns"]["teacher"][-1])


def pd_percentages(student: list[float], teacher_run: dict[str, Any], last: int = 10) -> tuple[float, float]:
    """
    PolicyDistillation's two scores: the student's max evaluation as % of the teacher run's max (the papers'
    rule, both a max over evaluations of the same number of episodes), and the mean of its last ``last``
    evaluations as % of :func:`pd_reference` (a fixed teacher: the network it distils).
    """
    teacher_max = max(teacher_run["returns"]["teacher"])
    max_pct = 100 * max(student) / teacher_max if teacher_max > 0 else float("nan")
    _, mean_pct = percentages(student, [pd_reference(teacher_run)] * len(student), last)
    return max_pct, mean_pct


def in_run_teacher(run: dict[str, Any]) -> list[float] | None:
    """The evaluation curve of the teacher trained inside a distillation run (the ensemble: its teachers' mean)."""
    if run["variant"].startswith("rtpd-"):
        return run["returns"]["teacher"]
    if run["variant"].startswith("ensemble-"):
        return list(np.mean([values for name, values in run["returns"].items() if name.startswith("teacher_")], axis=0))
    return None


def scores(runs: list[dict[str, Any]]) -> dict[tuple[str, str], list[tuple[int, float, float]]]:
    """(variant, student) -> [(seed, max %, mean %)] for every distillation run whose teacher is known."""
    teachers = {run["seed"]: run for run in runs if run["variant"] == "teacher"}
    table: dict[tuple[str, str], list[tuple[int, float, float]]] = {}
    for run in runs:
        if run["variant"] == "teacher":
            continue
        returns = run["returns"]
        for student in STUDENTS_RUN:
            if student not in returns:
                continue
            if run["variant"] == "pd":
                # A fixed teacher: its score is its final network's (:func:`pd_reference`)
                if run["seed"] not in teachers:
                    continue
                max_pct, mean_pct = pd_percentages(returns[student], teachers[run["seed"]])
            else:
                # Its own teacher; the ensemble: the average of the teachers' scores (the papers' rule)
                max_pct, mean_pct = percentages(returns[student], in_run_teacher(run))  # type: ignore[arg-type]
            table.setdefault((run["variant"], student), []).append((run["seed"], max_pct, mean_pct))
    return table


def median_range(values: list[float], digits: int = 0) -> str:
    """The finite values as "median [min, max]" ("-" if none, the value alone if one), ``digits`` decimals."""
    values = [v for v in values if np.isfinite(v)]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.median(values):.{digits}f} [{min(values):.{digits}f}, {max(values):.{digits}f}]"


# The papers' numbers for the games MinAtar shares with them (% of the teacher, max / mean; Atari, Nature-DQN
# teacher {32, 64, 64, 512}, 10-20M agent steps), for the student of about the same ratio:
# - [RT] Sun & Fazli, "Real-time Policy Distillation in Deep Reinforcement Learning" (2019, arXiv:1912.12630):
#   Table 1, Net3 {16, 16, 16, 64} (3.7 %), imitation on, and PD (Rusu et al.) as quoted there (max only);
#   Table 2, Net5 {8, 16, 8, 64} (1.7 %), forward KL, imitation on. Mean = mean % over the last 10 evaluations.
# - [EN] Sun & Fazli, "Ensemble Policy Distillation in Deep Reinforcement Learning" (2020): Table 1 (student1
#   {16, 16, 16, 64}, 3.7 %) and Table 2 (student2 {8, 8, 16, 64}, 1.7 %), M=3; the third column group
#   (reverse KL: its header reads "Ensemble-FKL" a second time in our text copy), quoted next to mean_loss,
#   which is the paper's Eq. 4 (sb3_distill.common.losses.distillation_loss); mean_probs is not in the paper.
PAPER: dict[tuple[str, str], dict[str, str]] = {
    ("rtpd-fkl", "student1"): {"Breakout": "69.5 / 91.1 [RT]", "SpaceInvaders": "94.2 / 95.4 [RT]"},
    ("rtpd-rkl", "student1"): {"Breakout": "101.2 / 107.7 [RT]", "SpaceInvaders": "102.6 / 98.4 [RT]"},
    ("rtpd-fkl", "student2"): {"Breakout": "92.1 / 100.4 [RT]", "SpaceInvaders": "94.2 / 86.0 [RT]"},
    ("pd", "student1"): {"Breakout": "78.6 / - [RT]", "SpaceInvaders": "20.9 / - [RT]"},
    ("ensemble-mean_loss", "student1"): {"Breakout": "120.6 / 112.8 [EN]", "Seaquest": "132.3 / 126.5 [EN]"},
    ("ensemble-mean_loss", "student2"): {"Breakout": "119.5 / 113.8 [EN]", "Seaquest": "132.1 / 125.2 [EN]"},
}


def report(game: str, runs: list[dict[str, Any]]) -> str:
    teachers = {run["seed"]: run for run in runs if run["variant"] == "teacher"}
    finals = any("final_evaluation" in run for run in teachers.values())
    first = runs[0]
    counts = parameter_counts(game)
    lines = [
        f"MinAtar {game} (`{env_id(game)}`): {first['timesteps']} env steps per run, train_freq "
        f"{first['train_freq']}, greedy evaluation every {first['eval_freq']} steps on {first['eval_episodes']} "
        f"episodes; CPU, torch {th.__version__}. Teacher {{16, 128}} = {counts['teacher']} parameters; "
        + ", ".join(
            f"{s} {{{STUDENT_NETS[s][0]}, {STUDENT_NETS[s][1]}}} = {counts[s]} ({100 * counts[s] / counts['teacher']:.1f} %)"
            for s in STUDENTS_RUN
        )
        + ".",
        "",
        "Teacher (plain SB3 DQN) per seed, final / max evaluation return"
        + (" (and its final network's mean ± std on the episodes given, `pd`'s reference)" if finals else "")
        + ": "
        + (
            ", ".join(
                f"seed {seed}: {run['returns']['teacher'][-1]:.1f} / {max(run['returns']['teacher']):.1f}"
                + (
                    f" ({final['mean']:.1f} ± {final['std']:.1f} on {final['episodes']})"
                    if (final := run.get("final_evaluation"))
                    else ""
                )
                for seed, run in sorted(teachers.items())
            )
            or "none yet"
        )
        + ".",
        "",
        "The teachers trained inside the distillation runs (the ensemble: mean of its 3), per seed, final / max: "
        + (
            "; ".join(
                f"{run['variant']} seed {run['seed']}: {in_run[-1]:.1f} / {max(in_run):.1f}"
                for run in sorted(runs, key=lambda run: (run["variant"], run["seed"]))
                if (in_run := in_run_teacher(run)) is not None
            )
            or "none yet"
        )
        + ".",
        "",
        "| variant | student | seeds | max % of teacher, median [range] | mean % (last 10 evals), median [range] "
        "| paper (max / mean %) |",
        "|---|---|---|---|---|---|",
    ]
    for (variant, student), values in sorted(scores(runs).items()):
        paper = PAPER.get((variant, student), {}).get(game, "-")
        lines.append(
            f"| {variant} | {student} | {sorted(seed for seed, _, _ in values)} | {median_range([v[1] for v in values])} "
            f"| {median_range([v[2] for v in values])} | {paper} |"
        )
    return "\n".join(lines)


def plot(game: str, runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    curves: dict[str, list[tuple[list[int], list[float]]]] = {}
    for run in runs:
        for member, values in run["returns"].items():
            if member.startswith("teacher_"):
                continue
            label = "teacher (DQN)" if run["variant"] == "teacher" else f"{run['variant']} {member}"
            curves.setdefault(label, []).append((run["steps"], values))
    for label, members in sorted(curves.items()):
        length = min(len(values) for _, values in members)
        mean = np.mean([values[:length] for _, values in members], axis=0)
        style = dict(color="black", linewidth=2) if label.startswith("teacher (") else {}
        ax.plot(members[0][0][:length], mean, label=f"{label} ({len(members)} seeds)", **style)  # type: ignore[arg-type]
    ax.set_xlabel("environment steps")
    ax.set_ylabel("greedy evaluation return (mean over seeds)")
    ax.set_title(f"MinAtar {game}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(folder: Path, game: str) -> None:
    runs = load_runs(folder, game)
    if not runs:
        return
    # One budget per table: the latest run's (runs at other budgets stay in the JSON)
    runs = [run for run in runs if (run["timesteps"], run["train_freq"]) == (runs[-1]["timesteps"], runs[-1]["train_freq"])]
    text = report(game, runs)
    print("\n" + text, flush=True)
    (folder / f"minatar_{game}.md").write_text(text + "\n")
    plot(game, runs, folder / f"minatar_{game}.png")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--games", nargs="+", default=["Breakout", "SpaceInvaders"], choices=GAMES)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=["teacher"], choices=VARIANTS)
    parser.add_argument("--timesteps", type=int, default=500_000)
    parser.add_argument("--train-freq", type=int, default=4)
    parser.add_argument("--eval-freq", type=int, default=25_000)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "minatar")
    parser.add_argument("--append", action="store_true", help="keep the saved runs; skip the runs already saved")
    parser.add_argument("--report-only", action="store_true", help="rewrite the tables and plots from the saved JSON")
    parser.add_argument(
        "--evaluate-teachers",
        type=int,
        default=0,
        metavar="N",
        help="instead of training: evaluate the cached teachers' final networks of --games and --seeds on N "
        "episodes (PD's reference), save, and report",
    )
    parser.add_argument("--param-counts", action="store_true", help="print the networks' parameter counts and exit")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    th.set_num_threads(1)
    if args.param_counts:
        print(parameter_table(list(GAMES)))
        return
    if args.evaluate_teachers < 0:
        raise ValueError(f"--evaluate-teachers must be >= 0, got {args.evaluate_teachers}")
    if args.evaluate_teachers:
        for game in args.games:
            add_final_evaluations(game, args.seeds, args)
    elif not args.report_only:
        if not args.append:
            for game in args.games:
                results_path(args.output, game).unlink(missing_ok=True)
        # Seed-major order: every variant of seed 0 on every game first, so that a batch cut short still has
        # complete seeds
        for seed in args.seeds:
            for game in args.games:
                for variant in args.variants:
                    if is_done(variant, game, seed, args):
                        continue
                    results = (
                        run_shared(variant, game, seed, args)
                        if variant in SHARED_VARIANTS
                        else [run(variant, game, seed, args)]
                    )
                    for result in results:
                        save_run(args.output, game, result, args)
                    write_report(args.output, game)
    for game in args.games:
        write_report(args.output, game)
    from benchmarks.minatar_summary import write_summary

    write_summary(args.output)


if __name__ == "__main__":
    main()
