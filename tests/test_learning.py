"""
Learning tests: the method works, with real thresholds, within CI time.

The CartPole-v1 runs use the settings of examples/demo.py (and zoo_configs/). Measured on 2 CPU cores
(about 40 s a run), the student's mean return over the teachers' mean return (10 evaluation episodes
each) was, for seeds 0-7: 1.40, 1.22, 0.898, 0.79, 1.27, 0.31, 2.15, 1.84 (median 1.25). When the
teachers disagree the student follows their majority, which can be below their mean (seed 5: teachers
290, 14 and 500, student 84). So the CI test runs seed 0 (deterministic on a given platform) and the
slow test checks the median over the 8 seeds.
"""

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3 import DQN
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.utils import LinearSchedule

from examples.demo import CARTPOLE_HYPERPARAMS, CARTPOLE_TIMESTEPS
from sb3_distill import EnsembleDistillDQN, PolicyDistillation, RealTimeDistillDQN


def run_cartpole(seed: int) -> tuple[float, float]:
    """Train on CartPole-v1 with the demo's settings; return the student's and the teachers' mean returns."""
    model = EnsembleDistillDQN("MlpPolicy", "CartPole-v1", seed=seed, **CARTPOLE_HYPERPARAMS)
    model.learn(CARTPOLE_TIMESTEPS)
    eval_env = Monitor(gym.make("CartPole-v1"))
    eval_env.reset(seed=1000)
    results = model.evaluate_members(eval_env, n_eval_episodes=10)
    teachers_mean = float(np.mean([mean for name, (mean, _) in results.items() if name != "student"]))
    return results["student"][0], teachers_mean


def test_student_reaches_teachers_on_cartpole():
    assert EnsembleDistillDQN("MlpPolicy", "CartPole-v1", **CARTPOLE_HYPERPARAMS).compression_ratio <= 0.05
    student, teachers_mean = run_cartpole(seed=0)
    # The teachers learned (random play scores about 20)...
    assert teachers_mean >= 100
    # ...and the student, at most 5 % of a teacher's size, reaches 90 % of their mean return
    assert student >= 0.9 * teachers_mean


@pytest.mark.slow
def test_student_reaches_teachers_on_cartpole_median_over_seeds():
    returns = [run_cartpole(seed) for seed in range(8)]
    print(returns)
    assert all(teachers_mean >= 100 for _, teachers_mean in returns)
    assert np.median([student / teachers_mean for student, teachers_mean in returns]) >= 0.9


# RealTimeDistillDQN: the demo's teacher settings, two students of 4.9 % and 2.5 % of the teacher
ENSEMBLE_ONLY = ("n_teachers", "ensemble_reduction", "student_policy_kwargs")
REALTIME_CARTPOLE_HYPERPARAMS = {
    **{key: value for key, value in CARTPOLE_HYPERPARAMS.items() if key not in ENSEMBLE_ONLY},
    "students": [dict(net_arch=[32]), dict(net_arch=[16])],
}


def test_realtime_student_reaches_teacher_on_cartpole():
    """
    Measured with these settings on seeds 0-7 (10 evaluation episodes, about 40 s a run): the 4.9 %
    student reached 0.98, 0.90, 0.96, 1.00, 1.05, 1.00, 1.00 and 1.23 times the teacher's return; the
    2.5 % student 1.00, 0.30, 1.01, 0.95, 1.06, 1.00, 1.00 and 1.19 (medians 1.00 and 1.00). The teacher
    itself scored under 100 on seeds 2 and 7. The CI test runs seed 0; `make test-slow` the median of the
    4.9 % student over the 8 seeds (re-measured with the students in one zero-padded stack: the same ratios).
    """
    model = RealTimeDistillDQN("MlpPolicy", "CartPole-v1", seed=0, **REALTIME_CARTPOLE_HYPERPARAMS)
    assert model.compression_ratios["student_0"] <= 0.05
    model.learn(CARTPOLE_TIMESTEPS)
    eval_env = Monitor(gym.make("CartPole-v1"))
    eval_env.reset(seed=1000)
    results = model.evaluate_members(eval_env, n_eval_episodes=10)
    print(results)
    assert results["teacher"][0] >= 100
    assert results["student_0"][0] >= 0.9 * results["teacher"][0]


@pytest.mark.slow
def test_realtime_student_reaches_teacher_on_cartpole_median_over_seeds():
    ratios = []
    for seed in range(8):
        model = RealTimeDistillDQN("MlpPolicy", "CartPole-v1", seed=seed, **REALTIME_CARTPOLE_HYPERPARAMS)
        model.learn(CARTPOLE_TIMESTEPS)
        eval_env = Monitor(gym.make("CartPole-v1"))
        eval_env.reset(seed=1000)
        results = model.evaluate_members(eval_env, n_eval_episodes=10)
        ratios.append(results["student_0"][0] / results["teacher"][0])
    print(ratios)
    assert np.median(ratios) >= 0.9


# PolicyDistillation: a plain DQN teacher with the demo's settings, distilled student-driven into a
# student of 4.9 % of its parameters (the settings of benchmarks/control_policy.py)
DQN_CARTPOLE_HYPERPARAMS = {
    key: value
    for key, value in REALTIME_CARTPOLE_HYPERPARAMS.items()
    if key not in ("students", "temperature", "distill_loss", "student_learning_rate")
}
POLICY_DISTILLATION_HYPERPARAMS = dict(
    control="student",
    student_policy_kwargs=dict(net_arch=[32]),
    learning_rate=LinearSchedule(1e-3, 0.0, 1.0),
    learning_starts=500,
    batch_size=64,
)


def test_policy_distillation_student_recovers_dqn_teacher_on_cartpole():
    """
    Measured (seed 0, 2 CPU cores): the teacher trains in about 22 s and scores 447.75 over 20 episodes; the
    student-driven student, after 10k distillation steps (about 15 s), 500.0. Teacher-driven distillation
    of the same teacher stays near 280-330 at this budget (see benchmarks/README.md).
    """
    teacher = DQN("MlpPolicy", "CartPole-v1", seed=0, **DQN_CARTPOLE_HYPERPARAMS).learn(CARTPOLE_TIMESTEPS)
    model = PolicyDistillation("MlpPolicy", "CartPole-v1", teacher=teacher, seed=0, **POLICY_DISTILLATION_HYPERPARAMS)
    assert model.compression_ratio <= 0.05
    model.learn(10_000)
    eval_env = Monitor(gym.make("CartPole-v1"))
    eval_env.reset(seed=1000)
    results = model.evaluate_members(eval_env, n_eval_episodes=20)
    print(results)
    assert results["teacher"][0] >= 100
    assert results["student"][0] >= 0.95 * results["teacher"][0]
    # The exported plain DQN plays as the student does
    eval_env.reset(seed=2000)
    exported_return, _ = evaluate_policy(model.export_student(), eval_env, n_eval_episodes=5)
    eval_env.reset(seed=2000)
    student_return, _ = evaluate_policy(model.policy.student, eval_env, n_eval_episodes=5)
    assert exported_return == student_return


def linear_cartpole_teacher():
    """A PPO policy without hidden layers whose weights are a known linear controller that scores 500 on CartPole-v1."""
    import torch as th
    from stable_baselines3 import PPO

    teacher = PPO("MlpPolicy", "CartPole-v1", policy_kwargs=dict(net_arch=[]), seed=0)
    with th.no_grad():
        # push right when 0.5 x_dot + theta + theta_dot > 0, sharply
        teacher.policy.action_net.weight.copy_(th.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 50.0, 100.0, 100.0]]))
        teacher.policy.action_net.bias.zero_()
    return teacher


def test_distill_ppo_student_reaches_teacher_on_cartpole():
    """
    DistillPPO with the paper's recommended rule (expected entropy regularised, no environment reward) copies
    the teacher: 95 % of its return after 6144 steps (measured on seed 0: 500 after 4096 steps, for N-distill too).
    """
    from sb3_distill import DistillPPO

    teacher = linear_cartpole_teacher()
    eval_env = Monitor(gym.make("CartPole-v1"))
    eval_env.reset(seed=1000)
    teacher_return = evaluate_policy(teacher.policy, eval_env, n_eval_episodes=10, deterministic=False)[0]
    assert teacher_return == 500.0
    model = DistillPPO(
        "MlpPolicy", "CartPole-v1", teacher=teacher, update_rule="expected_entropy_regularised", n_steps=256,
        batch_size=64, n_epochs=4, learning_rate=3e-3, policy_kwargs=dict(net_arch=[16]), seed=0,
    )  # fmt: skip
    model.learn(6144)
    student_return = evaluate_policy(model.policy, eval_env, n_eval_episodes=10)[0]
    assert student_return >= 0.95 * teacher_return
