"""
sb3_distill demo: train EnsembleDistillDQN on CartPole-v1 (M=3 teachers and a compact student distilled
in real time), then evaluate every member and print their sizes and scores.

    make demo                      # or: python examples/demo.py [--timesteps N] [--seed S]
"""

import argparse
import time

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.utils import LinearSchedule

from sb3_distill import EnsembleDistillDQN
from sb3_distill.common.torch_layers import count_parameters

# The CartPole-v1 settings shared with the learning test (tests/test_learning.py) and
# zoo_configs/ensemble_distill_dqn.yml: rl-zoo3's DQN settings for CartPole-v1 with linearly decaying
# learning rates and 64-64 teachers; the student (one hidden layer of 32 units) is 4.9 % of a teacher.
CARTPOLE_TIMESTEPS = 40_000
CARTPOLE_HYPERPARAMS = dict(
    learning_rate=LinearSchedule(2.3e-3, 0.0, 1.0),
    batch_size=64,
    buffer_size=100_000,
    learning_starts=1000,
    gamma=0.99,
    target_update_interval=10,
    train_freq=256,
    gradient_steps=128,
    exploration_fraction=0.16,
    exploration_final_eps=0.04,
    n_teachers=3,
    temperature=0.1,
    distill_loss="reverse_kl",
    ensemble_reduction="mean_loss",
    policy_kwargs=dict(net_arch=[64, 64]),
    student_policy_kwargs=dict(net_arch=[32]),
    student_learning_rate=LinearSchedule(5e-3, 0.0, 1.0),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=CARTPOLE_TIMESTEPS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-episodes", type=int, default=20)
    args = parser.parse_args()
    th.set_num_threads(1)

    model = EnsembleDistillDQN("MlpPolicy", "CartPole-v1", seed=args.seed, **CARTPOLE_HYPERPARAMS)
    print(f"Training EnsembleDistillDQN (M={model.n_teachers}) on CartPole-v1 for {args.timesteps} steps...", flush=True)
    start = time.perf_counter()
    model.learn(args.timesteps)
    elapsed = time.perf_counter() - start

    eval_env = Monitor(gym.make("CartPole-v1"))
    eval_env.reset(seed=args.seed + 1000)
    results = model.evaluate_members(eval_env, n_eval_episodes=args.eval_episodes)
    teacher_params = count_parameters(model.q_net) // model.n_teachers
    student_params = count_parameters(model.student)
    teachers_mean = float(np.mean([mean for name, (mean, _) in results.items() if name != "student"]))

    print(f"\nTrained in {elapsed:.0f} s; greedy evaluation over {args.eval_episodes} episodes per member\n")
    header = ("member", "parameters", "size vs teacher", "return (mean ± std)", "% of teachers")
    print(f"| {header[0]:<10} | {header[1]:>10} | {header[2]:>15} | {header[3]:>20} | {header[4]:>13} |")
    print(f"|{'-' * 12}|{'-' * 12}|{'-' * 17}|{'-' * 22}|{'-' * 15}|")
    for name, (mean, std) in results.items():
        params = student_params if name == "student" else teacher_params
        print(
            f"| {name:<10} | {params:>10,} | {params / teacher_params:>15.1%} | {f'{mean:.1f} ± {std:.1f}':>20} "
            f"| {mean / teachers_mean:>13.1%} |"
        )
    print(f"\nCompression ratio (student / one teacher): {model.compression_ratio:.2%}")
    print(f"Student return: {results['student'][0] / teachers_mean:.1%} of the teachers' mean ({teachers_mean:.1f})")


if __name__ == "__main__":
    main()
