"""
Multi-task policy distillation on MinAtar (Rusu et al., "Policy Distillation", 2015, arXiv:1511.06295, Sec. 5.3:
one network distilled from ten single-game DQNs reached a geometric mean of 89.3 % of their Atari scores, and
beat a multi-task DQN trained from the games' rewards).

MinAtar (Young & Tian 2019, arXiv:1903.03176) through the set-up of ``benchmarks/minatar.py`` (``MinAtarImage``:
channel-first 10x10 uint8 frames; the MinAtar paper's DQN {16 filters, 128 units}). The games have different
channel counts (Breakout 4, SpaceInvaders 6, Freeway 7, Asterix 4, Seaquest 10): the multi-task env zero-pads the
channels at the end to the largest count (an empty object layer), see ``sb3_distill.common.multitask``.
For each seed:

- ``teacher``: one SB3 DQN per game (``benchmarks/minatar.py``'s settings), cached under ``--output``/models (the
  same files as ``benchmarks/minatar.py`` when ``--learning-starts`` is its 5000);
- ``distill-<net>``: one MultiTaskPolicyDistillation student of the games' teachers (student-driven, forward KL,
  Rusu's tau 0.01 for Q-value teachers), a CNN trunk ``{filters, units}`` and one head per game: ``teacher`` is one
  teacher's size (Rusu's multi-task network), ``net1`` {8, 64} about a quarter of it;
- ``mtdqn-<net>``: the same student architecture trained as a multi-task DQN from rewards alone
  (``benchmarks/multitask_dqn.py``), with each game's experience the teacher had (``--mtdqn-timesteps`` per game).

At the end of each run, each game's teacher and the run's network are evaluated greedily on ``--eval-episodes``
episodes. Reported per game: the score ratio student / teacher (scores are >= 0 in MinAtar; a teacher at 0 gives no
ratio), their geometric mean over games next to Rusu's 89.3 %, and the compression ratios (against the sum of the
teachers, and each game's exported network against its teacher). Results are written to
``--output``/minatar_multitask.json after every run (``--append`` keeps the saved runs and skips those already
there), then the markdown table and the plot.

    python -m benchmarks.minatar_multitask --games Breakout SpaceInvaders Freeway --seeds 0 --append
"""

import argparse
import json
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3 import DQN
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

from benchmarks.minatar import GAMES, OPTIMIZER, STUDENT_NETS, TEACHER_NET, dqn_settings, env_id, median_range, network
from benchmarks.multitask_dqn import MultiTaskDQN, make_multitask_env
from benchmarks.results_io import locked, write_json_atomic
from sb3_distill import MultiTaskPolicyDistillation
from sb3_distill.common.torch_layers import count_parameters
from sb3_distill.multitask_policy_distillation.multitask_policy_distillation import task_q_network_state

#: The multi-task networks {filters, units}: one teacher's size, and about a quarter of it
NETS = {"teacher": TEACHER_NET, "net1": STUDENT_NETS["net1"]}
VARIANTS = tuple(f"{kind}-{net}" for kind in ("distill", "mtdqn") for net in NETS)
#: Rusu et al.'s multi-game distilled network, geometric mean of % of the single-game DQNs over 10 Atari games
RUSU_GEOMETRIC_MEAN = 0.893


def teacher_path(args: argparse.Namespace, game: str, seed: int) -> Path:
    """The cached teacher: benchmarks/minatar.py's name, with the warm-up appended when it is not its 5000."""
    suffix = "" if args.learning_starts == 5_000 else f"_ls{args.learning_starts}"
    return args.output / "models" / f"dqn_{game}_seed{seed}_{args.timesteps}steps_tf{args.train_freq}{suffix}.zip"


def get_teacher(args: argparse.Namespace, game: str, seed: int) -> DQN:
    """A DQN teacher of ``game`` with the MinAtar paper's network, trained once and cached."""
    path = teacher_path(args, game, seed)
    if path.exists():
        return DQN.load(path, device="cpu")
    settings = {**dqn_settings(args.timesteps, args.train_freq), "learning_starts": args.learning_starts}
    teacher = DQN(
        "CnnPolicy",
        env_id(game),
        policy_kwargs=dict(**network(*TEACHER_NET), **OPTIMIZER),
        seed=seed,
        device="cpu",
        **settings,
    )
    start = time.perf_counter()
    teacher.learn(args.timesteps)
    print(f"teacher {game} seed {seed}: {args.timesteps} steps in {time.perf_counter() - start:.0f} s", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    teacher.save(path)
    return teacher


def eval_env(game: str, seed: int) -> Monitor:
    env = Monitor(gym.make(env_id(game)))
    env.reset(seed=seed + 1000)
    return env


class _TaskPolicy:
    """One task of a multi-task model, acting greedily on that task's own observations (for ``evaluate_policy``)."""

    def __init__(self, model: Any, task: str) -> None:
        self.model, self.task = model, task

    def predict(self, observation: np.ndarray, *args: Any, **kwargs: Any) -> tuple[np.ndarray, None]:
        return self.model.predict(observation, task=self.task, deterministic=True)


def build(variant: str, games: list[str], teachers: dict[str, DQN], seed: int, args: argparse.Namespace) -> tuple[Any, int]:
    """The multi-task model of a variant, and the number of steps (all games together) it trains for."""
    kind, net = variant.split("-")
    trunk = network(*NETS[net])
    n_games = len(games)
    settings = dqn_settings(args.timesteps, args.train_freq)
    model: Any
    if kind == "distill":
        model = MultiTaskPolicyDistillation(
            teachers=teachers,
            envs={game: env_id(game) for game in games},
            student_policy_kwargs=trunk,
            policy_kwargs=OPTIMIZER,
            control="student",
            loss="forward_kl",
            learning_rate=settings["learning_rate"],
            # Per game as the teachers': replay memory, warm-up, 32 states of each game per gradient step
            buffer_size=settings["buffer_size"] * n_games,
            learning_starts=args.learning_starts * n_games,
            batch_size=settings["batch_size"] * n_games,
            train_freq=args.train_freq,
            seed=seed,
            device="cpu",
        )
        return model, args.distill_timesteps * n_games
    timesteps = args.mtdqn_timesteps * n_games
    mtdqn_settings = {
        **dqn_settings(timesteps, args.train_freq),
        # Per game as each single-game DQN: replay memory, warm-up, one gradient step per `train_freq` steps of a game
        "buffer_size": settings["buffer_size"] * n_games,
        "learning_starts": args.learning_starts * n_games,
        "gradient_steps": n_games,
        "exploration_fraction": min(1.0, 100_000 * n_games / timesteps),
    }
    model = MultiTaskDQN(
        "MultiInputPolicy",
        make_multitask_env([env_id(game) for game in games], seed=seed),
        policy_kwargs=dict(**trunk, **OPTIMIZER),
        seed=seed,
        device="cpu",
        **mtdqn_settings,
    )
    return model, timesteps


def evaluate(variant: str, model: Any, games: list[str], teachers: dict[str, DQN], seed: int, args: argparse.Namespace):
    """Each game's teacher and the model's head of that game: greedy mean returns."""
    scores = {}
    for game in games:
        task = game if variant.startswith("distill") else env_id(game)
        teacher_mean, _ = evaluate_policy(teachers[game], eval_env(game, seed), args.eval_episodes, warn=False)
        student_mean, _ = evaluate_policy(_TaskPolicy(model, task), eval_env(game, seed), args.eval_episodes, warn=False)  # type: ignore[arg-type]
        scores[game] = dict(teacher=float(teacher_mean), student=float(student_mean))  # type: ignore[arg-type]
    return scores


def geometric_mean(ratios: list[float]) -> float:
    """The geometric mean of the finite non-negative ratios (0 if one is 0; nan without any)."""
    values = [ratio for ratio in ratios if np.isfinite(ratio)]
    if not values:
        return float("nan")
    return float(np.exp(np.mean(np.log(np.maximum(values, 1e-12))))) if min(values) > 0 else 0.0


def compression(model: Any, variant: str, teachers: dict[str, DQN], games: list[str]) -> tuple[float, dict[str, float]]:
    """The network against the sum of the teachers, and each game's network against that game's teacher."""
    if variant.startswith("distill"):
        ratios = model.compression_ratios()
        return model.compression_ratio, {game: ratios[game] for game in games}
    # The multi-task DQN has the distilled student's architecture: each game's network (its own input channels, the
    # trunk and its head, as MultiTaskPolicyDistillation exports it) against that game's teacher
    student = model.q_net.student
    teacher_counts = {game: count_parameters(teachers[game].q_net) for game in games}
    total = count_parameters(student)
    padded_shape = model.observation_space["obs"].shape
    per_game = {}
    for index, game in enumerate(games):
        state = task_q_network_state(student, index, padded_shape, model.task_observation_spaces[index].shape)
        per_game[game] = sum(value.numel() for value in state.values()) / teacher_counts[game]
    return total / sum(teacher_counts.values()), per_game


def run(variant: str, games: list[str], seed: int, args: argparse.Namespace) -> dict[str, Any]:
    th.manual_seed(seed)
    teachers = {game: get_teacher(args, game, seed) for game in games}
    model, timesteps = build(variant, games, teachers, seed, args)
    start = time.perf_counter()
    model.learn(timesteps)
    seconds = time.perf_counter() - start
    scores = evaluate(variant, model, games, teachers, seed, args)
    ratios = {g: s["student"] / s["teacher"] if s["teacher"] > 0 else float("nan") for g, s in scores.items()}
    total_ratio, per_game = compression(model, variant, teachers, games)
    result = dict(
        variant=variant,
        seed=seed,
        games=games,
        budget=budget(args),
        timesteps=timesteps,
        scores=scores,
        ratios=ratios,
        geometric_mean=geometric_mean(list(ratios.values())),
        compression_ratio=total_ratio,
        compression_ratios=per_game,
        seconds=seconds,
    )
    print(f"{variant} seed {seed}: {json.dumps(scores)}, geometric mean {result['geometric_mean']:.3f}", flush=True)
    return result


def budget(args: argparse.Namespace) -> dict[str, int]:
    """What makes two runs comparable: the teachers' and the multi-task models' steps per game, and the settings."""
    return dict(
        teacher_timesteps=args.timesteps,
        distill_timesteps=args.distill_timesteps,
        mtdqn_timesteps=args.mtdqn_timesteps,
        train_freq=args.train_freq,
        learning_starts=args.learning_starts,
        eval_episodes=args.eval_episodes,
    )


def results_path(args: argparse.Namespace) -> Path:
    return args.output / "minatar_multitask.json"


def load_runs(args: argparse.Namespace) -> list[dict[str, Any]]:
    path = results_path(args)
    return json.loads(path.read_text()) if path.exists() else []


def save_run(args: argparse.Namespace, result: dict[str, Any]) -> None:
    """Add one run (re-read the file first, so that runs saved meanwhile are kept; the same run is replaced)."""
    key = (result["variant"], result["seed"], tuple(result["games"]), json.dumps(result["budget"], sort_keys=True))
    # Locked and atomic: several processes (one per variant) may save into the same file
    with locked(results_path(args)):
        runs = [
            r
            for r in load_runs(args)
            if (r["variant"], r["seed"], tuple(r["games"]), json.dumps(r["budget"], sort_keys=True)) != key
        ]
        write_json_atomic(results_path(args), [*runs, result])


def report(runs: list[dict[str, Any]]) -> str:
    if not runs:
        return "No runs yet."
    first = runs[-1]
    games = first["games"]
    b = first["budget"]
    lines = [
        f"MinAtar {', '.join(games)}: teachers {b['teacher_timesteps']} steps per game, multi-task students "
        f"{b['distill_timesteps']} steps per game (distillation) and {b['mtdqn_timesteps']} (multi-task DQN), "
        f"train_freq {b['train_freq']}, warm-up {b['learning_starts']} steps per game; greedy evaluation on "
        f"{b['eval_episodes']} episodes; CPU, torch {th.__version__}. Ratio: the run's score / its game's teacher's "
        "(none where the teacher scored 0); geometric mean over the games with a ratio (0 if one ratio is 0).",
        "",
        "| variant | seed | "
        + " | ".join(f"{g} teacher / student (ratio)" for g in games)
        + " | geometric mean (Rusu: 0.893) | parameters / all teachers | / each teacher |",
        "|---|---|" + "---|" * len(games) + "---|---|---|",
    ]
    for r in sorted(runs, key=lambda r: (r["variant"], r["seed"])):
        cells = [
            f"{r['scores'][g]['teacher']:.1f} / {r['scores'][g]['student']:.1f} ({r['ratios'][g]:.2f})" for g in r["games"]
        ]
        each = ", ".join(f"{r['compression_ratios'][g]:.2f}" for g in r["games"])
        lines.append(
            f"| {r['variant']} | {r['seed']} | {' | '.join(cells)} | **{r['geometric_mean']:.3f}** "
            f"| {r['compression_ratio']:.3f} | {each} |"
        )
    return "\n".join(lines)


def seeds_summary(runs: list[dict[str, Any]]) -> str:
    """
    Per variant, over its seeds: the median [min, max] of the geometric mean of the ratios over every game,
    then without each game in turn (one game whose teacher is poor can decide a 3-game mean).
    """
    games = runs[-1]["games"]
    lines = [
        "| variant | seeds | geometric mean, median [min, max] | " + " | ".join(f"without {game}" for game in games) + " |",
        "|---|---|---|" + "---|" * len(games),
    ]
    for variant in sorted({r["variant"] for r in runs}):
        chosen = sorted((r for r in runs if r["variant"] == variant), key=lambda r: r["seed"])
        without = [
            median_range([geometric_mean([r["ratios"][g] for g in games if g != left_out]) for r in chosen], 3)
            for left_out in games
        ]
        lines.append(
            f"| {variant} | {', '.join(str(r['seed']) for r in chosen)} | "
            f"{median_range([r['geometric_mean'] for r in chosen], 3)} | {' | '.join(without)} |"
        )
    return "\n".join(lines)


def _finite_mean(values: list[float]) -> float:
    finite = [value for value in values if np.isfinite(value)]
    return float(np.mean(finite)) if finite else 0.0  # no bar where no ratio is defined


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = sorted({r["variant"] for r in runs})
    games = runs[-1]["games"]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(len(variants), 1)
    for i, variant in enumerate(variants):
        chosen = [r for r in runs if r["variant"] == variant]
        means = [_finite_mean([r["ratios"][g] for r in chosen]) for g in games]
        means.append(_finite_mean([r["geometric_mean"] for r in chosen]))
        ax.bar(np.arange(len(games) + 1) + i * width, means, width, label=f"{variant} ({len(chosen)} seeds)")
    ax.axhline(RUSU_GEOMETRIC_MEAN, color="black", linestyle="--", label="Rusu et al. geometric mean 0.893 (Atari)")
    ax.set_xticks(np.arange(len(games) + 1) + 0.4 - width / 2, [*games, "geometric mean"])
    ax.set_ylabel("score / single-game DQN teacher's")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(args: argparse.Namespace) -> None:
    runs = load_runs(args)
    if not runs:
        return
    # One table per budget and game set: the latest run's
    latest = (runs[-1]["games"], runs[-1]["budget"])
    runs = [r for r in runs if (r["games"], r["budget"]) == latest]
    text = report(runs) + "\n\nOver the seeds (Rusu: 0.893):\n\n" + seeds_summary(runs)
    print("\n" + text, flush=True)
    (args.output / "minatar_multitask.md").write_text(text + "\n")
    plot(runs, args.output / "minatar_multitask.png")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--games", nargs="+", default=["Breakout", "SpaceInvaders", "Freeway"], choices=GAMES)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--timesteps", type=int, default=500_000, help="each teacher's env steps")
    parser.add_argument("--distill-timesteps", type=int, default=250_000, help="distillation env steps per game")
    parser.add_argument("--mtdqn-timesteps", type=int, default=500_000, help="multi-task DQN env steps per game")
    parser.add_argument("--train-freq", type=int, default=4)
    parser.add_argument("--learning-starts", type=int, default=5_000, help="warm-up steps per game")
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "minatar")
    parser.add_argument("--append", action="store_true", help="keep the saved runs; skip the runs already saved")
    parser.add_argument("--report-only", action="store_true", help="rewrite the table and plot from the saved JSON")
    args = parser.parse_args(argv)
    if len(args.games) < 2:
        parser.error("--games: a multi-task network needs at least 2 games (the issue asks for 3)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    th.set_num_threads(1)
    if not args.report_only:
        if not args.append:
            results_path(args).unlink(missing_ok=True)
        for seed in args.seeds:
            for variant in args.variants:
                done = [
                    r
                    for r in load_runs(args)
                    if (r["variant"], r["seed"], r["games"], r["budget"]) == (variant, seed, args.games, budget(args))
                ]
                if done:
                    continue
                save_run(args, run(variant, args.games, seed, args))
                write_report(args)
    write_report(args)


if __name__ == "__main__":
    main()
