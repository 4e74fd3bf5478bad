"""
Fig. 6 of Czarnecki et al. 2019 ("Distilling Policy Distillation", arXiv:1902.02186, Sec. 4.2) with DistillPPO:
a corridor of 2T + 1 states (T = 5), the agent starts in the middle and moves left or right; stepping into the
right end gives +1, into the left end -1, and ends the episode (a time limit of 4 (2T + 1) steps gives 0).
Two teachers, given to DistillPPO as PPO policies on one-hot states with set weights: the optimal one
(``pi(R|s) = 1``, in practice a logit gap of 10) and an adversarial one (``pi(L|s) = 1``) whose value function is
the optimal teacher's (``V_bad := V_good``, so its critic points the right way while its policy does not).

The student is PPO's tabular policy (one-hot states, no hidden layer). Compared: policy cloning (N-distill and
expected entropy regularised, without the environment reward), N-distill + R, Teacher V reward, TD + V_pi
(``teacher_v_bootstrap``) and plain PPO. Every `--eval-freq` steps the student's exact expected return is
computed (``P(right end) - P(left end)`` within the time limit, by dynamic programming over its action
probabilities). Reported: the final expected return, and the steps until it first reaches 0.9, as medians
over seeds; a PNG of the curves and a markdown table. The paper finds:
cloning recovers the optimal teacher fastest and fails with the adversarial one; Teacher V reward learns with
both (slower than cloning, faster than no teacher); TD + V_pi does not solve the task with the adversarial one.

    python -m benchmarks.distill_ppo_chain --seeds 0 1 2
"""

import argparse
import json
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

T = 5
N_STATES = 2 * T + 1
GAMMA = 0.99
# Tabular PPO: one-hot states straight into the action and value heads
PPO_KWARGS: dict[str, Any] = dict(
    n_steps=64, batch_size=128, n_epochs=4, gamma=GAMMA, learning_rate=3e-3, policy_kwargs=dict(net_arch=[])
)
N_ENVS = 4
#: (name, DistillPPO arguments; None for plain PPO)
VARIANTS: list[tuple[str, dict[str, Any] | None]] = [
    ("N-distill", dict(update_rule="n_distill")),
    ("Exp. entropy regularised", dict(update_rule="expected_entropy_regularised")),
    ("N-distill + R", dict(update_rule="n_distill", env_reward=True)),
    ("Teacher V reward", dict(update_rule="teacher_v_reward")),
    ("TD + V_pi", dict(update_rule="teacher_v_bootstrap")),
    ("PPO (no teacher)", None),
]


class Chain(gym.Env):
    """The corridor of Sec. 4.2: states 0 .. 2T, start at T, 0 and 2T are terminal (-1 and +1)."""

    observation_space = spaces.Discrete(N_STATES)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[int, dict]:
        super().reset(seed=seed)
        self.state = T
        return self.state, {}

    def step(self, action: int) -> tuple[int, float, bool, bool, dict]:
        self.state += 1 if action == 1 else -1
        reward = 1.0 if self.state == N_STATES - 1 else -1.0 if self.state == 0 else 0.0
        return self.state, reward, reward != 0.0, False, {}


def make_env() -> gym.Env:
    return gym.wrappers.TimeLimit(Chain(), max_episode_steps=4 * N_STATES)


def make_teacher(adversarial: bool) -> PPO:
    """A PPO policy on one-hot states with the teacher's logits and the optimal teacher's values as weights."""
    teacher = PPO("MlpPolicy", make_env(), **{**PPO_KWARGS, "batch_size": 64})
    # V_good(s) = gamma^(steps to the right end - 1); terminal states are never observed
    values = th.tensor([GAMMA ** (N_STATES - 2 - s) for s in range(N_STATES)])
    logits = th.zeros(2, N_STATES)
    logits[0 if adversarial else 1] = 10.0
    with th.no_grad():
        teacher.policy.action_net.weight.copy_(logits)
        teacher.policy.action_net.bias.zero_()
        teacher.policy.value_net.weight.copy_(values[None])
        teacher.policy.value_net.bias.zero_()
    return teacher


def expected_return(model: PPO) -> float:
    """
    The stochastic student's exact expected return, ``P(reach the right end) - P(reach the left end)`` within the
    time limit, by dynamic programming over (position, time) with its action probabilities.
    """
    states = th.arange(N_STATES, dtype=th.float32)[:, None]
    with th.no_grad():
        right = model.policy.get_distribution(states).distribution.probs[:, 1].numpy()
    occupancy = np.zeros(N_STATES)
    occupancy[T] = 1.0
    total = 0.0
    for _ in range(4 * N_STATES):
        moved = np.zeros(N_STATES)
        moved[1:] += occupancy[:-1] * right[:-1]
        moved[:-1] += occupancy[1:] * (1 - right[1:])
        total += moved[N_STATES - 1] - moved[0]
        moved[0] = moved[N_STATES - 1] = 0.0
        occupancy = moved
    return float(total)


class ExpectedReturn(BaseCallback):
    """The student's exact expected return every `eval_freq` steps."""

    def __init__(self, eval_freq: int) -> None:
        super().__init__()
        self.eval_freq, self._next = eval_freq, 0
        self.steps: list[int] = []
        self.returns: list[float] = []

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            self.steps.append(self.num_timesteps)
            self.returns.append(expected_return(self.model))
            self._next += self.eval_freq
        return True


def run(seed: int, teacher_name: str, name: str, kwargs: dict[str, Any] | None, args: argparse.Namespace) -> dict:
    env = make_vec_env(make_env, n_envs=N_ENVS, seed=seed)
    if kwargs is None:
        model: PPO = PPO("MlpPolicy", env, seed=seed, **PPO_KWARGS)
    else:
        teacher = make_teacher(adversarial=teacher_name == "adversarial")
        model = DistillPPO("MlpPolicy", env, teacher=teacher, seed=seed, **kwargs, **PPO_KWARGS)
    curve = ExpectedReturn(args.eval_freq)
    model.learn(args.budget, callback=curve)
    return dict(steps=curve.steps, returns=curve.returns)


def report(runs: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"DistillPPO on the chain of Sec. 4.2 (T = {T}), {len(runs)} seeds, {args.budget} steps each",
        "",
        "| teacher | variant | expected return at the end (median) | steps to an expected return >= 0.9 (median) "
        "| reached (seeds) |",
        "|---|---|---|---|---|",
    ]
    for teacher_name in ("optimal", "adversarial"):
        for name, kwargs in VARIANTS:
            if kwargs is None and teacher_name == "adversarial":
                continue
            curves = [saved[teacher_name][name] for saved in runs]
            final = float(np.median([curve["returns"][-1] for curve in curves]))
            firsts = [next((s for s, r in zip(c["steps"], c["returns"], strict=True) if r >= 0.9), np.inf) for c in curves]
            reached = int(np.isfinite(firsts).sum())
            first = float(np.median(firsts))
            first_text = f"{first:.0f}" if np.isfinite(first) else "not reached"
            shown = "(none)" if kwargs is None else teacher_name
            lines.append(f"| {shown} | {name} | {final:.3f} | {first_text} | {reached}/{len(curves)} |")
    return "\n".join(lines)


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, teacher_name in zip(axes, ("optimal", "adversarial"), strict=True):
        for name, _ in VARIANTS:
            curves = [saved[teacher_name][name] for saved in runs]
            length = min(len(curve["returns"]) for curve in curves)
            mean = np.mean([curve["returns"][:length] for curve in curves], axis=0)
            ax.plot(curves[0]["steps"][:length], mean, label=name)
        ax.set_title(f"{teacher_name} teacher")
        ax.set_xlabel("environment steps")
    axes[0].set_ylabel("expected return (mean over seeds)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget", type=int, default=8_000)
    parser.add_argument("--eval-freq", type=int, default=256)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--report-only", action="store_true", help="rewrite the table and plot from the saved JSON")
    parser.add_argument("--append", action="store_true", help="add these seeds to the runs saved in the JSON")
    args = parser.parse_args()
    th.set_num_threads(1)

    json_path = args.output / "distill_ppo_chain.json"
    runs: list[dict[str, Any]] = []
    if args.report_only or (args.append and json_path.exists()):
        runs = json.loads(json_path.read_text())["runs"]
    if not args.report_only:
        args.output.mkdir(parents=True, exist_ok=True)
        for seed in [seed for seed in args.seeds if seed not in {saved["seed"] for saved in runs}]:
            result: dict[str, Any] = dict(seed=seed, optimal={}, adversarial={})
            runs.append(result)
            for teacher_name in ("optimal", "adversarial"):
                for name, kwargs in VARIANTS:
                    if kwargs is None and teacher_name == "adversarial":
                        # PPO does not see the teacher: the same run under both headings
                        result["adversarial"][name] = result["optimal"][name]
                        continue
                    result[teacher_name][name] = run(seed, teacher_name, name, kwargs, args)
                    print(seed, teacher_name, name, result[teacher_name][name]["returns"][-5:], flush=True)
                    json_path.write_text(json.dumps({"runs": runs}, indent=2))
    runs = [saved for saved in runs if len(saved["adversarial"]) == len(VARIANTS)]
    text = report(runs, args)
    print("\n" + text)
    (args.output / "distill_ppo_chain.md").write_text(text + "\n")
    plot(runs, args.output / "distill_ppo_chain.png")


if __name__ == "__main__":
    main()
