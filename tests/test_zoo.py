"""
The rl-zoo3 plugin: registration, zoo_configs, samplers, and the real commands (``python -m sb3_distill.train``
and ``enjoy``) run as subprocesses with tiny budgets.
"""

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import optuna
import pytest
import torch as th
import yaml
from rl_zoo3.hyperparams_opt import HYPERPARAMS_CONVERTER, HYPERPARAMS_SAMPLER
from rl_zoo3.utils import ALGOS
from stable_baselines3.common.envs import FakeImageEnv

from sb3_distill.common.callbacks import EvalMembersCallback
from sb3_distill.zoo import ZOO_ALGORITHMS, default_config_path, register_algorithms
from sb3_distill.zoo.exp_manager import DistillExperimentManager, eval_hyperparameter, make_heartbeat_storage
from sb3_distill.zoo.registry import import_algorithm

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = ROOT / "zoo_configs"
REGISTERED = register_algorithms()
DQN_ALGOS = ["ensemble_distill_dqn", "realtime_distill_dqn"]
# Tiny networks and budgets: a few hundred steps, a few gradient steps
TINY = {
    "ensemble_distill_dqn": ["student_policy_kwargs:dict(net_arch=[8])", "n_teachers:2"],
    "realtime_distill_dqn": ["students:[dict(net_arch=[8]), dict(net_arch=[4])]"],
    "policy_distillation": ["student_policy_kwargs:dict(net_arch=[8])"],
    "piekd_sac": ["ensemble_size:2", "distill_interval:200", "distill_gradient_steps:2", "distill_epochs:1"],
    "distill_ppo": ["n_envs:2", "n_steps:50", "batch_size:50", "n_epochs:1"],
}
#: The on-policy algorithms (no replay buffer: no off-policy parameters)
ON_POLICY_ALGOS = ["distill_ppo"]
# The env of each algorithm's subprocess tests (PIEKDSAC needs continuous actions)
ENVS = {"piekd_sac": "Pendulum-v1"}
COMMON_PARAMS = [
    "learning_starts:100",
    "buffer_size:1000",
    "batch_size:16",
    "train_freq:4",
    "gradient_steps:1",
    "policy_kwargs:dict(net_arch=[16])",
]


def run_zoo(command: str, *args: str, cwd: Path, timeout: float = 300) -> str:
    """Run ``python -m sb3_distill.<command> *args``; fail with its output unless it exits with 0."""
    result = subprocess.run(
        [sys.executable, "-m", f"sb3_distill.{command}", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"sb3_distill.{command} {' '.join(args)} exited with {result.returncode}:\n{output[-5000:]}"
    return output


def train_args(algo: str, log_folder: Path, n_timesteps: int = 300) -> list[str]:
    env_id = ENVS.get(algo, "CartPole-v1")
    run = ["--algo", algo, "--env", env_id, "-n", str(n_timesteps), "-f", str(log_folder), "--seed", "0"]
    # PolicyDistillation's networks are the teacher's and `student_policy_kwargs`: no `policy_kwargs` net_arch
    common = [param for param in COMMON_PARAMS if not (algo == "policy_distillation" and param.startswith("policy_kwargs"))]
    if algo in ON_POLICY_ALGOS:
        common = ["policy_kwargs:dict(net_arch=[16])"]
    return [*run, "--num-threads", "1", "-params", *common, *TINY[algo]]


def make_manager(
    algo: str, env_id: str = "CartPole-v1", optimize: bool = False, log_folder: Path | None = None, **kwargs
) -> DistillExperimentManager:
    """rl-zoo3's experiment manager as ``train`` builds it, for this project's config of ``algo``."""
    return DistillExperimentManager(
        argparse.Namespace(),  # the parsed command line, only saved to args.yml
        algo,
        env_id,
        log_folder=str(log_folder),
        optimize_hyperparameters=optimize,
        config=str(default_config_path(algo)),
        **kwargs,
    )


def test_registration():
    # every algorithm of ZOO_ALGORITHMS whose module exists is registered, with its sampler and converter
    for key, entry in ZOO_ALGORITHMS.items():
        module = entry.class_path.split(":")[0]
        try:
            __import__(module)
        except ModuleNotFoundError:
            assert key not in REGISTERED
            continue
        assert key in REGISTERED
        assert ALGOS[key] is import_algorithm(entry.class_path)
        assert HYPERPARAMS_SAMPLER[key] is entry.sampler and HYPERPARAMS_CONVERTER[key] is entry.converter
    # every algorithm of the registry is on main
    assert set(REGISTERED) == set(ZOO_ALGORITHMS)
    assert register_algorithms() == REGISTERED  # idempotent


def test_import_algorithm(tmp_path, monkeypatch):
    # an algorithm that is not merged yet is skipped ...
    assert import_algorithm("sb3_distill.not_merged_yet:NotMergedYet") is None
    # ... but a module that exists and fails to import is an error, not a silently missing algorithm
    (tmp_path / "broken_algorithm.py").write_text("import a_dependency_that_is_not_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="a_dependency_that_is_not_installed"):
        import_algorithm("broken_algorithm:Broken")


def test_core_does_not_import_zoo():
    code = "import sys, sb3_distill; assert not {'rl_zoo3', 'optuna', 'sb3_distill.zoo'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_default_config_path():
    assert default_config_path("ensemble_distill_dqn") == CONFIG_DIR / "ensemble_distill_dqn.yml"
    with pytest.raises(ValueError, match="--conf-file"):
        default_config_path("not_an_algorithm")


def zoo_config_entries() -> list[tuple[str, str]]:
    return [(path.stem, env_id) for path in sorted(CONFIG_DIR.glob("*.yml")) for env_id in yaml.safe_load(path.read_text())]


def test_every_config_file_is_registered():
    assert {algo for algo, _ in zoo_config_entries()} <= set(ZOO_ALGORITHMS)
    assert set(DQN_ALGOS) <= {algo for algo, _ in zoo_config_entries()}


def make_teacher_at(path: str, env) -> None:
    """An untrained SB3 agent saved where a PolicyDistillation config expects it (``logs/<algo>/...``)."""
    from stable_baselines3 import DQN, PPO, SAC

    algorithm = {"dqn": DQN, "sac": SAC, "ppo": PPO}[Path(path).parts[1]]
    policy = "CnnPolicy" if isinstance(env, FakeImageEnv) else "MlpPolicy"
    kwargs = {} if algorithm is PPO else {"buffer_size": 10}
    algorithm(policy, env, **kwargs).save(path)


@pytest.mark.parametrize("algo, env_id", zoo_config_entries())
def test_zoo_config_builds_its_model(algo, env_id, tmp_path, monkeypatch):
    assert algo in REGISTERED
    config = yaml.safe_load(default_config_path(algo).read_text())[env_id]
    assert "n_timesteps" in config
    is_atari = env_id == "atari" or "NoFrameskip" in env_id
    if "teacher" in config or "teachers" in config:
        # The config names where rl-zoo3 writes a trained agent (relative to the working directory): put an
        # untrained one of that algorithm there
        monkeypatch.chdir(tmp_path)
    for task, path in config.get("teachers", {}).items():
        make_teacher_at(path, task)
    if is_atari and env_id not in gym.envs.registry:
        # Without ale-py: the same hyperparameters, processed by rl-zoo3, on an 84x84x4 image env
        manager = make_manager(algo)
        hyperparams, _, _, _ = manager._preprocess_hyperparams(dict(config, buffer_size=100))
        assert manager.frame_stack == 4
        env = FakeImageEnv(screen_height=84, screen_width=84, n_channels=4, discrete=True)
        if "teacher" in config:
            make_teacher_at(config["teacher"], env)
        model = ALGOS[algo](env=env, **hyperparams)
    else:
        # (the tests extra installs box2d and mujoco, so every non-Atari env of the configs can be made)
        if "teacher" in config:
            make_teacher_at(config["teacher"], env_id)
        manager = make_manager(algo, env_id, log_folder=tmp_path)
        model, saved_hyperparams = manager.setup_experiment()  # type: ignore[misc]
        assert dict(saved_hyperparams) == config
        if getattr(model, "teacher_weighting", None) == "returns":
            # the teachers' returns come from the config's EvalMembersCallback, built by rl-zoo3 from the YAML
            callbacks = [c for c in manager.callbacks if isinstance(c, EvalMembersCallback)]
            assert len(callbacks) == 1 and callbacks[0].eval_env.spec.id == env_id
    # the student descriptions of the YAML (strings) were evaluated, schedules built
    for key in ("student_policy_kwargs", "students", "student_learning_rate", "teacher_prob"):
        if isinstance(config.get(key), str):
            assert not isinstance(getattr(model, key), str), key
    model.predict(model.observation_space.sample())


SAMPLER_CASES = [(algo, "CartPole-v1") for algo in DQN_ALGOS] + [
    ("piekd_sac", "Pendulum-v1"),
    ("policy_distillation", "CartPole-v1"),
    ("policy_distillation", "Pendulum-v1"),
    ("distill_ppo", "CartPole-v1"),
    ("distill_ppo", "Pendulum-v1"),
    ("multitask_policy_distillation", "CartPole-v1"),
]


def teacher_for(env_id: str, path: Path) -> str:
    """An (untrained) SB3 teacher saved to ``path``, for PolicyDistillation: DQN for a discrete env, SAC otherwise."""
    from stable_baselines3 import DQN, SAC

    algorithm = DQN if isinstance(gym.make(env_id).action_space, gym.spaces.Discrete) else SAC
    algorithm("MlpPolicy", env_id, policy_kwargs=dict(net_arch=[16]), buffer_size=10).save(path)
    return str(path.with_suffix(".zip"))


@pytest.mark.parametrize("algo, env_id", SAMPLER_CASES)
def test_sampler_draws_always_build(algo, env_id, tmp_path):
    """Every draw of the sampler (Optuna's RandomSampler) builds its model: a constructor error would end a worker."""
    assert {algo for algo, _ in SAMPLER_CASES} == set(ZOO_ALGORITHMS)
    assert algo in REGISTERED
    extra: dict = {"buffer_size": 1000}
    if algo == "policy_distillation":
        base: dict = {"policy": "MlpPolicy", "teacher": teacher_for(env_id, tmp_path / "teacher")}
    elif algo == "distill_ppo":
        from stable_baselines3 import PPO

        PPO("MlpPolicy", env_id, policy_kwargs=dict(net_arch=[16])).save(tmp_path / "teacher")
        base, extra = {"policy": "MlpPolicy", "teacher": str(tmp_path / "teacher.zip")}, {}
    elif algo == "multitask_policy_distillation":
        tasks = ("CartPole-v1", "Acrobot-v1")
        base = {"teachers": {task: teacher_for(task, tmp_path / task) for task in tasks}, "learning_starts": 10}
    elif env_id in yaml.safe_load(default_config_path(algo).read_text()):
        manager = make_manager(algo, env_id, optimize=True, log_folder=tmp_path)
        assert manager.setup_experiment() is None
        base = manager._hyperparams
    else:
        base = {"policy": "MlpPolicy"}
    env = gym.make(env_id)
    n_actions = env.action_space.shape[0] if isinstance(env.action_space, gym.spaces.Box) else 0
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(60):
        trial = study.ask()
        sampled = HYPERPARAMS_SAMPLER[algo](trial, n_actions, 1, {"using_her_replay_buffer": False, "her_kwargs": {}})
        # `--trial-id` rebuilds the same hyperparameters from the stored params (checked before the constructor,
        # which may add keys to the `policy_kwargs` dict it is given, as SAC adds `use_sde`)
        assert HYPERPARAMS_CONVERTER[algo](trial.params) == sampled
        # (the multi-task env is built from the teachers)
        algo_env = None if algo == "multitask_policy_distillation" else env
        model = ALGOS[algo](env=algo_env, **{**base, **sampled, **extra})
        assert model.policy is not None
        study.tell(trial, 0.0)
    # the draws covered every choice of the categorical parameters
    for key in {key for trial in study.trials for key in trial.params}:
        distribution = next(trial.distributions[key] for trial in study.trials if key in trial.distributions)
        if isinstance(distribution, optuna.distributions.CategoricalDistribution):
            seen = {trial.params[key] for trial in study.trials if key in trial.params}
            assert seen == set(distribution.choices), key


def test_sampler_adds_distillation_parameters():
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1)).ask()
    sampled = HYPERPARAMS_SAMPLER["ensemble_distill_dqn"](trial, 0, 1, {"using_her_replay_buffer": False, "her_kwargs": {}})
    assert {"temperature", "distill_loss", "student_learning_rate", "n_teachers", "ensemble_reduction"} <= set(sampled)
    # rl-zoo3's DQN part is there, decoded
    assert {"gamma", "batch_size", "learning_rate", "train_freq", "gradient_steps", "policy_kwargs"} <= set(sampled)
    assert 0.01 <= sampled["temperature"] <= 1.0
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1)).ask()
    sampled = HYPERPARAMS_SAMPLER["realtime_distill_dqn"](trial, 0, 1, {"using_her_replay_buffer": False, "her_kwargs": {}})
    assert {"temperature", "distill_loss", "student_learning_rate", "self_learning_coef", "imitation"} <= set(sampled)


def test_piekd_sampler_values():
    """The PIEKDSAC sampler runs without the class (its model-building test needs sb3_distill.piekd_sac)."""
    sampler = ZOO_ALGORITHMS["piekd_sac"].sampler
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        trial = study.ask()
        sampled = sampler(trial, 6, 1, {"using_her_replay_buffer": False, "her_kwargs": {}})
        # rl-zoo3's SAC part, decoded, and the PIEKD parameters with the constructor's names
        assert {"gamma", "batch_size", "learning_rate", "train_freq", "gradient_steps", "tau", "policy_kwargs"} <= set(sampled)
        assert sampled["ensemble_size"] in (2, 3, 5) and sampled["distill_interval"] >= 1000
        assert sampled["distill_batch_size"] in (64, 128, 256, 512) and 1e-5 <= sampled["distill_learning_rate"] <= 2e-3
        assert ZOO_ALGORITHMS["piekd_sac"].converter(trial.params) == sampled
        study.tell(trial, 0.0)


@pytest.mark.parametrize("n_actions", [0, 2])
def test_policy_distillation_sampler_values(n_actions):
    """The PolicyDistillation sampler runs without the class (building its models needs sb3_distill.policy_distillation)."""
    entry = ZOO_ALGORITHMS["policy_distillation"]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        trial = study.ask()
        sampled = entry.sampler(trial, n_actions, 1, {"using_her_replay_buffer": False, "her_kwargs": {}})
        assert {"learning_rate", "batch_size", "train_freq", "gradient_steps", "control"} <= set(sampled)
        assert "policy_kwargs" not in sampled  # PolicyDistillation's policy_kwargs only sets the optimizer
        assert ("teacher_prob" in sampled) == (sampled["control"] == "mixture")
        # the loss and temperature only for a discrete action space (a continuous teacher's kind decides its loss)
        assert ("loss" in sampled) == ("temperature" in sampled) == (n_actions == 0)
        assert entry.converter(trial.params) == sampled
        study.tell(trial, 0.0)


def test_hyperparameter_strings():
    students = eval_hyperparameter(
        "[dict(features_extractor_class=CompactNatureCNN, features_extractor_kwargs=dict(filters=f), net_arch=[]) "
        "for f in [(16, 32, 32), (16, 16, 16)]]"
    )
    assert [student["features_extractor_kwargs"]["filters"] for student in students] == [(16, 32, 32), (16, 16, 16)]
    manager = make_manager("ensemble_distill_dqn")
    config = {"n_timesteps": 10, "student_learning_rate": "lin_5e-3", "student_policy_kwargs": "dict(net_arch=[4])"}
    hyperparams, _, _, _ = manager._preprocess_hyperparams(config)
    assert hyperparams["student_learning_rate"](0.5) == pytest.approx(2.5e-3)
    assert hyperparams["student_policy_kwargs"] == {"net_arch": [4]}
    # numbers stay numbers (PIEKDSAC's distill_learning_rate, for one, takes a number only)
    config = {"n_timesteps": 10, "student_learning_rate": 1e-3, "distill_learning_rate": 1e-3}
    hyperparams, _, _, _ = manager._preprocess_hyperparams(config)
    assert hyperparams["student_learning_rate"] == 1e-3 and hyperparams["distill_learning_rate"] == 1e-3
    with pytest.raises(ValueError, match="`student_learning_rate`"):
        manager._preprocess_hyperparams({"n_timesteps": 10, "student_learning_rate": "exp_5e-3"})


def test_heartbeat_arguments(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    storage = make_heartbeat_storage(url, heartbeat_interval=2, grace_period=5, max_retry=1)
    assert storage.get_heartbeat_interval() == 2 and storage.grace_period == 5
    with pytest.raises(ValueError, match="`--heartbeat-interval` needs an RDB `--storage`"):
        make_heartbeat_storage(str(tmp_path / "study.log"), heartbeat_interval=2)
    with pytest.raises(ValueError, match="`--heartbeat-interval` needs an RDB `--storage`"):
        make_heartbeat_storage(None, heartbeat_interval=2)
    with pytest.raises(ValueError, match="`--heartbeat-interval` must be an integer >= 1"):
        make_heartbeat_storage(url, heartbeat_interval=0)
    with pytest.raises(ValueError, match="`--heartbeat-grace-period` must be an integer >"):
        make_heartbeat_storage(url, heartbeat_interval=2, grace_period=2)
    with pytest.raises(ValueError, match="`--heartbeat-max-retry`"):
        make_heartbeat_storage(url, heartbeat_interval=2, max_retry=-1)
    with pytest.raises(ValueError, match="only applies to hyperparameter optimization"):
        make_manager("ensemble_distill_dqn", storage=url, heartbeat_interval=2)


@pytest.mark.parametrize("algo", [*DQN_ALGOS, "policy_distillation", "piekd_sac"])
def test_train_continue_enjoy(algo, tmp_path):
    logs = tmp_path / "logs"
    env_id = ENVS.get(algo, "CartPole-v1")
    if algo == "policy_distillation":
        # zoo_configs/policy_distillation.yml names the DQN teacher where rl-zoo3 writes it
        from stable_baselines3 import DQN

        DQN("MlpPolicy", "CartPole-v1", policy_kwargs=dict(net_arch=[16]), buffer_size=10).save(
            tmp_path / "logs" / "dqn" / "CartPole-v1_1" / "CartPole-v1.zip"
        )
    # train, without --conf-file: this project's zoo_configs/<algo>.yml
    output = run_zoo(
        "train",
        *train_args(algo, logs),
        "--save-replay-buffer",
        "--eval-freq",
        "100",
        "--eval-episodes",
        "2",
        "--n-eval-envs",
        "2",
        "-P",
        "--tensorboard-log",
        str(tmp_path / "tb"),
        cwd=tmp_path,
    )
    assert f"Loading hyperparameters from: {CONFIG_DIR / f'{algo}.yml'}" in output
    run = logs / algo / f"{env_id}_1"
    model = ALGOS[algo].load(run / f"{env_id}.zip")
    assert model.num_timesteps == 300
    assert (run / "replay_buffer.pkl").is_file() and (run / "best_model.zip").is_file()
    assert np.load(run / "evaluations.npz")["results"].shape == (3, 2)  # 3 evaluations of 2 episodes
    assert list((tmp_path / "tb" / env_id).rglob("events.out.tfevents.*"))

    # --trained-agent: continue training from the saved model and its replay buffer
    output = run_zoo("train", *train_args(algo, logs, 200), "--trained-agent", str(run / f"{env_id}.zip"), cwd=tmp_path)
    assert "Loading pretrained agent" in output and "Loading replay buffer" in output
    continued = ALGOS[algo].load(logs / algo / f"{env_id}_2" / f"{env_id}.zip")
    # same networks, trained further
    before, after = model.policy.state_dict(), continued.policy.state_dict()
    assert before.keys() == after.keys() and all(before[key].shape == after[key].shape for key in before)
    assert any(not np.allclose(before[key].numpy(), after[key].numpy()) for key in before)

    # enjoy the latest run
    enjoy_args = ["--algo", algo, "--env", env_id, "-f", str(logs), "--no-render", "-n", "300"]
    output = run_zoo("enjoy", *enjoy_args, cwd=tmp_path)
    assert "Mean reward:" in output


def test_distill_ppo_train_continue_enjoy(tmp_path):
    """DistillPPO through the real commands: kickstarting from a PPO teacher where the config names it."""
    from stable_baselines3 import PPO

    algo, env_id, logs = "distill_ppo", "CartPole-v1", tmp_path / "logs"
    PPO("MlpPolicy", env_id, policy_kwargs=dict(net_arch=[16])).save(logs / "ppo" / f"{env_id}_1" / f"{env_id}.zip")
    output = run_zoo("train", *train_args(algo, logs), "--eval-freq", "100", "--eval-episodes", "2", cwd=tmp_path)
    assert f"Loading hyperparameters from: {CONFIG_DIR / f'{algo}.yml'}" in output
    run = logs / algo / f"{env_id}_1"
    model = ALGOS[algo].load(run / f"{env_id}.zip")
    assert model.num_timesteps == 300 and model.update_rule == "on_policy_distill" and model.env_reward
    # the decaying weight of the config (lin_1.0) was built and saved with the model
    assert model.distill_coef(1.0) == pytest.approx(1.0) and model.distill_coef(0.0) == pytest.approx(0.0)
    assert (run / "best_model.zip").is_file()
    # --trained-agent: continue training from the saved model
    output = run_zoo("train", *train_args(algo, logs, 200), "--trained-agent", str(run / f"{env_id}.zip"), cwd=tmp_path)
    assert "Loading pretrained agent" in output
    continued = ALGOS[algo].load(logs / algo / f"{env_id}_2" / f"{env_id}.zip")
    before, after = model.policy.state_dict(), continued.policy.state_dict()
    assert before.keys() == after.keys()
    assert any(not np.allclose(before[key].numpy(), after[key].numpy()) for key in before)
    # the teacher stays frozen
    assert all(np.array_equal(before[key].numpy(), after[key].numpy()) for key in before if key.startswith("teacher."))
    output = run_zoo("enjoy", "--algo", algo, "--env", env_id, "-f", str(logs), "--no-render", "-n", "300", cwd=tmp_path)
    assert "Mean reward:" in output


def test_distill_ppo_sampler_values():
    """The DistillPPO sampler: PPO's part decoded, the distillation choices consistent with the rule."""
    entry = ZOO_ALGORITHMS["distill_ppo"]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(40):
        trial = study.ask()
        sampled = entry.sampler(trial, 0, 1, {"using_her_replay_buffer": False, "her_kwargs": {}})
        assert {"gamma", "gae_lambda", "n_steps", "batch_size", "learning_rate", "policy_kwargs", "update_rule"} <= set(
            sampled
        )
        rule = sampled["update_rule"]
        assert ("env_reward" in sampled) == (
            rule in ("on_policy_distill", "entropy_regularised", "n_distill", "expected_entropy_regularised")
        )
        assert ("control" in sampled) == (rule != "teacher_distill")
        assert ("teacher_prob" in sampled) == (sampled.get("control") == "mixture")
        coef = sampled["distill_coef"]
        assert 0.01 <= (coef(1.0) if callable(coef) else coef) <= 10.0
        assert entry.converter(trial.params) == sampled
        study.tell(trial, 0.0)


def test_train_multitask(tmp_path):
    """rl-zoo3 trains MultiTaskPolicyDistillation on the multi-task env of its config's teachers, and continues it."""
    from stable_baselines3 import DQN

    # zoo_configs/multitask_policy_distillation.yml names the DQN teachers where rl-zoo3 writes them
    for task in ("CartPole-v1", "Acrobot-v1"):
        DQN("MlpPolicy", task, policy_kwargs=dict(net_arch=[16]), buffer_size=10).save(
            tmp_path / "logs" / "dqn" / f"{task}_1" / f"{task}.zip"
        )
    algo, logs = "multitask_policy_distillation", tmp_path / "logs"
    args = ["--algo", algo, "--env", "CartPole-v1", "-f", str(logs), "--seed", "0", "--num-threads", "1", "-n", "300"]
    params = ["-params", "learning_starts:50", "batch_size:16", "buffer_size:1000", "student_policy_kwargs:dict(net_arch=[8])"]
    run_zoo("train", *args, "--eval-freq", "100", "--eval-episodes", "2", *params, cwd=tmp_path)
    run = logs / algo / "CartPole-v1_1"
    model = ALGOS[algo].load(run / "CartPole-v1.zip")
    assert model.tasks == ["CartPole-v1", "Acrobot-v1"] and model.num_timesteps == 300
    assert (run / "best_model.zip").is_file()
    assert set(model.evaluate_members(n_eval_episodes=1)) == {
        f"{task}/{member}" for task in model.tasks for member in ("teacher", "student")
    }
    output = run_zoo("train", *args, "--trained-agent", str(run / "CartPole-v1.zip"), *params, cwd=tmp_path)
    assert "Loading pretrained agent" in output
    continued = ALGOS[algo].load(logs / algo / "CartPole-v1_2" / "CartPole-v1.zip")
    before, after = model.policy.student.state_dict(), continued.policy.student.state_dict()
    assert any(not th.equal(before[key], after[key]) for key in before)


def test_train_help_lists_algorithms_and_heartbeat_options(tmp_path):
    output = run_zoo("train", "-h", cwd=tmp_path)
    # rl-zoo3's parser, built after the registration: its --algo choices include ours
    assert all(algo in output.split("--algo {")[1].split("}")[0].split(",") for algo in REGISTERED)
    assert "--heartbeat-interval N" in output and "--heartbeat-grace-period S" in output


def test_train_heartbeat_needs_rdb_storage(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sb3_distill.train",
            *train_args("ensemble_distill_dqn", tmp_path),
            "-optimize",
            "--heartbeat-interval",
            "1",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and "`--heartbeat-interval` needs an RDB `--storage`" in result.stderr


def test_wheel_install_outside_checkout(tmp_path):
    """A non-editable install finds its zoo_configs without the checkout (they are installed as data files)."""
    # build from a copy of the sources, so that the build does not write into the checkout
    source = tmp_path / "source"
    for directory in ("sb3_distill", "zoo_configs"):
        shutil.copytree(ROOT / directory, source / directory, ignore=shutil.ignore_patterns("__pycache__"))
    for file in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / file, source / file)
    pip = [sys.executable, "-m", "pip"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(source)], check=True
    )
    (wheel,) = (tmp_path / "dist").glob("sb3_distill-*.whl")
    # A fresh environment that sees this one's dependencies (a .pth) but not its editable sb3_distill (that .pth
    # file is only read in this environment's own site-packages); pip leaves the outer install alone
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    (site_packages,) = venv.glob("lib/python*/site-packages")
    outer_site_packages = [path for path in sys.path if path.endswith("site-packages")]
    (site_packages / "outer_environment.pth").write_text("\n".join(outer_site_packages))
    subprocess.run([*pip, "--python", str(python), "install", "--no-deps", "-q", str(wheel)], check=True)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    algo = "ensemble_distill_dqn"
    result = subprocess.run(
        [str(python), "-m", "sb3_distill.train", *train_args(algo, tmp_path / "logs", 200), "--eval-freq", "-1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    installed_config = venv / "share" / "sb3_distill" / "zoo_configs" / f"{algo}.yml"
    assert f"Loading hyperparameters from: {installed_config}" in result.stdout
    assert (tmp_path / "logs" / algo / "CartPole-v1_1" / "CartPole-v1.zip").is_file()
