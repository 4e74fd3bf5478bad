"""
Throughput of EnsembleDistillDQN (M teachers + a student) and RealTimeDistillDQN (a teacher + 3 students)
against plain SB3 DQN, same settings, one process; with ``--suite sac``, of PIEKDSAC (K SAC agents)
against plain SB3 SAC.

Both run CartPole-v1 with train_freq=1, gradient_steps=1, batch_size=64 and the same teacher network;
they train in alternating chunks of steps (DQN, EnsembleDistillDQN, DQN, ...) so that drift in machine
load hits both alike.
The figure of merit is the ratio of wall times per environment step (median over repeats):
1.0x means the whole ensemble costs what one plain DQN costs.

    python benchmarks/throughput.py                      # the defaults used in the README
    python benchmarks/throughput.py --device cuda --repeats 7
    python benchmarks/throughput.py --suite sac          # PIEKDSAC K=3 vs SAC, SAC's default networks
    python benchmarks/throughput.py --suite sac --sac-net-arch 64 64 --sac-batch-size 64

The SAC suite runs Pendulum-v1 with train_freq=1, gradient_steps=1 and SB3's SAC defaults (net_arch
[256, 256], batch_size 256) unless told otherwise. PIEKDSAC is timed twice: joint training alone
(``knowledge_sharing="none"``, the per-step hot path) and with its default distillation phases
(``distill_interval`` I, 5 epochs x 200 batches); the timed steps must span at least one interval for the
second figure to include a phase (the default: 5000 timed steps, I=5000, one phase per repeat).
"""

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch as th
from stable_baselines3 import DQN, SAC

from sb3_distill import PIEKDSAC, EnsembleDistillDQN, RealTimeDistillDQN


def make_model(algo: str, args: argparse.Namespace, seed: int) -> DQN:
    """A model of either algorithm with the shared settings, its warm-up phase (random actions) done."""
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
    elif algo == "DQN (fused Adam)":
        # Reference only: SB3's DQN with the optimizer implementation EnsembleDistillDQN uses by default
        common["policy_kwargs"] = dict(net_arch=args.net_arch, optimizer_kwargs=dict(fused=True))
        model = DQN("MlpPolicy", "CartPole-v1", **common)
    elif algo.startswith("RealTimeDistillDQN"):
        model = RealTimeDistillDQN(
            "MlpPolicy",
            "CartPole-v1",
            students=[dict(net_arch=net_arch) for net_arch in args.realtime_students],
            stack_teacher="not stacked" not in algo,
            **common,
        )
    else:
        model = EnsembleDistillDQN(
            "MlpPolicy",
            "CartPole-v1",
            n_teachers=args.n_teachers,
            student_policy_kwargs=dict(net_arch=args.student_net_arch),
            torch_compile=algo.endswith("(torch_compile)"),
            **common,
        )
    # Warm-up, excluded from the timing: the random-action phase, then a few updates (torch.compile compiles there)
    model.learn(args.learning_starts + args.chunk)
    return model


def run_repeat(args: argparse.Namespace, seed: int) -> dict[str, float]:
    """
    Train both models in alternating chunks of `args.chunk` steps, so that changes in machine load
    hit both alike, and return each one's environment steps per second (with training on).
    """
    models = {algo: make_model(algo, args, seed) for algo in ALGOS}
    elapsed = dict.fromkeys(ALGOS, 0.0)
    for _ in range(args.steps // args.chunk):
        for algo, model in models.items():
            start = time.perf_counter()
            model.learn(args.chunk, reset_num_timesteps=False)
            elapsed[algo] += time.perf_counter() - start
    return {algo: args.steps // args.chunk * args.chunk / elapsed[algo] for algo in ALGOS}


ALGOS = (
    "DQN",
    "DQN (fused Adam)",
    "EnsembleDistillDQN",
    "EnsembleDistillDQN (torch_compile)",
    "RealTimeDistillDQN (teacher + students)",
    "RealTimeDistillDQN (teacher not stacked)",
)


SAC_ALGOS = (
    "SAC",
    "SAC (fused Adam)",
    "PIEKDSAC (joint training)",
    "PIEKDSAC (with distillation)",
)


def make_sac_model(algo: str, args: argparse.Namespace, seed: int) -> SAC:
    """A SAC or PIEKDSAC model with the shared settings, its warm-up phase (random actions) done."""
    common: dict = dict(
        batch_size=args.sac_batch_size,
        buffer_size=100_000,
        learning_starts=args.learning_starts,
        train_freq=1,
        gradient_steps=1,
        policy_kwargs=dict(net_arch=args.sac_net_arch),
        device=args.device,
        seed=seed,
    )
    if algo == "SAC":
        model = SAC("MlpPolicy", "Pendulum-v1", **common)
    elif algo == "SAC (fused Adam)":
        # Reference only: SB3's SAC with the optimizer implementation PIEKDSAC uses by default
        common["policy_kwargs"] = dict(net_arch=args.sac_net_arch, optimizer_kwargs=dict(fused=True))
        model = SAC("MlpPolicy", "Pendulum-v1", **common)
    else:
        knowledge_sharing = "none" if algo == "PIEKDSAC (joint training)" else "distill"
        model = PIEKDSAC(
            "MlpPolicy",
            "Pendulum-v1",
            ensemble_size=args.ensemble_size,
            knowledge_sharing=knowledge_sharing,
            distill_interval=args.distill_interval,
            distill_gradient_steps=args.distill_gradient_steps,
            **common,
        )
    # Warm-up, excluded from the timing: the random-action phase, then a few updates
    model.learn(args.learning_starts + args.chunk)
    return model


def run_sac_repeat(args: argparse.Namespace, seed: int) -> dict[str, float]:
    """The SAC suite's :func:`run_repeat`: environment steps per second of each of :data:`SAC_ALGOS`."""
    models = {algo: make_sac_model(algo, args, seed) for algo in SAC_ALGOS}
    elapsed = dict.fromkeys(SAC_ALGOS, 0.0)
    for _ in range(args.steps // args.chunk):
        for algo, model in models.items():
            start = time.perf_counter()
            model.learn(args.chunk, reset_num_timesteps=False)
            elapsed[algo] += time.perf_counter() - start
    phases = models["PIEKDSAC (with distillation)"].n_sharing_phases  # type: ignore[attr-defined]
    print(f"  distillation phases in the timed steps: {phases}", flush=True)
    return {algo: args.steps // args.chunk * args.chunk / elapsed[algo] for algo in SAC_ALGOS}


def measure(
    args: argparse.Namespace,
    run: Callable[[argparse.Namespace, int], dict[str, float]],
    algos: tuple[str, ...],
    baseline: str,
) -> tuple[dict[str, list[float]], dict[str, float], dict[str, float], list[str]]:
    """
    Run ``args.repeats`` repeats of ``run`` and summarise them: steps/s of every repeat, their medians, the
    wall time relative to ``baseline`` (median over repeats of the per-repeat ratio) and the rows of the
    markdown table.
    """
    results: dict[str, list[float]] = {algo: [] for algo in algos}
    for repeat in range(args.repeats):
        steps_per_s = run(args, repeat)
        for algo in algos:
            results[algo].append(steps_per_s[algo])
        print(f"repeat {repeat}: " + ", ".join(f"{algo} {steps_per_s[algo]:.1f} steps/s" for algo in algos), flush=True)
    medians = {algo: float(np.median(values)) for algo, values in results.items()}
    relative = {algo: float(np.median(np.array(results[baseline]) / np.array(results[algo]))) for algo in algos}
    device = th.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or platform.machine()
    rows = [
        f"device={args.device} ({device}), torch {th.__version__}, threads={args.threads}, "
        f"{args.steps} timed steps x {args.repeats} repeats (medians)",
        "",
        f"| algorithm | env steps/s (median) | min | max | wall time vs {baseline} |",
        "|---|---|---|---|---|",
    ]
    for algo, values in results.items():
        rows.append(f"| {algo} | {medians[algo]:.1f} | {min(values):.1f} | {max(values):.1f} | {relative[algo]:.2f}x |")
    return results, medians, relative, rows


def sac_main(args: argparse.Namespace) -> None:
    """Time PIEKDSAC against SAC and write ``throughput_sac_<device>_<net>.{md,json}``."""
    results, medians, relative, rows = measure(args, lambda a, seed: run_sac_repeat(a, seed=seed), SAC_ALGOS, "SAC")
    lines = [
        f"Throughput, Pendulum-v1, train_freq=1, gradient_steps=1, batch_size={args.sac_batch_size}, "
        f"net_arch={args.sac_net_arch}, K={args.ensemble_size}, distill_interval={args.distill_interval}, "
        f"distill_gradient_steps={args.distill_gradient_steps} (x 5 epochs)",
        *rows,
    ]
    lines += [
        "",
        f"PIEKDSAC (K={args.ensemble_size}) wall time = {relative['PIEKDSAC (joint training)']:.2f}x plain SB3 SAC "
        f"for joint training, {relative['PIEKDSAC (with distillation)']:.2f}x with its distillation phases "
        "(median over repeats of the per-repeat ratio)",
    ]
    report = "\n".join(lines)
    print("\n" + report)
    args.output.mkdir(parents=True, exist_ok=True)
    stem = f"throughput_sac_{args.device.replace(':', '')}_{'x'.join(str(units) for units in args.sac_net_arch)}"
    (args.output / f"{stem}.md").write_text(report + "\n")
    summary = {"args": vars(args) | {"output": str(args.output)}, "steps_per_s": results, "medians": medians}
    (args.output / f"{stem}.json").write_text(json.dumps(summary | {"wall_time_vs_sac": relative}, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", choices=["dqn", "sac"], default="dqn", help="DQN-based algorithms, or PIEKDSAC vs SAC")
    parser.add_argument("--sac-net-arch", type=int, nargs="*", default=[256, 256], help="SAC suite: each member's networks")
    parser.add_argument("--sac-batch-size", type=int, default=256, help="SAC suite: batch size")
    parser.add_argument("--ensemble-size", type=int, default=3, help="SAC suite: K")
    parser.add_argument("--distill-interval", type=int, default=5000, help="SAC suite: I")
    parser.add_argument("--distill-gradient-steps", type=int, default=200, help="SAC suite: batches per distillation epoch")
    parser.add_argument("--steps", type=int, default=3000, help="timed environment steps per run")
    parser.add_argument("--chunk", type=int, default=250, help="steps per alternating chunk")
    parser.add_argument("--learning-starts", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n-teachers", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--net-arch", type=int, nargs="*", default=[64, 64], help="teachers' (and DQN's) hidden layers")
    parser.add_argument("--student-net-arch", type=int, nargs="*", default=[16, 16])
    parser.add_argument(
        "--realtime-students",
        type=lambda text: [[int(units) for units in student.split(",") if units] for student in text.split(";")],
        default=[[32, 32], [16, 16], [8, 8]],
        help="RealTimeDistillDQN students' net_arch, e.g. '32,32;16,16;8,8'",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 keeps CPU timings steady)")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    th.set_num_threads(args.threads)
    if args.suite == "sac":
        sac_main(args)
        return

    results, medians, relative, rows = measure(args, lambda a, seed: run_repeat(a, seed=seed), ALGOS, "DQN")
    lines = [
        f"Throughput, CartPole-v1, train_freq=1, gradient_steps=1, batch_size={args.batch_size}, "
        f"teacher net_arch={args.net_arch}, student net_arch={args.student_net_arch}, M={args.n_teachers}, "
        f"real-time students {args.realtime_students}",
        *rows,
    ]
    lines += [
        "",
        f"EnsembleDistillDQN (M={args.n_teachers} + student) wall time = {relative['EnsembleDistillDQN']:.2f}x plain "
        f"SB3 DQN in eager mode, {relative['EnsembleDistillDQN (torch_compile)']:.2f}x with torch_compile=True "
        "(median over repeats of the per-repeat ratio)",
        f"RealTimeDistillDQN (teacher + {len(args.realtime_students)} students) wall time = "
        f"{relative['RealTimeDistillDQN (teacher + students)']:.2f}x plain SB3 DQN",
    ]
    report = "\n".join(lines)
    print("\n" + report)

    args.output.mkdir(parents=True, exist_ok=True)
    stem = f"throughput_{args.device.replace(':', '')}"
    (args.output / f"{stem}.md").write_text(report + "\n")
    summary = {"args": vars(args) | {"output": str(args.output)}, "steps_per_s": results, "medians": medians}
    (args.output / f"{stem}.json").write_text(json.dumps(summary | {"wall_time_vs_dqn": relative}, indent=2))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(7, 3.5))
    labels = [algo.replace(" (", "\n(") for algo in ALGOS]
    errors = [[medians[a] - min(results[a]) for a in ALGOS], [max(results[a]) - medians[a] for a in ALGOS]]
    ax.bar(labels, [medians[a] for a in ALGOS], yerr=errors)
    ax.set_ylabel("env steps / s (median)")
    ax.set_title(f"CartPole-v1, {args.device}, M={args.n_teachers} teachers + student")
    fig.tight_layout()
    fig.savefig(args.output / f"{stem}.png", dpi=100)


if __name__ == "__main__":
    main()
