"""
EnsembleDistillDQN at any reward scale: the paper's raw temperature against Q-values scaled by their spread
(``temperature_scaling="spread"``) and teachers weighted by their returns (``teacher_weighting="returns"``),
with the zoo config (zoo_configs/ensemble_distill_dqn.yml) of the environment.

Every run evaluates every member (3 teachers and the student, greedy) every ``--eval-freq`` steps (these
evaluations also feed ``teacher_weighting="returns"``) and at the end on ``--final-episodes`` episodes. A run
is written to ``benchmarks/results/ensemble_scale_<env>.json`` as soon as it finishes; the table
(``.md``) and the plot (``.png``) are rebuilt from all saved runs. ``--append`` adds seeds or variants to the
saved runs (a run already saved with the same variant, seed and budget is skipped).

    python benchmarks/ensemble_scale.py --env LunarLander-v3 --seeds 0 1 2 3 4 --append
    python benchmarks/ensemble_scale.py --env CartPole-v1 --seeds 0 1 2 --append

``--shared-teachers`` trains the variants of one seed in ONE run: the teachers never see the student (they
act in turn and learn from their own TD loss), so every variant of a seed trains the same teachers; the
first variant is the model's own student and each other variant gets an extra ("shadow") student, a copy of
the first one's initial weights with its own optimizer, trained on the same batches against the same
teachers' Q-values with that variant's temperature scaling and teacher weights (the library's functions).
Its updates equal those of a separate run of that variant (``tests/test_benchmarks.py`` checks this), at
about a third of the cost. Every student is then evaluated on its own episodes from the same seeded resets.
"""

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
import yaml
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.utils import LinearSchedule

from benchmarks.results_io import locked, write_json_atomic
from sb3_distill.common.callbacks import EvalMembersCallback
from sb3_distill.common.diagnostics import agreement_rate, one_hot_rate
from sb3_distill.common.losses import spread_scaled_q_values, weighted_distillation_loss
from sb3_distill.common.utils import evaluate_q_functions
from sb3_distill.ensemble_distill_dqn.ensemble_distill_dqn import EnsembleDistillDQN

ROOT = Path(__file__).resolve().parent.parent
#: The variants compared: their EnsembleDistillDQN arguments on top of the zoo config
VARIANTS: dict[str, dict[str, Any]] = {
    "raw": {"temperature_scaling": None, "teacher_weighting": None},
    "spread": {"temperature_scaling": "spread", "teacher_weighting": None},
    "returns": {"temperature_scaling": None, "teacher_weighting": "returns"},
    "spread+returns": {"temperature_scaling": "spread", "teacher_weighting": "returns"},
}


class SharedTeachersEnsemble(EnsembleDistillDQN):
    """
    ``EnsembleDistillDQN`` with extra ("shadow") students, trained on every gradient step on the same batch
    against the same teachers' Q-values (before the teachers' update of that step), each with its own settings
    (temperature scaling, teacher weights, ensemble reduction, network), its own optimizer (the student's class
    and settings, the student's learning-rate schedule) and the same per-network gradient clipping. The model's
    own training (teachers and student) is unchanged: the shadows use no random numbers.
    """

    def attach_shadow_students(self, shadows: dict[str, dict[str, Any]]) -> None:
        """
        One shadow student per entry; call before ``learn``.

        :param shadows: name -> its settings: ``temperature_scaling`` and ``teacher_weighting`` (default None),
            ``ensemble_reduction`` (default: the model's) and ``student``, an untrained Q-network for the same
            spaces (default: a copy of the model's untrained student)
        """
        optimizer = self.policy.student_optimizer
        self.shadows: dict[str, tuple[th.nn.Module, th.optim.Optimizer]] = {}
        self.shadow_settings: dict[str, dict[str, Any]] = {}
        for name, settings in shadows.items():
            student = settings.get("student")
            if student is None:
                student = copy.deepcopy(self.student)
            self.shadows[name] = (student, type(optimizer)(student.parameters(), **optimizer.defaults))
            self.shadow_settings[name] = {
                "temperature_scaling": settings.get("temperature_scaling"),
                "teacher_weighting": settings.get("teacher_weighting"),
                "ensemble_reduction": settings.get("ensemble_reduction", self.ensemble_reduction),
            }
        self.shadow_weights: dict[str, th.Tensor | None] = {name: None for name in shadows}

    def _distillation_teacher_q(self, all_q_values: th.Tensor) -> th.Tensor:
        self._raw_teacher_q = all_q_values.detach()
        return super()._distillation_teacher_q(all_q_values)

    def _step_losses(self, *batch: Any) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        total_loss, teacher_loss, distill_loss = super()._step_losses(*batch)
        observations = batch[0]
        spread = self.q_spread_ema / self.q_spread_ema_weight
        losses = []
        for name, (student, _) in self.shadows.items():
            settings, raw = self.shadow_settings[name], self._raw_teacher_q
            losses.append(
                weighted_distillation_loss(
                    student(observations),
                    spread_scaled_q_values(raw, spread) if settings["temperature_scaling"] == "spread" else raw,
                    self.shadow_weights[name],
                    loss=self.distill_loss,
                    temperature=self.temperature,
                    reduction=settings["ensemble_reduction"],
                )
            )
        # The shadows' parameters are disjoint from the model's: the gradient of the sum is each one's own
        shadow_loss = th.stack(losses).sum() if losses else 0.0
        return total_loss + shadow_loss, teacher_loss, distill_loss

    def _trained_modules(self) -> list[tuple[th.nn.Module, int]]:
        # Each shadow student clipped on its own, as the model's student
        return [*super()._trained_modules(), *((student, 1) for student, _ in self.shadows.values())]

    def _step_optimizers(self) -> None:
        super()._step_optimizers()
        for _, optimizer in self.shadows.values():
            optimizer.step()

    def _update_learning_rates(self, student_optimizer: th.optim.Optimizer) -> float:
        learning_rate = super()._update_learning_rates(student_optimizer)
        for _, optimizer in self.shadows.values():
            for group in optimizer.param_groups:
                group["lr"] = learning_rate
        return learning_rate

    def evaluate_members(self, env: Any, n_eval_episodes: int = 10) -> dict[str, tuple[float, float]]:
        results = super().evaluate_members(env, n_eval_episodes)
        # Each shadow's teacher weights, from the same teachers' evaluations (the library's own rule)
        own = self.teacher_weighting
        for name in self.shadows:
            self.teacher_weighting = self.shadow_settings[name]["teacher_weighting"]
            self._update_teacher_weights()
            self.shadow_weights[name] = self._teacher_weights
        self.teacher_weighting = own
        self._update_teacher_weights()
        return results


def evaluate_students(model: SharedTeachersEnsemble, primary: str, env: Any, seed: int, n_episodes: int) -> dict[str, float]:
    """Every variant's student, greedy, each on episodes from ``env.reset(seed=seed)``."""
    students = {primary: model.student, **{variant: student for variant, (student, _) in model.shadows.items()}}
    results = {}
    for variant, student in students.items():
        env.reset(seed=seed)
        results[variant] = evaluate_q_functions(model.policy, {"student": student}, env, n_episodes)["student"][0]
    return results


class DiagnosedEvalCallback(EvalMembersCallback):
    """``EvalMembersCallback`` that also keeps, at each evaluation, each teacher's agreement with the student and
    one-hot rate on the last training batch (what ``train/agreement_teacher_j`` logs)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.diagnostics: list[dict[str, list[float]]] = []

    def _on_step(self) -> bool:
        if self.n_calls % self.eval_freq == 0:
            # The same start states (and engine noise, until the members' episodes differ) for every variant
            self.eval_env.reset(seed=self.n_calls)
        if self.n_calls % self.eval_freq == 0 and self.model._last_distill_q is not None:  # type: ignore[attr-defined]
            teacher_q, student_q = self.model._last_distill_q  # type: ignore[attr-defined]
            self.diagnostics.append(
                {
                    "agreement": agreement_rate(teacher_q, student_q).tolist(),
                    "one_hot_rate": one_hot_rate(teacher_q, self.model.temperature).tolist(),  # type: ignore[attr-defined]
                }
            )
        return super()._on_step()


class SharedEvalCallback(DiagnosedEvalCallback):
    """``DiagnosedEvalCallback`` that also evaluates every variant's student (:func:`evaluate_students`)."""

    def __init__(self, *args: Any, n_eval_episodes: int = 5, **kwargs: Any) -> None:
        super().__init__(*args, n_eval_episodes=n_eval_episodes, **kwargs)
        self.student_evaluations: list[dict[str, float]] = []

    def _on_step(self) -> bool:
        result = super()._on_step()
        if self.n_calls % self.eval_freq == 0:
            model: SharedTeachersEnsemble = self.model  # type: ignore[assignment]
            primary = model._benchmark_variant  # type: ignore[attr-defined]
            self.student_evaluations.append(
                evaluate_students(model, primary, self.eval_env, 10**5 + self.n_calls, self.n_eval_episodes)
            )
        return result


def zoo_hyperparams(env_id: str) -> dict[str, Any]:
    """The zoo config of ``env_id`` as EnsembleDistillDQN arguments (``lin_x`` schedules, kwargs strings)."""
    with open(ROOT / "zoo_configs" / "ensemble_distill_dqn.yml") as file:
        config = dict(yaml.safe_load(file)[env_id])
    for key in ("learning_rate", "student_learning_rate"):
        value = config.get(key)
        if isinstance(value, str) and value.startswith("lin_"):
            config[key] = LinearSchedule(float(value[4:]), 0.0, 1.0)
    for key in ("policy_kwargs", "student_policy_kwargs"):
        if isinstance(config.get(key), str):
            config[key] = eval(config[key])  # the zoo's format: "dict(net_arch=[64, 64])"
    # The zoo's EvalMembersCallback (which feeds `teacher_weighting="returns"`): the runs here bring their own;
    # the variants set the distillation options themselves
    for key in ("callback", *VARIANTS["raw"]):
        config.pop(key, None)
    return config


def model_arguments(env_id: str, args: argparse.Namespace) -> tuple[str, int, dict[str, Any]]:
    """The zoo config of ``env_id``: its policy, its budget (or ``--timesteps``) and the other arguments."""
    config = zoo_hyperparams(env_id)
    timesteps = args.timesteps or int(config.pop("n_timesteps"))
    config.pop("n_timesteps", None)
    return config.pop("policy"), timesteps, config


def train(model: EnsembleDistillDQN, callback: EvalMembersCallback, timesteps: int, seed: int) -> tuple[float, Any]:
    """Train; return the training time (s) and the final evaluation env, reset with the seed's final seed."""
    start = time.time()
    model.learn(timesteps, callback=callback)
    train_time = time.time() - start
    final_env = Monitor(gym.make(model.env.envs[0].spec.id))  # type: ignore[union-attr, attr-defined]
    final_env.reset(seed=10**6 + seed)
    return train_time, final_env


def run(env_id: str, variant: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train one model and return its evaluation curve and final evaluation."""
    policy, timesteps, config = model_arguments(env_id, args)
    model = EnsembleDistillDQN(policy, env_id, seed=seed, **config, **VARIANTS[variant])
    callback = DiagnosedEvalCallback(Monitor(gym.make(env_id)), eval_freq=args.eval_freq, n_eval_episodes=args.eval_episodes)
    train_time, final_env = train(model, callback, timesteps, seed)
    final = model.evaluate_members(final_env, n_eval_episodes=args.final_episodes)
    weights = None if model._teacher_weights is None else model._teacher_weights.cpu().tolist()
    spread = (model.q_spread_ema / model.q_spread_ema_weight.clamp_min(1e-8)).cpu().tolist()
    return {
        "env": env_id,
        "variant": variant,
        "seed": seed,
        "timesteps": timesteps,
        "train_time_s": train_time,
        "curve": [(steps, {name: mean for name, (mean, _) in results.items()}) for steps, results in callback.evaluations],
        "final": {name: mean for name, (mean, _) in final.items()},
        "final_teacher_weights": weights,
        "final_q_spread": spread,
        "diagnostics": callback.diagnostics,
    }


def run_shared(env_id: str, variants: list[str], seed: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Train the variants of one seed in one run (:class:`SharedTeachersEnsemble`); one result per variant."""
    policy, timesteps, config = model_arguments(env_id, args)
    primary, *others = variants
    model = SharedTeachersEnsemble(policy, env_id, seed=seed, **config, **VARIANTS[primary])
    model.attach_shadow_students({variant: VARIANTS[variant] for variant in others})
    model._benchmark_variant = primary  # type: ignore[attr-defined]
    callback = SharedEvalCallback(Monitor(gym.make(env_id)), eval_freq=args.eval_freq, n_eval_episodes=args.eval_episodes)
    train_time, final_env = train(model, callback, timesteps, seed)
    teachers = {name: mean for name, (mean, _) in model.evaluate_members(final_env, args.final_episodes).items()}
    students = evaluate_students(model, primary, final_env, 10**6 + seed, args.final_episodes)
    spread = (model.q_spread_ema / model.q_spread_ema_weight.clamp_min(1e-8)).cpu().tolist()
    results = []
    for variant in variants:
        weights = model._teacher_weights if variant == primary else model.shadow_weights[variant]
        curve = [
            (steps, {**{k: v for k, (v, _) in members.items() if k.startswith("teacher")}, "student": students_at[variant]})
            for (steps, members), students_at in zip(callback.evaluations, callback.student_evaluations, strict=True)
        ]
        results.append(
            {
                "env": env_id,
                "variant": variant,
                "seed": seed,
                "timesteps": timesteps,
                "train_time_s": train_time,
                "shared_teachers_with": variants,
                "curve": curve,
                "final": {**{k: v for k, v in teachers.items() if k.startswith("teacher")}, "student": students[variant]},
                "final_teacher_weights": None if weights is None else weights.cpu().tolist(),
                "final_q_spread": spread,
                # agreement is the first variant's student's; one-hot rates are the teachers' (shared)
                "diagnostics": (
                    callback.diagnostics
                    if variant == primary
                    else [{"one_hot_rate": d["one_hot_rate"]} for d in callback.diagnostics]
                ),
            }
        )
    return results


def summarise(runs: list[dict[str, Any]]) -> str:
    """Markdown table: per variant and budget, the student against the teachers, and the issue's criteria."""
    lines = [
        "| variant | steps | seeds | student (median) | student per seed | teachers' mean (median) | worst teacher per seed "
        "| student >= worst teacher | student median >= teachers' mean |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    keys = sorted({(r["variant"], r["timesteps"]) for r in runs}, key=lambda k: (list(VARIANTS).index(k[0]), k[1]))
    for variant, timesteps in keys:
        group = sorted((r for r in runs if r["variant"] == variant and r["timesteps"] == timesteps), key=lambda r: r["seed"])
        students = [r["final"]["student"] for r in group]
        teachers = [[mean for name, mean in r["final"].items() if name.startswith("teacher")] for r in group]
        worst = [min(t) for t in teachers]
        means = [float(np.mean(t)) for t in teachers]
        never_below = sum(s >= w for s, w in zip(students, worst, strict=True))
        lines.append(
            f"| {variant} | {timesteps} | {len(group)} | {np.median(students):.1f} | "
            f"{', '.join(f'{s:.1f}' for s in students)} | {np.median(means):.1f} | {', '.join(f'{w:.1f}' for w in worst)} | "
            f"{never_below}/{len(group)} | {'yes' if np.median(students) >= np.mean(means) else 'no'} |"
        )
    return "\n".join(lines)


def plot(env_id: str, runs: list[dict[str, Any]], path: Path) -> None:
    """Student and teachers' mean evaluation return against steps, one line per run, a panel per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = [v for v in VARIANTS if any(r["variant"] == v for r in runs)]
    fig, axes = plt.subplots(1, len(variants), figsize=(4.5 * len(variants), 3.5), sharey=True, squeeze=False)
    for ax, variant in zip(axes[0], variants, strict=True):
        for r in (r for r in runs if r["variant"] == variant):
            steps = [s for s, _ in r["curve"]]
            ax.plot(steps, [m["student"] for _, m in r["curve"]], color="C0", alpha=0.7)
            teachers = [[v for k, v in m.items() if k.startswith("teacher")] for _, m in r["curve"]]
            ax.plot(steps, [np.mean(t) for t in teachers], color="C1", alpha=0.5, linestyle="--")
            ax.plot(steps, [min(t) for t in teachers], color="C3", alpha=0.3, linestyle=":")
        ax.set_title(f"{env_id}: {variant}")
        ax.set_xlabel("timesteps")
    axes[0][0].set_ylabel("greedy return")
    fig.suptitle("one line per seed: student (solid blue), teachers' mean (dashed orange), worst teacher (dotted red)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_runs(path: Path, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add ``results`` to the runs saved in ``path`` (re-read first: several processes may append to one file,
    e.g. one per seed) and write the file atomically; return every saved run."""
    with locked(path):
        saved = json.loads(path.read_text()) if path.exists() else []
        keys = {(r["variant"], r["seed"], r["timesteps"]) for r in results}
        runs = [r for r in saved if (r["variant"], r["seed"], r["timesteps"]) not in keys] + results
        write_json_atomic(path, runs)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="LunarLander-v3")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--variants", nargs="+", default=["raw", "spread", "returns"], choices=list(VARIANTS))
    parser.add_argument("--timesteps", type=int, default=None, help="default: the zoo config's n_timesteps")
    parser.add_argument("--eval-freq", type=int, default=5000)
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--final-episodes", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--append", action="store_true", help="add these runs to the saved ones")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument(
        "--shared-teachers", action="store_true", help="train the variants of a seed in one run (shadow students)"
    )
    args = parser.parse_args()
    th.set_num_threads(args.threads)
    args.output.mkdir(parents=True, exist_ok=True)
    stem = args.output / f"ensemble_scale_{args.env}"
    runs: list[dict[str, Any]] = []
    if args.append and stem.with_suffix(".json").exists():
        runs = json.loads(stem.with_suffix(".json").read_text())
    elif not args.append:
        # Without --append the saved runs are replaced
        stem.with_suffix(".json").unlink(missing_ok=True)
    timesteps = args.timesteps or int(zoo_hyperparams(args.env)["n_timesteps"])
    for seed in args.seeds:
        todo = [
            v
            for v in args.variants
            if not any(r["variant"] == v and r["seed"] == seed and r["timesteps"] == timesteps for r in runs)
        ]
        batches = [todo] if args.shared_teachers and todo else [[v] for v in todo]
        for variants in batches:
            results = (
                run_shared(args.env, variants, seed, args)
                if args.shared_teachers
                else [run(args.env, variants[0], seed, args)]
            )
            runs.extend(results)
            # Written as each run finishes, merged with what other processes saved meanwhile
            runs = save_runs(stem.with_suffix(".json"), results)
            stem.with_suffix(".md").write_text(summarise(runs) + "\n")
            plot(args.env, runs, stem.with_suffix(".png"))
            for result in results:
                print(f"{result['variant']} seed {seed}: {result['final']} ({result['train_time_s']:.0f} s)", flush=True)
    print(summarise(runs))


if __name__ == "__main__":
    main()
