"""
Inference latency of a teacher and its distilled students, as deployed: the time of one call that turns a
batch of raw observations into greedy actions (one decision per observation), on the CPU, one thread.

Networks (DQN Q-networks, built untrained: latency does not depend on the weights):

- ``atari``: 84x84x4 uint8 frames, 6 actions. The Nature-CNN teacher ``{32, 64, 64, 512}`` (SB3's
  ``NatureCNN``) and the students of the distillation papers, ``CompactNatureCNN`` student1
  ``{16, 16, 16, 64}`` and student2 ``{8, 8, 16, 64}`` (Rusu et al., "Policy Distillation", 2015,
  arXiv:1511.06295; Sun & Fazli, "Real-time Policy Distillation in Deep Reinforcement Learning", 2019,
  arXiv:1912.12630).
- ``mlp``: CartPole-v1 observations, the teacher ``net_arch=[64, 64]`` and the student ``[16, 16]`` of the
  other benchmarks here.

Runtimes: ``PyTorch`` (eager, the Q-network's forward and argmax on a ready tensor, under
``th.inference_mode``, the /255 scaling included), ``SB3 predict`` (``model.predict(obs, deterministic=True)``,
numpy in and out) and ``onnxruntime`` (the graph of ``sb3_distill.export_onnx``, numpy in and out, one intra-op
and one inter-op thread). Each figure is the median over ``--repeats`` repeats of the mean time per call over
at least ``--min-time`` seconds of calls; the repeats go round every network and runtime in turn, so that
changes in machine load hit all of them alike. The parameter and multiply-accumulate (MAC) ratios are
counted from the layer shapes (a convolution: output elements x input channels x kernel area; a linear
layer: inputs x outputs): the speed-up that arithmetic alone would give.

    python benchmarks/inference_latency.py                         # the run in benchmarks/README.md
    python benchmarks/inference_latency.py --repeats 3 --min-time 0.1 --cases mlp
    python benchmarks/inference_latency.py --replot                # redraw the plot from the saved results
"""

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from stable_baselines3 import DQN
from stable_baselines3.common.envs import FakeImageEnv
from torch import nn

from sb3_distill import export_onnx
from sb3_distill.common.torch_layers import CompactNatureCNN, count_parameters

#: case -> (network name, DQN policy_kwargs); the first network of a case is the teacher
NETWORKS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "atari": [
        ("teacher {32,64,64,512}", dict()),
        (
            "student1 {16,16,16,64}",
            dict(
                features_extractor_class=CompactNatureCNN,
                features_extractor_kwargs=dict(filters=(16, 16, 16), features_dim=64),
            ),
        ),
        (
            "student2 {8,8,16,64}",
            dict(
                features_extractor_class=CompactNatureCNN, features_extractor_kwargs=dict(filters=(8, 8, 16), features_dim=64)
            ),
        ),
    ],
    "mlp": [("teacher [64, 64]", dict(net_arch=[64, 64])), ("student [16, 16]", dict(net_arch=[16, 16]))],
}
RUNTIMES = ("PyTorch", "SB3 predict", "onnxruntime")


def make_model(case: str, policy_kwargs: dict[str, Any]) -> DQN:
    """An untrained DQN with the network, for the case's observations."""
    if case == "atari":
        env = FakeImageEnv(screen_height=84, screen_width=84, n_channels=4, action_dim=6, channel_first=True)
        return DQN("CnnPolicy", env, buffer_size=1, policy_kwargs=policy_kwargs, device="cpu", seed=0)
    return DQN("MlpPolicy", "CartPole-v1", buffer_size=1, policy_kwargs=policy_kwargs, device="cpu", seed=0)


def count_macs(network: nn.Module, obs: th.Tensor) -> int:
    """Multiply-accumulates of one forward pass per observation, from the shapes of the conv and linear layers."""
    macs = [0]

    def hook(module: nn.Module, inputs: tuple[th.Tensor, ...], output: th.Tensor) -> None:
        per_obs = output[0].numel()
        if isinstance(module, nn.Conv2d):
            kernel = module.kernel_size[0] * module.kernel_size[1]
            macs[0] += per_obs * module.in_channels // module.groups * kernel
        else:
            macs[0] += per_obs * module.in_features  # type: ignore[operator]

    handles = [
        module.register_forward_hook(hook) for module in network.modules() if isinstance(module, (nn.Conv2d, nn.Linear))
    ]
    with th.inference_mode():
        network(obs[:1])
    for handle in handles:
        handle.remove()
    return macs[0]


def time_per_call(function: Callable[[], Any], n_calls: int) -> float:
    """Mean wall time of ``n_calls`` calls, in seconds."""
    start = time.perf_counter()
    for _ in range(n_calls):
        function()
    return (time.perf_counter() - start) / n_calls


def calibrate(function: Callable[[], Any], min_time: float) -> int:
    """The number of calls that takes at least ``min_time`` seconds (after a few warm-up calls)."""
    n_calls = 1
    time_per_call(function, 3)
    while time_per_call(function, n_calls) * n_calls < min_time and n_calls < 1_000_000:
        n_calls *= 2
    return n_calls


def make_calls(case: str, name: str, policy_kwargs: dict[str, Any], batch_sizes: list[int], path: Path) -> dict[str, Any]:
    """The network's counts and one zero-argument call per (runtime, batch size); the ONNX file goes to ``path``."""
    import onnxruntime as ort

    model = make_model(case, policy_kwargs)
    q_net = model.policy.q_net.eval()
    export_onnx(model, path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    calls: dict[tuple[str, int], Callable[[], Any]] = {}
    for batch_size in batch_sizes:
        obs = np.stack([model.observation_space.sample() for _ in range(batch_size)])
        obs = obs if obs.dtype == np.uint8 else (obs + rng.normal(size=obs.shape)).astype(np.float32)
        obs_tensor = th.as_tensor(obs)

        def torch_call(obs_tensor: th.Tensor = obs_tensor) -> th.Tensor:
            with th.inference_mode():
                return q_net(obs_tensor).argmax(dim=1)

        calls[("PyTorch", batch_size)] = torch_call
        calls[("SB3 predict", batch_size)] = lambda obs=obs: model.predict(obs, deterministic=True)
        calls[("onnxruntime", batch_size)] = lambda obs=obs: session.run(["action"], {"obs": obs})
    macs = count_macs(q_net, th.as_tensor(model.observation_space.sample()[None]))
    return dict(case=case, network=name, params=count_parameters(q_net), macs=macs, calls=calls)


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Time every network, runtime and batch size; ``repeats`` rounds. Returns one row per network and batch size."""
    th.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        networks = [
            make_calls(case, name, kwargs, args.batch_sizes, Path(folder) / f"{case}_{index}.onnx")
            for case in args.cases
            for index, (name, kwargs) in enumerate(NETWORKS[case])
        ]
        n_calls = {
            (i, key): calibrate(call, args.min_time) for i, net in enumerate(networks) for key, call in net["calls"].items()
        }
        times: dict[tuple[int, tuple[str, int]], list[float]] = {key: [] for key in n_calls}
        for repeat in range(args.repeats):
            for (index, key), count in n_calls.items():
                times[(index, key)].append(time_per_call(networks[index]["calls"][key], count))
            print(f"repeat {repeat + 1}/{args.repeats} done", flush=True)
    rows = []
    for index, net in enumerate(networks):
        for batch_size in args.batch_sizes:
            ms = {runtime: [1e3 * t for t in times[(index, (runtime, batch_size))]] for runtime in RUNTIMES}
            rows.append(
                dict(case=net["case"], network=net["network"], params=net["params"], macs=net["macs"], batch=batch_size, ms=ms)
            )
    return rows


def median(row: dict[str, Any], runtime: str) -> float:
    return float(np.median(row["ms"][runtime]))


def report(rows: list[dict[str, Any]], args: argparse.Namespace, load: tuple[float, float]) -> str:
    """Markdown tables (one per case), then each student in onnxruntime against its teacher in PyTorch eager."""
    import onnxruntime as ort

    lines = [
        f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores), torch {th.__version__} "
        f"(1 thread), onnxruntime {ort.__version__} (1 thread); median of {args.repeats} repeats "
        f"of >= {args.min_time} s of calls; 1-minute load average {load[0]:.2f} before, {load[1]:.2f} after.",
        "Times are ms per call (one decision for each of the batch's observations); speed-ups are the teacher's "
        "time over the network's in the same runtime; ratios are the teacher's count over the network's.",
    ]
    for case in args.cases:
        lines += [
            "",
            f"| {case} network | params | MACs/obs | batch | PyTorch ms | SB3 predict ms | onnxruntime ms "
            "| speed-up PyTorch | speed-up onnxruntime | param ratio | MAC ratio |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        case_rows = [row for row in rows if row["case"] == case]
        for row in case_rows:
            teacher = next(other for other in case_rows if other["batch"] == row["batch"])
            lines.append(
                f"| {row['network']} | {row['params']:,} | {row['macs']:,} | {row['batch']} "
                + "".join(f"| {median(row, runtime):.3f} " for runtime in RUNTIMES)
                + "".join(
                    f"| {median(teacher, runtime) / median(row, runtime):.2f}x " for runtime in ("PyTorch", "onnxruntime")
                )
                + f"| {teacher['params'] / row['params']:.1f}x | {teacher['macs'] / row['macs']:.1f}x |"
            )
    lines += ["", "Deployed student (onnxruntime) against its teacher in PyTorch eager:"]
    for row in rows:
        teacher = next(other for other in rows if other["case"] == row["case"] and other["batch"] == row["batch"])
        if row is not teacher:
            lines.append(
                f"- {row['case']} {row['network']}, batch {row['batch']}: {median(row, 'onnxruntime'):.3f} ms vs "
                f"{median(teacher, 'PyTorch'):.3f} ms, {median(teacher, 'PyTorch') / median(row, 'onnxruntime'):.1f}x "
                f"(MAC ratio {teacher['macs'] / row['macs']:.1f}x)"
            )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Bars: latency per network and runtime (log scale), one panel per batch size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batch_sizes = sorted({row["batch"] for row in rows})
    figure, axes = plt.subplots(1, len(batch_sizes), figsize=(6 * len(batch_sizes), 4.5), squeeze=False)
    for axis, batch_size in zip(axes[0], batch_sizes, strict=True):
        batch_rows = [row for row in rows if row["batch"] == batch_size]
        positions = np.arange(len(batch_rows))
        for offset, runtime in enumerate(RUNTIMES):
            axis.bar(positions + (offset - 1) * 0.27, [median(row, runtime) for row in batch_rows], width=0.27, label=runtime)
        labels = [f"{row['case']}\n" + row["network"].replace(" ", "\n", 1) for row in batch_rows]
        axis.set_xticks(positions, labels, fontsize=7)
        axis.set_yscale("log")
        axis.set_ylabel("ms per call (median)")
        axis.set_title(f"batch {batch_size}, CPU, 1 thread")
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", choices=list(NETWORKS), default=list(NETWORKS))
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--min-time", type=float, default=0.25, help="seconds of calls per measurement")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--replot", action="store_true", help="only redraw the plot from the saved JSON (no timing)")
    args = parser.parse_args()
    if args.replot:
        rows = json.loads((args.output / "inference_latency_cpu.json").read_text())["rows"]
        plot(rows, args.output / "inference_latency_cpu.png")
        return
    load_before = os.getloadavg()[0]
    rows = run(args)
    text = report(rows, args, (load_before, os.getloadavg()[0]))
    print("\n" + text)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "inference_latency_cpu.md").write_text(text + "\n")
    summary = dict(args=vars(args) | dict(output=str(args.output)), rows=rows)
    (args.output / "inference_latency_cpu.json").write_text(json.dumps(summary, indent=2))
    plot(rows, args.output / "inference_latency_cpu.png")


if __name__ == "__main__":
    main()
