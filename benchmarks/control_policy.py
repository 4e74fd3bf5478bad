"""
Control policies and losses of PolicyDistillation (Czarnecki et al., "Distilling Policy Distillation",
Sec. 3.2; Rusu et al., "Policy Distillation").

For each seed a DQN teacher is trained (the settings of benchmarks/realtime_vs_sequential.py) and cached
under `--teachers`; it is then distilled into a compact student with each control policy (teacher-,
student- and mixture-driven, forward KL) and, teacher-driven, with each of Rusu's losses (nll, mse, KL).
Every `--eval-freq` environment steps the student is evaluated greedily on `--eval-episodes` episodes (the
same evaluation seeds as the teacher's). Reported: the environment steps until the student first reaches
95 % of the teacher's evaluation return, and the student's final return, as medians over seeds; plus a
PNG of the learning curves and a markdown table.

    python -m benchmarks.control_policy --env CartPole-v1 --seeds 0 1 2 3 4 5 6 7 8 9
    python -m benchmarks.control_policy --env Acrobot-v1 --seeds 0 1 2 3 4 --eval-freq 250
    python -m benchmarks.control_policy --env Pendulum-v1 --seeds 0 1 2 --eval-freq 500
"""

import argparse
import json
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3 import DQN, SAC
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.utils import LinearSchedule

from benchmarks.realtime_vs_sequential import SETTINGS as TEACHER_SETTINGS
from sb3_distill import PolicyDistillation
from sb3_distill.common.losses import GAUSSIAN_DISTILLATION_LOSSES

# Per env: the teacher's training budget, the student and the distillation budget
# and the return below which a teacher counts as failed (its seed is reported but left out of the medians:
# recovering a teacher that did not learn says nothing about distillation)
SETTINGS: dict[str, dict[str, Any]] = {
    "CartPole-v1": dict(teacher_timesteps=40_000, student=dict(net_arch=[32]), budget=10_000, min_teacher=200.0),
    "Acrobot-v1": dict(teacher_timesteps=60_000, student=dict(net_arch=[16]), budget=10_000, min_teacher=-200.0),
    # A SAC teacher (rl-zoo3's Pendulum learning rate, SB3's 256-256 networks); the Gaussian KL before the tanh,
    # and the critics distilled too (value_coef)
    "Pendulum-v1": dict(
        teacher_timesteps=8_000,
        student=dict(net_arch=[32, 32]),
        budget=5_000,
        min_teacher=-400.0,
        distill=dict(value_coef=0.5),
    ),
}
# The SAC teacher's settings (the DQN teachers' are those of realtime_vs_sequential.py)
SAC_TEACHER = dict(learning_rate=1e-3, policy_kwargs=dict(net_arch=[256, 256]))
# The variants compared: (name, PolicyDistillation arguments)
VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("teacher-driven", dict(control="teacher")),
    ("student-driven", dict(control="student")),
    ("mixture (beta=0.5)", dict(control="mixture", teacher_prob=0.5)),
    ("teacher-driven, nll", dict(control="teacher", loss="nll", temperature=1.0)),
    ("teacher-driven, mse", dict(control="teacher", loss="mse")),
]
# The student's learning rate decays linearly to 0 over the budget, which steadies the final policy
DISTILL: dict[str, Any] = dict(learning_starts=500, batch_size=64, learning_rate=LinearSchedule(1e-3, 0.0, 1.0))


class StudentCurve(BaseCallback):
    """Evaluate the student greedily every `eval_freq` steps and record its mean return."""

    def __init__(self, env_id: str, eval_freq: int, n_episodes: int, seed: int) -> None:
        super().__init__()
        self.env = Monitor(gym.make(env_id))
        self.eval_freq, self.n_episodes, self.seed = eval_freq, n_episodes, seed
        self.steps: list[int] = []
        self.returns: list[float] = []

    def _on_step(self) -> bool:
        if self.num_timesteps % self.eval_freq == 0:
            self.env.reset(seed=self.seed)
            mean, _ = evaluate_policy(self.model.policy.student, self.env, self.n_episodes, warn=False)  # type: ignore[arg-type]
            self.steps.append(self.num_timesteps)
            self.returns.append(float(mean))
        return True


def is_continuous(env_id: str) -> bool:
    return env_id not in TEACHER_SETTINGS


def get_teacher(env_id: str, seed: int, folder: Path) -> DQN | SAC:
    """Train a DQN teacher with the settings of realtime_vs_sequential.py (SAC for continuous actions), or load it."""
    algorithm = SAC if is_continuous(env_id) else DQN
    path = folder / f"{algorithm.__name__.lower()}_{env_id}_seed{seed}.zip"
    if path.exists():
        return algorithm.load(path)
    settings = SAC_TEACHER if is_continuous(env_id) else TEACHER_SETTINGS[env_id]["dqn"]
    teacher = algorithm("MlpPolicy", env_id, seed=seed, **settings)
    teacher.learn(SETTINGS[env_id]["teacher_timesteps"])
    folder.mkdir(parents=True, exist_ok=True)
    teacher.save(path)
    return teacher


def run(env_id: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    teacher = get_teacher(env_id, seed, args.teachers)
    eval_env = Monitor(gym.make(env_id))
    eval_env.reset(seed=seed + 1000)
    teacher_return = float(evaluate_policy(teacher.policy, eval_env, args.eval_episodes, warn=False)[0])  # type: ignore[arg-type]
    result: dict[str, Any] = dict(seed=seed, teacher=teacher_return, variants={})
    for name, kwargs in VARIANTS:
        if is_continuous(env_id) and "loss" in kwargs and kwargs["loss"] not in GAUSSIAN_DISTILLATION_LOSSES:
            continue
        kwargs = {**kwargs, **SETTINGS[env_id].get("distill", {})}
        if is_continuous(env_id):
            kwargs.pop("temperature", None)
        model = PolicyDistillation(
            "MlpPolicy",
            env_id,
            teacher=teacher,
            student_policy_kwargs=SETTINGS[env_id]["student"],
            seed=seed,
            **DISTILL,
            **kwargs,
        )
        curve = StudentCurve(env_id, args.eval_freq, args.eval_episodes, seed + 1000)
        start = time.perf_counter()
        model.learn(SETTINGS[env_id]["budget"], callback=curve)
        # 95 % of the teacher's return (for negative returns, e.g. Acrobot, at most 1/0.95 of it)
        threshold = teacher_return * 0.95 if teacher_return >= 0 else teacher_return / 0.95
        reached = [step for step, value in zip(curve.steps, curve.returns, strict=True) if value >= threshold]
        result["variants"][name] = dict(
            steps=curve.steps,
            returns=curve.returns,
            steps_to_95=reached[0] if reached else None,
            final=curve.returns[-1],
            seconds=time.perf_counter() - start,
            compression_ratio=model.compression_ratio,
        )
        print(f"  {env_id} seed {seed} {name}: {result['variants'][name]['returns']}", flush=True)
    return result


def report(env_id: str, all_runs: list[dict[str, Any]], args: argparse.Namespace) -> str:
    ratio = all_runs[0]["variants"][VARIANTS[0][0]]["compression_ratio"]
    runs = [run for run in all_runs if run["teacher"] >= SETTINGS[env_id]["min_teacher"]]
    failed = [run["seed"] for run in all_runs if run["teacher"] < SETTINGS[env_id]["min_teacher"]]
    lines = [
        f"{env_id}: {'SAC' if is_continuous(env_id) else 'DQN'} teacher -> student {SETTINGS[env_id]['student']} "
        f"({100 * ratio:.1f} % of the teacher's parameters), "
        f"budget {SETTINGS[env_id]['budget']} env steps, greedy evaluation every {args.eval_freq} steps on "
        f"{args.eval_episodes} episodes, seeds {args.seeds}, teacher returns "
        f"{[round(run['teacher'], 1) for run in all_runs]}, CPU, torch {th.__version__}. "
        + (
            f"Seeds {failed} are left out of the medians: their teacher scored below {SETTINGS[env_id]['min_teacher']}."
            if failed
            else ""
        ),
        "",
        "| variant | reached 95 % of the teacher | median env steps to 95 % (runs that reached it) | "
        "median final return | median final / teacher |",
        "|---|---|---|---|---|",
    ]
    if not runs:
        return "\n".join([*lines[:1], "", "No teacher learned: nothing to report."])
    for name, _ in VARIANTS:
        if name not in runs[0]["variants"]:
            continue
        results = [run["variants"][name] for run in runs]
        reached = [r["steps_to_95"] for r in results if r["steps_to_95"] is not None]
        steps = f"{np.median(reached):.0f}" if reached else "-"
        final = np.median([r["final"] for r in results])
        # final / teacher, inverted for negative returns so that > 1 means better than the teacher
        relative = np.median(
            [(r["final"] / run["teacher"]) ** (1 if run["teacher"] > 0 else -1) for r, run in zip(results, runs, strict=True)]
        )
        lines.append(f"| {name} | {len(reached)}/{len(results)} | {steps} | {final:.1f} | {relative:.2f} |")
    return "\n".join(lines)


def plot(env_id: str, all_runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [run for run in all_runs if run["teacher"] >= SETTINGS[env_id]["min_teacher"]] or all_runs
    fig, ax = plt.subplots(figsize=(7, 4))
    for (name, _), marker in zip(VARIANTS, "os^vx", strict=False):
        if name not in runs[0]["variants"]:
            continue
        steps = runs[0]["variants"][name]["steps"]
        returns = np.array([run["variants"][name]["returns"] for run in runs])
        ax.plot(steps, returns.mean(axis=0), marker=marker, markersize=4, label=name)
    ax.axhline(float(np.mean([run["teacher"] for run in runs])), color="black", linestyle="--", label="teacher (mean)")
    ax.set_xlabel("environment steps of distillation")
    ax.set_ylabel(f"student's greedy return (mean over {len(runs)} seeds)")
    ax.set_title(f"PolicyDistillation on {env_id}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="CartPole-v1", choices=list(SETTINGS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--eval-freq", type=int, default=1000)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--teachers", type=Path, default=Path(__file__).parent / "results" / "teachers")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--report-only", action="store_true", help="rewrite the table and plot from the saved JSON")
    parser.add_argument("--append", action="store_true", help="add these seeds to the runs saved in the JSON")
    args = parser.parse_args()
    th.set_num_threads(1)

    stem = f"control_policy_{args.env}"
    if args.report_only:
        saved = json.loads((args.output / f"{stem}.json").read_text())
        args.seeds, runs = saved["seeds"], saved["runs"]
    else:
        runs = []
        if args.append and (args.output / f"{stem}.json").exists():
            runs = json.loads((args.output / f"{stem}.json").read_text())["runs"]
        done = {saved["seed"] for saved in runs}
        runs += [run(args.env, seed, args) for seed in args.seeds if seed not in done]
        args.seeds = [saved["seed"] for saved in runs]
    text = report(args.env, runs, args)
    print("\n" + text)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / f"{stem}.md").write_text(text + "\n")
    (args.output / f"{stem}.json").write_text(json.dumps({"seeds": args.seeds, "runs": runs}, indent=2))
    plot(args.env, runs, args.output / f"{stem}.png")


if __name__ == "__main__":
    main()
