"""The MinAtar benchmark set-up: env wrapper, network family, every algorithm on a MinAtar game, the runner."""

import json

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3 import DQN
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.vec_env import VecTransposeImage

from sb3_distill import EnsembleDistillDQN, PolicyDistillation, RealTimeDistillDQN

minatar = pytest.importorskip("benchmarks.minatar", reason="needs the `minatar` package (bench / tests extras)")
minatar_summary = pytest.importorskip("benchmarks.minatar_summary", reason="needs the `minatar` package")

GAME = "Breakout"
TINY = dict(learning_starts=50, buffer_size=500, batch_size=8, train_freq=4, target_update_interval=40)


@pytest.mark.parametrize("game", minatar.GAMES)
def test_wrapper_gives_channel_first_uint8_images(game):
    env = gym.make(minatar.env_id(game))
    raw = env.unwrapped.game
    obs, _ = env.reset(seed=0)
    height, width, channels = raw.state_shape()
    assert env.observation_space == gym.spaces.Box(0, 255, (channels, height, width), np.uint8)
    assert obs.dtype == np.uint8 and obs.shape == (channels, height, width)
    for _ in range(20):
        obs, *_ = env.step(env.action_space.sample())
        # The same frame as MinAtar's, channel first, True -> 255
        np.testing.assert_array_equal(obs, np.transpose(raw.state(), (2, 0, 1)) * 255)
    assert set(np.unique(obs)) <= {0, 255}
    # SB3 sees an image, channel first (no VecTransposeImage) and divides it by 255 back to {0, 1}
    assert is_image_space(env.observation_space, check_channels=False)
    assert env.spec.max_episode_steps == minatar.MAX_EPISODE_STEPS


def test_envs_registered_once_and_seeded():
    minatar.register_minatar_envs()  # a second call keeps the existing registrations
    assert sum(key.startswith(f"{minatar.ENV_PREFIX}/") for key in gym.registry) == len(minatar.GAMES)
    env_a, env_b = gym.make(minatar.env_id(GAME)), gym.make(minatar.env_id(GAME))
    obs_a, obs_b = env_a.reset(seed=3)[0], env_b.reset(seed=3)[0]
    for _ in range(50):
        action = 1
        obs_a, obs_b = env_a.step(action)[0], env_b.step(action)[0]
        np.testing.assert_array_equal(obs_a, obs_b)


def test_no_transpose_wrapper_added():
    model = DQN("CnnPolicy", minatar.env_id(GAME), policy_kwargs=minatar.network(*minatar.TEACHER_NET), **TINY)
    assert not isinstance(model.get_env(), VecTransposeImage)


@pytest.mark.parametrize(
    "filters, units, expected",
    # Breakout: 4 channels, 3 actions; conv (4*9+1)*filters, fc (filters*8*8+1)*units, head (units+1)*3
    [(16, 128, 592 + 131_200 + 387), (8, 64, 296 + 32_832 + 195), (4, 18, 148 + 4_626 + 57), (2, 16, 74 + 2_064 + 51)],
)
def test_network_parameter_counts(filters, units, expected):
    env = gym.make(minatar.env_id(GAME))
    extractor = minatar.MinAtarCNN(env.observation_space, features_dim=units, filters=filters)
    model = DQN("CnnPolicy", env, policy_kwargs=minatar.network(filters, units), **TINY)
    assert sum(p.numel() for p in model.q_net.parameters()) == expected
    obs = th.as_tensor(np.stack([env.observation_space.sample()] * 5)).float()
    assert extractor(obs).shape == (5, units)
    assert model.q_net(obs).shape == (5, 3)


def test_student_family_matches_the_papers_ratios():
    counts = minatar.parameter_counts(GAME)
    ratios = {name: 100 * counts[name] / counts["teacher"] for name in minatar.STUDENT_NETS}
    # The papers: Net1 25.2 %, Net2 6.7 %, student1 / Net3 3.7 %, student2 / Net5 1.7 %
    for name, paper in {"net1": 25.2, "net2": 6.7, "student1": 3.7, "student2": 1.7}.items():
        assert abs(ratios[name] - paper) < 0.5, (name, ratios[name])
    assert "| student1 {4, 18} | 4831 (3.7 %)" in minatar.parameter_table([GAME])


def test_bad_observation_space():
    with pytest.raises(ValueError, match="MinAtarCNN"):
        minatar.MinAtarCNN(gym.spaces.Box(0, 1, (4,)))


def _algorithm(name, env_id):
    teacher_kwargs = dict(**minatar.network(*minatar.TEACHER_NET), **minatar.OPTIMIZER)
    students = [minatar.network(*minatar.STUDENT_NETS[name]) for name in ("student1", "student2")]
    if name == "rtpd":
        return RealTimeDistillDQN("CnnPolicy", env_id, policy_kwargs=teacher_kwargs, students=students, **TINY)
    if name == "rtpd-stacked":
        return RealTimeDistillDQN(
            "CnnPolicy", env_id, policy_kwargs=teacher_kwargs, students=students, stack_teacher=True, **TINY
        )
    if name == "ensemble":
        return EnsembleDistillDQN(
            "CnnPolicy", env_id, policy_kwargs=teacher_kwargs, student_policy_kwargs=students[0], n_teachers=3, **TINY
        )
    teacher = DQN("CnnPolicy", env_id, policy_kwargs=teacher_kwargs, **TINY)
    return PolicyDistillation(
        "CnnPolicy",
        env_id,
        teacher=teacher,
        student_policy_kwargs=students[0],
        **{key: value for key, value in TINY.items() if key != "target_update_interval"},
    )


@pytest.mark.parametrize("name", ["rtpd", "rtpd-stacked", "ensemble", "pd"])
def test_algorithms_run_with_minatar_students(name, tmp_path):
    model = _algorithm(name, minatar.env_id(GAME))
    model.learn(200)
    counts = minatar.parameter_counts(GAME)
    if name.startswith("rtpd"):
        ratios = model.compression_ratios
        assert ratios["student_0"] == pytest.approx(counts["student1"] / counts["teacher"])
        assert ratios["student_1"] == pytest.approx(counts["student2"] / counts["teacher"])
    else:
        assert model.compression_ratio == pytest.approx(counts["student1"] / counts["teacher"])
    # The custom extractor is saved by reference and rebuilt on load, with the same predictions
    obs = np.stack([model.observation_space.sample() for _ in range(4)])
    model.save(tmp_path / "model.zip")
    loaded = type(model).load(tmp_path / "model.zip", env=model.get_env())
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])


@pytest.mark.parametrize(
    "student, teacher, expected",
    [
        ([1.0, 2.0, 4.0], [2.0, 2.0, 4.0], (100.0, 100 * (0.5 + 1 + 1) / 3)),
        ([0.0, 3.0], [0.0, 2.0], (150.0, 150.0)),  # an evaluation where the teacher scored 0 is left out
        ([1.0], [0.0], (np.nan, np.nan)),
    ],
)
def test_percentages(student, teacher, expected):
    np.testing.assert_allclose(minatar.percentages(student, teacher), expected)


def test_runner_smoke(monkeypatch, tmp_path):
    settings = minatar.dqn_settings

    def tiny(timesteps, train_freq):
        return settings(timesteps, train_freq) | dict(learning_starts=50, buffer_size=500, batch_size=8)

    monkeypatch.setattr(minatar, "dqn_settings", tiny)
    # One student: one run per student for PD and the ensemble
    monkeypatch.setattr(minatar, "STUDENTS_RUN", ("student1",))
    argv = ["--games", GAME, "--seeds", "0", "--timesteps", "200", "--eval-freq", "100", "--eval-episodes", "1"]
    # PolicyDistillation trains the teacher it needs first and caches it
    minatar.main([*argv, "--variants", "pd", "rtpd-rkl", "ensemble-mean_probs", "--output", str(tmp_path)])
    runs = json.loads((tmp_path / f"minatar_{GAME}.json").read_text())["runs"]
    assert sorted(run["variant"] for run in runs) == ["ensemble-mean_probs", "pd", "rtpd-rkl", "teacher"]
    assert (tmp_path / "models" / f"dqn_{GAME}_seed0_200steps_tf4.zip").exists()
    by_variant = {run["variant"]: run for run in runs}
    assert by_variant["teacher"]["steps"] == [100, 200]
    assert set(by_variant["rtpd-rkl"]["returns"]) == {"teacher", "student1"}
    assert set(by_variant["ensemble-mean_probs"]["returns"]) == {"teacher_0", "teacher_1", "teacher_2", "student1"}
    assert set(by_variant["pd"]["returns"]) == {"student1"}
    table = (tmp_path / f"minatar_{GAME}.md").read_text()
    assert "| rtpd-rkl | student1 | [0] |" in table and "| pd | student1 | [0] |" in table
    assert (tmp_path / f"minatar_{GAME}.png").stat().st_size > 0
    assert "| rtpd-rkl | student1 | 0 |" in (tmp_path / "minatar_summary.md").read_text()
    # --append keeps the saved runs and skips those already there (no training: the saved seconds stay)
    seconds = by_variant["rtpd-rkl"]["seconds"]
    minatar.main([*argv, "--variants", "rtpd-rkl", "--append", "--output", str(tmp_path)])
    runs = json.loads((tmp_path / f"minatar_{GAME}.json").read_text())["runs"]
    assert len(runs) == 4 and {run["variant"]: run for run in runs}["rtpd-rkl"]["seconds"] == seconds
    # --evaluate-teachers: the cached teacher's final network on more episodes, saved in its run; no training
    # (seed 5 has no teacher: skipped)
    minatar.main([*argv, "--seeds", "0", "5", "--evaluate-teachers", "2", "--output", str(tmp_path)])
    runs = {run["variant"]: run for run in json.loads((tmp_path / f"minatar_{GAME}.json").read_text())["runs"]}
    assert len(runs) == 4 and runs["rtpd-rkl"]["seconds"] == seconds
    final = runs["teacher"]["final_evaluation"]
    assert final["episodes"] == 2 and np.isfinite(final["mean"]) and final["std"] >= 0
    assert f"± {final['std']:.1f} on 2)" in (tmp_path / f"minatar_{GAME}.md").read_text()
    with pytest.raises(ValueError, match="--evaluate-teachers"):
        minatar.main([*argv, "--evaluate-teachers", "-1", "--output", str(tmp_path)])


@pytest.mark.parametrize("variant", ["ensemble", "rtpd"])
def test_shared_variants(variant, monkeypatch, tmp_path):
    settings = minatar.dqn_settings

    def tiny(timesteps, train_freq):
        return settings(timesteps, train_freq) | dict(learning_starts=50, buffer_size=500, batch_size=8)

    monkeypatch.setattr(minatar, "dqn_settings", tiny)
    argv = ["--games", GAME, "--seeds", "0", "--timesteps", "200", "--eval-freq", "100", "--eval-episodes", "1"]
    minatar.main([*argv, "--variants", variant, "--output", str(tmp_path)])
    runs = json.loads((tmp_path / f"minatar_{GAME}.json").read_text())["runs"]
    # Both reductions (or losses), both students, from one run: the same teachers' curves
    saved_as = {"ensemble": ["ensemble-mean_loss", "ensemble-mean_probs"], "rtpd": ["rtpd-fkl", "rtpd-rkl"]}[variant]
    assert sorted(run["variant"] for run in runs) == saved_as
    teachers = {"teacher_0", "teacher_1", "teacher_2"} if variant == "ensemble" else {"teacher"}
    assert all(set(run["returns"]) == {*teachers, *minatar.STUDENTS_RUN} and run["steps"] == [100, 200] for run in runs)
    assert all(runs[0]["returns"][name] == runs[1]["returns"][name] for name in teachers)
    assert runs[0]["shared_teachers_with"] == list(minatar.SHARED_VARIANTS[variant]) and sorted(saved_as) == saved_as
    table = (tmp_path / f"minatar_{GAME}.md").read_text()
    assert all(f"| {name} | student1 | [0] |" in table for name in saved_as)
    # --append: both saved, nothing retrained
    seconds = runs[0]["seconds"]
    minatar.main([*argv, "--variants", variant, saved_as[1], "--append", "--output", str(tmp_path)])
    runs = json.loads((tmp_path / f"minatar_{GAME}.json").read_text())["runs"]
    assert len(runs) == 2 and runs[0]["seconds"] == seconds


def test_shared_realtime_students_equal_separate_runs(monkeypatch):
    """ "rtpd": the students of each loss, trained next to the other loss's on one teacher, are trained exactly as a
    separate RealTimeDistillDQN run with that loss (the teacher too), and start from the same weights."""
    settings = minatar.dqn_settings

    def tiny(timesteps, train_freq):
        tiny_settings = dict(learning_starts=40, buffer_size=500, batch_size=8, target_update_interval=40)
        return settings(timesteps, train_freq) | tiny_settings

    monkeypatch.setattr(minatar, "dqn_settings", tiny)
    args = minatar.parse_args(["--timesteps", "240"])
    obs = th.as_tensor(np.stack([gym.make(minatar.env_id(GAME)).observation_space.sample() for _ in range(6)]))

    def q_values(model, students):
        functions = model.member_q_functions()
        with th.no_grad():
            return [functions[f"student_{i}"](obs.float()) for i in students] + [functions["teacher"](obs.float())]

    shared = minatar.build_shared_realtime(GAME, 0, args)
    assert shared.n_students == 2 * len(minatar.STUDENTS_RUN) and len(shared.policy.student_stacks) == 1
    n = len(minatar.STUDENTS_RUN)
    initial = q_values(shared, range(2 * n))
    for i in range(n):
        assert th.equal(initial[i], initial[n + i])
    shared.learn(240)
    for k, (variant, loss) in enumerate(minatar.RT_LOSSES.items()):
        assert shared.student_losses[0][loss].tolist() == list(range(k * n, (k + 1) * n))
        th.manual_seed(0)
        separate = minatar.build_realtime(GAME, 0, args, RealTimeDistillDQN, list(minatar.STUDENTS_RUN), loss)
        own_initial = initial[k * n : k * n + n] + initial[-1:]
        assert all(th.equal(a, b) for a, b in zip(q_values(separate, range(n)), own_initial, strict=True))
        separate.learn(240)
        for expected, actual in zip(q_values(separate, range(n)), q_values(shared, range(k * n, k * n + n)), strict=True):
            assert th.allclose(expected, actual, atol=1e-5), variant
        assert th.equal(q_values(separate, [])[0], q_values(shared, [])[0])
    # The two losses did train the students differently
    trained = q_values(shared, range(2 * n))
    assert not th.allclose(trained[0], trained[n]) and not th.allclose(trained[0], initial[0])


def test_shared_realtime_checks_its_inputs(monkeypatch):
    model = minatar.build_shared_realtime(GAME, 0, minatar.parse_args(["--timesteps", "1000"]))
    with pytest.raises(ValueError, match="one loss per student"):
        model.set_student_losses(["forward_kl"])


def test_shared_ensemble_students():
    args = minatar.parse_args(["--timesteps", "1000"])
    model = minatar.build_shared_ensemble(GAME, 0, args)
    # The model's student is student1 with mean_loss; one shadow per other (reduction, student), of its own size
    assert model.ensemble_reduction == "mean_loss" and set(model.shadows) == {
        "mean_loss/student2",
        "mean_probs/student1",
        "mean_probs/student2",
    }
    counts = minatar.parameter_counts(GAME)
    for name, (student, _) in model.shadows.items():
        reduction, size = name.split("/")
        assert model.shadow_settings[name]["ensemble_reduction"] == reduction
        assert sum(p.numel() for p in student.parameters()) == counts[size]
    assert sum(p.numel() for p in model.student.parameters()) == counts["student1"]


def test_scores_and_report():
    budget = dict(timesteps=100, train_freq=4, eval_freq=50, eval_episodes=1, steps=[50, 100], seconds=1.0)
    runs = [
        dict(variant="teacher", seed=0, returns={"teacher": [2.0, 8.0]}, **budget),
        dict(variant="rtpd-rkl", seed=0, returns={"teacher": [2.0, 4.0], "student1": [1.0, 4.0]}, **budget),
        dict(variant="rtpd-rkl", seed=1, returns={"teacher": [2.0, 4.0], "student1": [2.0, 2.0]}, **budget),
        dict(
            variant="ensemble-mean_loss",
            seed=0,
            returns={"teacher_0": [1.0, 2.0], "teacher_1": [3.0, 6.0], "teacher_2": [2.0, 4.0], "student1": [2.0, 2.0]},
            **budget,
        ),
        # PD against the plain teacher's max (8.0) and final evaluation (8.0); seed 1 has no teacher run: left out
        dict(variant="pd", seed=0, returns={"student1": [4.0, 8.0]}, **budget),
        dict(variant="pd", seed=1, returns={"student1": [4.0, 8.0]}, **budget),
    ]
    table = minatar.scores(runs)
    assert table[("rtpd-rkl", "student1")] == [(0, 100.0, 75.0), (1, 50.0, 75.0)]
    assert table[("ensemble-mean_loss", "student1")] == [(0, 50.0, 75.0)]
    assert table[("pd", "student1")] == [(0, 100.0, 75.0)]
    text = minatar.report(GAME, runs)
    assert "| rtpd-rkl | student1 | [0, 1] | 75 [50, 100] | 75 [75, 75] | 101.2 / 107.7 [RT] |" in text
    assert "| pd | student1 | [0] | 100 | 75 | 78.6 / - [RT] |" in text
    assert "seed 0: 8.0 / 8.0" in text and "ensemble-mean_loss seed 0: 4.0 / 4.0" in text
    # With the teacher's final network evaluated on more episodes, PD's mean is scored against that evaluation,
    # its max still against the teacher run's max
    runs[0]["final_evaluation"] = dict(episodes=100, mean=16.0, std=3.0)
    assert minatar.scores(runs)[("pd", "student1")] == [(0, 100.0, 37.5)]
    runs[0]["returns"]["teacher"] = [10.0, 8.0]
    assert minatar.scores(runs)[("pd", "student1")] == [(0, 80.0, 37.5)]
    runs[0]["returns"]["teacher"] = [2.0, 8.0]
    assert "seed 0: 8.0 / 8.0 (16.0 ± 3.0 on 100)" in minatar.report(GAME, runs)


def test_multitask_runner_smoke(monkeypatch, tmp_path):
    from benchmarks import minatar_multitask

    settings = minatar_multitask.dqn_settings

    def tiny(timesteps, train_freq):
        return settings(timesteps, train_freq) | dict(buffer_size=300, batch_size=4)

    monkeypatch.setattr(minatar_multitask, "dqn_settings", tiny)
    # Two games of different channel counts (Breakout 4, SpaceInvaders 6)
    argv = ["--games", "Breakout", "SpaceInvaders", "--seeds", "0", "--timesteps", "120", "--learning-starts", "40"]
    argv += ["--distill-timesteps", "80", "--mtdqn-timesteps", "80", "--eval-episodes", "1", "--output", str(tmp_path)]
    minatar_multitask.main([*argv, "--variants", "distill-net1", "mtdqn-net1"])
    runs = json.loads((tmp_path / "minatar_multitask.json").read_text())
    assert [run["variant"] for run in runs] == ["distill-net1", "mtdqn-net1"]
    for run in runs:
        assert set(run["scores"]) == {"Breakout", "SpaceInvaders"} and run["timesteps"] == 160
        # About a quarter of one teacher per game, exactly the same for both (the same architecture)
        assert all(0.2 < ratio < 0.3 for ratio in run["compression_ratios"].values())
    assert runs[0]["compression_ratios"] == pytest.approx(runs[1]["compression_ratios"])
    assert (tmp_path / "models" / "dqn_Breakout_seed0_120steps_tf4_ls40.zip").exists()
    table = (tmp_path / "minatar_multitask.md").read_text()
    assert "| distill-net1 | 0 |" in table and "geometric mean (Rusu: 0.893)" in table
    assert "| distill-net1 | 0 | " in table.split("Over the seeds")[1]
    assert (tmp_path / "minatar_multitask.png").stat().st_size > 0
    # --append skips the saved runs (no training: the saved seconds stay)
    minatar_multitask.main([*argv, "--variants", "distill-net1", "--append"])
    assert json.loads((tmp_path / "minatar_multitask.json").read_text()) == runs


def test_multitask_geometric_mean():
    from benchmarks.minatar_multitask import geometric_mean

    assert geometric_mean([0.5, 2.0]) == pytest.approx(1.0)
    assert geometric_mean([0.25, float("nan"), 1.0]) == pytest.approx(0.5)
    assert geometric_mean([0.0, 1.0]) == 0.0 and np.isnan(geometric_mean([float("nan")]))


def test_multitask_seeds_summary():
    from benchmarks.minatar_multitask import geometric_mean, seeds_summary

    games = ["Breakout", "SpaceInvaders", "Freeway"]

    def run(variant, seed, ratios):
        ratios = dict(zip(games, ratios, strict=True))
        return dict(
            variant=variant, seed=seed, games=games, ratios=ratios, geometric_mean=geometric_mean(list(ratios.values()))
        )

    runs = [
        # over the 3 games / without Breakout / without SpaceInvaders / without Freeway:
        run("distill-net1", 1, [1.0, 1.0, 8.0]),  # 2.0 / 2.83 / 2.83 / 1.0
        run("distill-net1", 0, [0.25, 1.0, 4.0]),  # 1.0 / 2.0 / 1.0 / 0.5
        run("distill-net1", 2, [1.0, 4.0, 2.0]),  # 2.0 / 2.83 / 1.41 / 2.0
        run("mtdqn-net1", 0, [1.0, float("nan"), 0.25]),  # no SpaceInvaders ratio: 0.5; without Freeway 1.0
    ]
    lines = seeds_summary(runs).split("\n")
    assert lines[0] == (
        "| variant | seeds | geometric mean, median [min, max] | without Breakout | without SpaceInvaders | without Freeway |"
    )
    assert lines[2] == (
        "| distill-net1 | 0, 1, 2 | 2.000 [1.000, 2.000] | 2.828 [2.000, 2.828] | 1.414 [1.000, 2.828] "
        "| 1.000 [0.500, 2.000] |"
    )
    assert lines[3] == "| mtdqn-net1 | 0 | 0.500 | 0.250 | 0.500 | 1.000 |"


def test_summary_across_games(tmp_path):
    budget = dict(timesteps=100, train_freq=4, eval_freq=50, eval_episodes=1, steps=[50, 100], seconds=1.0)
    teacher = {"teacher": [2.0, 4.0]}
    breakout = [
        dict(variant="teacher", seed=0, returns={"teacher": [2.0, 8.0]}, **budget),
        # seed 0: reverse KL 100 % max / 75 % mean, forward KL 50 % / 50 %; seed 1: the other way round
        dict(variant="rtpd-rkl", seed=0, returns=teacher | {"student1": [1.0, 4.0]}, **budget),
        dict(variant="rtpd-fkl", seed=0, returns=teacher | {"student1": [1.0, 2.0]}, **budget),
        dict(variant="rtpd-rkl", seed=1, returns=teacher | {"student1": [1.0, 2.0]}, **budget),
        dict(variant="rtpd-fkl", seed=1, returns=teacher | {"student1": [1.0, 4.0]}, **budget),
        dict(
            variant="ensemble-mean_loss",
            seed=0,
            returns={"teacher_0": [2.0, 4.0], "teacher_1": [2.0, 4.0], "teacher_2": [2.0, 4.0], "student1": [4.0, 4.0]},
            **budget,
        ),
    ]
    spaceinvaders = [dict(variant="pd", seed=0, returns={"student1": [1.0, 2.0]}, **budget)]  # no teacher run
    for game, runs in (("Breakout", breakout), ("SpaceInvaders", spaceinvaders)):
        (tmp_path / f"minatar_{game}.json").write_text(json.dumps({"game": game, "runs": runs}))
    text = minatar_summary.write_summary(tmp_path)
    # SpaceInvaders has no scored run (PD without its teacher): one game in the table
    assert "SpaceInvaders" not in text
    assert "| rtpd-fkl | student1 | 0, 1 | 75 [50, 100] / 62 [50, 75] | 69.5 / 91.1 [RT] |" in text
    assert "| ensemble-mean_loss | student1 | 0 | 100 / 150 | 120.6 / 112.8 [EN] |" in text
    assert text.index("| rtpd-fkl |") < text.index("| rtpd-rkl |") < text.index("| ensemble-mean_loss |")
    rows = {
        (row["claim"], row["student"]): row for row in minatar_summary.ordering_rows(minatar_summary.game_scores(tmp_path))
    }
    assert rows[("real time: reverse KL above forward KL (max %)", "student1")]["differences"] == [50.0, -50.0]
    assert rows[("real time: reverse KL above forward KL (mean %)", "student1")]["differences"] == [25.0, -25.0]
    above = rows[("ensemble (the paper's `mean_loss`): student above its teachers (mean %)", "student1")]
    assert above["seeds"] == [0] and above["differences"] == [50.0]
    assert "| Breakout | student1 | 0, 1 | +50.0, -50.0 | 1 of 2 seeds |" in text
    assert (tmp_path / "minatar_summary.md").read_text().strip() == text
    assert (tmp_path / "minatar_summary.png").stat().st_size > 0
    assert minatar_summary.write_summary(tmp_path / "empty") is None
    # The curves of one seed: the plain teacher, the real-time teacher once (both variants share it here), students
    curves = minatar_summary.curves_table(tmp_path, "Breakout", 0, every=1).splitlines()
    assert curves[0] == "| Breakout, seed 0, env steps (k) | 0 | 0 | max / mean % |"
    assert curves[2:5] == [
        "| plain SB3 DQN teacher | 2.0 | 8.0 |  |",
        "| rtpd-fkl: its teacher | 2.0 | 4.0 |  |",
        "| rtpd-fkl: student1 | 1.0 | 2.0 | 50 / 50 |",
    ]
    assert "| rtpd-rkl: student1 | 1.0 | 4.0 | 100 / 75 |" in curves and len(curves) == 2 + 6
