"""
Throughput of EnsembleDistillDQN (M teachers + a student) against plain SB3 DQN, same settings, one process.

Both run CartPole-v1 with train_freq=1, gradient_steps=1, batch_size=64 and the same teacher network;
the runs alternate (DQN, EnsembleDistillDQN, DQN, ...) so that drift in machine load hits both alike.
The figure of merit is the ratio of wall times per environment step (median over repeats):
1.0x means the whole ensemble costs what one plain DQN costs.

    python benchmarks/throughput.py                      # the defaults used in the README
    python benchmarks/throughput.py --device cuda --repeats 7
"""

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch as th
from stable_baselines3 import DQN

from sb3_distill import EnsembleDistillDQN


def run_once(algo: str, args: argparse.Namespace, seed: int) -> float:
    """Train once and return environment steps per second (after `learning_starts`, i.e. with training on)."""
    common = dict(
        learning_rate=1e-3,
        batch_size=args.batch_size,
        buffer_size=50_000,
        learning_starts=args.learning_starts,
        train_freq=1,
        gradient_steps=1,
        target_update_interval=500,
        policy_kwargs=dict(net_arch=args.net_arch),
        device=args.device,
        seed=seed,
    )
    if algo == "DQN":
        model = DQN("MlpPolicy", "CartPole-v1", **common)
    else:
        model = EnsembleDistillDQN(
            "MlpPolicy",
            "CartPole-v1",
            n_teachers=args.n_teachers,
            student_policy_kwargs=dict(net_arch=args.student_net_arch),
            **common,
        )
    # Warm-up phase (random actions, no training) is excluded from the timing
    model.learn(args.learning_starts)
    start = time.perf_counter()
    model.learn(args.steps, reset_num_timesteps=False)
    return args.steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000, help="timed environment steps per run")
    parser.add_argument("--learning-starts", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n-teachers", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--net-arch", type=int, nargs="*", default=[64, 64], help="teachers' (and DQN's) hidden layers")
    parser.add_argument("--student-net-arch", type=int, nargs="*", default=[16, 16])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 keeps CPU timings steady)")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    th.set_num_threads(args.threads)

    results: dict[str, list[float]] = {"DQN": [], "EnsembleDistillDQN": []}
    for repeat in range(args.repeats):
        for algo in results:
            results[algo].append(run_once(algo, args, seed=repeat))
            print(f"repeat {repeat} {algo:>20}: {results[algo][-1]:8.1f} steps/s", flush=True)

    medians = {algo: float(np.median(values)) for algo, values in results.items()}
    # Median over repeats of the wall-time ratio of each adjacent (DQN, ensemble) pair: robust to load drift
    ratio = float(np.median(np.array(results["DQN"]) / np.array(results["EnsembleDistillDQN"])))
    device = th.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or platform.machine()
    lines = [
        f"Throughput, CartPole-v1, train_freq=1, gradient_steps=1, batch_size={args.batch_size}, "
        f"teacher net_arch={args.net_arch}, student net_arch={args.student_net_arch}, M={args.n_teachers}",
        f"device={args.device} ({device}), torch {th.__version__}, threads={args.threads}, "
        f"{args.steps} timed steps x {args.repeats} repeats (medians)",
        "",
        "| algorithm | env steps/s (median) | min | max |",
        "|---|---|---|---|",
    ]
    for algo, values in results.items():
        lines.append(f"| {algo} | {medians[algo]:.1f} | {min(values):.1f} | {max(values):.1f} |")
    lines += [
        "",
        f"EnsembleDistillDQN (M={args.n_teachers} + student) wall time = {ratio:.2f}x plain SB3 DQN "
        "(median over repeats of the paired ratio)",
    ]
    report = "\n".join(lines)
    print("\n" + report)

    args.output.mkdir(parents=True, exist_ok=True)
    stem = f"throughput_{args.device.replace(':', '')}"
    (args.output / f"{stem}.md").write_text(report + "\n")
    (args.output / f"{stem}.json").write_text(json.dumps({"args": vars(args) | {"output": str(args.output)}, "steps_per_s": results,
                                                          "medians": medians, "ratio": ratio}, indent=2))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(list(medians), list(medians.values()), yerr=[[medians[a] - min(v) for a, v in results.items()],
                                                        [max(v) - medians[a] for a, v in results.items()]])
    ax.set_ylabel("env steps / s (median)")
    ax.set_title(f"CartPole-v1, {args.device}: ensemble = {ratio:.2f}x DQN wall time")
    fig.tight_layout()
    fig.savefig(args.output / f"{stem}.png", dpi=100)


if __name__ == "__main__":
    main()
