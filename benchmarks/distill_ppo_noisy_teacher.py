"""
Fig. 5 of Czarnecki et al. 2019 ("Distilling Policy Distillation", arXiv:1902.02186, Sec. 4) with DistillPPO: a
teacher whose preferred action is wrong in 25 % of the states. Cloning it saturates below the optimum, adding
the reward helps, and gating the loss by ``[V_pi(s) - V_theta(s)]_{>0}`` (Prop. 2) lets the student improve
where the teacher is wrong; Teacher V reward is shown too.

The 5x5 grid of `distill_ppo_actions.py` with its 4 moves (goal reward 1, time limit 50). The teacher's
preferred action (probability 0.9, the rest spread evenly) is the shortest-path move, replaced by another move
in a random 25 % of the states (fixed per `--teacher-seed`); its value function is its exact discounted value
(policy evaluation, gamma 0.99), so that the value rules get the true ``V_pi``. The student is PPO's tabular
policy. Every `--eval-freq` steps: the student's exact discounted value at the start state, against the
teacher's and the optimum's.

    python -m benchmarks.distill_ppo_noisy_teacher --seeds 0 1 2
"""

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

from benchmarks.distill_ppo_actions import SIZE, make_env
from sb3_distill import DistillPPO

GAMMA = 0.99
N_STATES = SIZE * SIZE
GOAL = N_STATES - 1
PPO_KWARGS: dict[str, Any] = dict(
    n_steps=64, batch_size=64, n_epochs=10, learning_rate=0.05, gamma=GAMMA, policy_kwargs=dict(net_arch=[])
)
VARIANTS: list[tuple[str, dict[str, Any] | None]] = [
    ("cloning (on-policy distill)", dict(update_rule="on_policy_distill")),
    ("on-policy distill + R", dict(update_rule="on_policy_distill", env_reward=True)),
    ("on-policy distill + R, value gated", dict(update_rule="on_policy_distill", env_reward=True, value_gating=True)),
    ("Teacher V reward", dict(update_rule="teacher_v_reward")),
    ("PPO (no teacher)", None),
]


def next_state(state: int, action: int) -> int:
    x, y = state % SIZE, state // SIZE
    dx, dy = {0: (1, 0), 1: (0, 1), 2: (-1, 0), 3: (0, -1)}[action]
    return min(max(y + dy, 0), SIZE - 1) * SIZE + min(max(x + dx, 0), SIZE - 1)


def policy_value(probs: np.ndarray) -> np.ndarray:
    """Exact discounted value of a policy (n_states, 4): V = r + gamma P V, the goal terminal (value 0)."""
    transition, reward = np.zeros((N_STATES, N_STATES)), np.zeros(N_STATES)
    for state in range(N_STATES - 1):
        for action in range(4):
            following = next_state(state, action)
            if following == GOAL:
                reward[state] += probs[state, action]
            else:
                transition[state, following] += probs[state, action]
    return np.linalg.solve(np.eye(N_STATES) - GAMMA * transition, reward)


def teacher_probs(teacher_seed: int, flip_fraction: float = 0.25) -> np.ndarray:
    rng = np.random.default_rng(teacher_seed)
    flipped = set(rng.choice(N_STATES - 1, size=round(flip_fraction * (N_STATES - 1)), replace=False).tolist())
    probs = np.full((N_STATES, 4), 0.1 / 3)
    for state in range(N_STATES):
        best = 0 if state % SIZE < SIZE - 1 else 1
        if state in flipped:
            best = int(rng.choice([action for action in range(4) if action != best]))
        probs[state, best] = 0.9
    return probs


def make_teacher(probs: np.ndarray) -> PPO:
    teacher = PPO("MlpPolicy", make_env(4), **PPO_KWARGS)
    with th.no_grad():
        teacher.policy.action_net.weight.copy_(th.as_tensor(np.log(probs).T, dtype=th.float32))
        teacher.policy.action_net.bias.zero_()
        teacher.policy.value_net.weight.copy_(th.as_tensor(policy_value(probs)[None], dtype=th.float32))
        teacher.policy.value_net.bias.zero_()
    return teacher


class StartValue(BaseCallback):
    """The student's exact discounted value at the start state every `eval_freq` steps."""

    def __init__(self, eval_freq: int) -> None:
        super().__init__()
        self.eval_freq, self._next = eval_freq, 0
        self.steps: list[int] = []
        self.values: list[float] = []

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            states = th.arange(N_STATES, dtype=th.float32)[:, None]
            with th.no_grad():
                probs = self.model.policy.get_distribution(states).distribution.probs.numpy()
            self.steps.append(self.num_timesteps)
            self.values.append(float(policy_value(probs)[0]))
            self._next += self.eval_freq
        return True


def run(seed: int, kwargs: dict[str, Any] | None, teacher: PPO, args: argparse.Namespace) -> dict:
    env = make_vec_env(lambda: make_env(4), n_envs=4, seed=seed)
    if kwargs is None:
        model: PPO = PPO("MlpPolicy", env, seed=seed, **PPO_KWARGS)
    else:
        model = DistillPPO("MlpPolicy", env, teacher=teacher, seed=seed, **kwargs, **PPO_KWARGS)
    curve = StartValue(args.eval_freq)
    model.learn(args.budget, callback=curve)
    return dict(steps=curve.steps, values=curve.values)


def reference_values(teacher_seed: int) -> tuple[float, float]:
    """The teacher's and the optimal policy's value at the start."""
    optimal = np.zeros((N_STATES, 4))
    optimal[np.arange(N_STATES), [0 if s % SIZE < SIZE - 1 else 1 for s in range(N_STATES)]] = 1.0
    return float(policy_value(teacher_probs(teacher_seed))[0]), float(policy_value(optimal)[0])


def report(runs: list[dict[str, Any]], args: argparse.Namespace) -> str:
    teacher, optimum = reference_values(args.teacher_seed)
    lines = [
        f"DistillPPO with a teacher wrong in 25 % of the states ({SIZE}x{SIZE} grid), {len(runs)} seeds, {args.budget} "
        f"steps; start-state value: teacher {teacher:.3f}, optimum {optimum:.3f}",
        "",
        "| variant | start value at the end (median) | min-max over seeds | mean over training (median) |",
        "|---|---|---|---|",
    ]
    for name, _ in VARIANTS:
        curves = [saved["variants"][name] for saved in runs]
        finals = [curve["values"][-1] for curve in curves]
        area = float(np.median([np.mean(curve["values"]) for curve in curves]))
        lines.append(f"| {name} | {np.median(finals):.3f} | {min(finals):.3f} - {max(finals):.3f} | {area:.3f} |")
    return "\n".join(lines)


def plot(runs: list[dict[str, Any]], args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    teacher, optimum = reference_values(args.teacher_seed)
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, _ in VARIANTS:
        curves = [saved["variants"][name] for saved in runs]
        length = min(len(curve["values"]) for curve in curves)
        ax.plot(curves[0]["steps"][:length], np.median([c["values"][:length] for c in curves], axis=0), label=name)
    ax.axhline(teacher, color="black", linestyle="--", label="teacher")
    ax.axhline(optimum, color="gray", linestyle=":", label="optimum")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("student's start-state value (median)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--teacher-seed", type=int, default=0)
    parser.add_argument("--budget", type=int, default=8192)
    parser.add_argument("--eval-freq", type=int, default=256)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--report-only", action="store_true", help="rewrite the table and plot from the saved JSON")
    parser.add_argument("--append", action="store_true", help="add these seeds to the runs saved in the JSON")
    args = parser.parse_args()
    th.set_num_threads(1)

    json_path = args.output / "distill_ppo_noisy_teacher.json"
    runs: list[dict[str, Any]] = []
    if args.report_only or (args.append and json_path.exists()):
        runs = json.loads(json_path.read_text())["runs"]
    if not args.report_only:
        args.output.mkdir(parents=True, exist_ok=True)
        teacher = make_teacher(teacher_probs(args.teacher_seed))
        for seed in [seed for seed in args.seeds if seed not in {saved["seed"] for saved in runs}]:
            result: dict[str, Any] = dict(seed=seed, variants={})
            runs.append(result)
            for name, kwargs in VARIANTS:
                result["variants"][name] = run(seed, kwargs, teacher, args)
                print(seed, name, [round(v, 3) for v in result["variants"][name]["values"][-3:]], flush=True)
                json_path.write_text(json.dumps({"runs": runs}, indent=2))
    runs = [saved for saved in runs if len(saved["variants"]) == len(VARIANTS)]
    text = report(runs, args)
    print("\n" + text)
    (args.output / "distill_ppo_noisy_teacher.md").write_text(text + "\n")
    plot(runs, args, args.output / "distill_ppo_noisy_teacher.png")


if __name__ == "__main__":
    main()
