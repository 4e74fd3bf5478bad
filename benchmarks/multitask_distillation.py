"""
Multi-task policy distillation on two small tasks (Rusu et al., "Policy Distillation", 2015, arXiv:1511.06295:
a multi-game student reached a geometric mean of 89.3 % of the single-game DQNs over 10 Atari games).

A CPU-sized stand-in for the paper's Atari (or the issue's MinAtar) benchmark, which is not run here: DQN
teachers on CartPole-v1 and Acrobot-v1 (the settings of benchmarks/realtime_vs_sequential.py, cached under
`--teachers`), distilled into one MultiTaskPolicyDistillation student per size (student-driven, forward KL
at tau 0.01): a [64, 64] trunk (one teacher's size) and a [16] trunk. Each task's teacher and student are
evaluated greedily on `--eval-episodes` episodes. Reported: each task's normalised score ratio
(R_student - R_min) / (R_teacher - R_min), with R_min = 0 for CartPole and -500 for Acrobot (the return of
never reaching the goal), their geometric mean (next to Rusu's 89.3 %), and the compression ratios.

    python -m benchmarks.multitask_distillation --seeds 0
"""

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from stable_baselines3 import DQN

from benchmarks.realtime_vs_sequential import SETTINGS as TEACHER_SETTINGS
from sb3_distill import MultiTaskPolicyDistillation

TASKS = {
    "CartPole-v1": dict(teacher_timesteps=40_000, min_return=0.0),
    "Acrobot-v1": dict(teacher_timesteps=60_000, min_return=-500.0),
}
STUDENTS = {"one teacher's size [64, 64]": [64, 64], "small [16]": [16]}
DISTILL = dict(
    control="student",
    loss="forward_kl",
    temperature=0.01,
    learning_rate=1e-3,
    learning_starts=1000,
    batch_size=64,
    buffer_size=100_000,
)


def get_teacher(env_id: str, seed: int, folder: Path) -> DQN:
    """A DQN teacher trained on ``env_id``, cached in ``folder``."""
    path = folder / f"dqn_{env_id}_seed{seed}.zip"
    if path.exists():
        return DQN.load(path)
    teacher = DQN("MlpPolicy", env_id, seed=seed, **TEACHER_SETTINGS[env_id]["dqn"])
    teacher.learn(TASKS[env_id]["teacher_timesteps"])
    folder.mkdir(parents=True, exist_ok=True)
    teacher.save(path)
    return teacher


def run(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    th.set_num_threads(1)
    teachers = {env_id: get_teacher(env_id, seed, args.teachers) for env_id in TASKS}
    result: dict[str, Any] = dict(seed=seed, students={})
    for name, net_arch in STUDENTS.items():
        model = MultiTaskPolicyDistillation(
            teachers=teachers, student_policy_kwargs=dict(net_arch=net_arch), seed=seed, **DISTILL
        )
        model.learn(args.timesteps)
        scores = model.evaluate_members(n_eval_episodes=args.eval_episodes)
        ratios = {
            task: (scores[f"{task}/student"][0] - TASKS[task]["min_return"])
            / max(scores[f"{task}/teacher"][0] - TASKS[task]["min_return"], 1e-9)
            for task in TASKS
        }
        result["students"][name] = dict(
            scores=scores,
            ratios=ratios,
            geometric_mean=float(np.exp(np.mean(np.log(np.maximum(list(ratios.values()), 1e-9))))),
            compression_ratio=model.compression_ratio,
            compression_ratios=model.compression_ratios(),
        )
    return result


def report(runs: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"Multi-task distillation of DQN teachers on {' + '.join(TASKS)}, {args.timesteps} steps of the multi-task env "
        f"(all tasks together), {args.eval_episodes} evaluation episodes per task and member.",
        "",
        "| seed | student | task | teacher | student | normalised ratio | student / teacher parameters |",
        "|---|---|---|---|---|---|---|",
    ]
    for run_ in runs:
        for name, student in run_["students"].items():
            for task in TASKS:
                teacher_score, student_score = student["scores"][f"{task}/teacher"][0], student["scores"][f"{task}/student"][0]
                lines.append(
                    f"| {run_['seed']} | {name} | {task} | {teacher_score:.1f} | {student_score:.1f} "
                    f"| {student['ratios'][task]:.3f} | {student['compression_ratios'][task]:.3f} |"
                )
            lines.append(
                f"| {run_['seed']} | {name} | geometric mean (Rusu: 0.893) | | | **{student['geometric_mean']:.3f}** "
                f"| {student['compression_ratio']:.3f} of both teachers |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--timesteps", type=int, default=30_000)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--teachers", type=Path, default=Path(__file__).parent / "results" / "teachers")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--append", action="store_true", help="add these seeds to the runs saved in the JSON")
    args = parser.parse_args()
    results_path = args.output / "multitask_distillation.json"
    runs: list[dict[str, Any]] = json.loads(results_path.read_text()) if args.append else []
    for seed in args.seeds:
        runs = [run_ for run_ in runs if run_["seed"] != seed] + [run(seed, args)]
        results_path.write_text(json.dumps(runs, indent=1))
        (args.output / "multitask_distillation.md").write_text(report(runs, args) + "\n")
        print(report(runs, args), flush=True)


if __name__ == "__main__":
    main()
