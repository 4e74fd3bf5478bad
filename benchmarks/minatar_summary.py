"""
The MinAtar tables across games and seeds: one summary of ``minatar.py``'s saved results.

``minatar.py`` writes one table per game (``results/minatar/minatar_<game>.md``). This script reads every
game's JSON and writes, next to them, ``minatar_summary.md`` and ``minatar_summary.png``:

- the scores of every distillation variant and student on every game (the student's max evaluation and its
  mean over the last 10 evaluations, as % of its teacher's; medians over seeds with [min, max]), next to the
  papers' Atari figures;
- the papers' orderings checked seed by seed, on paired runs (the same seed, so the same teacher where the
  method shares one): reverse above forward KL in real-time distillation (Sun & Fazli, *Real-time Policy
  Distillation in Deep Reinforcement Learning*, 2019, arXiv:1912.12630), the ensemble's student above its
  teachers (Sun & Fazli, *Ensemble Policy Distillation in Deep Reinforcement Learning*, 2020), and real-time
  above sequential distillation (Rusu et al., *Policy Distillation*, 2015, arXiv:1511.06295, as quoted by the
  real-time paper);
- a plot of every seed's mean % per variant and student, with the median and the paper's figure.

It trains nothing. ``minatar.py`` calls it at the end of every call; by hand::

    python -m benchmarks.minatar_summary
    python -m benchmarks.minatar_summary --curves Breakout 1   # one seed's evaluation curves, every run
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import minatar

# Rows in reading order: the real-time method, the ensemble, then the sequential baseline
ROW_ORDER = ("rtpd-fkl", "rtpd-rkl", "ensemble-mean_loss", "ensemble-mean_probs", "pd")

Scores = dict[tuple[str, str], list[tuple[int, float, float]]]


def game_scores(folder: Path) -> dict[str, Scores]:
    """game -> :func:`benchmarks.minatar.scores` of its saved runs at the latest budget (games without a scored
    distillation run are left out)."""
    per_game = {}
    for game in minatar.GAMES:
        runs = minatar.load_runs(folder, game)
        if not runs:
            continue
        latest = (runs[-1]["timesteps"], runs[-1]["train_freq"])
        table = minatar.scores([run for run in runs if (run["timesteps"], run["train_freq"]) == latest])
        if table:
            per_game[game] = table
    return per_game


def _rows(per_game: dict[str, Scores]) -> list[tuple[str, str]]:
    present = {key for table in per_game.values() for key in table}
    return sorted(present, key=lambda key: (ROW_ORDER.index(key[0]) if key[0] in ROW_ORDER else 99, key))


def scores_table(per_game: dict[str, Scores]) -> str:
    games = list(per_game)
    header = "| variant | student | " + " | ".join(f"{g}: seeds | {g}: max / mean % | {g}: paper" for g in games)
    lines = [header + " |", "|---|---|" + "---|---|---|" * len(games)]
    for variant, student in _rows(per_game):
        cells = []
        for game in games:
            values = per_game[game].get((variant, student), [])
            seeds = ", ".join(str(seed) for seed, _, _ in sorted(values)) or "-"
            score = (
                f"{minatar.median_range([v[1] for v in values])} / {minatar.median_range([v[2] for v in values])}"
                if values
                else "-"
            )
            cells.append(f"{seeds} | {score} | {minatar.PAPER.get((variant, student), {}).get(game, '-')}")
        lines.append(f"| {variant} | {student} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# (claim, better variant, worse variant or None for "above its teachers", which score: 1 max, 2 mean)
ORDERINGS = (
    ("real time: reverse KL above forward KL (max %)", "rtpd-rkl", "rtpd-fkl", 1),
    ("real time: reverse KL above forward KL (mean %)", "rtpd-rkl", "rtpd-fkl", 2),
    ("ensemble (the paper's `mean_loss`): student above its teachers (mean %)", "ensemble-mean_loss", None, 2),
    ("real time (reverse KL) above sequential PD (max %)", "rtpd-rkl", "pd", 1),
)


def _column(values: list[tuple[int, float, float]], column: int) -> dict[int, float]:
    return {value[0]: value[column] for value in values if np.isfinite(value[column])}


def ordering_rows(per_game: dict[str, Scores]) -> list[dict[str, Any]]:
    """Each ordering of :data:`ORDERINGS`, per game and student, on the seeds where both sides ran: the
    per-seed differences in percentage points (the student's % minus 100 for "above its teachers")."""
    rows = []
    for claim, better, worse, column in ORDERINGS:
        for game, table in per_game.items():
            for student in minatar.STUDENTS_RUN:
                first = _column(table.get((better, student), []), column)
                second = {seed: 100.0 for seed in first} if worse is None else _column(table.get((worse, student), []), column)
                seeds = sorted(set(first) & set(second))
                if seeds:
                    differences = [first[seed] - second[seed] for seed in seeds]
                    rows.append(dict(claim=claim, game=game, student=student, seeds=seeds, differences=differences))
    return rows


def orderings_table(per_game: dict[str, Scores]) -> str:
    lines = [
        "| the paper's ordering | game | student | seeds | difference per seed (points) | holds on |",
        "|---|---|---|---|---|---|",
    ]
    for row in ordering_rows(per_game):
        differences = ", ".join(f"{d:+.1f}" for d in row["differences"])
        holds = sum(d > 0 for d in row["differences"])
        lines.append(
            f"| {row['claim']} | {row['game']} | {row['student']} | {', '.join(map(str, row['seeds']))} | "
            f"{differences} | {holds} of {len(row['seeds'])} seeds |"
        )
    return "\n".join(lines)


def _paper_mean(variant: str, student: str, game: str) -> float | None:
    """The paper's mean % for this row (the number after the slash), if it gives one."""
    text = minatar.PAPER.get((variant, student), {}).get(game)
    if text is None or text.split("/")[1].split()[0] == "-":
        return None
    return float(text.split("/")[1].split()[0])


def plot_summary(per_game: dict[str, Scores], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _rows(per_game)
    fig, axes = plt.subplots(1, len(per_game), figsize=(5 * len(per_game), 4.5), squeeze=False, sharey=True)
    for ax, (game, table) in zip(axes[0], per_game.items(), strict=True):
        for x, (variant, student) in enumerate(rows):
            values = [mean for _, _, mean in table.get((variant, student), []) if np.isfinite(mean)]
            ax.scatter([x] * len(values), values, color="tab:blue", s=18, zorder=3)
            if values:
                ax.hlines(np.median(values), x - 0.3, x + 0.3, color="tab:blue", linewidth=2)
            paper = _paper_mean(variant, student, game)
            if paper is not None:
                ax.scatter([x], [paper], color="tab:red", marker="x", s=40, zorder=4)
        ax.axhline(100, color="grey", linestyle="--", linewidth=1)
        ax.set_xticks(range(len(rows)), [f"{v}\n{s}" for v, s in rows], rotation=90, fontsize=7)
        ax.set_title(f"MinAtar {game}")
    axes[0][0].set_ylabel("student % of teacher (mean, last 10 evals)")
    fig.suptitle("dots: seeds; bar: median; red x: the paper on Atari", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_summary(folder: Path) -> str | None:
    """Write ``minatar_summary.{md,png}`` in ``folder`` from every game's saved runs; return the text (None if
    no game has a scored distillation run yet)."""
    per_game = game_scores(folder)
    if not per_game:
        return None
    text = "\n\n".join(
        [
            "Student's max / mean of the last 10 evaluations as % of its teacher's; median over seeds [min, max] "
            "(`pd`: against the plain teacher's final network, on its `--evaluate-teachers` evaluation where saved; "
            "the ensemble: against its teachers' average).",
            scores_table(per_game),
            "The papers' orderings, seed by seed on paired runs (positive: the ordering holds on that seed).",
            orderings_table(per_game),
        ]
    )
    (folder / "minatar_summary.md").write_text(text + "\n")
    plot_summary(per_game, folder / "minatar_summary.png")
    return text


def _curve_rows(run: dict[str, Any], scored: dict[str, tuple[float, float]]) -> list[tuple[str, list[float], str]]:
    """(label, curve, score) rows of one run: its teacher (the ensemble: the teachers' mean), then its students."""
    rows = []
    teacher = run["returns"]["teacher"] if run["variant"] == "teacher" else minatar.in_run_teacher(run)
    if teacher is not None:
        label = "plain SB3 DQN teacher" if run["variant"] == "teacher" else f"{run['variant']}: its teacher"
        rows.append((label + ("s (mean of 3)" if run["variant"].startswith("ensemble-") else ""), teacher, ""))
    for student in minatar.STUDENTS_RUN:
        if student in run["returns"]:
            score = scored.get(student)
            text = f"{score[0]:.0f} / {score[1]:.0f}" if score is not None else ""
            rows.append((f"{run['variant']}: {student}", run["returns"][student], text))
    return rows


def curves_table(folder: Path, game: str, seed: int, every: int = 2) -> str:
    """
    Every run of ``game`` and ``seed`` as a table of its evaluation returns (every ``every``-th evaluation), with
    each student's max / mean % of its teacher; a teacher shared by two saved variants (``rtpd``, ``ensemble``)
    is shown once.
    """
    runs = [run for run in minatar.load_runs(folder, game) if run["seed"] == seed]
    if not runs:
        return f"no saved runs of {game} seed {seed}"
    table = minatar.scores(runs)
    steps = runs[0]["steps"][every - 1 :: every]
    lines = [
        f"| {game}, seed {seed}, env steps (k) | " + " | ".join(f"{step // 1000}" for step in steps) + " | max / mean % |",
        "|---|" + "---|" * (len(steps) + 1),
    ]
    shown: set[tuple[str, tuple[float, ...]]] = set()
    ordered = sorted(runs, key=lambda run: ("teacher", *ROW_ORDER).index(run["variant"]))
    for run in ordered:
        scored = {
            student: (s[1], s[2])
            for (v, student), values in table.items()
            if v == run["variant"]
            for s in values
            if s[0] == seed
        }
        # The variants saved from one shared run (``rtpd``, ``ensemble``) show its teacher once
        group = next((name for name, saved in minatar.SHARED_VARIANTS.items() if run["variant"] in saved), run["variant"])
        for label, curve, score in _curve_rows(run, scored):
            if score == "" and (group, tuple(curve)) in shown:
                continue
            shown.add((group, tuple(curve)))
            values = curve[every - 1 :: every]
            lines.append(f"| {label} | " + " | ".join(f"{value:.1f}" for value in values) + f" | {score} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "minatar")
    parser.add_argument(
        "--curves",
        nargs=2,
        metavar=("GAME", "SEED"),
        help="print the evaluation curves of every saved run of GAME and SEED instead (a markdown table)",
    )
    args = parser.parse_args(argv)
    if args.curves is not None:
        print(curves_table(args.output, args.curves[0], int(args.curves[1])))
        return
    text = write_summary(args.output)
    print(text if text is not None else f"no scored MinAtar runs in {args.output}")


if __name__ == "__main__":
    main()
