"""
Kickstarting (Schmitt et al. 2018, "Kickstarting Deep Reinforcement Learning", arXiv:1803.03835) with DistillPPO:
a fresh PPO agent trained on the environment reward while the cross-entropy to a trained PPO teacher, on the
student's own states, pulls it towards the teacher with a weight decaying linearly from `--coef` to 0
(``on_policy_distill`` + ``env_reward`` of Czarnecki et al. 2019, "Distilling Policy Distillation",
arXiv:1902.02186), against plain PPO with the same hyperparameters, and against the same schedule with the
paper's recommended rule (``expected_entropy_regularised`` + env reward).

One PPO teacher is trained (`--teacher-timesteps`) and cached under `--teachers`. Every `--eval-freq`
environment steps each agent is evaluated greedily on `--eval-episodes` episodes. Reported: the steps until
the agent first reaches the teacher's evaluation return (within 10 % of its magnitude), the area under the
learning curve, and the final return, as medians over seeds; a PNG of the curves and a markdown table.
Results are written to the JSON after every run (`--append` adds seeds).

    python -m benchmarks.distill_ppo_kickstart --env Acrobot-v1 --seeds 0 1 2
"""

import argparse
import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

from sb3_distill import DistillPPO
from sb3_distill.common.utils import LinearDecay

# rl-zoo3's PPO hyperparameters for the env (Acrobot-v1 without its `normalize: true`, so that teacher and
# student see the same raw observations), the teacher's budget and the student's
SETTINGS: dict[str, dict[str, Any]] = {
    "Acrobot-v1": dict(
        ppo=dict(n_steps=256, gae_lambda=0.94, gamma=0.99, n_epochs=4, ent_coef=0.0),
        n_envs=16,
        teacher_timesteps=150_000,
        budget=50_000,
    ),
    "CartPole-v1": dict(
        ppo=dict(n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98, n_epochs=20, ent_coef=0.0, learning_rate=1e-3),
        n_envs=8,
        teacher_timesteps=100_000,
        budget=40_000,
    ),
}
# The variants compared: (name, DistillPPO arguments; None for plain PPO)
VARIANTS: list[tuple[str, dict[str, Any] | None]] = [
    ("PPO", None),
    ("kickstarting (on-policy distill + R)", dict(update_rule="on_policy_distill", env_reward=True)),
    ("expected entropy regularised + R", dict(update_rule="expected_entropy_regularised", env_reward=True)),
]


class EvalCurve(BaseCallback):
    """Evaluate the agent greedily every `eval_freq` steps (and at step 0) and record its mean return."""

    def __init__(self, env_id: str, eval_freq: int, n_episodes: int, seed: int) -> None:
        super().__init__()
        self.env = Monitor(gym.make(env_id))
        self.eval_freq, self.n_episodes, self.seed = eval_freq, n_episodes, seed
        self.steps: list[int] = []
        self.returns: list[float] = []
        self._next = 0

    def _evaluate(self) -> None:
        self.env.reset(seed=self.seed)
        mean, _ = evaluate_policy(self.model.policy, self.env, self.n_episodes, warn=False)  # type: ignore[arg-type]
        self.steps.append(self.num_timesteps)
        self.returns.append(float(mean))
        self._next += self.eval_freq

    def _on_training_start(self) -> None:
        self._evaluate()

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            self._evaluate()
        return True

    def _on_training_end(self) -> None:
        self._evaluate()


def get_teacher(env_id: str, folder: Path) -> PPO:
    """Train the PPO teacher (seed 0), or load it."""
    path = folder / f"ppo_{env_id}.zip"
    if path.exists():
        return PPO.load(path)
    settings = SETTINGS[env_id]
    teacher = PPO("MlpPolicy", make_vec_env(env_id, n_envs=settings["n_envs"], seed=0), seed=0, **settings["ppo"])
    teacher.learn(settings["teacher_timesteps"])
    folder.mkdir(parents=True, exist_ok=True)
    teacher.save(path)
    return teacher


def run_variant(env_id: str, seed: int, kwargs: dict[str, Any] | None, teacher: PPO, args: argparse.Namespace) -> dict:
    settings = SETTINGS[env_id]
    env = make_vec_env(env_id, n_envs=settings["n_envs"], seed=seed)
    if kwargs is None:
        model: PPO = PPO("MlpPolicy", env, seed=seed, **settings["ppo"])
    else:
        model = DistillPPO(
            "MlpPolicy", env, teacher=teacher, distill_coef=LinearDecay(args.coef), seed=seed, **kwargs, **settings["ppo"]
        )
    curve = EvalCurve(env_id, args.eval_freq, args.eval_episodes, seed + 1000)
    model.learn(settings["budget"], callback=curve)
    return dict(steps=curve.steps, returns=curve.returns)


def steps_to(target: float, steps: list[int], returns: list[float]) -> float:
    """The first evaluation step whose return reaches ``target`` (inf if none)."""
    return next((step for step, value in zip(steps, returns, strict=True) if value >= target), float("inf"))


def report(env_id: str, runs: list[dict[str, Any]], args: argparse.Namespace) -> str:
    teacher = runs[0]["teacher"]
    target = teacher - 0.1 * abs(teacher)
    lines = [
        f"DistillPPO kickstarting on {env_id}: teacher return {teacher:.1f} (target {target:.1f}), "
        f"{len(runs)} seeds, budget {SETTINGS[env_id]['budget']} steps, distill_coef {args.coef} -> 0 linearly",
        "",
        "| variant | steps to the teacher's return (median) | reached (seeds) "
        "| mean return over training (median) | final return (median) |",
        "|---|---|---|---|---|",
    ]
    for name, _ in VARIANTS:
        curves = [saved["variants"][name] for saved in runs if name in saved["variants"]]
        reach = [steps_to(target, curve["steps"], curve["returns"]) for curve in curves]
        reached = sum(np.isfinite(reach))
        median_reach = float(np.median(reach))
        area = float(np.median([np.mean(curve["returns"]) for curve in curves]))
        final = float(np.median([curve["returns"][-1] for curve in curves]))
        reach_text = f"{median_reach:.0f}" if np.isfinite(median_reach) else "not reached"
        lines.append(f"| {name} | {reach_text} | {reached}/{len(curves)} | {area:.1f} | {final:.1f} |")
    return "\n".join(lines)


def plot(env_id: str, runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, _ in VARIANTS:
        curves = [saved["variants"][name] for saved in runs if name in saved["variants"]]
        length = min(len(curve["returns"]) for curve in curves)
        returns = np.array([curve["returns"][:length] for curve in curves])
        steps = curves[0]["steps"][:length]
        ax.plot(steps, np.median(returns, axis=0), label=name)
        ax.fill_between(steps, returns.min(axis=0), returns.max(axis=0), alpha=0.2)
    ax.axhline(runs[0]["teacher"], color="black", linestyle="--", label="teacher")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("evaluation return (median, min-max over seeds)")
    ax.set_title(f"Kickstarting PPO on {env_id}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="Acrobot-v1", choices=list(SETTINGS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--coef", type=float, default=1.0, help="initial distill_coef, decaying linearly to 0")
    parser.add_argument("--eval-freq", type=int, default=5000)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--teachers", type=Path, default=Path(__file__).parent / "results" / "teachers")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--report-only", action="store_true", help="rewrite the table and plot from the saved JSON")
    parser.add_argument("--append", action="store_true", help="add these seeds to the runs saved in the JSON")
    args = parser.parse_args()
    th.set_num_threads(1)

    stem = f"distill_ppo_kickstart_{args.env}"
    json_path = args.output / f"{stem}.json"
    runs: list[dict[str, Any]] = []
    if args.report_only or (args.append and json_path.exists()):
        runs = json.loads(json_path.read_text())["runs"]
    if not args.report_only:
        teacher = get_teacher(args.env, args.teachers)
        eval_env = Monitor(gym.make(args.env))
        eval_env.reset(seed=999)
        teacher_return = float(evaluate_policy(teacher.policy, eval_env, 20, warn=False)[0])  # type: ignore[arg-type]
        done = {saved["seed"] for saved in runs}
        args.output.mkdir(parents=True, exist_ok=True)
        for seed in [seed for seed in args.seeds if seed not in done]:
            result: dict[str, Any] = dict(seed=seed, teacher=teacher_return, variants={})
            runs.append(result)
            for name, kwargs in VARIANTS:
                result["variants"][name] = run_variant(args.env, seed, kwargs, teacher, args)
                print(seed, name, result["variants"][name]["returns"], flush=True)
                # Written after every run: an interrupted benchmark keeps what it measured
                json_path.write_text(json.dumps({"runs": runs}, indent=2))
    runs = [saved for saved in runs if len(saved["variants"]) == len(VARIANTS)]
    text = report(args.env, runs, args)
    print("\n" + text)
    (args.output / f"{stem}.md").write_text(text + "\n")
    plot(args.env, runs, args.output / f"{stem}.png")


if __name__ == "__main__":
    main()
