"""A NaN or infinite loss stops training with an error naming the member, the loss and the update number."""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3 import SAC

from sb3_distill import PIEKDSAC, DistillPPO, MultiTaskPolicyDistillation, PolicyDistillation
from sb3_distill.common.validation import NonFiniteLossError, check_finite_losses, checked_loss_means
from sb3_distill.distill_ppo.distill_ppo import _check_finite_step_losses
from tests.models import MODEL_LIST, ON_POLICY, default_env_id, make_model

# The member names each algorithm's error can give
MEMBERS = {
    "EnsembleDistillDQN": r"(teacher_\d|student)",
    "RealTimeDistillDQN": r"(teacher|student_\d)",
    "PIEKDSAC": r"member_\d",
    "PolicyDistillation": r"student",
    "DistillPPO": r"student \(minibatch \d+\)",
    # Its losses are named by task: the env given to make_model is its one task, "task"
    "MultiTaskPolicyDistillation": r"task",
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
    if model_class in (PolicyDistillation, MultiTaskPolicyDistillation) and what == "reward":
        pytest.skip(f"{model_class.__name__} does not use rewards")
    if model_class in ON_POLICY and what != "reward":
        pytest.skip("on-policy: a non-finite observation stops the rollout before any loss (see test_distill_ppo_nonfinite)")
    if model_class in ON_POLICY:
        # The bad step is in the second rollout (steps 31 to 60), trained right after it
        model = make_model(model_class, env=nonfinite_env(model_class, what))
    else:
        # Batches larger than the buffer's content: the bad transition is in the first batch after it
        model = make_model(model_class, env=nonfinite_env(model_class, what), learning_starts=50, batch_size=256, train_freq=1)
    if model_class is PolicyDistillation and what != "reward":
        # Its softmax student acts on the bad observation before any batch holds it
        error, match = ValueError, r"The student's Q-values are not finite at step 5\d: a NaN or infinite observation"
    else:
        error, match = NonFiniteLossError, rf"Training stopped at update \d+: `\w+` of {MEMBERS[model_class.__name__]} = "
    with pytest.raises(error, match=match):
        model.learn(300)
    # Stopped within a few steps of the bad transition (on-policy: at the end of its rollout), a ValueError as SB3's
    assert model.num_timesteps <= (60 if model_class in ON_POLICY else 59)
    assert issubclass(NonFiniteLossError, ValueError)


def test_distill_ppo_nonfinite():
    # A NaN reward: the first update (epoch) of the rollout that holds it, and its first minibatch, are named
    model = make_model(DistillPPO, env=nonfinite_env(DistillPPO, "reward"))
    first = r"student \(minibatch 0\) = nan"
    with pytest.raises(NonFiniteLossError, match=rf"update 3: `policy_gradient_loss` of {first}, `value_loss` of {first}\."):
        model.learn(300)
    # A non-finite observation: the student's own action distribution refuses it during the rollout, as SB3's PPO
    # does (torch's ValueError), before a loss is computed
    model = make_model(DistillPPO, env=nonfinite_env(DistillPPO, "obs"))
    with pytest.raises(ValueError, match="invalid values"):
        model.learn(300)
    assert model.num_timesteps < 60


def test_distill_ppo_names_epoch_and_minibatch():
    # Epochs of 3, 3 and (early stop) 1 minibatches: the table is padded with finite values, the update is the epoch
    epochs = [0, 0, 0, 1, 1, 1, 2]
    finite = [th.tensor(1.0)] * 7
    _check_finite_step_losses({"value_loss": finite, "distill_loss": []}, epochs, n_updates=10)
    bad = [*finite[:4], th.tensor(float("inf")), *finite[5:]]
    with pytest.raises(NonFiniteLossError, match=r"update 12: `value_loss` of student \(minibatch 1\) = inf\."):
        _check_finite_step_losses({"value_loss": bad}, epochs, n_updates=10)
    last = [*finite[:6], th.tensor(float("nan"))]
    with pytest.raises(NonFiniteLossError, match=r"update 13: `value_loss` of student \(minibatch 0\) = nan\."):
        _check_finite_step_losses({"value_loss": last}, epochs, n_updates=10)
    _check_finite_step_losses({"value_loss": []}, [], n_updates=10)


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


def test_checked_loss_means_per_member_and_the_same_error():
    members = ["member_0", "member_1"]
    critic = th.tensor([[1.0, 2.0], [3.0, 6.0], [5.0, 1.0]])
    means = checked_loss_means({"critic_loss": (members, critic), "actor_loss": (["student"], th.arange(3.0))}, 10)
    assert means == {"critic_loss": [3.0, 3.0], "actor_loss": [1.0]}
    # A NaN or infinite loss anywhere (its mean is then not finite): check_finite_losses's error
    critic[1, 1] = float("-inf")
    with pytest.raises(NonFiniteLossError, match=r"update 12: `critic_loss` of member_1 = -inf"):
        checked_loss_means({"critic_loss": (members, critic), "actor_loss": (["student"], th.arange(3.0))}, 10)


@pytest.mark.parametrize("model_class", MODEL_LIST)
def test_finite_training_unaffected(model_class):
    model = make_model(model_class)
    model.learn(120)
    assert model._n_updates > 0
