"""Smoke tests: the benchmark scripts run (tiny budgets), so that they do not rot between benchmark runs."""

import argparse
import json

import gymnasium as gym
import numpy as np
import pytest
import torch as th

from benchmarks import control_policy, inference_latency, realtime_vs_sequential, throughput


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


@pytest.mark.parametrize("suite", ["ppo", "multitask"])
def test_throughput_pair_suites_run(suite):
    args = argparse.Namespace(
        learning_starts=50, chunk=64, steps=128, batch_size=16, net_arch=[16], ppo_n_steps=64, ppo_n_epochs=1, device="cpu"
    )
    algos, make = (throughput.PPO_ALGOS, throughput.make_ppo_model)
    if suite == "multitask":
        algos, make = (throughput.MULTITASK_ALGOS, throughput.make_multitask_model)
    steps_per_s = throughput.run_alternating({algo: make(algo, args, 0) for algo in algos}, args)
    assert set(steps_per_s) == set(algos) and all(value > 0 for value in steps_per_s.values())


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


def test_distill_ppo_kickstart_runs(monkeypatch, tmp_path):
    from benchmarks import distill_ppo_kickstart

    settings = dict(distill_ppo_kickstart.SETTINGS["CartPole-v1"], teacher_timesteps=256, budget=256, n_envs=2)
    settings["ppo"] = dict(settings["ppo"], batch_size=64)
    monkeypatch.setitem(distill_ppo_kickstart.SETTINGS, "CartPole-v1", settings)
    args = argparse.Namespace(coef=1.0, eval_freq=128, eval_episodes=1)
    teacher = distill_ppo_kickstart.get_teacher("CartPole-v1", tmp_path / "teachers")
    assert (tmp_path / "teachers" / "ppo_CartPole-v1.zip").exists()
    variants = {
        name: distill_ppo_kickstart.run_variant("CartPole-v1", 0, kwargs, teacher, args)
        for name, kwargs in distill_ppo_kickstart.VARIANTS
    }
    # evaluations at step 0, every 128 steps, and at the end
    assert all(curve["steps"][0] == 0 and curve["steps"][-1] == 256 for curve in variants.values())
    runs = [dict(seed=0, teacher=20.0, variants=variants)]
    assert "| kickstarting (on-policy distill + R) |" in distill_ppo_kickstart.report("CartPole-v1", runs, args)
    distill_ppo_kickstart.plot("CartPole-v1", runs, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_distill_ppo_chain_runs(tmp_path):
    import torch as th

    from benchmarks import distill_ppo_chain

    # The teachers: optimal and adversarial policies, both with the optimal teacher's values
    states = th.arange(distill_ppo_chain.N_STATES)[:, None].float()
    for adversarial in (False, True):
        policy = distill_ppo_chain.make_teacher(adversarial).policy
        probs_right = policy.get_distribution(states).distribution.probs[:, 1]
        assert th.all(probs_right < 1e-3) if adversarial else th.all(probs_right > 1 - 1e-3)
        values = policy.predict_values(states).flatten()
        assert th.all(values[1:] > values[:-1]) and values[-2].item() == 1.0
    args = argparse.Namespace(budget=256, eval_freq=128)
    result = dict(seed=0, optimal={}, adversarial={})
    for teacher_name in ("optimal", "adversarial"):
        for name, kwargs in distill_ppo_chain.VARIANTS:
            result[teacher_name][name] = distill_ppo_chain.run(0, teacher_name, name, kwargs, args)
    assert "| adversarial | TD + V_pi |" in distill_ppo_chain.report([result], args)
    distill_ppo_chain.plot([result], tmp_path / "chain.png")


def test_distill_ppo_actions_runs(tmp_path):
    import torch as th

    from benchmarks import distill_ppo_actions

    # The teacher takes the shortest path with probability 0.9, whatever the number of actions
    for n_actions in (4, 64):
        probs = th.softmax(distill_ppo_actions.teacher_logits(n_actions).T, dim=-1)
        assert th.allclose(probs.max(dim=-1).values, th.tensor(0.9))
    args = argparse.Namespace(budget=256, eval_freq=128, n_actions=[4, 8])
    result = dict(seed=0, results={})
    for n_actions in args.n_actions:
        result["results"][str(n_actions)] = {
            rule: distill_ppo_actions.run(0, n_actions, rule, args) for rule in distill_ppo_actions.RULES
        }
    assert "| 8 | expected_entropy_regularised |" in distill_ppo_actions.report([result], args)
    distill_ppo_actions.plot([result], args, tmp_path / "actions.png")


def test_distill_ppo_noisy_teacher_runs(tmp_path):
    import numpy as np
    import torch as th

    from benchmarks import distill_ppo_noisy_teacher as noisy

    probs = noisy.teacher_probs(0)
    # 6 of the 24 non-goal states have another preferred move; the teacher's value is below the optimum's
    shortest = [0 if state % noisy.SIZE < noisy.SIZE - 1 else 1 for state in range(noisy.N_STATES - 1)]
    assert sum(probs[state].argmax() != best for state, best in enumerate(shortest)) == 6
    teacher_value, optimum = noisy.reference_values(0)
    assert 0 < teacher_value < optimum == pytest.approx(noisy.GAMMA**7)
    teacher = noisy.make_teacher(probs)
    states = th.arange(noisy.N_STATES, dtype=th.float32)[:, None]
    assert np.allclose(teacher.policy.get_distribution(states).distribution.probs.detach().numpy(), probs, atol=1e-6)
    args = argparse.Namespace(budget=256, eval_freq=128, teacher_seed=0)
    result = dict(seed=0, variants={name: noisy.run(0, kwargs, teacher, args) for name, kwargs in noisy.VARIANTS})
    assert "| on-policy distill + R, value gated |" in noisy.report([result], args)
    noisy.plot([result], args, tmp_path / "noisy.png")


def test_inference_latency_runs(tmp_path):
    pytest.importorskip("onnxruntime")
    args = argparse.Namespace(cases=["atari", "mlp"], batch_sizes=[1, 2], repeats=1, min_time=0.0)
    rows = inference_latency.run(args)
    assert [(row["network"], row["batch"]) for row in rows] == [
        (name, batch) for case in args.cases for name, _ in inference_latency.NETWORKS[case] for batch in (1, 2)
    ]
    for row in rows:
        assert all(len(times) == 1 and times[0] > 0 for times in row["ms"].values())
    # Counted from the layer shapes: the Nature-CNN (3.28M + 2.65M + 1.81M + 1.61M + 3k MACs) and a 4-64-64-2 MLP
    assert rows[0]["macs"] == 20 * 20 * 32 * 4 * 64 + 9 * 9 * 64 * 32 * 16 + 7 * 7 * 64 * 64 * 9 + 3136 * 512 + 512 * 6
    assert rows[-1]["macs"] == 4 * 16 + 16 * 16 + 16 * 2
    text = inference_latency.report(rows, args, (0.0, 0.0))
    assert "| student1 {16,16,16,64} | 69,494 |" in text and "Deployed student (onnxruntime)" in text
    inference_latency.plot(rows, tmp_path / "latency.png")
    assert (tmp_path / "latency.png").stat().st_size > 0


def test_online_distillation_runs(monkeypatch, tmp_path):
    """The two processes' functions, run one after the other in this process with tiny budgets."""
    from benchmarks import online_distillation

    teacher_settings = dict(online_distillation.TEACHER_SETTINGS["Acrobot-v1"])
    teacher_settings["dqn"] = dict(teacher_settings["dqn"], learning_starts=50, train_freq=50, gradient_steps=2)
    monkeypatch.setitem(online_distillation.TEACHER_SETTINGS, "Acrobot-v1", teacher_settings)
    monkeypatch.setattr(online_distillation, "STUDENT", dict(online_distillation.STUDENT, learning_starts=50))
    args = argparse.Namespace(teacher_timesteps=300, save_freq=100, refresh=50, eval_freq=100, eval_episodes=1, after=100)
    online_distillation.train_teacher(0, str(tmp_path), args)
    assert (tmp_path / "done").exists() and len(list(tmp_path.glob("rl_model_*_steps.zip"))) == 3
    online_distillation.distill_student(0, str(tmp_path), args, str(tmp_path / "curve.json"))
    curve = json.loads((tmp_path / "curve.json").read_text())
    # The student saw the last checkpoint and stopped `after` steps later
    assert curve[-1]["teacher_steps"] == 300 and curve[-1]["student_steps"] == 100
    # 90 % of the final teacher's normalised return; a teacher that never reached the goal gives no threshold
    points = [dict(mean=-500.0), dict(mean=-95.0), dict(mean=-300.0), dict(mean=-100.0)]
    assert online_distillation.after_threshold(points, -100.0) == dict(
        reached=True, mean=-165.0, dip=-300.0, std=pytest.approx(95.48, abs=0.01)
    )
    assert not online_distillation.after_threshold(points, -500.0)["reached"]
    # The student's evaluations on the teacher's last checkpoint are reported apart
    teacher_curve = [dict(teacher_steps=steps, mean=p["mean"]) for steps, p in zip((150, 200, 250, 300), points, strict=True)]
    run_ = dict(seed=0, wall_s=1.0, teacher_curve=teacher_curve, student_curve=curve)
    stats = online_distillation.summary(run_, args)
    assert stats["final_teacher"] == -100.0 and stats["student_final"] == np.mean(
        [p["mean"] for p in curve if p["teacher_steps"] == 300]
    )
    assert "| 0 | -100.0 |" in online_distillation.report([run_], args)


def test_multitask_distillation_runs(monkeypatch, tmp_path):
    from benchmarks import multitask_distillation

    tasks = {task: dict(value, teacher_timesteps=200) for task, value in multitask_distillation.TASKS.items()}
    monkeypatch.setattr(multitask_distillation, "TASKS", tasks)
    monkeypatch.setattr(multitask_distillation, "STUDENTS", {"tiny": [8]})
    monkeypatch.setattr(multitask_distillation, "DISTILL", dict(multitask_distillation.DISTILL, learning_starts=50))
    for env_id in tasks:
        settings = dict(multitask_distillation.TEACHER_SETTINGS[env_id])
        settings["dqn"] = dict(settings["dqn"], learning_starts=50, train_freq=50, gradient_steps=2)
        monkeypatch.setitem(multitask_distillation.TEACHER_SETTINGS, env_id, settings)
    args = argparse.Namespace(timesteps=200, eval_episodes=1, teachers=tmp_path / "teachers", output=tmp_path)
    result = multitask_distillation.run(0, args)
    assert (tmp_path / "teachers" / "dqn_Acrobot-v1_seed0.zip").exists()
    student = result["students"]["tiny"]
    assert set(student["ratios"]) == set(tasks) and student["geometric_mean"] > 0
    assert "geometric mean (Rusu: 0.893)" in multitask_distillation.report([result], args)


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
    # --shared-teachers: the variants of a seed in one run, one saved result per variant
    monkeypatch.setattr("sys.argv", [*argv, "--seeds", "2", "--variants", "raw", "returns", "--append", "--shared-teachers"])
    ensemble_scale.main()
    runs = json.loads((tmp_path / "ensemble_scale_CartPole-v1.json").read_text())
    shared = [run for run in runs if run["seed"] == 2]
    assert sorted(run["variant"] for run in shared) == ["raw", "returns"]
    assert all(run["shared_teachers_with"] == ["raw", "returns"] and len(run["curve"]) == 2 for run in shared)
    assert shared[0]["final"]["teacher_0"] == shared[1]["final"]["teacher_0"]


def test_ensemble_scale_shadow_students_equal_separate_runs():
    """``--shared-teachers``: each shadow student is trained exactly as a separate run of its variant (the
    teachers and the first variant's student are untouched by the shadows)."""
    from stable_baselines3.common.monitor import Monitor

    from benchmarks.ensemble_scale import VARIANTS, DiagnosedEvalCallback, SharedTeachersEnsemble

    config = dict(
        learning_starts=50,
        batch_size=16,
        train_freq=4,
        gradient_steps=-1,
        learning_rate=lambda progress: 1e-3 * progress,
        max_grad_norm=0.5,
        policy_kwargs=dict(net_arch=[16]),
        student_policy_kwargs=dict(net_arch=[8]),
        seed=3,
    )

    def train(variant: str, shadows: list[str]) -> SharedTeachersEnsemble:
        model = SharedTeachersEnsemble("MlpPolicy", "CartPole-v1", **config, **VARIANTS[variant])
        model.attach_shadow_students({variant: VARIANTS[variant] for variant in shadows})
        callback = DiagnosedEvalCallback(Monitor(gym.make("CartPole-v1")), eval_freq=100, n_eval_episodes=2)
        return model.learn(400, callback=callback)

    shared = train("raw", ["spread", "returns", "spread+returns"])
    for variant in ("raw", "spread", "returns", "spread+returns"):
        separate = train(variant, [])
        student = shared.student if variant == "raw" else shared.shadows[variant][0]
        for (name, expected), actual in zip(separate.student.state_dict().items(), student.state_dict().values(), strict=True):
            assert th.allclose(expected, actual, atol=1e-6), (variant, name)
        for expected, actual in zip(separate.q_net.parameters(), shared.q_net.parameters(), strict=True):
            assert th.equal(expected, actual)
    # The shadows did learn (not left at their initial weights) and differ from each other
    spread, returns = shared.shadows["spread"][0], shared.shadows["returns"][0]
    assert not all(th.equal(a, b) for a, b in zip(spread.parameters(), returns.parameters(), strict=True))
    assert shared.shadow_weights["returns"] is not None and shared.shadow_weights["spread"] is None


def test_distill_ppo_gridworld_mdp(monkeypatch):
    from benchmarks import distill_ppo_gridworld as grid

    mdp = grid.make_mdp(0)
    # The same MDP from the same seed, another from another seed
    assert np.array_equal(mdp.walls, grid.make_mdp(0).walls) and not np.array_equal(mdp.walls, grid.make_mdp(1).walls)
    assert mdp.n_cells == 400 and mdp.start == 210
    assert not (mdp.walls[mdp.start] or mdp.terminal[mdp.start]) and mdp.rewards[mdp.start] == 0.0
    np.testing.assert_allclose(mdp.transitions.sum(axis=-1), 1.0)
    # No move from a free cell enters a wall; a move into the border stays with probability 1 - noise + noise / 4 at least
    assert mdp.transitions[~mdp.walls][:, :, mdp.walls].sum() == 0.0
    assert mdp.transitions[0, 3, 0] >= 1 - grid.NOISE + grid.NOISE / 4
    assert 0.1 < mdp.walls.mean() < 0.3 and set(np.unique(mdp.rewards[mdp.terminal])) <= {10.0, -10.0}

    # Exact policy evaluation against Monte Carlo on an empty 5x5 grid with a goal next to the start and a hazard
    for name in ("P_WALL", "P_GOAL", "P_PIT", "P_HAZARD"):
        monkeypatch.setattr(grid, name, 0.0)
    small = grid.make_mdp(0, size=5, p_end=0.2)
    assert small.start == 12 and not small.walls.any() and not small.terminal.any() and not small.rewards.any()
    small.terminal[13], small.rewards[13], small.rewards[7] = True, 10.0, -1.0
    probs = np.tile([0.4, 0.2, 0.2, 0.2], (small.n_cells, 1))
    value, occupancy = grid.evaluate(small, probs)
    env, rng = grid.GridWorld(small), np.random.default_rng(0)
    env.reset(seed=0)
    returns, lengths = [], []
    for _ in range(3000):
        state, _ = env.reset()
        total, steps, done = 0.0, 0, False
        while not done:
            state, reward, done, _, _ = env.step(int(rng.choice(4, p=probs[state])))
            total, steps = total + reward, steps + 1
        returns.append(total)
        lengths.append(steps)
    assert abs(np.mean(returns) - value) < 4 * np.std(returns) / np.sqrt(len(returns))
    # The occupancy counts the steps where the agent acts: its sum is the mean episode length
    assert abs(np.mean(lengths) - occupancy.sum()) < 4 * np.std(lengths) / np.sqrt(len(lengths))


def test_distill_ppo_gridworld_teacher_and_runs(tmp_path):
    import torch as th

    from benchmarks import distill_ppo_gridworld as grid
    from sb3_distill import DistillPPO
    from sb3_distill.common.teachers import DQNTeacher, Teacher

    mdp, teacher, reference = grid.prepare(2, temperature=0.5, size=7, q_steps=20_000)
    # Q-learning learned something: the greedy Q policy beats the uniform one
    assert reference["greedy_return"] > reference["uniform_return"] + 1.0
    # The DQN holds the Q-table: DQNTeacher serves softmax(Q / tau), in the teacher and inside DistillPPO
    states = th.arange(mdp.n_cells, dtype=th.float32)[:, None]
    adapter = Teacher.for_policy(teacher.policy)
    assert isinstance(adapter, DQNTeacher)
    expected = reference["teacher_probs"]
    np.testing.assert_allclose(adapter.distribution(states, 0.5).probs.detach().numpy(), expected, atol=1e-5)
    env = grid.GridWorld(mdp)
    model = DistillPPO("MlpPolicy", env, teacher=teacher, temperature=0.5, **grid.PPO_KWARGS)
    served = model.teacher_adapter.distribution(model.policy.obs_to_tensor(np.arange(mdp.n_cells))[0], 0.5)
    np.testing.assert_allclose(served.probs.detach().numpy(), expected, atol=1e-5)
    assert np.isclose(grid.evaluate(mdp, expected)[0], reference["teacher_return"])

    args = argparse.Namespace(budget=512, eval_freq=256, temperature=0.5, learning_rate=3.0)
    curves = {name: grid.run(mdp, teacher, reference, kwargs, 0, args) for name, kwargs in grid.CONTROLS}
    # The untrained student is the uniform policy: normalised return 0
    assert all(curve["steps"][0] == 16 and abs(curve["score"][0]) < 0.05 for curve in curves.values())
    assert all(curve["steps"][-1] == 512 for curve in curves.values())
    # Recovery steps: the first evaluation at the threshold
    assert grid.steps_to(dict(steps=[1, 2, 3], score=[0.1, 0.95, 0.5]), 0.9) == 2.0
    assert grid.steps_to(dict(steps=[1, 2], score=[0.1, 0.5]), 0.9) == np.inf
    mdps = [dict(mdp=2, reference=reference, curves=curves), dict(mdp=3, skipped=True, reference=reference)]
    text = grid.report(mdps, args)
    assert "1 MDPs (1 skipped" in text and "| uniform |" in text and "student-driven sooner" in text
    grid.plot(mdps, args, tmp_path / "grid.png")
    assert (tmp_path / "grid.png").stat().st_size > 0


def _append_runs(path, first, count, start):
    from benchmarks import ensemble_scale

    start.wait()
    for index in range(first, first + count):
        ensemble_scale.save_runs(path, [{"variant": "v", "seed": index, "timesteps": 1, "curve": list(range(200))}])


def test_concurrent_saves_keep_every_run(tmp_path):
    """Several benchmark processes append to one results file: with the lock and the atomic write no process
    reads half a file or drops another's run."""
    import multiprocessing

    path = tmp_path / "runs.json"
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    workers = [context.Process(target=_append_runs, args=(path, 100 * worker, 30, start)) for worker in range(4)]
    for worker in workers:
        worker.start()
    start.set()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    seeds = sorted(run["seed"] for run in json.loads(path.read_text()))
    assert seeds == sorted(100 * worker + index for worker in range(4) for index in range(30))
    assert not list(tmp_path.glob("*.tmp"))
