"""Smoke tests: the benchmark scripts run (tiny budgets), so that they do not rot between benchmark runs."""

import argparse

import pytest

from benchmarks import realtime_vs_sequential, throughput


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
