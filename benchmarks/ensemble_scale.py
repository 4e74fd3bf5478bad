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
"""

import argparse
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

from sb3_distill.common.callbacks import EvalMembersCallback
from sb3_distill.common.diagnostics import agreement_rate, one_hot_rate
from sb3_distill.ensemble_distill_dqn.ensemble_distill_dqn import EnsembleDistillDQN

ROOT = Path(__file__).resolve().parent.parent
#: The variants compared: their EnsembleDistillDQN arguments on top of the zoo config
VARIANTS: dict[str, dict[str, Any]] = {
    "raw": {"temperature_scaling": None, "teacher_weighting": None},
    "spread": {"temperature_scaling": "spread", "teacher_weighting": None},
    "returns": {"temperature_scaling": None, "teacher_weighting": "returns"},
    "spread+returns": {"temperature_scaling": "spread", "teacher_weighting": "returns"},
}


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
    return config


def run(env_id: str, variant: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train one model and return its evaluation curve and final evaluation."""
    config = zoo_hyperparams(env_id)
    timesteps = args.timesteps or int(config.pop("n_timesteps"))
    config.pop("n_timesteps", None)
    policy = config.pop("policy")
    model = EnsembleDistillDQN(policy, env_id, seed=seed, **config, **VARIANTS[variant])
    callback = DiagnosedEvalCallback(Monitor(gym.make(env_id)), eval_freq=args.eval_freq, n_eval_episodes=args.eval_episodes)
    start = time.time()
    model.learn(timesteps, callback=callback)
    train_time = time.time() - start
    final_env = Monitor(gym.make(env_id))
    final_env.reset(seed=10**6 + seed)
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
    args = parser.parse_args()
    th.set_num_threads(args.threads)
    args.output.mkdir(parents=True, exist_ok=True)
    stem = args.output / f"ensemble_scale_{args.env}"
    runs: list[dict[str, Any]] = []
    if args.append and stem.with_suffix(".json").exists():
        runs = json.loads(stem.with_suffix(".json").read_text())
    for seed in args.seeds:
        for variant in args.variants:
            timesteps = args.timesteps or int(zoo_hyperparams(args.env)["n_timesteps"])
            if any(r["variant"] == variant and r["seed"] == seed and r["timesteps"] == timesteps for r in runs):
                continue
            result = run(args.env, variant, seed, args)
            runs.append(result)
            # Written as each run finishes
            stem.with_suffix(".json").write_text(json.dumps(runs, indent=1))
            table = summarise(runs)
            stem.with_suffix(".md").write_text(table + "\n")
            plot(args.env, runs, stem.with_suffix(".png"))
            print(f"{variant} seed {seed}: {result['final']} ({result['train_time_s']:.0f} s)", flush=True)
    print(summarise(runs))


if __name__ == "__main__":
    main()
