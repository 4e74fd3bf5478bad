"""
Fig. 3 of Czarnecki et al. 2019 ("Distilling Policy Distillation", arXiv:1902.02186, Sec. 3.2) with DistillPPO:
the control policy q_theta that collects the states, on random 20x20 grid worlds. The paper distils Q-learning
teachers with the per-step cross-entropy ``H^x(pi || pi_theta)`` (a gradient step on the student's logits,
no reward term) under three control policies: the teacher (teacher-driven), the student (student-driven) and
a uniformly random one, and finds that the student-driven student needs about 3x fewer steps than the
teacher-driven one, and about 10x fewer than the uniform one, to recover the teacher's return.

**The MDPs** (the paper's Appendix A, with our numbers where it gives none that we know): a 20x20 grid, one
start in the centre, 4 moves (a move off the grid or into a wall stays); with probability ``NOISE`` the move
is replaced by one of the 4 moves drawn uniformly. Each cell other than the start is, independently, a wall
(``P_WALL``), a terminal goal with reward +10 (``P_GOAL``), a terminal pit with reward -10 (``P_PIT``), a
non-terminal hazard with reward -1 (``P_HAZARD``), or empty. The reward of a cell is received on entering it;
after every step the episode also ends with probability ``P_END`` = 0.01 (the paper's value), so that the
undiscounted return is bounded. MDP ``i`` is drawn from seed ``i``.

**The teachers**: tabular Q-learning (undiscounted, the random end as termination) with an epsilon-greedy
(epsilon 0.1, the paper's value) behaviour policy from the start state, ``Q_LEARNING_STEPS`` transitions, in
numpy. The Q-table is put into an SB3 ``DQN`` whose Q-network is linear on the one-hot state
(``net_arch=[]``, weights = the table), given to ``DistillPPO`` as its teacher: the library's ``DQNTeacher``
serves ``pi = softmax(Q / tau)`` with ``tau = --temperature``.

**The student** is PPO's tabular policy (one-hot states, ``net_arch=[]``) trained by DistillPPO with the paper's
rule for this figure, the per-step ``H^x(pi || pi_theta)`` and no reward: ``update_rule="teacher_distill"``
(control: teacher) and ``update_rule="on_policy_distill"`` with ``control="student"`` or ``"uniform"``. With
r^ = 0 and no environment reward DistillPPO skips the policy-gradient term, so the three differ only in who
picks the actions that produce the states. Each rollout (16 envs x 16 steps) gives one plain SGD step
(`--learning-rate`) on the mean cross-entropy over its states, on the logits only (the action head's shared
bias is frozen at 0): a state's logits move in proportion to how often the control policy sampled it, as in
the paper's gradient steps on tabular logits (Adam would rescale each logit's step by its own history).

**Measured**, at evaluations spaced by 10 % of the steps so far (at least `--eval-freq`): the student's exact
expected return from the start (policy evaluation on the known MDP, with its stochastic policy), normalised as
``(J(pi_theta) - J(uniform)) / (J(pi) - J(uniform))`` (0: the uniform policy, 1: the teacher ``pi``); and the
expected summed ``KL(pi || pi_theta)`` along the trajectories of the teacher, of the student and of the uniform
policy (the paper's ``E_z[sum_t H^x]`` up to a constant). *Steps to recover the teacher's return*: the
first evaluation whose normalised return is >= 0.9 (and 0.95). MDPs whose teacher is not better than the
uniform policy by at least ``MIN_GAP`` are recorded and skipped. Results are written after every MDP
(`--append` adds MDPs to the saved ones; another `--temperature` writes its own files).

    python -m benchmarks.distill_ppo_gridworld --n-mdps 100
    python -m benchmarks.distill_ppo_gridworld --n-mdps 100 --first-mdp 100 --append   # 100 more MDPs
"""

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import DQN
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

from sb3_distill import DistillPPO

SIZE = 20
P_END = 0.01
NOISE = 0.1
P_WALL, P_GOAL, P_PIT, P_HAZARD = 0.2, 0.01, 0.02, 0.05
GOAL_REWARD, PIT_REWARD, HAZARD_REWARD = 10.0, -10.0, -1.0
EPSILON = 0.1
Q_LEARNING_STEPS = 400_000
Q_LEARNING_RATE = 0.1
#: MDPs whose teacher beats the uniform policy by less than this (in return) are skipped
MIN_GAP = 1.0
#: The recovery thresholds of the normalised return
THRESHOLDS = (0.9, 0.95)
#: (name, DistillPPO arguments): the rule of the paper's Fig. 3 under each control policy
CONTROLS: list[tuple[str, dict[str, Any]]] = [
    ("teacher", dict(update_rule="teacher_distill")),
    ("student", dict(update_rule="on_policy_distill", control="student")),
    ("uniform", dict(update_rule="on_policy_distill", control="uniform")),
]
N_ENVS = 16
# Tabular student: one-hot states straight into the action and value heads; one plain gradient step (SGD) on the
# mean cross-entropy of each rollout of N_ENVS x n_steps states, as the paper's gradient steps on the logits
# (Adam would rescale each state's step by its own gradient history and hide how often the state is sampled)
PPO_KWARGS: dict[str, Any] = dict(
    n_steps=16,
    batch_size=256,
    n_epochs=1,
    max_grad_norm=1e6,
    policy_kwargs=dict(net_arch=[], optimizer_class=th.optim.SGD),
)
MOVES = ((0, 1), (1, 0), (0, -1), (-1, 0))  # (d_row, d_col): right, down, left, up


@dataclass
class GridMDP:
    """
    A grid world as arrays over the ``size * size`` cells (index ``row * size + col``).

    :param size: side of the grid
    :param walls: (n_cells,) bool
    :param terminal: (n_cells,) bool, the episode ends on entering the cell
    :param rewards: (n_cells,) reward received on entering the cell
    :param transitions: (n_cells, 4, n_cells) ``P(s' | s, a)``
    :param start: the start cell
    :param p_end: probability that the episode ends after any step
    """

    size: int
    walls: np.ndarray
    terminal: np.ndarray
    rewards: np.ndarray
    transitions: np.ndarray
    start: int
    p_end: float

    @property
    def n_cells(self) -> int:
        return self.size * self.size

    @property
    def continues(self) -> np.ndarray:
        """(n_cells,) probability that the episode goes on after entering each cell."""
        return (1.0 - self.p_end) * ~self.terminal


def make_mdp(seed: int, size: int = SIZE, noise: float = NOISE, p_end: float = P_END) -> GridMDP:
    """The random grid world of seed ``seed`` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    n_cells = size * size
    kinds = rng.choice(5, size=n_cells, p=[1 - P_WALL - P_GOAL - P_PIT - P_HAZARD, P_WALL, P_GOAL, P_PIT, P_HAZARD])
    start = (size // 2) * size + size // 2
    kinds[start] = 0
    walls, terminal = kinds == 1, (kinds == 2) | (kinds == 3)
    rewards = np.select([kinds == 2, kinds == 3, kinds == 4], [GOAL_REWARD, PIT_REWARD, HAZARD_REWARD], 0.0)
    # Deterministic effect of each move: off the grid or into a wall, stay
    moved = np.zeros((n_cells, 4), dtype=np.int64)
    for cell in range(n_cells):
        row, col = divmod(cell, size)
        for action, (d_row, d_col) in enumerate(MOVES):
            target_row, target_col = row + d_row, col + d_col
            target = target_row * size + target_col
            inside = 0 <= target_row < size and 0 <= target_col < size
            moved[cell, action] = target if inside and not walls[target] else cell
    # The intended move with probability 1 - noise, else one of the 4 moves uniformly
    transitions = np.zeros((n_cells, 4, n_cells))
    rows = np.arange(n_cells)
    for action in range(4):
        transitions[rows, action, moved[:, action]] += 1.0 - noise
        for other in range(4):
            transitions[rows, action, moved[:, other]] += noise / 4
    return GridMDP(size, walls, terminal, rewards.astype(np.float64), transitions, start, p_end)


class GridWorld(gym.Env):
    """A :class:`GridMDP` as a gymnasium env: the observation is the cell index (SB3 makes it one-hot)."""

    def __init__(self, mdp: GridMDP) -> None:
        self.mdp = mdp
        self.observation_space = spaces.Discrete(mdp.n_cells)
        self.action_space = spaces.Discrete(4)
        self._cumulative = np.cumsum(mdp.transitions, axis=-1)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[int, dict]:
        super().reset(seed=seed)
        self.state = self.mdp.start
        return self.state, {}

    def step(self, action: int) -> tuple[int, float, bool, bool, dict]:
        cumulative = self._cumulative[self.state, int(action)]
        self.state = int(
            min(np.searchsorted(cumulative, self.np_random.random() * cumulative[-1], side="right"), len(cumulative) - 1)
        )
        terminated = bool(self.mdp.terminal[self.state]) or self.np_random.random() < self.mdp.p_end
        return self.state, float(self.mdp.rewards[self.state]), terminated, False, {}


def q_learning(mdp: GridMDP, seed: int, n_steps: int = Q_LEARNING_STEPS, n_walkers: int = 16) -> np.ndarray:
    """
    Tabular Q-learning (undiscounted; the random end is a termination) with an epsilon-greedy behaviour policy
    from the start, ``n_walkers`` episodes run side by side (vectorised), ``n_steps`` transitions in all.

    :return: the Q-table, shape (n_cells, 4)
    """
    rng = np.random.default_rng(seed)
    q_table = np.zeros((mdp.n_cells, 4))
    cumulative = np.cumsum(mdp.transitions, axis=-1)
    states = np.full(n_walkers, mdp.start)
    for _ in range(n_steps // n_walkers):
        # Greedy with random tie-breaking, random with probability epsilon
        actions = np.argmax(q_table[states] + 1e-9 * rng.random((n_walkers, 4)), axis=1)
        explore = rng.random(n_walkers) < EPSILON
        actions[explore] = rng.integers(4, size=int(explore.sum()))
        draws = rng.random(n_walkers)[:, None] * cumulative[states, actions, -1:]
        next_states = np.minimum((cumulative[states, actions] <= draws).sum(axis=1), mdp.n_cells - 1)
        rewards = mdp.rewards[next_states]
        ended = mdp.terminal[next_states] | (rng.random(n_walkers) < mdp.p_end)
        targets = rewards + np.where(ended, 0.0, q_table[next_states].max(axis=1))
        q_table[states, actions] += Q_LEARNING_RATE * (targets - q_table[states, actions])
        states = np.where(ended, mdp.start, next_states)
    return q_table


def make_teacher(mdp: GridMDP, q_table: np.ndarray) -> DQN:
    """An SB3 DQN whose Q-network is linear on the one-hot state, with the Q-table as its weights."""
    teacher = DQN("MlpPolicy", GridWorld(mdp), buffer_size=1, learning_starts=0, policy_kwargs=dict(net_arch=[]))
    for network in (teacher.policy.q_net, teacher.policy.q_net_target):
        linear = network.q_net[0]
        with th.no_grad():
            linear.weight.copy_(th.as_tensor(q_table.T, dtype=th.float32))
            linear.bias.zero_()
    return teacher


def softmax(q_table: np.ndarray, temperature: float) -> np.ndarray:
    scaled = q_table / temperature
    exp = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def evaluate(mdp: GridMDP, probs: np.ndarray) -> tuple[float, np.ndarray]:
    """
    Exact policy evaluation of ``probs`` (n_cells, 4): the expected undiscounted return from the start, and the
    expected number of visits to each cell where the agent acts (its occupancy), from
    ``V = r_pi + M_pi V`` with ``M_pi[s, s'] = P_pi(s' | s) P(go on | s')``.
    """
    step = np.einsum("sa,sat->st", probs, mdp.transitions)
    expected_reward = step @ mdp.rewards
    going_on = step * mdp.continues[None]
    # One LU factorisation (torch, in this process's threads: numpy's BLAS threads crawl on a loaded machine)
    lu, pivots = th.linalg.lu_factor(th.as_tensor(np.eye(mdp.n_cells) - going_on))
    values = th.linalg.lu_solve(lu, pivots, th.as_tensor(expected_reward)[:, None])[:, 0]
    start = th.zeros(mdp.n_cells, 1, dtype=th.float64)
    start[mdp.start] = 1.0
    occupancy = th.linalg.lu_solve(lu, pivots, start, adjoint=True)[:, 0]
    return float(values[mdp.start]), occupancy.numpy()


def kl_rows(teacher: np.ndarray, student: np.ndarray) -> np.ndarray:
    """KL(teacher(s) || student(s)) for every cell, shape (n_cells,)."""
    return np.sum(teacher * (np.log(teacher + 1e-12) - np.log(student + 1e-12)), axis=1)


class Curve(BaseCallback):
    """Every `eval_freq` steps: the student's normalised exact return and its KL to the teacher under three z."""

    def __init__(self, mdp: GridMDP, reference: dict[str, Any], eval_freq: int) -> None:
        super().__init__()
        self.mdp, self.reference, self.eval_freq, self._next = mdp, reference, eval_freq, 0.0
        self.points: dict[str, list[float]] = {key: [] for key in ("steps", "score", "kl_teacher", "kl_student", "kl_uniform")}

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            self.record()
            # Evaluations spaced by 10 % of the steps so far (at least eval_freq): the same relative resolution
            # for fast and slow students
            self._next = max(self._next + self.eval_freq, 1.1 * self.num_timesteps)
        return True

    def _on_training_end(self) -> None:
        if self.points["steps"][-1] < self.num_timesteps:
            self.record()

    def record(self) -> None:
        states = th.arange(self.mdp.n_cells, dtype=th.float32)[:, None]
        with th.no_grad():
            student = self.model.policy.get_distribution(states).distribution.probs.numpy().astype(np.float64)
        value, occupancy = evaluate(self.mdp, student)
        teacher = np.asarray(self.reference["teacher_probs"])
        kl = kl_rows(teacher, student)
        low, high = self.reference["uniform_return"], self.reference["teacher_return"]
        self.points["steps"].append(self.num_timesteps)
        self.points["score"].append((value - low) / (high - low))
        self.points["kl_teacher"].append(float(self.reference["teacher_occupancy"] @ kl))
        self.points["kl_student"].append(float(occupancy @ kl))
        self.points["kl_uniform"].append(float(self.reference["uniform_occupancy"] @ kl))


def prepare(
    index: int, temperature: float, size: int = SIZE, q_steps: int = Q_LEARNING_STEPS
) -> tuple[GridMDP, DQN, dict[str, Any]]:
    """MDP ``index``, its Q-learning teacher (as a DQN) and the reference returns and occupancies."""
    mdp = make_mdp(index, size=size)
    q_table = q_learning(mdp, seed=index, n_steps=q_steps)
    teacher_probs = softmax(q_table, temperature)
    teacher_return, teacher_occupancy = evaluate(mdp, teacher_probs)
    uniform_return, uniform_occupancy = evaluate(mdp, np.full((mdp.n_cells, 4), 0.25))
    greedy = np.eye(4)[q_table.argmax(axis=1)]
    entropy = -np.sum(teacher_probs * np.log(teacher_probs + 1e-12), axis=1)
    reference = dict(
        teacher_probs=teacher_probs,
        teacher_return=teacher_return,
        greedy_return=evaluate(mdp, greedy)[0],
        uniform_return=uniform_return,
        teacher_occupancy=teacher_occupancy,
        uniform_occupancy=uniform_occupancy,
        # The teacher's determinism where it goes: its entropy weighted by its own occupancy
        teacher_entropy=float(teacher_occupancy @ entropy / teacher_occupancy.sum()),
        # The fraction of the free cells the teacher visits with expected count >= 0.01 per episode
        teacher_coverage=float(np.mean(teacher_occupancy[~mdp.walls & ~mdp.terminal] >= 0.01)),
    )
    return mdp, make_teacher(mdp, q_table), reference


def run(
    mdp: GridMDP, teacher: DQN, reference: dict[str, Any], kwargs: dict[str, Any], seed: int, args: argparse.Namespace
) -> dict:
    """One DistillPPO student under one control policy; its curve."""
    env = make_vec_env(lambda: GridWorld(mdp), n_envs=N_ENVS, seed=seed)
    model = DistillPPO(
        "MlpPolicy",
        env,
        teacher=teacher,
        temperature=args.temperature,
        learning_rate=args.learning_rate,
        seed=seed,
        **kwargs,
        **PPO_KWARGS,
    )
    # A tabular policy: one logit per (state, action). The action head's bias is shared by every state; frozen at
    # its initial 0 (SGD skips a parameter without gradient), each step moves only the logits of the states sampled
    model.policy.action_net.bias.requires_grad_(False)
    curve = Curve(mdp, reference, args.eval_freq)
    model.learn(args.budget, callback=curve)
    return curve.points


def steps_to(curve: dict[str, list[float]], threshold: float) -> float:
    """The first evaluation step whose normalised return is >= threshold (inf if none)."""
    return next(
        (float(step) for step, score in zip(curve["steps"], curve["score"], strict=True) if score >= threshold), np.inf
    )


def summary(values: list[float]) -> str:
    """
    Median [quartiles] of step counts that may be inf (not reached within the budget); the order statistics
    below each quantile (numpy's ``method="lower"``), so that no value is interpolated with an inf.
    """
    q1, median, q3 = (np.percentile(values, q, method="lower") for q in (25, 50, 75))
    text = [f"{v:.0f}" if np.isfinite(v) else ">budget" for v in (median, q1, q3)]
    return f"{text[0]} [{text[1]}, {text[2]}]"


def ratio_summary(numerators: list[float], denominators: list[float], budget: int) -> str:
    """
    Median [quartiles] over MDPs of steps(control) / steps(student); a control that did not recover counts as the
    budget (a lower bound, marked >=); MDPs where the student did not recover are left out.
    """
    pairs = [
        (min(num, budget), den, np.isinf(num)) for num, den in zip(numerators, denominators, strict=True) if np.isfinite(den)
    ]
    if not pairs:
        return "n/a"
    ratios = [num / den for num, den, _ in pairs]
    q1, median, q3 = np.percentile(ratios, [25, 50, 75])
    bound = ">= " if any(censored for *_, censored in pairs) else ""
    return f"{bound}{median:.2f} [{q1:.2f}, {q3:.2f}]"


def report(mdps: list[dict[str, Any]], args: argparse.Namespace) -> str:
    done = [saved for saved in mdps if not saved.get("skipped")]
    skipped = len(mdps) - len(done)
    lines = [
        f"DistillPPO on random {SIZE}x{SIZE} grid worlds: {len(done)} MDPs ({skipped} skipped: teacher within {MIN_GAP} "
        f"of the uniform policy's return), Q-learning teachers pi = softmax(Q / {args.temperature}), {args.budget} "
        "env steps per student, loss H^x(pi || pi_theta), no reward",
        "",
        "| control q_theta | steps to 90 % of the teacher's return: median [quartiles] | recovered (MDPs) "
        "| steps to 95 %: median [quartiles] | recovered (MDPs) | normalised return at the end (median) "
        "| steps(control) / steps(student) at 90 % | at 95 % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    if not done:
        return "\n".join(lines)
    firsts = {
        (name, threshold): [steps_to(saved["curves"][name], threshold) for saved in done]
        for name, _ in CONTROLS
        for threshold in THRESHOLDS
    }
    for name, _ in CONTROLS:
        cells = []
        for threshold in THRESHOLDS:
            values = firsts[(name, threshold)]
            cells += [summary(values), f"{int(np.isfinite(values).sum())}/{len(values)}"]
        final = float(np.median([saved["curves"][name]["score"][-1] for saved in done]))
        ratios = [
            "1" if name == "student" else ratio_summary(firsts[(name, t)], firsts[("student", t)], args.budget)
            for t in THRESHOLDS
        ]
        lines.append(f"| {name} | {' | '.join(cells)} | {final:.3f} | {' | '.join(ratios)} |")
    lines += ["", *comparison(done, firsts)]
    teacher = [saved["reference"] for saved in done]
    lines += [
        "",
        f"Teachers (median over MDPs): return {np.median([r['teacher_return'] for r in teacher]):.2f} "
        f"(greedy Q {np.median([r['greedy_return'] for r in teacher]):.2f}, uniform policy "
        f"{np.median([r['uniform_return'] for r in teacher]):.2f}), entropy on their own states "
        f"{np.median([r['teacher_entropy'] for r in teacher]):.3f} nats, free cells visited "
        f"{100 * np.median([r['teacher_coverage'] for r in teacher]):.0f} %.",
    ]
    return "\n".join(lines)


def comparison(done: list[dict[str, Any]], firsts: dict[tuple[str, float], list[float]]) -> list[str]:
    """
    Per control: in how many MDPs the student-driven student recovered 90 % strictly sooner / later, the mean
    normalised return over training (area under the curve over the budget, the paper's right panel) and the
    final expected summed KL under the three trajectory distributions z, as medians over MDPs.
    """
    lines = [
        "| control q_theta | student-driven sooner / later / same evaluation (90 %) | mean normalised return over "
        "training (median) | E_teacher[sum KL] at the end | E_student[sum KL] | E_uniform[sum KL] |",
        "|---|---|---|---|---|---|",
    ]
    for name, _ in CONTROLS:
        own, student = np.array(firsts[(name, THRESHOLDS[0])]), np.array(firsts[("student", THRESHOLDS[0])])
        order = "-" if name == "student" else f"{(student < own).sum()} / {(student > own).sum()} / {(student == own).sum()}"
        curves = [saved["curves"][name] for saved in done]
        area = np.median([np.trapezoid(curve["score"], curve["steps"]) / curve["steps"][-1] for curve in curves])
        kls = [np.median([curve[key][-1] for curve in curves]) for key in ("kl_teacher", "kl_student", "kl_uniform")]
        lines.append(f"| {name} | {order} | {area:.3f} | " + " | ".join(f"{kl:.3f}" for kl in kls) + " |")
    return lines


def plot(mdps: list[dict[str, Any]], args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [saved for saved in mdps if not saved.get("skipped")]
    if not done:
        return
    keys = [("score", "normalised return"), ("kl_student", "E_student[sum KL]"), ("kl_teacher", "E_teacher[sum KL]")]
    keys.append(("kl_uniform", "E_uniform[sum KL]"))
    fig, axes = plt.subplots(1, len(keys) + 1, figsize=(4 * (len(keys) + 1), 3.5))
    for ax, (key, label) in zip(axes, keys, strict=False):
        for name, _ in CONTROLS:
            curves = [saved["curves"][name] for saved in done]
            length = min(len(curve[key]) for curve in curves)
            values = np.array([curve[key][:length] for curve in curves])
            steps = curves[0]["steps"][:length]
            ax.plot(steps, np.median(values, axis=0), label=name)
            ax.fill_between(steps, *np.percentile(values, [25, 75], axis=0), alpha=0.2)
        ax.set_xlabel("environment steps")
        ax.set_title(f"{label} (median, quartiles)", fontsize=9)
        if key != "score":
            ax.set_yscale("log")
    axes[0].axhline(0.9, color="gray", linestyle=":")
    axes[0].legend(title="control", fontsize=8)
    # Right panel of the paper's Fig. 3: the student-driven speed-up against the teacher's determinism
    ax = axes[-1]
    for name, marker in (("teacher", "o"), ("uniform", "x")):
        xs, ys = [], []
        for saved in done:
            student = steps_to(saved["curves"]["student"], THRESHOLDS[0])
            other = min(steps_to(saved["curves"][name], THRESHOLDS[0]), args.budget)
            if np.isfinite(student):
                xs.append(saved["reference"]["teacher_entropy"])
                ys.append(other / student)
        ax.scatter(xs, ys, marker=marker, s=12, label=f"{name} / student")
    if any(collection.get_offsets().size for collection in ax.collections):
        ax.set_yscale("log")
    ax.set_xlabel("teacher entropy on its states (nats)")
    ax.set_title("speed-up of student-driven (90 %)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_mdp(index: int, args: argparse.Namespace) -> dict[str, Any]:
    """Teacher and the three students of MDP ``index`` (or a skip record)."""
    started = time.perf_counter()
    mdp, teacher, reference = prepare(index, args.temperature)
    kept = {key: reference[key] for key in ("teacher_return", "greedy_return", "uniform_return", "teacher_entropy")}
    kept["teacher_coverage"] = reference["teacher_coverage"]
    if reference["teacher_return"] - reference["uniform_return"] < MIN_GAP:
        return dict(mdp=index, skipped=True, reference=kept)
    curves = {name: run(mdp, teacher, reference, kwargs, index, args) for name, kwargs in CONTROLS}
    return dict(mdp=index, reference=kept, curves=curves, seconds=time.perf_counter() - started)


def _rounded(value: Any) -> Any:
    """Floats to 6 significant digits, in nested dicts and lists (the JSON of 100 MDPs stays small)."""
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_rounded(item) for item in value]
    return value


def stem(args: argparse.Namespace) -> str:
    """The results' file name: the temperature is in it when it is not the default."""
    return "distill_ppo_gridworld" if args.temperature == 0.1 else f"distill_ppo_gridworld_tau{args.temperature:g}"


def write(mdps: list[dict[str, Any]], args: argparse.Namespace) -> None:
    settings = dict(
        budget=args.budget, eval_freq=args.eval_freq, temperature=args.temperature, learning_rate=args.learning_rate
    )
    saved = json.dumps(_rounded(dict(settings=settings, mdps=mdps)), separators=(",", ":"))
    (args.output / f"{stem(args)}.json").write_text(saved)
    text = report(mdps, args)
    (args.output / f"{stem(args)}.md").write_text(text + "\n")
    plot(mdps, args, args.output / f"{stem(args)}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-mdps", type=int, default=100, help="how many MDPs (seeds first-mdp, first-mdp + 1, ...)")
    parser.add_argument("--first-mdp", type=int, default=0)
    parser.add_argument("--budget", type=int, default=49_152, help="environment steps per student")
    parser.add_argument("--eval-freq", type=int, default=256)
    parser.add_argument("--learning-rate", type=float, default=10.0, help="SGD step size on the student's logits")
    parser.add_argument("--temperature", type=float, default=0.1, help="tau of the teacher pi = softmax(Q / tau)")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--report-only", action="store_true", help="rewrite the table and plot from the saved JSON")
    parser.add_argument("--append", action="store_true", help="add these MDPs to the ones saved in the JSON")
    args = parser.parse_args()
    th.set_num_threads(1)

    json_path = args.output / f"{stem(args)}.json"
    mdps: list[dict[str, Any]] = []
    if args.report_only or (args.append and json_path.exists()):
        saved = json.loads(json_path.read_text())
        for key in ("budget", "eval_freq", "temperature", "learning_rate"):
            if saved["settings"][key] != getattr(args, key):
                raise ValueError(
                    f"`--{key.replace('_', '-')}` {getattr(args, key)} differs from the saved runs' {saved['settings'][key]}"
                )
        mdps = saved["mdps"]
    if not args.report_only:
        args.output.mkdir(parents=True, exist_ok=True)
        known = {saved["mdp"] for saved in mdps}
        for index in range(args.first_mdp, args.first_mdp + args.n_mdps):
            if index in known:
                continue
            mdps.append(run_mdp(index, args))
            last = mdps[-1]
            finals = {name: round(curve["score"][-1], 3) for name, curve in last.get("curves", {}).items()}
            print(index, "skipped" if last.get("skipped") else finals, f"{last.get('seconds', 0):.0f}s", flush=True)
            write(mdps, args)
    text = report(mdps, args)
    print("\n" + text)
    write(mdps, args)


if __name__ == "__main__":
    main()
