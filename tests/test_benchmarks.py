"""Smoke tests: the benchmark scripts run (tiny budgets), so that they do not rot between benchmark runs."""

import argparse
import json

import pytest

from benchmarks import control_policy, realtime_vs_sequential, throughput


def test_throughput_runs(monkeypatch):
    # torch.compile is tested in test_run.py; here it would only add compile time
    monkeypatch.setattr(throughput, "ALGOS", tuple(algo for algo in throughput.ALGOS if "compile" not in algo))
    args = argparse.Namespace(
        learning_starts=50,
        chunk=50,
        steps=100,
        batch_size=16,
        net_arch=[16],
        student_net_arch=[8],
        realtime_students=[[8], [4]],
        n_teachers=2,
        device="cpu",
    )
    steps_per_s = throughput.run_repeat(args, seed=0)
    assert set(steps_per_s) == set(throughput.ALGOS) and all(value > 0 for value in steps_per_s.values())


@pytest.mark.parametrize("target, reached", [(-1.0, True), (1e9, False)])
def test_realtime_vs_sequential_runs(monkeypatch, target, reached):
    settings = dict(realtime_vs_sequential.SETTINGS["CartPole-v1"])
    settings["dqn"] = dict(settings["dqn"], learning_starts=100, train_freq=50, gradient_steps=5)
    monkeypatch.setitem(realtime_vs_sequential.SETTINGS, "CartPole-v1", settings | dict(target=target, budget=400))
    args = argparse.Namespace(eval_freq=200, max_distill_steps=400, distill_learning_rate=1e-3)
    realtime = realtime_vs_sequential.realtime("CartPole-v1", 0, args)
    sequential = realtime_vs_sequential.sequential("CartPole-v1", 0, args)
    assert realtime["reached"] is reached and sequential["reached"] is reached
    assert realtime["env_steps"] == (200 if reached else 400)


def test_control_policy_runs(monkeypatch, tmp_path):
    settings = dict(control_policy.SETTINGS["CartPole-v1"], teacher_timesteps=300, budget=400, min_teacher=-1e9)
    monkeypatch.setitem(control_policy.SETTINGS, "CartPole-v1", settings)
    teacher_settings = dict(control_policy.TEACHER_SETTINGS["CartPole-v1"])
    teacher_settings["dqn"] = dict(teacher_settings["dqn"], learning_starts=100, train_freq=50, gradient_steps=5)
    monkeypatch.setitem(control_policy.TEACHER_SETTINGS, "CartPole-v1", teacher_settings)
    monkeypatch.setattr(control_policy, "DISTILL", dict(control_policy.DISTILL, learning_starts=100))
    args = argparse.Namespace(seeds=[0], eval_freq=200, eval_episodes=1, teachers=tmp_path / "teachers", output=tmp_path)
    result = control_policy.run("CartPole-v1", 0, args)
    assert (tmp_path / "teachers" / "dqn_CartPole-v1_seed0.zip").exists()
    assert set(result["variants"]) == {name for name, _ in control_policy.VARIANTS}
    for variant in result["variants"].values():
        assert variant["steps"] == [200, 400] and len(variant["returns"]) == 2
    # The teacher is cached: a second call loads the same weights
    cached = control_policy.get_teacher("CartPole-v1", 0, tmp_path / "teachers")
    assert cached.num_timesteps == 300
    assert "| teacher-driven |" in control_policy.report("CartPole-v1", [result], args)
    control_policy.plot("CartPole-v1", [result], tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_control_policy_runs_with_a_sac_teacher(monkeypatch, tmp_path):
    settings = dict(control_policy.SETTINGS["Pendulum-v1"], teacher_timesteps=150, budget=200, min_teacher=-1e9)
    monkeypatch.setitem(control_policy.SETTINGS, "Pendulum-v1", settings)
    monkeypatch.setattr(control_policy, "SAC_TEACHER", dict(policy_kwargs=dict(net_arch=[16]), learning_starts=50))
    monkeypatch.setattr(control_policy, "DISTILL", dict(control_policy.DISTILL, learning_starts=50))
    args = argparse.Namespace(seeds=[0], eval_freq=100, eval_episodes=1, teachers=tmp_path / "teachers", output=tmp_path)
    result = control_policy.run("Pendulum-v1", 0, args)
    assert (tmp_path / "teachers" / "sac_Pendulum-v1_seed0.zip").exists()
    # NLL does not exist for a Gaussian teacher: that variant is left out; MSE is on the means
    assert "teacher-driven, nll" not in result["variants"] and "teacher-driven, mse" in result["variants"]
    assert "| student-driven |" in control_policy.report("Pendulum-v1", [result], args)
    control_policy.plot("Pendulum-v1", [result], tmp_path / "curves.png")


def test_ensemble_scale_runs(monkeypatch, tmp_path):
    from benchmarks import ensemble_scale

    tiny = dict(
        n_timesteps=300,
        policy="MlpPolicy",
        learning_starts=100,
        batch_size=16,
        train_freq=4,
        policy_kwargs=dict(net_arch=[16]),
        student_policy_kwargs=dict(net_arch=[8]),
    )
    real_config = ensemble_scale.zoo_hyperparams("CartPole-v1")
    assert real_config["n_timesteps"] == 40_000 and callable(real_config["learning_rate"])
    monkeypatch.setattr(ensemble_scale, "zoo_hyperparams", lambda env_id: dict(tiny))
    argv = ["ensemble_scale.py", "--env", "CartPole-v1", "--eval-freq", "150", "--eval-episodes", "1"]
    argv += ["--final-episodes", "1", "--output", str(tmp_path)]
    monkeypatch.setattr("sys.argv", [*argv, "--seeds", "0", "--variants", "raw", "spread+returns"])
    ensemble_scale.main()
    # --append adds a seed to the saved runs and skips those already there
    monkeypatch.setattr("sys.argv", [*argv, "--seeds", "0", "1", "--variants", "raw", "--append"])
    ensemble_scale.main()
    runs = json.loads((tmp_path / "ensemble_scale_CartPole-v1.json").read_text())
    assert sorted((run["variant"], run["seed"]) for run in runs) == [("raw", 0), ("raw", 1), ("spread+returns", 0)]
    weighted = next(run for run in runs if run["variant"] == "spread+returns")
    assert len(weighted["curve"]) == 2 and weighted["final_teacher_weights"] is not None
    assert set(weighted["final"]) == {"teacher_0", "teacher_1", "teacher_2", "student"}
    table = (tmp_path / "ensemble_scale_CartPole-v1.md").read_text()
    assert "| raw | 300 | 2 |" in table and "| spread+returns | 300 | 1 |" in table
    assert (tmp_path / "ensemble_scale_CartPole-v1.png").exists()
