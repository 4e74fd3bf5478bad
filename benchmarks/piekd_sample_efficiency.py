"""
Sample efficiency of PIEKD-SAC against plain SAC and Ensemble-SAC (PIEKD without knowledge sharing,
``knowledge_sharing="none"``), as in Fig. 3 of Hong et al.: learning curves of the best (and worst) member's
evaluation return, and the number of environment steps each method needs to reach SAC's final return
(the paper claims PIEKD-SAC needs about half).

Every method uses the same SAC hyperparameters (the SAC paper's, except the smaller networks and budgets
below, chosen for a 2-core CPU); the ensembles use K=3. Runs are saved one by one to
``results/piekd_sample_efficiency_<env>.json`` and skipped when the script is started again, so a long
run can be resumed or extended with more seeds.

    python benchmarks/piekd_sample_efficiency.py --env Pendulum-v1 --seeds 0 1 2        # (make bench-piekd)
    python benchmarks/piekd_sample_efficiency.py --env Hopper-v5 --seeds 0 1
    # On a GPU, the paper's setting: 1M steps, 256x256 networks, I=5000, 5 seeds
    python benchmarks/piekd_sample_efficiency.py --env Hopper-v5 --seeds 0 1 2 3 4 --timesteps 1000000 \\
        --net-arch 256 256 --eval-freq 10000 --n-eval-episodes 20 --device cuda
"""

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3 import SAC
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

from sb3_distill import PIEKDSAC

ALGOS = ("SAC", "Ensemble-SAC", "PIEKD-SAC")

# Per-env settings: the SAC paper's hyperparameters (lr 3e-4, batch 256, tau 0.005, gamma 0.99, one gradient step
# per env step, learned entropy coefficient) with CPU-sized networks and budgets. Pendulum uses rl-zoo's SAC
# learning rate (1e-3) and I=1000 (the smallest value of the paper's grid: a 10k-step run would see only 2
# phases with I=5000).
SETTINGS: dict[str, dict[str, Any]] = {
    "Pendulum-v1": dict(
        timesteps=10_000,
        eval_freq=1_000,
        sac=dict(learning_rate=1e-3, batch_size=256, learning_starts=1_000),
        piekd=dict(distill_interval=1_000),
    ),
    "Hopper-v5": dict(
        timesteps=30_000,
        eval_freq=5_000,
        sac=dict(learning_rate=3e-4, batch_size=256, learning_starts=5_000),
        piekd=dict(distill_interval=5_000),
    ),
    "HalfCheetah-v5": dict(
        timesteps=30_000,
        eval_freq=5_000,
        sac=dict(learning_rate=3e-4, batch_size=256, learning_starts=5_000),
        piekd=dict(distill_interval=5_000),
    ),
}


class CurveCallback(BaseCallback):
    """Every ``eval_freq`` steps, the best and worst member's mean evaluation return (one member for SAC)."""

    def __init__(self, eval_env: gym.Env, eval_freq: int, n_eval_episodes: int) -> None:
        super().__init__()
        self.eval_env = eval_env
        self.eval_freq = eval_freq
        self.n_eval_episodes = n_eval_episodes
        self.curve: list[tuple[int, float, float]] = []

    def _on_step(self) -> bool:
        if self.num_timesteps % self.eval_freq == 0:
            self.curve.append((self.num_timesteps, *evaluate(self.model, self.eval_env, self.n_eval_episodes)))
        return True


def evaluate(model: Any, env: gym.Env, n_eval_episodes: int) -> tuple[float, float]:
    """The best and the worst member's mean return (deterministic actions)."""
    if isinstance(model, PIEKDSAC):
        means = [mean for mean, _ in model.evaluate_members(env, n_eval_episodes).values()]
    else:
        means = [float(evaluate_policy(model, env, n_eval_episodes=n_eval_episodes, deterministic=True)[0])]  # type: ignore[arg-type]
    return max(means), min(means)


def run(env_id: str, algo: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train one method on one seed; return its learning curve."""
    settings = SETTINGS[env_id]
    common = dict(settings["sac"], policy_kwargs=dict(net_arch=args.net_arch), seed=seed, device=args.device)
    if algo == "SAC":
        model: SAC = SAC("MlpPolicy", env_id, **common)
    else:
        sharing = "none" if algo == "Ensemble-SAC" else "distill"
        model = PIEKDSAC("MlpPolicy", env_id, ensemble_size=3, knowledge_sharing=sharing, **settings["piekd"], **common)
    eval_env = Monitor(gym.make(env_id))
    eval_env.reset(seed=10_000 + seed)
    callback = CurveCallback(eval_env, args.eval_freq or settings["eval_freq"], args.n_eval_episodes)
    start = time.perf_counter()
    model.learn(args.timesteps or settings["timesteps"], callback=callback)
    return dict(env=env_id, algo=algo, seed=seed, curve=callback.curve, wall_time_s=time.perf_counter() - start)


def steps_to_reach(curve: np.ndarray, steps: np.ndarray, target: float) -> float:
    """The first evaluation step at which ``curve`` (mean over seeds) reaches ``target``; nan if never."""
    reached = np.flatnonzero(curve >= target)
    return float(steps[reached[0]]) if len(reached) > 0 else float("nan")


def report(env_id: str, runs: list[dict[str, Any]], args: argparse.Namespace, output: Path) -> str:
    """The markdown table and the PNG plot of the mean curves over seeds."""
    curves: dict[str, np.ndarray] = {}
    steps = np.array([]) if not runs else np.array([point[0] for point in runs[0]["curve"]])
    seeds = sorted({run["seed"] for run in runs})
    for algo in ALGOS:
        algo_runs = [run for run in runs if run["algo"] == algo and len(run["curve"]) == len(steps)]
        if algo_runs:
            # (seeds, evaluations, [best, worst])
            curves[algo] = np.array([[point[1:] for point in run["curve"]] for run in algo_runs])
    sac_final = float(curves["SAC"][:, -1, 0].mean()) if "SAC" in curves else float("nan")
    lines = [
        f"### {env_id}",
        "",
        f"{int(steps[-1]) if len(steps) else 0} env steps, seeds {seeds}, net_arch={args.net_arch}, "
        f"evaluation every {int(steps[0]) if len(steps) else 0} steps ({args.n_eval_episodes} episodes per member, "
        f"deterministic); settings: {SETTINGS[env_id]}; {platform.machine()}, torch {th.__version__}",
        "",
        f"Target: SAC's final return (mean over seeds) = {sac_final:.1f}",
        "",
        "| method | final return, best member (mean ± std over seeds) | final, worst member | env steps to reach the target | "
        "fraction of SAC's budget | wall time per run (s) |",
        "|---|---|---|---|---|---|",
    ]
    for algo, curve in curves.items():
        final_best, final_worst = curve[:, -1, 0], curve[:, -1, 1]
        reach = steps_to_reach(curve[:, :, 0].mean(axis=0), steps, sac_final)
        wall = np.mean([run["wall_time_s"] for run in runs if run["algo"] == algo])
        worst = f"{final_worst.mean():.1f}" if algo != "SAC" else "-"
        lines.append(
            f"| {algo} | {final_best.mean():.1f} ± {final_best.std():.1f} | {worst} | {reach:.0f} | "
            f"{reach / steps[-1]:.2f} | {wall:.0f} |"
        )
    text = "\n".join(lines)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return text
    fig, ax = plt.subplots(figsize=(6, 4))
    for algo, curve in curves.items():
        mean = curve[:, :, 0].mean(axis=0)
        line = ax.plot(steps, mean, label=f"{algo} (best member)" if algo != "SAC" else algo)[0]
        if len(seeds) > 1:
            ax.fill_between(steps, curve[:, :, 0].min(axis=0), curve[:, :, 0].max(axis=0), alpha=0.15, color=line.get_color())
        if algo != "SAC":
            ax.plot(steps, curve[:, :, 1].mean(axis=0), linestyle="--", color=line.get_color(), label=f"{algo} (worst member)")
    ax.axhline(sac_final, color="gray", linewidth=0.8, linestyle=":")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("evaluation return (mean over seeds; band: min-max)")
    ax.set_title(f"{env_id}, seeds {seeds}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(output / f"piekd_sample_efficiency_{env_id}.png", dpi=100)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", nargs="+", default=["Pendulum-v1"], choices=list(SETTINGS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--algos", nargs="+", default=list(ALGOS), choices=ALGOS)
    parser.add_argument("--timesteps", type=int, default=None, help="override the env's budget")
    parser.add_argument("--eval-freq", type=int, default=None, help="override the env's evaluation interval")
    parser.add_argument("--n-eval-episodes", type=int, default=5)
    parser.add_argument("--net-arch", type=int, nargs="*", default=[64, 64])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    th.set_num_threads(args.threads)
    args.output.mkdir(parents=True, exist_ok=True)
    for env_id in args.env:
        path = args.output / f"piekd_sample_efficiency_{env_id}.json"
        runs = json.loads(path.read_text()) if path.exists() else []
        for seed in args.seeds:
            for algo in args.algos:
                if any(run["algo"] == algo and run["seed"] == seed for run in runs):
                    continue
                result = run(env_id, algo, seed, args)
                print(f"{env_id} {algo} seed {seed}: {result['curve'][-1]} ({result['wall_time_s']:.0f} s)", flush=True)
                runs.append(result)
                path.write_text(json.dumps(runs, indent=1))
        # The report covers the seeds asked for (a JSON may hold more)
        text = report(env_id, [run for run in runs if run["seed"] in args.seeds], args, args.output)
        (args.output / f"piekd_sample_efficiency_{env_id}.md").write_text(text + "\n")
        print(text)


if __name__ == "__main__":
    main()
