"""
sb3_distill demo: train EnsembleDistillDQN on CartPole-v1 (M=3 teachers and a compact student distilled
in real time), then evaluate every member and print their sizes and scores; finally export the student to
ONNX and time it against a teacher (one decision per call, one thread).

    make demo                      # or: python examples/demo.py [--timesteps N] [--seed S]
"""

import argparse
import pathlib
import tempfile
import time

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.utils import LinearSchedule

from sb3_distill import EnsembleDistillDQN, export_onnx
from sb3_distill.common.torch_layers import count_parameters
from sb3_distill.common.utils import dqn_for_export

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


def median_call_time(function, n_calls: int, repeats: int = 5) -> float:
    """Median over ``repeats`` of the mean time of ``n_calls // repeats`` calls, in seconds (after 10 warm-up calls)."""
    for _ in range(10):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n_calls // repeats):
            function()
        times.append((time.perf_counter() - start) / (n_calls // repeats))
    return float(np.median(times))


def deployment_report(model: EnsembleDistillDQN, path: pathlib.Path, n_calls: int = 500) -> list[str]:
    """
    Export the student to ONNX, check its actions against ``model.predict``, and time one decision of a teacher
    and of the student, each with SB3's ``predict`` (PyTorch) and exported to ONNX (onnxruntime, one thread).
    """
    import onnxruntime as ort

    # Teacher 0 as the plain SB3 DQN it would be deployed as
    teacher = dqn_for_export(model, dict(net_arch=model.policy.net_arch), model.learning_rate)
    model.q_net.copy_member_to(0, teacher.q_net)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    teacher_path = export_onnx(teacher, path.with_name(f"{path.stem}_teacher.onnx"))
    teacher_session = ort.InferenceSession(str(teacher_path), options, providers=["CPUExecutionProvider"])
    session = ort.InferenceSession(str(export_onnx(model, path)), options, providers=["CPUExecutionProvider"])
    observations = np.stack([model.observation_space.sample() for _ in range(100)]).astype(np.float32)
    agree = np.array_equal(
        session.run(["action"], {"obs": observations})[0], model.predict(observations, deterministic=True)[0]
    )
    obs = observations[:1]
    timings = {
        "teacher, SB3 predict (PyTorch)": median_call_time(lambda: teacher.predict(obs, deterministic=True), n_calls),
        "student, SB3 predict (PyTorch)": median_call_time(lambda: model.predict(obs, deterministic=True), n_calls),
        "teacher, ONNX (onnxruntime)": median_call_time(lambda: teacher_session.run(["action"], {"obs": obs}), n_calls),
        "student, ONNX (onnxruntime)": median_call_time(lambda: session.run(["action"], {"obs": obs}), n_calls),
    }
    teacher_time = timings["teacher, SB3 predict (PyTorch)"]
    lines = [
        f"\nStudent exported to ONNX ({path.name}, {path.stat().st_size:,} bytes); its actions equal model.predict's: {agree}"
    ]
    lines += [f"  {name:<31} {1e6 * seconds:8.1f} us per decision" for name, seconds in timings.items()]
    student_time = timings["student, ONNX (onnxruntime)"]
    lines.append(
        f"Deployed student (ONNX) vs a teacher (SB3 predict): {teacher_time / student_time:.1f}x faster; "
        f"vs the teacher in ONNX too: {timings['teacher, ONNX (onnxruntime)'] / student_time:.1f}x"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=CARTPOLE_TIMESTEPS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument(
        "--onnx", type=pathlib.Path, default=None, help="where to keep the exported student (default: a temporary file)"
    )
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

    with tempfile.TemporaryDirectory() as folder:
        print("\n".join(deployment_report(model, args.onnx or pathlib.Path(folder) / "cartpole_student.onnx")))


if __name__ == "__main__":
    main()
