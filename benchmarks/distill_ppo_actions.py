"""
Fig. 4 of Czarnecki et al. 2019 ("Distilling Policy Distillation", arXiv:1902.02186, Sec. 3.3) with DistillPPO:
the action space grows from 4 moves to `--n-actions` actions, all but 4 of which leave the agent where it is.
Entropy regularised distillation (reward ``log pi(a_i|s_i)`` only) has to find the teacher's actions by
sampling, and the paper finds it collapses as the actions grow; expected entropy regularised (the one-step
term in closed form) keeps pace with distillation (N-distill).

A 5x5 grid world, start in a corner, the goal (reward 1, terminal) in the opposite one, a time limit of 50
steps. The teacher, a PPO policy on one-hot states with set weights, takes the shortest path (right, then
down) with probability 0.9 and spreads 0.1 over every other action. The student is PPO's tabular policy.
No environment reward: the student learns from the teacher only. Every `--eval-freq` steps: the greedy
student's return (1 if it reaches the goal) and the mean over states of ``KL(pi || pi_theta)``.

    python -m benchmarks.distill_ppo_actions --n-actions 4 64 512 --seeds 0 1 2
"""

import argparse
import json
import math
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

from sb3_distill import DistillPPO

SIZE = 5
PPO_KWARGS: dict[str, Any] = dict(n_steps=64, batch_size=64, n_epochs=10, learning_rate=0.05, policy_kwargs=dict(net_arch=[]))
N_ENVS = 4
RULES = ("entropy_regularised", "expected_entropy_regularised", "n_distill")


class Grid(gym.Env):
    """5x5 grid, actions 0-3 move (right, down, left, up), the others stay; the far corner is the goal."""

    observation_space = spaces.Discrete(SIZE * SIZE)

    def __init__(self, n_actions: int) -> None:
        self.action_space = spaces.Discrete(n_actions)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[int, dict]:
        super().reset(seed=seed)
        self.x = self.y = 0
        return 0, {}

    def step(self, action: int) -> tuple[int, float, bool, bool, dict]:
        dx, dy = {0: (1, 0), 1: (0, 1), 2: (-1, 0), 3: (0, -1)}.get(int(action), (0, 0))
        self.x, self.y = min(max(self.x + dx, 0), SIZE - 1), min(max(self.y + dy, 0), SIZE - 1)
        goal = self.x == self.y == SIZE - 1
        return self.y * SIZE + self.x, float(goal), goal, False, {}


def make_env(n_actions: int) -> gym.Env:
    return gym.wrappers.TimeLimit(Grid(n_actions), max_episode_steps=50)


def teacher_logits(n_actions: int) -> th.Tensor:
    """(n_actions, n_states): the shortest path (right, then down) with probability 0.9, 0.1 spread evenly."""
    logits = th.zeros(n_actions, SIZE * SIZE)
    for state in range(SIZE * SIZE):
        best = 0 if state % SIZE < SIZE - 1 else 1
        logits[best, state] = math.log(0.9 * (n_actions - 1) / 0.1)
    return logits


def make_teacher(n_actions: int) -> PPO:
    teacher = PPO("MlpPolicy", make_env(n_actions), **{**PPO_KWARGS, "batch_size": 64})
    with th.no_grad():
        teacher.policy.action_net.weight.copy_(teacher_logits(n_actions))
        teacher.policy.action_net.bias.zero_()
    return teacher


class Curve(BaseCallback):
    """Greedy return and mean KL(teacher || student) over the states, every `eval_freq` steps."""

    def __init__(self, n_actions: int, eval_freq: int) -> None:
        super().__init__()
        self.n_actions, self.eval_freq, self._next = n_actions, eval_freq, 0
        self.steps: list[int] = []
        self.returns: list[float] = []
        self.kls: list[float] = []

    def _on_step(self) -> bool:
        if self.num_timesteps < self._next:
            return True
        env, total, done = make_env(self.n_actions), 0.0, False
        obs, _ = env.reset()
        while not done:
            action, _ = self.model.predict(obs, deterministic=True)
            obs, reward, terminated, truncated, _ = env.step(int(action))
            total, done = total + float(reward), terminated or truncated
        states = th.arange(SIZE * SIZE, dtype=th.float32)[:, None]
        with th.no_grad():
            student = self.model.policy.get_distribution(states).distribution
            teacher = th.distributions.Categorical(logits=teacher_logits(self.n_actions).T)
            kl = th.distributions.kl_divergence(teacher, student).mean().item()
        self.steps.append(self.num_timesteps)
        self.returns.append(total)
        self.kls.append(kl)
        self._next += self.eval_freq
        return True


def run(seed: int, n_actions: int, rule: str, args: argparse.Namespace) -> dict:
    env = make_vec_env(lambda: make_env(n_actions), n_envs=N_ENVS, seed=seed)
    model = DistillPPO("MlpPolicy", env, teacher=make_teacher(n_actions), update_rule=rule, seed=seed, **PPO_KWARGS)
    curve = Curve(n_actions, args.eval_freq)
    model.learn(args.budget, callback=curve)
    return dict(steps=curve.steps, returns=curve.returns, kls=curve.kls)


def report(runs: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"DistillPPO on a {SIZE}x{SIZE} grid with extra no-op actions, {len(runs)} seeds, {args.budget} steps each "
        "(no environment reward)",
        "",
        "| actions | rule | greedy student reaches the goal at the end (seeds) | KL(teacher, student) at the end (median) "
        "| steps to KL < 0.5 (median) |",
        "|---|---|---|---|---|",
    ]
    for n_actions in args.n_actions:
        for rule in RULES:
            curves = [saved["results"][str(n_actions)][rule] for saved in runs]
            solved = sum(curve["returns"][-1] == 1.0 for curve in curves)
            kl = float(np.median([curve["kls"][-1] for curve in curves]))
            reach = [next((s for s, k in zip(c["steps"], c["kls"], strict=True) if k < 0.5), math.inf) for c in curves]
            median = float(np.median(reach))
            reach_text = f"{median:.0f}" if math.isfinite(median) else "not reached"
            lines.append(f"| {n_actions} | {rule} | {solved}/{len(curves)} | {kl:.3f} | {reach_text} |")
    return "\n".join(lines)


def plot(runs: list[dict[str, Any]], args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(args.n_actions), figsize=(4 * len(args.n_actions), 3.5), sharey=True)
    for ax, n_actions in zip(np.atleast_1d(axes), args.n_actions, strict=True):
        for rule in RULES:
            curves = [saved["results"][str(n_actions)][rule] for saved in runs]
            length = min(len(curve["kls"]) for curve in curves)
            ax.plot(curves[0]["steps"][:length], np.median([c["kls"][:length] for c in curves], axis=0), label=rule)
        ax.set_title(f"|A| = {n_actions}")
        ax.set_xlabel("environment steps")
        ax.set_yscale("log")
    np.atleast_1d(axes)[0].set_ylabel("KL(teacher || student), state mean")
    np.atleast_1d(axes)[-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-actions", type=int, nargs="+", default=[4, 64, 512])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget", type=int, default=20_000)
    parser.add_argument("--eval-freq", type=int, default=1024)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--report-only", action="store_true", help="rewrite the table and plot from the saved JSON")
    parser.add_argument("--append", action="store_true", help="add these seeds to the runs saved in the JSON")
    args = parser.parse_args()
    th.set_num_threads(1)

    json_path = args.output / "distill_ppo_actions.json"
    runs: list[dict[str, Any]] = []
    if args.report_only or (args.append and json_path.exists()):
        runs = json.loads(json_path.read_text())["runs"]
    if not args.report_only:
        args.output.mkdir(parents=True, exist_ok=True)
        for seed in [seed for seed in args.seeds if seed not in {saved["seed"] for saved in runs}]:
            result: dict[str, Any] = dict(seed=seed, results={})
            runs.append(result)
            for n_actions in args.n_actions:
                result["results"][str(n_actions)] = {}
                for rule in RULES:
                    result["results"][str(n_actions)][rule] = run(seed, n_actions, rule, args)
                    print(seed, n_actions, rule, result["results"][str(n_actions)][rule]["kls"][-3:], flush=True)
                    json_path.write_text(json.dumps({"runs": runs}, indent=2))
    complete = [
        saved
        for saved in runs
        if all(str(n) in saved["results"] and len(saved["results"][str(n)]) == len(RULES) for n in args.n_actions)
    ]
    text = report(complete, args)
    print("\n" + text)
    (args.output / "distill_ppo_actions.md").write_text(text + "\n")
    plot(complete, args, args.output / "distill_ppo_actions.png")


if __name__ == "__main__":
    main()
