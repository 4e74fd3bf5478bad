"""
CPU time (of this process, so that other jobs on the machine do not count) per ``train(1)`` call and per
environment step (``learn``, training included) of SB3's DQN and the DQN distillers, with the settings of
``throughput.py`` (CartPole-v1, train_freq=1, batch 64, teachers [64, 64], ensemble student [16, 16], real-time
students [32, 32], [16, 16], [8, 8] stacked with their teacher), one torch thread, the models alternating.
For a machine so loaded that wall-time runs of ``throughput.py`` cannot finish (issue 15's last measurements).

    python benchmarks/step_cost.py DQN,Ens,RT 3        # models, repeats
    python benchmarks/step_cost.py DQN,Ens,Ensa,Ensc,RT,RTa,RTc 5

Ens / RT: eager (``torch_compile=False``); Ensa / RTa: the default ``torch_compile="auto"`` as in a long
``learn()`` call (compiled step, public ``optimizer.step()``); Ensc / RTc: ``torch_compile=True``.
"""

import sys
import time

import numpy as np
import torch as th
from stable_baselines3 import DQN

from sb3_distill import EnsembleDistillDQN, RealTimeDistillDQN
from sb3_distill.common import distill_dqn

COMMON = dict(
    learning_rate=1e-3,
    batch_size=64,
    buffer_size=50_000,
    learning_starts=500,
    train_freq=1,
    gradient_steps=1,
    target_update_interval=500,
    policy_kwargs=dict(net_arch=[64, 64]),
    seed=0,
)


def build(name: str) -> DQN:
    compiled = {"torch_compile": {"c": True, "a": "auto"}.get(name[-1], False)}
    if name == "DQN":
        return DQN("MlpPolicy", "CartPole-v1", **COMMON)
    if name.startswith("Ens"):
        return EnsembleDistillDQN(
            "MlpPolicy", "CartPole-v1", student_policy_kwargs=dict(net_arch=[16, 16]), **compiled, **COMMON
        )
    students = [dict(net_arch=arch) for arch in ([32, 32], [16, 16], [8, 8])]
    return RealTimeDistillDQN("MlpPolicy", "CartPole-v1", students=students, stack_teacher=True, **compiled, **COMMON)


def main() -> None:
    th.set_num_threads(1)
    # "auto" compiles as in a learn() call of 20k+ gradient steps, although the timed calls are short
    distill_dqn.AUTO_COMPILE_MIN_GRADIENT_STEPS = 0
    names = sys.argv[1].split(",")
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    models = {name: build(name) for name in names}
    for model in models.values():
        model.learn(700)  # warm-up: random actions, the first updates, any compilation
    train_us: dict[str, list[float]] = {name: [] for name in names}
    step_us: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(repeats):
        for name, model in models.items():
            start = time.process_time()
            for _ in range(100):
                model.train(1, 64)
            train_us[name].append((time.process_time() - start) / 100 * 1e6)
            start = time.process_time()
            model.learn(200, reset_num_timesteps=False)
            step_us[name].append((time.process_time() - start) / 200 * 1e6)
    base = np.array(step_us[names[0]])
    for name in names:
        ratio = np.median(np.array(step_us[name]) / base)
        print(
            f"{name:8s} train {np.median(train_us[name]):7.0f} us  step {np.median(step_us[name]):7.0f} us  "
            f"step ratio {ratio:.2f}"
        )


if __name__ == "__main__":
    main()
