"""Tests of PIEKDSAC: SB3-style run / save-load / errors, the stacked members against SB3's SAC, distillation."""

import argparse
import inspect
import re
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3 import SAC
from stable_baselines3.common.distributions import SquashedDiagGaussianDistribution
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import configure
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.torch_layers import NatureCNN
from stable_baselines3.common.utils import get_parameters_by_name
from stable_baselines3.common.vec_env import DummyVecEnv

from benchmarks import piekd_sample_efficiency, throughput
from sb3_distill import PIEKDSAC
from sb3_distill.common.callbacks import EvalEnsembleCallback
from sb3_distill.piekd_sac import PIEKDSACPolicy

TINY = dict(policy_kwargs=dict(net_arch=[32, 32]))


def tiny_model(env="Pendulum-v1", **kwargs):
    config = dict(
        learning_starts=100,
        batch_size=32,
        buffer_size=2_000,
        distill_interval=250,
        distill_epochs=2,
        distill_batch_size=32,
        distill_gradient_steps=5,
        n_recent_episodes=2,
        seed=0,
        **TINY,
    )
    config.update(kwargs)
    return PIEKDSAC("MlpPolicy", env, **config)


def short_episodes_env(max_episode_steps=50):
    """Pendulum with 50-step episodes, so that a few hundred steps give every member a statistic."""
    return gym.make("Pendulum-v1", max_episode_steps=max_episode_steps)


def snapshot(module: th.nn.Module) -> list[th.Tensor]:
    return [param.detach().clone() for param in module.parameters()]


def optimizer_snapshot(optimizer: th.optim.Optimizer) -> dict:
    return {
        index: {name: value.clone() if isinstance(value, th.Tensor) else value for name, value in state.items()}
        for index, state in optimizer.state_dict()["state"].items()
    }


def assert_optimizer_states_equal(first: dict, second: dict) -> None:
    assert first.keys() == second.keys() and len(first) > 0
    for index, state in first.items():
        for name, value in state.items():
            assert th.equal(th.as_tensor(value), th.as_tensor(second[index][name])), (index, name)


@pytest.mark.parametrize("knowledge_sharing", ["distill", "hardcopy", "none", "extra_updates"])
@pytest.mark.parametrize("teacher_selection", ["best", "random"])
def test_run(knowledge_sharing, teacher_selection):
    model = tiny_model(short_episodes_env(), knowledge_sharing=knowledge_sharing, teacher_selection=teacher_selection)
    model.learn(400)
    assert model._n_updates > 0
    assert model.actor.n_members == 3 and model.critic.n_members == 3 and model.critic.q_net[0].n_members == 6
    # A phase at step 250 (and none for the Ensemble-SAC baseline)
    assert model.n_sharing_phases == (0 if knowledge_sharing == "none" else 1)


@pytest.mark.parametrize("ensemble_size", [1, 2])
def test_run_ensemble_sizes(ensemble_size):
    model = tiny_model(short_episodes_env(), ensemble_size=ensemble_size, ent_coef=0.1)
    model.learn(300)
    assert model.log_ent_coef is None and model.actor.n_members == ensemble_size


def test_training_changes_every_member():
    model = tiny_model(knowledge_sharing="none")
    actor, critic, target = snapshot(model.actor), snapshot(model.critic), snapshot(model.critic_target)
    log_ent_coef = model.log_ent_coef.detach().clone()
    model.learn(150)
    after_learning = snapshot(model.actor) + snapshot(model.critic) + snapshot(model.critic_target)
    for before, after in zip(actor + critic + target, after_learning, strict=True):
        # Every member (every stacked slice) moved
        assert (before - after).flatten(1).abs().sum(dim=1).min() > 0
    assert th.all(log_ent_coef != model.log_ent_coef.detach())


def test_multi_env_selects_a_member_per_env_and_episode():
    env = DummyVecEnv([short_episodes_env] * 2)
    model = tiny_model(env, n_recent_episodes=100, knowledge_sharing="none")
    chosen = []
    original = model._store_transition

    def spy(*args):
        chosen.append(model.acting_members.copy())
        original(*args)

    model._store_transition = spy
    model.learn(1000)
    chosen = np.array(chosen)
    # Each env keeps its member for a whole episode (50 steps), then draws again
    assert chosen.shape == (500, 2)
    for env_idx in range(2):
        per_episode = chosen[:, env_idx].reshape(10, 50)
        assert np.all(per_episode == per_episode[:, :1])
    assert len(set(chosen[::50].flatten().tolist())) == 3
    # Every finished episode counted for its member: 2 envs x 10 episodes, but the first of each env, which
    # began in the random warm-up (`learning_starts=100` steps, 50 per env)
    assert sum(len(returns) for returns in model.recent_returns) == 18


def test_statistics_and_best_member():
    model = tiny_model(knowledge_sharing="none")
    assert np.all(np.isnan(model.recent_return_statistics())) and model.best_member == 0
    for member, returns in enumerate([[-5.0, -1.0, -3.0], [-2.0], [-9.0, -1.0]]):
        model.recent_returns[member].extend(returns)
    # The mean of the last M=2 returns: -2, -2 and -5 -> the first of the best
    np.testing.assert_allclose(model.recent_return_statistics(), [-2.0, -2.0, -5.0])
    assert model.best_member == 0 and model.elect_teacher() == 0
    model.recent_returns[1].append(0.0)
    assert model.best_member == 1 and model.elect_teacher() == 1
    model._update_predict_member()
    assert int(model.policy.predict_member) == 1


def test_no_phase_without_statistics():
    # 200-step episodes: no finished episode at step 150, so no teacher can be elected yet
    model = tiny_model(learning_starts=50, distill_interval=100)
    model.learn(150)
    assert model.n_sharing_phases == 0 and model.teacher is None
    # The first episode (steps 0-199) began in the random warm-up: it is no member's, still no statistic
    model.learn(100, reset_num_timesteps=False)
    assert model.n_sharing_phases == 0 and model.teacher is None
    # The second one (steps 200-399) gives its member a statistic
    model.learn(160, reset_num_timesteps=False)
    assert model.n_sharing_phases == 1 and model.teacher is not None


def stacked_members_match_sb3(model, member, exported, obs, actions):
    """Each stacked member computes what an SB3 SAC with its weights computes."""
    obs_tensor = th.as_tensor(obs)
    with th.no_grad():
        mean, log_std = model.actor.get_action_dist_params(obs_tensor)
        sb3_mean, sb3_log_std, _ = exported.actor.get_action_dist_params(obs_tensor)
        th.testing.assert_close(mean[member], sb3_mean)
        th.testing.assert_close(log_std[member], sb3_log_std)
        q_values = model.critic(obs_tensor, th.as_tensor(actions))[member]
        for j, sb3_q in enumerate(exported.critic(obs_tensor, th.as_tensor(actions))):
            th.testing.assert_close(q_values[j], sb3_q.squeeze(1))
        target_q = model.critic_target(obs_tensor, th.as_tensor(actions))[member]
        for j, sb3_q in enumerate(exported.critic_target(obs_tensor, th.as_tensor(actions))):
            th.testing.assert_close(target_q[j], sb3_q.squeeze(1))


@pytest.mark.parametrize("net_arch", [[32, 32], dict(pi=[16], qf=[8, 8, 8]), []])
def test_export_member_matches_and_reloads(net_arch, tmp_path):
    model = tiny_model(short_episodes_env(), policy_kwargs=dict(net_arch=net_arch), distill_interval=150)
    model.learn(300)
    obs = np.stack([model.observation_space.sample() for _ in range(16)])
    actions = np.stack([model.action_space.sample() for _ in range(16)]).astype(np.float32)
    for member in range(3):
        exported = model.export_member(member)
        assert type(exported) is SAC
        stacked_members_match_sb3(model, member, exported, obs, actions)
        np.testing.assert_allclose(exported.log_ent_coef.detach().numpy(), model.log_ent_coef.detach().numpy()[[member]])
        # The member's Adam moments
        stacked_state = model.actor.optimizer.state[model.actor.mu.weight]
        exported_state = exported.actor.optimizer.state[exported.actor.mu.weight]
        assert th.equal(exported_state["exp_avg"], stacked_state["exp_avg"][member])
        assert float(exported_state["step"]) == float(stacked_state["step"])
    exported = model.export_member("best")
    assert th.equal(exported.actor.mu.weight, model.actor.mu.weight[model.best_member])
    # Acts as the model, saves and reloads as a plain SAC, and trains on
    np.testing.assert_allclose(exported.predict(obs, deterministic=True)[0], model.predict(obs)[0], rtol=1e-5, atol=1e-6)
    exported.save(tmp_path / "member.zip")
    reloaded = SAC.load(tmp_path / "member.zip", env=short_episodes_env())
    np.testing.assert_array_equal(reloaded.predict(obs, deterministic=True)[0], exported.predict(obs, deterministic=True)[0])
    reloaded.learn(50)


def test_log_prob_matches_sb3_distribution():
    model = tiny_model()
    obs = th.as_tensor(np.stack([model.observation_space.sample() for _ in range(64)]))
    with th.no_grad():
        actions, log_prob = model.actor.action_log_prob(obs)
        mean, log_std = model.actor.get_action_dist_params(obs)
    assert actions.shape == (3, 64, 1) and log_prob.shape == (3, 64)
    for member in range(3):
        distribution = SquashedDiagGaussianDistribution(1).proba_distribution(mean[member], log_std[member])
        expected = distribution.log_prob(actions[member], th.atanh(actions[member]))
        th.testing.assert_close(log_prob[member], expected, rtol=1e-4, atol=1e-4)


def test_actor_kl_matches_torch_distributions():
    """The policy distillation loss of the class is Eq. 1: KL(N_teacher || N_student), summed over students."""
    model = tiny_model(short_episodes_env(), policy_kwargs=dict(net_arch=[16]), ensemble_size=4)
    model.learn(150)
    obs = th.as_tensor(np.stack([model.observation_space.sample() for _ in range(32)]))
    actions = th.as_tensor(np.stack([model.action_space.sample() for _ in range(32)]))
    teacher = 2
    model.actor.zero_grad()
    policy_loss, _ = model.distillation_losses(obs, actions, teacher)
    policy_loss.backward()
    grads = [param.grad.clone() for param in model.actor.parameters()]
    model.actor.zero_grad()

    mean, log_std = model.actor.get_action_dist_params(obs)
    teacher_dist = th.distributions.Normal(mean[teacher].detach(), log_std[teacher].detach().exp())
    expected = sum(
        th.distributions.kl_divergence(teacher_dist, th.distributions.Normal(mean[k], log_std[k].exp())).sum(-1).mean()
        for k in range(4)
        if k != teacher
    )
    th.testing.assert_close(policy_loss, expected)
    expected.backward()
    for grad, param in zip(grads, model.actor.parameters(), strict=True):
        th.testing.assert_close(grad, param.grad)
        # The teacher's slice gets no gradient
        assert th.all(grad[teacher] == 0)
    # The logged KL is the mean over students
    kl, mse = model.distillation_gaps(teacher, batch_size=64)
    assert kl > 0 and mse > 0


def test_distillation_lowers_kl_and_leaves_the_teacher_untouched():
    model = tiny_model(short_episodes_env(), knowledge_sharing="none", distill_gradient_steps=100, distill_epochs=2)
    model.learn(400)
    teacher = 1
    model.recent_returns[teacher].append(1e9)
    assert model.elect_teacher() == teacher
    kl_before, mse_before = model.distillation_gaps(teacher, batch_size=1000)
    actor, critic, target = snapshot(model.actor), snapshot(model.critic), snapshot(model.critic_target)
    log_ent_coef = model.log_ent_coef.detach().clone()
    optimizers = [model.actor.optimizer, model.critic.optimizer, model.ent_coef_optimizer]
    optimizer_states = [optimizer_snapshot(optimizer) for optimizer in optimizers]

    model.knowledge_sharing = "distill"
    model.share_knowledge()
    assert model.teacher == teacher and model.n_sharing_phases == 1
    kl_after, mse_after = model.distillation_gaps(teacher, batch_size=1000)
    print(kl_before, kl_after, mse_before, mse_after)
    # 200 gradient steps lower the mean KL(teacher || student) and the critics' error by a large factor
    assert kl_after < kl_before / 10
    assert mse_after < mse_before / 10
    # The teacher's actor, critics and target critics are bit-identical; every student moved
    n_critics = model.critic.n_critics
    for before, after in zip(actor, snapshot(model.actor), strict=True):
        assert th.equal(before[teacher], after[teacher])
        assert all(not th.equal(before[k], after[k]) for k in (0, 2))
    for before, after in zip(critic, snapshot(model.critic), strict=True):
        teacher_slice = slice(teacher * n_critics, (teacher + 1) * n_critics)
        assert th.equal(before[teacher_slice], after[teacher_slice])
        assert not th.equal(before[:n_critics], after[:n_critics])
    # The students' targets got one soft update towards their distilled critics, the teacher's none
    for before, after, critic_after in zip(target, snapshot(model.critic_target), snapshot(model.critic), strict=True):
        th.testing.assert_close(after, before + model.tau * (critic_after - before) * (after != before))
        assert th.equal(
            before[teacher * n_critics : (teacher + 1) * n_critics], after[teacher * n_critics : (teacher + 1) * n_critics]
        )
        assert not th.equal(before[:n_critics], after[:n_critics])
    # Every member's SAC optimizer state (moments and step counts) and entropy coefficient are untouched
    for optimizer, state in zip(optimizers, optimizer_states, strict=True):
        assert_optimizer_states_equal(state, optimizer_snapshot(optimizer))
    assert th.equal(log_ent_coef, model.log_ent_coef.detach())


def test_distill_gradient_steps_buffer():
    model = tiny_model(short_episodes_env(), knowledge_sharing="extra_updates", distill_gradient_steps="buffer")
    model.learn(249)
    n_updates = model._n_updates
    model.learn(1, reset_num_timesteps=False)
    # One SAC update for the step, then 2 epochs x (250 transitions // 32) extra updates
    assert model.n_sharing_phases == 1
    assert model._n_updates == n_updates + 1 + 2 * (250 // 32)


def test_hardcopy_makes_members_equal():
    model = tiny_model(short_episodes_env(), knowledge_sharing="none")
    model.learn(300)
    model.recent_returns[2].append(1e9)
    log_ent_coef = model.log_ent_coef.detach().clone()
    model.knowledge_sharing = "hardcopy"
    model.share_knowledge()
    for module in (model.actor, model.critic, model.critic_target):
        for param in module.parameters():
            group = param.shape[0] // 3
            for member in range(3):
                assert th.equal(param[member * group : (member + 1) * group], param[2 * group : 3 * group])
    # The SAC optimizer states stay each member's own
    assert not th.equal(*[model.actor.optimizer.state[model.actor.mu.weight]["exp_avg"][k] for k in (0, 2)])
    assert th.equal(log_ent_coef, model.log_ent_coef.detach())
    kl, mse = model.distillation_gaps(2)
    assert kl == 0 and mse == 0


def test_extra_updates_step_every_member():
    model = tiny_model(short_episodes_env(), knowledge_sharing="none")
    model.learn(300)
    model.knowledge_sharing = "extra_updates"
    actor, n_updates = snapshot(model.actor), model._n_updates
    model.share_knowledge()
    assert model._n_updates == n_updates + 2 * 5
    for before, after in zip(actor, snapshot(model.actor), strict=True):
        assert all(not th.equal(before[k], after[k]) for k in range(3))


def test_deterministic_with_seed():
    # The seed is set when a model is created: create and train one after the other
    first = tiny_model(short_episodes_env())
    first.learn(300)
    second = tiny_model(short_episodes_env())
    second.learn(300)
    for a, b in zip(first.policy.state_dict().values(), second.policy.state_dict().values(), strict=True):
        assert th.equal(a, b)
    assert first.teacher == second.teacher


def test_predict_uses_the_best_member_deterministically():
    model = tiny_model(short_episodes_env())
    model.learn(150)
    obs = np.stack([model.observation_space.sample() for _ in range(5)])
    model.recent_returns[2].append(1e9)
    model._update_predict_member()
    actions, _ = model.predict(obs)
    assert actions.shape == (5, 1)
    member_actions, _ = model.export_member(2).predict(obs, deterministic=True)
    np.testing.assert_allclose(actions, member_actions, rtol=1e-5, atol=1e-6)
    # Deterministic by default, stochastic on request
    assert np.array_equal(actions, model.predict(obs)[0])
    assert not np.array_equal(actions, model.predict(obs, deterministic=False)[0])
    single, _ = model.predict(obs[0])
    assert single.shape == (1,)
    assert np.all(np.abs(actions) <= 2.0)


def test_evaluate_members_and_callback(tmp_path):
    model = tiny_model(short_episodes_env())
    model.set_logger(configure(str(tmp_path), ["csv"]))
    eval_env = Monitor(short_episodes_env())
    callback = EvalEnsembleCallback(eval_env, eval_freq=150, n_eval_episodes=2)
    # Logs are written every 4 episodes (200 steps): the phase at step 250 is in the dump at step 400
    model.learn(450, callback=callback)
    results = callback.last_results
    assert list(results) == ["member_0", "member_1", "member_2"]
    log = (tmp_path / "progress.csv").read_text()
    header = log.splitlines()[0]
    for key in ["eval/member_0", "eval/best_member", "eval/worst_member", "train/teacher", "train/recent_return_member_2"]:
        assert key in header
    for key in ["rollout/recent_return_member_0", "train/n_sharing_phases"]:
        assert key in header
    for key in ["policy_kl", "critic_mse"]:
        assert f"train/distill_{key}_before" in header and f"train/distill_{key}_after" in header
    results = model.evaluate_members(eval_env, n_eval_episodes=2)
    assert all(-2000 < mean < 0 for mean, _ in results.values())
    with pytest.raises(ValueError, match="n_eval_episodes"):
        model.evaluate_members(eval_env, n_eval_episodes=0)


def test_save_load(tmp_path):
    model = tiny_model(short_episodes_env())
    model.learn(300)
    assert model.n_sharing_phases == 1
    model.save(tmp_path / "model.zip")
    loaded = PIEKDSAC.load(tmp_path / "model.zip", env=short_episodes_env())
    for name in [
        "ensemble_size",
        "n_recent_episodes",
        "distill_interval",
        "teacher",
        "n_sharing_phases",
        "_last_sharing_timestep",
    ]:
        assert getattr(loaded, name) == getattr(model, name), name
    # Every member's weights, targets and the predicting member (the state dict holds them all)
    state, loaded_state = model.policy.state_dict(), loaded.policy.state_dict()
    assert state.keys() == loaded_state.keys()
    assert any(key.startswith("critic_target.") for key in state) and "predict_member" not in state
    for key in state:
        assert th.equal(state[key], loaded_state[key]), key
    assert loaded.actor is loaded.policy.actor and loaded.critic_target is loaded.policy.critic_target
    # Entropy coefficients, optimizers and statistics
    assert th.equal(model.log_ent_coef, loaded.log_ent_coef)
    for name in ["actor", "critic"]:
        assert_optimizer_states_equal(
            optimizer_snapshot(getattr(model, name).optimizer), optimizer_snapshot(getattr(loaded, name).optimizer)
        )
    assert_optimizer_states_equal(optimizer_snapshot(model.ent_coef_optimizer), optimizer_snapshot(loaded.ent_coef_optimizer))
    assert [list(r) for r in loaded.recent_returns] == [list(r) for r in model.recent_returns]
    assert all(r.maxlen == 2 for r in loaded.recent_returns)
    np.testing.assert_array_equal(loaded.acting_members, model.acting_members)
    obs = np.stack([model.observation_space.sample() for _ in range(10)])
    assert np.array_equal(model.predict(obs)[0], loaded.predict(obs)[0])
    loaded.set_parameters(model.get_parameters(), exact_match=True)
    loaded.learn(100, reset_num_timesteps=False)


def test_save_load_fixed_ent_coef_and_replay_buffer(tmp_path):
    model = tiny_model(ent_coef=0.05)
    model.learn(200)
    model.save(tmp_path / "model.zip")
    model.save_replay_buffer(tmp_path / "buffer.pkl")
    loaded = PIEKDSAC.load(tmp_path / "model.zip", env=gym.make("Pendulum-v1"))
    loaded.load_replay_buffer(tmp_path / "buffer.pkl")
    assert loaded.replay_buffer.size() == model.replay_buffer.size() == 200
    assert th.equal(loaded.ent_coef_tensor, model.ent_coef_tensor)
    loaded.learn(50, reset_num_timesteps=False)


def test_policy_save_load(tmp_path):
    model = tiny_model(short_episodes_env())
    model.learn(150)
    model.policy.save(tmp_path / "policy.pkl")
    loaded = PIEKDSACPolicy.load(tmp_path / "policy.pkl")
    assert loaded.n_members == 3 and int(loaded.predict_member) == int(model.policy.predict_member)
    obs = np.stack([model.observation_space.sample() for _ in range(4)])
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], model.predict(obs)[0])


def test_load_validates_overrides(tmp_path):
    model = tiny_model()
    model.save(tmp_path / "model.zip")
    with pytest.raises(ValueError, match="`distill_interval`"):
        PIEKDSAC.load(tmp_path / "model.zip", distill_interval=0)


def test_fused_adam_and_stacked_shapes():
    model = tiny_model()
    for optimizer in (model.actor.optimizer, model.critic.optimizer, model.ent_coef_optimizer):
        assert optimizer.defaults["fused"] is True
    assert model.actor.mu.weight.shape == (3, 1, 32) and model.critic.q_net[0].weight.shape == (6, 32, 4)
    assert model.log_ent_coef.shape == (3,)


def test_set_training_mode_leaves_targets_in_eval_mode():
    model = tiny_model()
    model.policy.set_training_mode(True)
    assert model.actor.training and model.critic.training and not model.critic_target.training
    model.policy.set_training_mode(False)
    assert not model.actor.training and not model.critic.training


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(ensemble_size=0), ValueError, "`ensemble_size` must be an integer >= 1 .*got 0"),
        (dict(ensemble_size=2.5), ValueError, "`ensemble_size`.*got 2.5"),
        (dict(ensemble_size=True), ValueError, "`ensemble_size`.*got True"),
        (dict(n_recent_episodes=0), ValueError, "`n_recent_episodes`.*got 0"),
        (dict(distill_interval=0), ValueError, "`distill_interval` must be an integer >= 1 .*got 0"),
        (
            dict(policy_selection="round_robin"),
            ValueError,
            r"`policy_selection` must be one of \('uniform',\), got 'round_robin'",
        ),
        (dict(teacher_selection="worst"), ValueError, r"`teacher_selection` must be one of \('best', 'random'\), got 'worst'"),
        (dict(knowledge_sharing="copy"), ValueError, "`knowledge_sharing` must be one of .*'hardcopy'.*got 'copy'"),
        (dict(distill_epochs=0), ValueError, "`distill_epochs`.*got 0"),
        (dict(distill_batch_size=-1), ValueError, "`distill_batch_size`.*got -1"),
        (dict(distill_gradient_steps="all"), ValueError, "`distill_gradient_steps`.*'buffer'.*got 'all'"),
        (dict(distill_gradient_steps=0), ValueError, "`distill_gradient_steps`.*got 0"),
        (dict(distill_learning_rate=0.0), ValueError, "`distill_learning_rate` must be a number > 0, got 0.0"),
        (dict(use_sde=True), ValueError, "`use_sde=True` is not supported"),
        (dict(policy_kwargs=dict(features_extractor_class=NatureCNN)), ValueError, "`features_extractor_class`.*NatureCNN"),
        (dict(policy_kwargs=dict(share_features_extractor=True)), ValueError, "`share_features_extractor=True`"),
        (
            dict(policy=SAC.policy_aliases["MlpPolicy"]),
            TypeError,
            "`policy` must be 'MlpPolicy' or a subclass of PIEKDSACPolicy",
        ),
    ],
)
def test_bad_arguments(kwargs, error, match):
    policy = kwargs.pop("policy", "MlpPolicy")
    with pytest.raises(error, match=match):
        PIEKDSAC(policy, "Pendulum-v1", **kwargs)


def test_discrete_actions_rejected():
    with pytest.raises(ValueError, match=r"PIEKDSAC needs a Box .*Discrete"):
        PIEKDSAC("MlpPolicy", "CartPole-v1")


def test_export_member_bad_index():
    model = tiny_model()
    with pytest.raises(ValueError, match="`member` must be 'best' or an integer in \\[0, 3\\), got 3"):
        model.export_member(3)


def test_policy_alone_rejects_bad_ensemble_size():
    env = gym.make("Pendulum-v1")
    with pytest.raises(ValueError, match="`n_members`"):
        PIEKDSACPolicy(env.observation_space, env.action_space, lambda _: 1e-3, n_members=0)


def test_vec_env_with_more_envs():
    env = make_vec_env(short_episodes_env, n_envs=3, seed=0)
    model = tiny_model(env, distill_interval=150)
    model.learn(600)
    assert len(model.acting_members) == 3 and model.n_sharing_phases >= 1


def test_zoo_config_keys_are_arguments():
    """Every hyperparameter of zoo_configs/piekd_sac.yml is an argument of PIEKDSAC (rl-zoo3 passes them as kwargs)."""
    text = (Path(__file__).parent.parent / "zoo_configs" / "piekd_sac.yml").read_text()
    env_ids = re.findall(r"^([\w-]+):$", text, re.M)
    assert env_ids == ["Pendulum-v1", "HalfCheetah-v5", "Hopper-v5"]
    arguments = set(inspect.signature(PIEKDSAC.__init__).parameters) | {"n_timesteps"}
    keys = re.findall(r"^  (\w+):", text, re.M)
    assert set(keys) <= arguments and keys.count("n_timesteps") == 3
    assert re.findall(r"^  distill_interval: (\d+)", text, re.M) == ["1000", "5000", "5000"]


def test_throughput_sac_suite_runs():
    args = argparse.Namespace(
        learning_starts=20,
        chunk=20,
        steps=40,
        sac_batch_size=16,
        sac_net_arch=[16],
        ensemble_size=2,
        distill_interval=40,
        distill_gradient_steps=2,
        device="cpu",
        sac_env="Pendulum-v1",
    )
    steps_per_s = throughput.run_sac_repeat(args, seed=0)
    assert set(steps_per_s) == set(throughput.SAC_ALGOS) and all(value > 0 for value in steps_per_s.values())


def test_sample_efficiency_benchmark_runs(tmp_path, monkeypatch):
    settings = dict(piekd_sample_efficiency.SETTINGS["Pendulum-v1"])
    settings["sac"] = dict(settings["sac"], learning_starts=20, batch_size=16)
    settings["piekd"] = dict(distill_interval=50, distill_gradient_steps=2)
    monkeypatch.setitem(piekd_sample_efficiency.SETTINGS, "Pendulum-v1", settings)
    # 20-step episodes
    make = gym.make
    monkeypatch.setattr(gym, "make", lambda env_id, **kwargs: make(env_id, **{**kwargs, "max_episode_steps": 20}))
    args = argparse.Namespace(timesteps=100, eval_freq=50, n_eval_episodes=1, net_arch=[16], device="cpu")
    runs = [piekd_sample_efficiency.run("Pendulum-v1", algo, 0, args) for algo in piekd_sample_efficiency.ALGOS]
    assert all([step for step, _, _ in run["curve"]] == [50, 100] for run in runs)
    text = piekd_sample_efficiency.report("Pendulum-v1", runs, args, tmp_path)
    assert "| PIEKD-SAC |" in text and (tmp_path / "piekd_sample_efficiency_Pendulum-v1.png").exists()


# The learning test's settings (SAC on Pendulum with rl-zoo3's learning rate, smaller networks and batches for CI)
PENDULUM_HYPERPARAMS = dict(
    learning_rate=1e-3,
    batch_size=128,
    learning_starts=500,
    policy_kwargs=dict(net_arch=[64, 64]),
    ensemble_size=3,
    distill_interval=1000,
    distill_gradient_steps=20,
)
PENDULUM_TIMESTEPS = 4000


def run_pendulum(seed: int) -> dict[str, tuple[float, float]]:
    model = PIEKDSAC("MlpPolicy", "Pendulum-v1", seed=seed, **PENDULUM_HYPERPARAMS)
    model.learn(PENDULUM_TIMESTEPS)
    assert model.n_sharing_phases == 4
    eval_env = Monitor(gym.make("Pendulum-v1"))
    eval_env.reset(seed=1000)
    return model.evaluate_members(eval_env, n_eval_episodes=5)


def test_learns_pendulum():
    """
    Measured on 2 CPU cores (15-50 s a run, depending on the load), the members' mean returns over 5 evaluation
    episodes after 4000 steps were, seed 0: -87, -179, -205; seeds 1-4, best member: -298, -78, -77, -297
    (a random policy scores about -1200). The CI test runs seed 0 (deterministic on a given platform);
    `make test-slow` checks the median over seeds 0-4.
    """
    means = [mean for mean, _ in run_pendulum(seed=0).values()]
    print(means)
    # The best member swings the pendulum up, and the distilled others are not far behind
    assert max(means) >= -250
    assert min(means) >= -600


@pytest.mark.slow
def test_learns_pendulum_median_over_seeds():
    best = [max(mean for mean, _ in run_pendulum(seed).values()) for seed in range(5)]
    print(best)
    assert np.median(best) >= -250


def test_member_view_is_an_sb3_policy(tmp_path):
    """A member view acts, predicts and is evaluated as the member's exported SB3 actor does."""
    model = tiny_model(short_episodes_env())
    model.learn(150)
    obs = np.stack([model.observation_space.sample() for _ in range(6)])
    for member in range(3):
        view = model.actor.member(member)
        assert isinstance(view, BasePolicy) and len(view.state_dict()) == 0 and view.device == model.device
        exported = model.export_member(member)
        np.testing.assert_allclose(
            view.predict(obs, deterministic=True)[0], exported.predict(obs, deterministic=True)[0], rtol=1e-5, atol=1e-6
        )
        assert view.predict(obs[0])[0].shape == (1,)
    mean, _ = evaluate_policy(model.actor.member(1), Monitor(short_episodes_env()), n_eval_episodes=1)
    assert -2000 < mean < 0
    with pytest.raises(ValueError, match="`member` must be in \\[0, 3\\), got 3"):
        model.actor.member(3)


def test_copy_member_from_and_to_sb3_modules():
    """A plain SAC's actor and critics copied into member 1 replace it, and copy back out unchanged."""
    model = tiny_model(policy_kwargs=dict(net_arch=dict(pi=[16], qf=[8, 8])))
    plain = SAC("MlpPolicy", "Pendulum-v1", policy_kwargs=dict(net_arch=dict(pi=[16], qf=[8, 8])), seed=1)
    obs = th.as_tensor(np.stack([model.observation_space.sample() for _ in range(8)]))
    actions = th.as_tensor(np.stack([model.action_space.sample() for _ in range(8)]))
    before_mean, _ = model.actor.get_action_dist_params(obs)
    before_q = model.critic(obs, actions)
    model.actor.copy_member_from(1, plain.actor)
    model.critic.copy_member_from(1, plain.critic)
    with th.no_grad():
        mean, log_std = model.actor.get_action_dist_params(obs)
        plain_mean, plain_log_std, _ = plain.actor.get_action_dist_params(obs)
        th.testing.assert_close(mean[1], plain_mean)
        th.testing.assert_close(log_std[1], plain_log_std)
        q_values = model.critic(obs, actions)
        for j, plain_q in enumerate(plain.critic(obs, actions)):
            th.testing.assert_close(q_values[1, j], plain_q.squeeze(1))
    # The other members are untouched
    assert th.equal(mean[[0, 2]], before_mean[[0, 2]]) and th.equal(q_values[[0, 2]], before_q[[0, 2]])
    other = SAC("MlpPolicy", "Pendulum-v1", policy_kwargs=dict(net_arch=dict(pi=[16], qf=[8, 8])), seed=2)
    for stack, module in ((model.actor, other.actor), (model.critic, other.critic)):
        stack.copy_member_to(1, module)
    for name in ("actor", "critic"):
        plain_state = getattr(plain, name).state_dict()
        for key, value in getattr(other, name).state_dict().items():
            assert th.equal(value, plain_state[key]), (name, key)
    wider = SAC("MlpPolicy", "Pendulum-v1", policy_kwargs=dict(net_arch=dict(pi=[16, 16], qf=[8, 8])))
    with pytest.raises(ValueError, match="architecture"):
        model.actor.copy_member_to(0, wider.actor)


def test_batch_norm_statistics_are_copied_to_the_targets():
    """
    As SAC, each target update copies the critics' batch-norm running statistics (``batch_norm_stats``) into the
    targets'. PIEKDSAC's stacked MLPs have no batch-norm layer (its aliases are empty lists): the test gives both
    critics one, as a batch-norm features extractor would, and checks that ``train()`` copies its running stats.
    """
    model = tiny_model(knowledge_sharing="none")
    assert model.batch_norm_stats == [] and model.batch_norm_stats_target == []
    model.learn(150)
    model.critic.norm, model.critic_target.norm = th.nn.BatchNorm1d(3), th.nn.BatchNorm1d(3)
    with th.no_grad():
        model.critic.norm(th.randn(16, 3) * 5 + 2)  # training mode: running statistics move away from 0 and 1
    model.batch_norm_stats = get_parameters_by_name(model.critic, ["running_"])
    model.batch_norm_stats_target = get_parameters_by_name(model.critic_target, ["running_"])
    assert len(model.batch_norm_stats) == 2
    model.train(gradient_steps=1, batch_size=8)
    for stat, target_stat in zip(model.batch_norm_stats, model.batch_norm_stats_target, strict=True):
        assert th.equal(stat, target_stat)
    assert not th.equal(model.critic_target.norm.running_mean, th.zeros(3))


def test_loads_the_state_dict_of_earlier_versions():
    """Files saved before the stacks were nn.Sequential (keys `...layers.{i}`) load into the current layout."""
    model = tiny_model()
    state = {key: value.clone() for key, value in model.policy.state_dict().items()}
    old_state = {
        re.sub(
            r"^(actor\.latent_pi|critic\.q_net|critic_target\.q_net)\.(\d+)\.",
            lambda match: f"{match.group(1)}.layers.{int(match.group(2)) // 2}.",
            key,
        ): value.clone()
        + 1.0
        for key, value in state.items()
    }
    assert "actor.latent_pi.layers.1.weight" in old_state and "critic_target.q_net.layers.2.bias" in old_state
    model.policy.load_state_dict(old_state)
    for key, value in model.policy.state_dict().items():
        assert th.equal(value, state[key] + 1.0), key
