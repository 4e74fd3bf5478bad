"""
Real-time distillation (RealTimeDistillDQN: teacher and student learn at the same time) against the
sequential recipe (train a DQN teacher, then distil it offline into the same student), on the time and
environment steps needed for the student to reach a target return.

Sequential: a plain SB3 DQN trains until its greedy return reaches the target; then the student is
trained by supervised distillation (same loss and temperature) on states sampled from the teacher's
replay buffer, labelled by the teacher, until its return reaches the target. Real-time: RealTimeDistillDQN
trains until its student's greedy return reaches the target. Both are evaluated every `--eval-freq`
environment steps (distillation: every `--eval-freq` gradient steps) on 5 episodes; evaluation time is
not counted. Runs that do not reach the target within the budget are reported as such.

    python benchmarks/realtime_vs_sequential.py --env CartPole-v1 --seeds 0 1 2 3 4
    python benchmarks/realtime_vs_sequential.py --env Acrobot-v1 --seeds 0 1 2
"""

import argparse
import json
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3 import DQN
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.utils import LinearSchedule

from sb3_distill import RealTimeDistillDQN
from sb3_distill.common.losses import distillation_loss
from sb3_distill.common.torch_layers import make_q_network, resolve_student_kwargs
from sb3_distill.common.utils import QValuePredictor

# Per env: DQN settings shared by both recipes, the student, the target return and the step budget
SETTINGS: dict[str, dict[str, Any]] = {
    "CartPole-v1": dict(
        dqn=dict(
            learning_rate=LinearSchedule(2.3e-3, 0.0, 1.0),
            batch_size=64,
            buffer_size=100_000,
            learning_starts=1000,
            target_update_interval=10,
            train_freq=256,
            gradient_steps=128,
            exploration_fraction=0.16,
            exploration_final_eps=0.04,
            policy_kwargs=dict(net_arch=[64, 64]),
        ),
        student=dict(net_arch=[32]),
        target=450.0,
        budget=60_000,
    ),
    "Acrobot-v1": dict(
        dqn=dict(
            learning_rate=6.3e-4,
            batch_size=128,
            buffer_size=50_000,
            learning_starts=1000,
            target_update_interval=250,
            train_freq=4,
            gradient_steps=2,
            exploration_fraction=0.12,
            exploration_final_eps=0.1,
            policy_kwargs=dict(net_arch=[64, 64]),
        ),
        student=dict(net_arch=[16]),
        target=-100.0,
        budget=100_000,
    ),
}
DISTILL = dict(distill_loss="reverse_kl", temperature=0.1)


class StopAtTarget(BaseCallback):
    """Every `eval_freq` steps, evaluate `q_function` greedily; stop training once it reaches `target`."""

    def __init__(self, env_id: str, q_function: Any, target: float, eval_freq: int, seed: int) -> None:
        super().__init__()
        self.env = Monitor(gym.make(env_id))
        self.env.reset(seed=seed + 1000)
        self.q_function, self.target, self.eval_freq = q_function, target, eval_freq
        self.eval_time, self.reached_at = 0.0, None

    def _on_step(self) -> bool:
        if self.num_timesteps % self.eval_freq != 0:
            return True
        start = time.perf_counter()
        mean, _ = evaluate_policy(QValuePredictor(self.model.policy, self.q_function(self.model)), self.env, 5, warn=False)
        self.eval_time += time.perf_counter() - start
        if mean >= self.target:
            self.reached_at = self.num_timesteps
            return False
        return True


def realtime(env_id: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    settings = SETTINGS[env_id]
    model = RealTimeDistillDQN("MlpPolicy", env_id, students=[settings["student"]], seed=seed, **settings["dqn"], **DISTILL)
    callback = StopAtTarget(
        env_id, lambda m: (lambda obs: m.policy.member_q_values(obs, "student_0")), settings["target"], args.eval_freq, seed
    )
    start = time.perf_counter()
    model.learn(settings["budget"], callback=callback)
    seconds = time.perf_counter() - start - callback.eval_time
    return dict(reached=callback.reached_at is not None, env_steps=model.num_timesteps, seconds=seconds)


def sequential(env_id: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    settings = SETTINGS[env_id]
    teacher = DQN("MlpPolicy", env_id, seed=seed, **settings["dqn"])
    callback = StopAtTarget(env_id, lambda m: m.q_net, settings["target"], args.eval_freq, seed)
    start = time.perf_counter()
    teacher.learn(settings["budget"], callback=callback)
    teacher_seconds = time.perf_counter() - start - callback.eval_time
    result: dict[str, Any] = dict(reached=False, env_steps=teacher.num_timesteps, teacher_seconds=teacher_seconds)
    if callback.reached_at is None:
        return result | dict(seconds=teacher_seconds)
    # Offline distillation of the trained teacher into the student, on teacher-labelled buffer states
    kwargs = resolve_student_kwargs(settings["student"], type(teacher.q_net.features_extractor), True, th.optim.Adam, None)
    student = make_q_network(teacher.observation_space, teacher.action_space, kwargs)  # type: ignore[arg-type]
    optimizer = th.optim.Adam(student.parameters(), lr=args.distill_learning_rate)
    eval_env = Monitor(gym.make(env_id))
    eval_env.reset(seed=seed + 1000)
    distill_seconds, eval_seconds = 0.0, 0.0
    for step in range(1, args.max_distill_steps + 1):
        start = time.perf_counter()
        data = teacher.replay_buffer.sample(settings["dqn"]["batch_size"])  # type: ignore[union-attr]
        with th.no_grad():
            teacher_q = teacher.q_net(data.observations)
        loss = distillation_loss(
            student(data.observations), teacher_q, loss=DISTILL["distill_loss"], temperature=DISTILL["temperature"]
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        distill_seconds += time.perf_counter() - start
        if step % args.eval_freq == 0:
            start = time.perf_counter()
            mean, _ = evaluate_policy(QValuePredictor(teacher.policy, student), eval_env, 5, warn=False)
            eval_seconds += time.perf_counter() - start
            if mean >= settings["target"]:
                result.update(reached=True, distill_steps=step)
                break
    return result | dict(distill_seconds=distill_seconds, seconds=teacher_seconds + distill_seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="CartPole-v1", choices=list(SETTINGS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--eval-freq", type=int, default=2000)
    parser.add_argument("--max-distill-steps", type=int, default=20_000)
    parser.add_argument("--distill-learning-rate", type=float, default=1e-3)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    th.set_num_threads(1)

    runs: dict[str, list[dict[str, Any]]] = {"real-time": [], "sequential": []}
    for seed in args.seeds:
        runs["real-time"].append(realtime(args.env, seed, args))
        runs["sequential"].append(sequential(args.env, seed, args))
        print(f"seed {seed}: real-time {runs['real-time'][-1]}, sequential {runs['sequential'][-1]}", flush=True)

    settings = SETTINGS[args.env]
    lines = [
        f"{args.env}: student {settings['student']} to a greedy return of {settings['target']} (5 episodes), "
        f"budget {settings['budget']} env steps, seeds {args.seeds}, CPU, torch {th.__version__}",
        "",
        "| recipe | reached | median env steps | median seconds (training only) |",
        "|---|---|---|---|",
    ]
    for recipe, results in runs.items():
        done = [r for r in results if r["reached"]]
        steps = f"{np.median([r['env_steps'] for r in done]):.0f}" if done else "-"
        seconds = f"{np.median([r['seconds'] for r in done]):.1f}" if done else "-"
        lines.append(f"| {recipe} | {len(done)}/{len(results)} | {steps} | {seconds} |")
    report = "\n".join(lines)
    print("\n" + report)
    args.output.mkdir(parents=True, exist_ok=True)
    stem = f"realtime_vs_sequential_{args.env}"
    (args.output / f"{stem}.md").write_text(report + "\n")
    (args.output / f"{stem}.json").write_text(json.dumps({"seeds": args.seeds, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
