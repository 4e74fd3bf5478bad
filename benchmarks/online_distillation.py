"""
Online distillation from a teacher's checkpoints while it trains (Rusu et al., "Policy Distillation", 2015,
arXiv:1511.06295: "the distilled agent was much more stable than the teacher").

For each seed, two processes start together: a DQN teacher trains on Acrobot-v1 (the settings of
benchmarks/realtime_vs_sequential.py) and writes a checkpoint every `--save-freq` steps with SB3's
CheckpointCallback; a PolicyDistillation student (student-driven, forward KL at tau 0.01, a [16] network)
distils from the newest complete checkpoint, reloaded every `--refresh` of its own steps
(`teacher=CheckpointFolder(folder, timeout=...)`, `teacher_refresh_interval`). The student is evaluated every
`--eval-freq` of its steps (greedy, `--eval-episodes` episodes), with the teacher checkpoint in use; it stops
`--after` steps after it has loaded the teacher's last checkpoint. The teacher's curve is the evaluation of
each of its checkpoints (same evaluation seeds), after training.

Reported, per seed and as means over seeds, for teacher and student, on the evaluations from the first one at
or above 90 % of the final teacher's normalised return ((R + 500) / (R_final + 500); -500 is Acrobot's return
when the goal is never reached): the mean return, the lowest dip and the standard deviation. Plot: returns
against the teacher's training steps (the student's by the checkpoint it was distilling from).

    python -m benchmarks.online_distillation --seeds 0 1 2
"""

import argparse
import json
import multiprocessing
import shutil
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3 import DQN
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

from benchmarks.realtime_vs_sequential import SETTINGS as TEACHER_SETTINGS
from sb3_distill import PolicyDistillation
from sb3_distill.common.teachers import CheckpointFolder

ENV_ID = "Acrobot-v1"
#: Acrobot's return when the goal is never reached (500 steps of -1): the zero of the normalised return
RANDOM_RETURN = -500.0
STUDENT = dict(
    control="student",
    loss="forward_kl",
    temperature=0.01,
    learning_rate=1e-3,
    learning_starts=500,
    batch_size=64,
    buffer_size=50_000,
    student_policy_kwargs=dict(net_arch=[16]),
)


def evaluate(model: Any, n_episodes: int, seed: int) -> float:
    """Greedy mean return on ``n_episodes`` episodes, the same evaluation seeds for teacher and student."""
    env = Monitor(gym.make(ENV_ID))
    env.reset(seed=10_000 + seed)
    mean, _ = evaluate_policy(model, env, n_eval_episodes=n_episodes, deterministic=True, warn=False)
    return float(mean)  # type: ignore[arg-type]


def train_teacher(seed: int, folder: str, args: argparse.Namespace) -> None:
    """The teacher's process: DQN with a checkpoint every ``--save-freq`` steps, then a ``done`` marker."""
    th.set_num_threads(1)
    teacher = DQN("MlpPolicy", ENV_ID, seed=seed, **TEACHER_SETTINGS[ENV_ID]["dqn"])
    teacher.learn(args.teacher_timesteps, callback=CheckpointCallback(args.save_freq, folder, name_prefix="rl_model"))
    (Path(folder) / "done").touch()


class StudentEvaluation(BaseCallback):
    """Evaluate the student every ``eval_freq`` steps; stop ``after`` steps after the teacher's last checkpoint."""

    def __init__(self, args: argparse.Namespace, seed: int) -> None:
        super().__init__()
        self.args, self.seed = args, seed
        self.curve: list[dict[str, float]] = []
        self.final_since: int | None = None

    def _on_step(self) -> bool:
        model: Any = self.model
        if self.num_timesteps % self.args.eval_freq == 0:
            point = dict(
                student_steps=self.num_timesteps,
                teacher_steps=model.teacher_checkpoint_steps,
                mean=evaluate(model, self.args.eval_episodes, self.seed),
            )
            self.curve.append(point)
        if model.teacher_checkpoint_steps >= self.args.teacher_timesteps and self.final_since is None:
            self.final_since = self.num_timesteps
        return self.final_since is None or self.num_timesteps - self.final_since < self.args.after


def distill_student(seed: int, folder: str, args: argparse.Namespace, output: str) -> None:
    """The student's process: online PolicyDistillation from the checkpoint folder; its curve to ``output``."""
    th.set_num_threads(1)
    teacher = CheckpointFolder(Path(folder), timeout=600.0, poll_interval=0.5)
    model = PolicyDistillation(
        "MlpPolicy", ENV_ID, teacher=teacher, teacher_refresh_interval=args.refresh, seed=seed, **STUDENT
    )
    callback = StudentEvaluation(args, seed)
    model.learn(10 * args.teacher_timesteps, callback=callback)
    Path(output).write_text(json.dumps(callback.curve))


def after_threshold(curve: list[dict[str, float]], final_teacher: float) -> dict[str, float]:
    """Mean, lowest dip and standard deviation of the evaluations from the first one at 90 % of the final teacher."""
    # A teacher that never reached the goal gives no threshold
    scale = max(final_teacher - RANDOM_RETURN, 1e-9)
    normalised = [(point["mean"] - RANDOM_RETURN) / scale for point in curve]
    first = next((index for index, value in enumerate(normalised) if value >= 0.9), None)
    if final_teacher <= RANDOM_RETURN:
        first = None
    if first is None:
        return dict(reached=False, mean=float("nan"), dip=float("nan"), std=float("nan"))
    means = [point["mean"] for point in curve[first:]]
    return dict(reached=True, mean=float(np.mean(means)), dip=float(np.min(means)), std=float(np.std(means)))


def run(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    folder = args.output / f"online_distillation_checkpoints_{seed}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    student_output = folder / "student_curve.json"
    context = multiprocessing.get_context("spawn")
    start = time.time()
    processes = [
        context.Process(target=train_teacher, args=(seed, str(folder), args)),
        context.Process(target=distill_student, args=(seed, str(folder), args, str(student_output))),
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
        assert process.exitcode == 0, f"a process of seed {seed} failed"
    wall = time.time() - start
    # The teacher's curve: each checkpoint, evaluated as the student was
    teacher_curve = [
        dict(teacher_steps=steps, mean=evaluate(DQN.load(path), args.eval_episodes, seed))
        for steps, path in sorted(CheckpointFolder(folder).checkpoints())
    ]
    student_curve = json.loads(student_output.read_text())
    shutil.rmtree(folder)
    return dict(seed=seed, wall_s=wall, teacher_curve=teacher_curve, student_curve=student_curve)


def summary(run_: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """
    The statistics of one seed: the teacher's checkpoints and the student's evaluations while the teacher was
    training (the checkpoint in use not the last one), from the first at 90 % of the final teacher; the
    student's mean return once it distils from the last checkpoint.
    """
    teacher_curve, student_curve = run_["teacher_curve"], run_["student_curve"]
    final_teacher = teacher_curve[-1]["mean"]
    last = teacher_curve[-1]["teacher_steps"]
    during = [point for point in student_curve if point["teacher_steps"] < last]
    after = [point["mean"] for point in student_curve if point["teacher_steps"] == last]
    return dict(
        final_teacher=final_teacher,
        teacher=after_threshold(teacher_curve, final_teacher),
        student=after_threshold(during, final_teacher),
        student_final=float(np.mean(after)) if after else float("nan"),
    )


def report(runs: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"Online distillation on {ENV_ID}: a DQN teacher training {args.teacher_timesteps} steps with a checkpoint every "
        f"{args.save_freq}, a [16] student reloading the newest every {args.refresh} of its steps "
        f"({len(runs)} seeds, {args.eval_episodes} evaluation episodes). From the first evaluation at 90 % of the "
        "final teacher (normalised return), while the teacher trains (the student's evaluations on its last "
        "checkpoint are left out, and given apart):",
        "",
        "| seed | final teacher | teacher mean | teacher lowest dip | teacher std | student mean | student lowest dip "
        "| student std | student on the last checkpoint | wall (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    summaries = [summary(run_, args) for run_ in runs]
    for run_, stats in zip(runs, summaries, strict=True):
        t, s = stats["teacher"], stats["student"]
        lines.append(
            f"| {run_['seed']} | {stats['final_teacher']:.1f} | {t['mean']:.1f} | {t['dip']:.1f} | {t['std']:.1f} "
            f"| {s['mean']:.1f} | {s['dip']:.1f} | {s['std']:.1f} | {stats['student_final']:.1f} | {run_['wall_s']:.0f} |"
        )
    for member in ("teacher", "student"):
        reached = [stats[member] for stats in summaries if stats[member]["reached"]]
        if reached:
            means = {key: np.mean([value[key] for value in reached]) for key in ("mean", "dip", "std")}
            lines.append(
                f"\n{member}: reached 90 % in {len(reached)}/{len(runs)} seeds; means over those: return "
                f"{means['mean']:.1f}, lowest dip {means['dip']:.1f}, std {means['std']:.1f}"
            )
    return "\n".join(lines)


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(runs), figsize=(4.5 * len(runs), 3.5), squeeze=False)
    for axis, run_ in zip(axes[0], runs, strict=True):
        teacher, student = run_["teacher_curve"], run_["student_curve"]
        axis.plot([p["teacher_steps"] for p in teacher], [p["mean"] for p in teacher], "o-", label="teacher (checkpoints)")
        axis.plot([p["teacher_steps"] for p in student], [p["mean"] for p in student], ".", alpha=0.6, label="student")
        axis.set_title(f"seed {run_['seed']}")
        axis.set_xlabel("teacher training steps (checkpoint in use)")
        axis.set_ylabel("evaluation return")
    axes[0][0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--teacher-timesteps", type=int, default=60_000)
    parser.add_argument("--save-freq", type=int, default=2500)
    parser.add_argument("--refresh", type=int, default=500, help="teacher_refresh_interval of the student")
    parser.add_argument("--eval-freq", type=int, default=2000)
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--after", type=int, default=10_000, help="student steps after the teacher's last checkpoint")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--report-only", action="store_true", help="rewrite the table and plot from the saved JSON")
    parser.add_argument("--append", action="store_true", help="add these seeds to the runs saved in the JSON")
    args = parser.parse_args()
    results_path = args.output / f"online_distillation_{ENV_ID}.json"
    runs: list[dict[str, Any]] = json.loads(results_path.read_text()) if args.report_only or args.append else []
    if not args.report_only:
        for seed in args.seeds:
            runs = [run_ for run_ in runs if run_["seed"] != seed] + [run(seed, args)]
            # Written as each seed finishes
            results_path.write_text(json.dumps(runs, indent=1))
            print(report(runs, args), flush=True)
    (args.output / f"online_distillation_{ENV_ID}.md").write_text(report(runs, args) + "\n")
    plot(runs, args.output / f"online_distillation_{ENV_ID}.png")
    print(report(runs, args))


if __name__ == "__main__":
    main()
