"""A NaN or infinite loss stops training with an error naming the member, the loss and the update number."""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3 import SAC

from sb3_distill import PIEKDSAC, PolicyDistillation
from sb3_distill.common.validation import NonFiniteLossError, check_finite_losses
from tests.models import MODEL_LIST, default_env_id, make_model

# The member names each algorithm's error can give
MEMBERS = {
    "EnsembleDistillDQN": r"(teacher_\d|student)",
    "RealTimeDistillDQN": r"(teacher|student_\d)",
    "PIEKDSAC": r"member_\d",
    "PolicyDistillation": r"student",
}


class NonFiniteAt(gym.Wrapper):
    """
    Gives a NaN reward or a non-finite observation at one step (counted over the wrapper's life), and the
    observation also at the next step (if the first is an episode's last, only the buffer's next observations hold it).
    """

    def __init__(self, env: gym.Env, step: int, what: str) -> None:
        super().__init__(env)
        self.step_count, self.bad_step, self.what = 0, step, what

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.step_count += 1
        if self.step_count == self.bad_step and self.what == "reward":
            reward = float("nan")
        elif self.step_count in (self.bad_step, self.bad_step + 1) and self.what != "reward":
            obs = np.full_like(obs, np.inf if self.what == "inf_obs" else np.nan)
        return obs, reward, terminated, truncated, info


def nonfinite_env(model_class, what: str, step: int = 55) -> gym.Env:
    return NonFiniteAt(gym.make(default_env_id(model_class)), step, what)


@pytest.mark.parametrize("model_class", MODEL_LIST)
@pytest.mark.parametrize("what", ["reward", "obs", "inf_obs"])
def test_nonfinite_data_stops_training(model_class, what):
    if model_class is PolicyDistillation and what == "reward":
        pytest.skip("PolicyDistillation does not use rewards")
    # Batches larger than the buffer's content: the bad transition is in the first batch after it
    model = make_model(model_class, env=nonfinite_env(model_class, what), learning_starts=50, batch_size=256, train_freq=1)
    if model_class is PolicyDistillation and what != "reward":
        # Its softmax student acts on the bad observation before any batch holds it
        error, match = ValueError, r"The student's Q-values are not finite at step 5\d: a NaN or infinite observation"
    else:
        error, match = NonFiniteLossError, rf"Training stopped at update \d+: `\w+` of {MEMBERS[model_class.__name__]} = "
    with pytest.raises(error, match=match):
        model.learn(300)
    # Stopped within a few steps of the bad transition, and the error is a ValueError as SB3's
    assert model.num_timesteps <= 59
    assert issubclass(NonFiniteLossError, ValueError)


@pytest.mark.parametrize("what", ["reward", "obs"])
def test_piekd_sac_stops_no_later_than_sac(what):
    stopped = {}
    for model_class in (SAC, PIEKDSAC):
        kwargs = dict(ensemble_size=2) if model_class is PIEKDSAC else {}
        model = model_class(
            "MlpPolicy",
            nonfinite_env(PIEKDSAC, what),
            learning_starts=50,
            batch_size=512,
            buffer_size=500,
            policy_kwargs=dict(net_arch=[16]),
            seed=0,
            **kwargs,
        )
        # SB3's SAC: torch's Normal rejects the NaN mean at the next action (a ValueError)
        with pytest.raises(ValueError):
            model.learn(300)
        stopped[model_class] = model.num_timesteps
    assert stopped[PIEKDSAC] <= stopped[SAC]


def test_check_finite_losses_names_the_first_bad_update():
    members = ["member_0", "member_1"]
    finite = th.ones(3, 2)
    check_finite_losses({"critic_loss": (members, finite), "actor_loss": (["student"], th.ones(3))}, n_updates=10)
    bad = finite.clone()
    bad[2, 0] = float("nan")
    bad[1, 1] = float("inf")
    with pytest.raises(NonFiniteLossError, match=r"update 12: `critic_loss` of member_1 = inf\. .*VecCheckNan"):
        check_finite_losses({"critic_loss": (members, bad), "actor_loss": (["student"], th.ones(3))}, n_updates=10)
    with pytest.raises(NonFiniteLossError, match=r"update 11: `actor_loss` of student = nan, `critic_loss` of member_0"):
        bad[0, 0] = float("nan")
        check_finite_losses(
            {"actor_loss": (["student"], th.tensor([float("nan"), 1.0, 1.0])), "critic_loss": (members, bad)}, n_updates=10
        )


@pytest.mark.parametrize("model_class", MODEL_LIST)
def test_finite_training_unaffected(model_class):
    model = make_model(model_class)
    model.learn(120)
    assert model._n_updates > 0
