"""
Learning tests: the method works, with real thresholds, within CI time.

The CartPole-v1 run uses the settings of examples/demo.py (and zoo_configs/). On seeds 0-5 of those
settings the student reached 1.33, 1.04, 1.57, 2.37, 1.00 and 0.73 times the teachers' mean return
(10 evaluation episodes each; about 40 s a run on 2 CPU cores): 5 seeds out of 6 pass the 0.9 threshold.
The CI test runs seed 0, which is deterministic on a given platform; `make test-slow` runs seeds 1-3.
"""

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.monitor import Monitor

from examples.demo import CARTPOLE_HYPERPARAMS, CARTPOLE_TIMESTEPS
from sb3_distill import EnsembleDistillDQN


def test_student_reaches_teachers_on_cartpole():
    model = EnsembleDistillDQN("MlpPolicy", "CartPole-v1", seed=0, **CARTPOLE_HYPERPARAMS)
    assert model.compression_ratio <= 0.05
    model.learn(CARTPOLE_TIMESTEPS)
    eval_env = Monitor(gym.make("CartPole-v1"))
    eval_env.reset(seed=1000)
    results = model.evaluate_members(eval_env, n_eval_episodes=10)
    teachers_mean = np.mean([mean for name, (mean, _) in results.items() if name != "student"])
    print(results)
    # The teachers learned (random play scores about 20)...
    assert teachers_mean >= 100
    # ...and the student, at most 5 % of a teacher's size, reaches 90 % of their mean return
    assert results["student"][0] >= 0.9 * teachers_mean


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_student_reaches_teachers_on_cartpole_more_seeds(seed):
    model = EnsembleDistillDQN("MlpPolicy", "CartPole-v1", seed=seed, **CARTPOLE_HYPERPARAMS)
    model.learn(CARTPOLE_TIMESTEPS)
    results = model.evaluate_members(Monitor(gym.make("CartPole-v1")), n_eval_episodes=10)
    teachers_mean = np.mean([mean for name, (mean, _) in results.items() if name != "student"])
    assert teachers_mean >= 100
    assert results["student"][0] >= 0.9 * teachers_mean
