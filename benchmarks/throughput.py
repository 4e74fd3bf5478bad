"""
Throughput of EnsembleDistillDQN (M teachers + a student) and RealTimeDistillDQN (a teacher + 3 students)
against plain SB3 DQN, same settings, one process; with ``--suite sac``, of PIEKDSAC (K SAC agents)
against plain SB3 SAC.

Both run CartPole-v1 with train_freq=1, gradient_steps=1, batch_size=64 and the same teacher network;
they train in alternating chunks of steps (DQN, EnsembleDistillDQN, DQN, ...) so that drift in machine
load hits both alike.
The figure of merit is the ratio of wall times per environment step (median over repeats):
1.0x means the whole ensemble costs what one plain DQN costs.

    python benchmarks/throughput.py                      # the defaults used in the README
    python benchmarks/throughput.py --device cuda --repeats 7
    python benchmarks/throughput.py --suite sac          # PIEKDSAC K=3 vs SAC, SAC's default networks
    python benchmarks/throughput.py --suite sac --sac-net-arch 64 64 --sac-batch-size 64
    python benchmarks/throughput.py --suite ppo          # DistillPPO vs PPO, CartPole-v1
    python benchmarks/throughput.py --suite multitask    # MultiTaskPolicyDistillation vs DQN on its multi-task env
    python benchmarks/throughput.py --suite atari --device cuda --batch-size 32 --atari-compile   # 84x84x4 CNNs

The DQN distillers are timed in their three ``torch_compile`` modes: ``(eager)`` (False); ``(default, long run)``:
the default "auto", which compiles the gradient step in a ``learn()`` call of at least 20,000 gradient steps
(``AUTO_COMPILE_MIN_GRADIENT_STEPS``; the benchmark's chunks are shorter, so it lowers the threshold to 0 to time
what a long run gets); ``(torch_compile)``: True, which also calls the fused Adam kernel directly.

The DQN suite also times a naive baseline, "naive loop": the same members (M teachers and the student) as
separate SB3 DQN networks, each with its own optimizer, updated one after the other in a Python loop, as public
distillation code does; it shows what stacking the members buys.

The SAC suite runs Pendulum-v1 with train_freq=1, gradient_steps=1 and SB3's SAC defaults (net_arch
[256, 256], batch_size 256) unless told otherwise. PIEKDSAC is timed twice: joint training alone
(``knowledge_sharing="none"``, the per-step hot path) and with its default distillation phases
(``distill_interval`` I, 5 epochs x 200 batches); the timed steps must span at least one interval for the
second figure to include a phase (the default: 5000 timed steps, I=5000, one phase per repeat).
"""

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch as th
from stable_baselines3 import DQN, PPO, SAC
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import FakeImageEnv
from stable_baselines3.common.utils import polyak_update
from stable_baselines3.dqn.policies import DQNPolicy
from torch.nn import functional as F

from sb3_distill import PIEKDSAC, DistillPPO, EnsembleDistillDQN, MultiTaskPolicyDistillation, RealTimeDistillDQN
from sb3_distill.common import distill_dqn
from sb3_distill.common.losses import reverse_kl_loss
from sb3_distill.common.multitask import MultiTaskVecEnv


class NaiveEnsembleDQN(DQN):
    """
    The naive baseline of the table: EnsembleDistillDQN's members (M teachers and a student) as separate SB3
    ``DQNPolicy`` networks, each with its own optimizer, updated one after the other in a Python loop, as public
    distillation code does (teacher j: SB3's DQN loss, zero_grad, backward, clip, step; then the student: the
    teachers' Q-values, the reverse-KL loss averaged over teachers, backward, clip, step). Teacher 0 acts (the cost
    of acting is that of one network either way). A benchmark baseline only, not part of the library.
    """

    def __init__(self, *args, n_teachers: int = 3, student_net_arch: list[int] | None = None, **kwargs) -> None:
        self.n_teachers = n_teachers
        self.student_net_arch = student_net_arch or [16, 16]
        super().__init__(*args, **kwargs)

    def _setup_model(self) -> None:
        super()._setup_model()
        kwargs = dict(self.policy_kwargs)
        self.teachers = [self.policy] + [
            DQNPolicy(self.observation_space, self.action_space, self.lr_schedule, **kwargs).to(self.device)  # type: ignore[arg-type]
            for _ in range(self.n_teachers - 1)
        ]
        kwargs["net_arch"] = self.student_net_arch
        self.student = DQNPolicy(self.observation_space, self.action_space, self.lr_schedule, **kwargs).to(self.device)  # type: ignore[arg-type]

    def _on_step(self) -> None:
        super()._on_step()
        if self._n_calls % max(self.target_update_interval // self.n_envs, 1) == 0:
            for teacher in self.teachers[1:]:
                polyak_update(teacher.q_net.parameters(), teacher.q_net_target.parameters(), self.tau)

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        for network in [*self.teachers, self.student]:
            network.set_training_mode(True)
            self._update_learning_rate(network.optimizer)
        for _ in range(gradient_steps):
            data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            for teacher in self.teachers:
                with th.no_grad():
                    next_q = teacher.q_net_target(data.next_observations).max(dim=1)[0].reshape(-1, 1)
                    target_q = data.rewards + (1 - data.dones) * self.gamma * next_q
                current_q = th.gather(teacher.q_net(data.observations), dim=1, index=data.actions.long())
                loss = F.smooth_l1_loss(current_q, target_q)
                teacher.optimizer.zero_grad()
                loss.backward()
                th.nn.utils.clip_grad_norm_(teacher.parameters(), self.max_grad_norm)
                teacher.optimizer.step()
            with th.no_grad():
                teacher_q = th.stack([teacher.q_net(data.observations) for teacher in self.teachers])
            student_q = self.student.q_net(data.observations)
            distill = th.stack([reverse_kl_loss(student_q, q, temperature=0.1) for q in teacher_q]).mean()
            self.student.optimizer.zero_grad()
            distill.backward()
            th.nn.utils.clip_grad_norm_(self.student.parameters(), self.max_grad_norm)
            self.student.optimizer.step()
        self._n_updates += gradient_steps
        self.logger.record("train/loss", loss.item())
        self.logger.record("train/distill_loss", distill.item())


def compile_mode(algo: str) -> bool | str:
    """The ``torch_compile`` of a DQN-suite row: True, "auto" (the default, as in a long run) or False (eager)."""
    if algo.endswith("(torch_compile)"):
        return True
    return "auto" if algo.endswith("(default, long run)") else False


def make_model(algo: str, args: argparse.Namespace, seed: int) -> DQN:
    """A model of either algorithm with the shared settings, its warm-up phase (random actions) done."""
    common = dict(
        learning_rate=1e-3,
        batch_size=args.batch_size,
        buffer_size=50_000,
        learning_starts=args.learning_starts,
        train_freq=1,
        gradient_steps=1,
        target_update_interval=500,
        policy_kwargs=dict(net_arch=args.net_arch),
        device=args.device,
        seed=seed,
    )
    if algo == "DQN":
        model = DQN("MlpPolicy", "CartPole-v1", **common)
    elif algo == "DQN (fused Adam)":
        # Reference only: SB3's DQN with the optimizer implementation EnsembleDistillDQN uses by default
        common["policy_kwargs"] = dict(net_arch=args.net_arch, optimizer_kwargs=dict(fused=True))
        model = DQN("MlpPolicy", "CartPole-v1", **common)
    elif algo == "naive loop (M separate SB3 DQNs + student)":
        model = NaiveEnsembleDQN(
            "MlpPolicy", "CartPole-v1", n_teachers=args.n_teachers, student_net_arch=args.student_net_arch, **common
        )
    elif algo.startswith("RealTimeDistillDQN"):
        model = RealTimeDistillDQN(
            "MlpPolicy",
            "CartPole-v1",
            students=[dict(net_arch=net_arch) for net_arch in args.realtime_students],
            stack_teacher="not stacked" not in algo,
            torch_compile=compile_mode(algo),
            **common,
        )
    else:
        model = EnsembleDistillDQN(
            "MlpPolicy",
            "CartPole-v1",
            n_teachers=args.n_teachers,
            student_policy_kwargs=dict(net_arch=args.student_net_arch),
            torch_compile=compile_mode(algo),
            **common,
        )
    # Warm-up, excluded from the timing: the random-action phase, then a few updates (torch.compile compiles there)
    model.learn(args.learning_starts + args.chunk)
    return model


def run_repeat(args: argparse.Namespace, seed: int) -> dict[str, float]:
    """
    Train both models in alternating chunks of `args.chunk` steps, so that changes in machine load
    hit both alike, and return each one's environment steps per second (with training on).
    """
    models = {algo: make_model(algo, args, seed) for algo in ALGOS}
    elapsed = dict.fromkeys(ALGOS, 0.0)
    for _ in range(args.steps // args.chunk):
        for algo, model in models.items():
            start = time.perf_counter()
            model.learn(args.chunk, reset_num_timesteps=False)
            elapsed[algo] += time.perf_counter() - start
    return {algo: args.steps // args.chunk * args.chunk / elapsed[algo] for algo in ALGOS}


ALGOS = (
    "DQN",
    "DQN (fused Adam)",
    "EnsembleDistillDQN (eager)",
    "EnsembleDistillDQN (default, long run)",
    "EnsembleDistillDQN (torch_compile)",
    "naive loop (M separate SB3 DQNs + student)",
    "RealTimeDistillDQN (teacher + students) (eager)",
    "RealTimeDistillDQN (teacher + students) (default, long run)",
    "RealTimeDistillDQN (teacher + students) (torch_compile)",
    "RealTimeDistillDQN (teacher not stacked) (eager)",
)


SAC_ALGOS = (
    "SAC",
    "SAC (fused Adam)",
    "PIEKDSAC (joint training)",
    "PIEKDSAC (with distillation)",
)


def make_sac_model(algo: str, args: argparse.Namespace, seed: int) -> SAC:
    """A SAC or PIEKDSAC model with the shared settings, its warm-up phase (random actions) done."""
    common: dict = dict(
        batch_size=args.sac_batch_size,
        buffer_size=100_000,
        learning_starts=args.learning_starts,
        train_freq=1,
        gradient_steps=1,
        policy_kwargs=dict(net_arch=args.sac_net_arch),
        device=args.device,
        seed=seed,
    )
    if algo == "SAC":
        model = SAC("MlpPolicy", args.sac_env, **common)
    elif algo == "SAC (fused Adam)":
        # Reference only: SB3's SAC with the optimizer implementation PIEKDSAC uses by default
        common["policy_kwargs"] = dict(net_arch=args.sac_net_arch, optimizer_kwargs=dict(fused=True))
        model = SAC("MlpPolicy", args.sac_env, **common)
    else:
        knowledge_sharing = "none" if algo == "PIEKDSAC (joint training)" else "distill"
        model = PIEKDSAC(
            "MlpPolicy",
            args.sac_env,
            ensemble_size=args.ensemble_size,
            knowledge_sharing=knowledge_sharing,
            distill_interval=args.distill_interval,
            distill_gradient_steps=args.distill_gradient_steps,
            **common,
        )
    # Warm-up, excluded from the timing: the random-action phase, then a few updates
    model.learn(args.learning_starts + args.chunk)
    return model


def run_sac_repeat(args: argparse.Namespace, seed: int) -> dict[str, float]:
    """The SAC suite's :func:`run_repeat`: environment steps per second of each of :data:`SAC_ALGOS`."""
    models = {algo: make_sac_model(algo, args, seed) for algo in SAC_ALGOS}
    elapsed = dict.fromkeys(SAC_ALGOS, 0.0)
    for _ in range(args.steps // args.chunk):
        for algo, model in models.items():
            start = time.perf_counter()
            model.learn(args.chunk, reset_num_timesteps=False)
            elapsed[algo] += time.perf_counter() - start
    phases = models["PIEKDSAC (with distillation)"].n_sharing_phases  # type: ignore[attr-defined]
    print(f"  distillation phases in the timed steps: {phases}", flush=True)
    return {algo: args.steps // args.chunk * args.chunk / elapsed[algo] for algo in SAC_ALGOS}


ATARI_ALGOS = (
    "DQN",
    "EnsembleDistillDQN",
    "EnsembleDistillDQN (torch_compile)",
    "RealTimeDistillDQN",
    "RealTimeDistillDQN (torch_compile)",
)


def make_atari_model(algo: str, args: argparse.Namespace, seed: int) -> DQN:
    """
    Atari-size models on SB3's ``FakeImageEnv`` (84x84x4 uint8 frames, 6 actions; no ROM needed): DQN's Nature CNN,
    EnsembleDistillDQN with M Nature-CNN teachers and the paper's student1, RealTimeDistillDQN with a Nature-CNN
    teacher and its default student (Net3); warmed up.
    """
    env = FakeImageEnv(action_dim=6, screen_height=84, screen_width=84, n_channels=4, discrete=True)
    common: dict = dict(
        learning_rate=1e-4,
        batch_size=args.batch_size,
        buffer_size=args.atari_buffer_size,
        learning_starts=args.learning_starts,
        train_freq=1,
        gradient_steps=1,
        target_update_interval=1000,
        device=args.device,
        seed=seed,
    )
    compile_step = algo.endswith("(torch_compile)")
    if algo == "DQN":
        model = DQN("CnnPolicy", env, **common)
    elif algo.startswith("EnsembleDistillDQN"):
        model = EnsembleDistillDQN("CnnPolicy", env, n_teachers=args.n_teachers, torch_compile=compile_step, **common)
    else:
        model = RealTimeDistillDQN("CnnPolicy", env, torch_compile=compile_step, **common)
    model.learn(args.learning_starts + args.chunk)
    return model


def atari_main(args: argparse.Namespace) -> None:
    """Time the Atari-size DQN distillers against DQN and write ``throughput_atari_<device>.{md,json}``."""
    algos = ATARI_ALGOS if args.atari_compile else tuple(algo for algo in ATARI_ALGOS if "compile" not in algo)
    results, medians, relative, rows = measure(
        args, lambda a, seed: run_alternating({algo: make_atari_model(algo, a, seed) for algo in algos}, a), algos, "DQN"
    )
    lines = [
        f"Throughput, Atari-size (FakeImageEnv 84x84x4), train_freq=1, batch_size={args.batch_size}, "
        f"M={args.n_teachers} Nature-CNN teachers + student1; RealTimeDistillDQN: Nature-CNN teacher + Net3",
        *rows,
    ]
    report = "\n".join(lines)
    print("\n" + report)
    args.output.mkdir(parents=True, exist_ok=True)
    stem = f"throughput_atari_{args.device.replace(':', '')}"
    (args.output / f"{stem}.md").write_text(report + "\n")
    summary = {"args": vars(args) | {"output": str(args.output)}, "steps_per_s": results, "medians": medians}
    (args.output / f"{stem}.json").write_text(json.dumps(summary | {"wall_time_vs_dqn": relative}, indent=2))


PPO_ALGOS = ("PPO", "DistillPPO")
MULTITASK_ALGOS = ("DQN (multi-task env)", "MultiTaskPolicyDistillation")
#: Two tasks with the same number of actions, so that a plain DQN can act on their multi-task env too
MULTITASK_ENVS = ("Acrobot-v1", "MountainCar-v0")


def make_ppo_model(algo: str, args: argparse.Namespace, seed: int) -> PPO:
    """PPO or DistillPPO (its default update rule, a fresh PPO teacher of the same size) on CartPole-v1, warmed up."""
    common: dict = dict(n_steps=args.ppo_n_steps, batch_size=64, n_epochs=args.ppo_n_epochs, device=args.device, seed=seed)
    if algo == "PPO":
        model = PPO("MlpPolicy", "CartPole-v1", **common)
    else:
        teacher = PPO("MlpPolicy", "CartPole-v1", device=args.device, seed=seed + 1000)
        model = DistillPPO("MlpPolicy", "CartPole-v1", teacher=teacher, **common)
    model.learn(args.ppo_n_steps)
    return model


def make_multitask_model(algo: str, args: argparse.Namespace, seed: int) -> DQN:
    """
    MultiTaskPolicyDistillation of (untrained) DQN teachers on Acrobot-v1 + MountainCar-v0, or SB3's DQN with the same
    settings on the same multi-task env (Dict observations), the algorithm it builds on; warmed up.
    """
    common: dict = dict(
        learning_rate=1e-3,
        batch_size=args.batch_size,
        buffer_size=50_000,
        learning_starts=args.learning_starts,
        train_freq=1,
        gradient_steps=1,
        device=args.device,
        seed=seed,
    )
    if algo == "MultiTaskPolicyDistillation":
        teachers = {env_id: DQN("MlpPolicy", env_id, device=args.device, seed=seed) for env_id in MULTITASK_ENVS}
        model = MultiTaskPolicyDistillation(teachers=teachers, student_policy_kwargs=dict(net_arch=args.net_arch), **common)
    else:
        env = MultiTaskVecEnv({env_id: make_vec_env(env_id, n_envs=1, seed=seed) for env_id in MULTITASK_ENVS})
        model = DQN("MultiInputPolicy", env, policy_kwargs=dict(net_arch=args.net_arch), **common)
    model.learn(args.learning_starts + args.chunk)
    return model


def run_alternating(models: dict, args: argparse.Namespace) -> dict[str, float]:
    """Train the models in alternating chunks of ``args.chunk`` steps; each one's environment steps per second."""
    elapsed = dict.fromkeys(models, 0.0)
    steps = dict.fromkeys(models, 0)
    for _ in range(args.steps // args.chunk):
        for algo, model in models.items():
            start, before = time.perf_counter(), model.num_timesteps
            model.learn(args.chunk, reset_num_timesteps=False)
            elapsed[algo] += time.perf_counter() - start
            steps[algo] += model.num_timesteps - before
    return {algo: steps[algo] / elapsed[algo] for algo in models}


def pair_main(args: argparse.Namespace) -> None:
    """Time DistillPPO against PPO (``--suite ppo``) or MultiTaskPolicyDistillation against DQN (``--suite multitask``)."""
    if args.suite == "ppo":
        algos, make, setting = (
            PPO_ALGOS,
            make_ppo_model,
            f"CartPole-v1, n_steps={args.ppo_n_steps}, batch_size=64, n_epochs={args.ppo_n_epochs}",
        )
    else:
        algos, make = MULTITASK_ALGOS, make_multitask_model
        setting = (
            f"{' + '.join(MULTITASK_ENVS)} (one env each), train_freq=1, batch_size={args.batch_size}, "
            f"net_arch={args.net_arch}"
        )
    results, medians, relative, rows = measure(
        args, lambda a, seed: run_alternating({algo: make(algo, a, seed) for algo in algos}, a), algos, algos[0]
    )
    lines = [
        f"Throughput ({args.suite} suite), {setting}",
        *rows,
        "",
        f"{algos[1]} wall time = {relative[algos[1]]:.2f}x {algos[0]}",
    ]
    report = "\n".join(lines)
    print("\n" + report)
    args.output.mkdir(parents=True, exist_ok=True)
    stem = f"throughput_{args.suite}_{args.device.replace(':', '')}"
    (args.output / f"{stem}.md").write_text(report + "\n")
    summary = {"args": vars(args) | {"output": str(args.output)}, "steps_per_s": results, "medians": medians}
    (args.output / f"{stem}.json").write_text(json.dumps(summary | {"wall_time_vs_baseline": relative}, indent=2))


def measure(
    args: argparse.Namespace,
    run: Callable[[argparse.Namespace, int], dict[str, float]],
    algos: tuple[str, ...],
    baseline: str,
) -> tuple[dict[str, list[float]], dict[str, float], dict[str, float], list[str]]:
    """
    Run ``args.repeats`` repeats of ``run`` and summarise them: steps/s of every repeat, their medians, the
    wall time relative to ``baseline`` (median over repeats of the per-repeat ratio) and the rows of the
    markdown table.
    """
    results: dict[str, list[float]] = {algo: [] for algo in algos}
    for repeat in range(args.repeats):
        steps_per_s = run(args, repeat)
        for algo in algos:
            results[algo].append(steps_per_s[algo])
        print(f"repeat {repeat}: " + ", ".join(f"{algo} {steps_per_s[algo]:.1f} steps/s" for algo in algos), flush=True)
    medians = {algo: float(np.median(values)) for algo, values in results.items()}
    relative = {algo: float(np.median(np.array(results[baseline]) / np.array(results[algo]))) for algo in algos}
    device = th.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or platform.machine()
    rows = [
        f"device={args.device} ({device}), torch {th.__version__}, threads={args.threads}, "
        f"{args.steps} timed steps x {args.repeats} repeats (medians)",
        "",
        f"| algorithm | env steps/s (median) | min | max | wall time vs {baseline} |",
        "|---|---|---|---|---|",
    ]
    for algo, values in results.items():
        rows.append(f"| {algo} | {medians[algo]:.1f} | {min(values):.1f} | {max(values):.1f} | {relative[algo]:.2f}x |")
    return results, medians, relative, rows


def sac_main(args: argparse.Namespace) -> None:
    """Time PIEKDSAC against SAC and write ``throughput_sac_<device>_<net>.{md,json}``."""
    results, medians, relative, rows = measure(args, lambda a, seed: run_sac_repeat(a, seed=seed), SAC_ALGOS, "SAC")
    lines = [
        f"Throughput, {args.sac_env}, train_freq=1, gradient_steps=1, batch_size={args.sac_batch_size}, "
        f"net_arch={args.sac_net_arch}, K={args.ensemble_size}, distill_interval={args.distill_interval}, "
        f"distill_gradient_steps={args.distill_gradient_steps} (x 5 epochs)",
        *rows,
    ]
    lines += [
        "",
        f"PIEKDSAC (K={args.ensemble_size}) wall time = {relative['PIEKDSAC (joint training)']:.2f}x plain SB3 SAC "
        f"for joint training, {relative['PIEKDSAC (with distillation)']:.2f}x with its distillation phases "
        "(median over repeats of the per-repeat ratio)",
    ]
    report = "\n".join(lines)
    print("\n" + report)
    args.output.mkdir(parents=True, exist_ok=True)
    stem = f"throughput_sac_{args.device.replace(':', '')}_{'x'.join(str(units) for units in args.sac_net_arch)}"
    (args.output / f"{stem}.md").write_text(report + "\n")
    summary = {"args": vars(args) | {"output": str(args.output)}, "steps_per_s": results, "medians": medians}
    (args.output / f"{stem}.json").write_text(json.dumps(summary | {"wall_time_vs_sac": relative}, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--suite",
        choices=["dqn", "atari", "sac", "ppo", "multitask"],
        default="dqn",
        help="DQN-based algorithms (CartPole or Atari-size), PIEKDSAC vs SAC, DistillPPO vs PPO, or "
        "MultiTaskPolicyDistillation vs DQN",
    )
    parser.add_argument("--atari-buffer-size", type=int, default=10_000, help="Atari suite: replay buffer size")
    parser.add_argument("--atari-compile", action="store_true", help="Atari suite: also time torch_compile=True")
    parser.add_argument("--ppo-n-steps", type=int, default=512, help="PPO suite: n_steps (the chunk is rounded to it)")
    parser.add_argument("--ppo-n-epochs", type=int, default=10, help="PPO suite: n_epochs")
    parser.add_argument("--sac-net-arch", type=int, nargs="*", default=[256, 256], help="SAC suite: each member's networks")
    parser.add_argument("--sac-batch-size", type=int, default=256, help="SAC suite: batch size")
    parser.add_argument("--sac-env", default="Pendulum-v1", help="SAC suite: the env (e.g. HalfCheetah-v5)")
    parser.add_argument("--ensemble-size", type=int, default=3, help="SAC suite: K")
    parser.add_argument("--distill-interval", type=int, default=5000, help="SAC suite: I")
    parser.add_argument("--distill-gradient-steps", type=int, default=200, help="SAC suite: batches per distillation epoch")
    parser.add_argument("--steps", type=int, default=3000, help="timed environment steps per run")
    parser.add_argument("--chunk", type=int, default=250, help="steps per alternating chunk")
    parser.add_argument("--learning-starts", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n-teachers", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--net-arch", type=int, nargs="*", default=[64, 64], help="teachers' (and DQN's) hidden layers")
    parser.add_argument("--student-net-arch", type=int, nargs="*", default=[16, 16])
    parser.add_argument(
        "--realtime-students",
        type=lambda text: [[int(units) for units in student.split(",") if units] for student in text.split(";")],
        default=[[32, 32], [16, 16], [8, 8]],
        help="RealTimeDistillDQN students' net_arch, e.g. '32,32;16,16;8,8'",
    )
    parser.add_argument("--algos", nargs="*", default=None, help="DQN suite: time only these rows (DQN is always timed)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 keeps CPU timings steady)")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    th.set_num_threads(args.threads)
    if args.suite == "sac":
        sac_main(args)
        return
    if args.suite in ("ppo", "multitask"):
        pair_main(args)
        return
    if args.suite == "atari":
        atari_main(args)
        return

    if args.algos:
        unknown = sorted(set(args.algos) - set(ALGOS))
        if unknown:
            parser.error(f"unknown --algos {unknown}; known: {list(ALGOS)}")
        globals()["ALGOS"] = tuple(algo for algo in ALGOS if algo == "DQN" or algo in args.algos)
    # The "(default, long run)" rows: torch_compile="auto" compiles as in a learn() call of 20k+ gradient steps,
    # although the timed chunks are short (every other row sets torch_compile explicitly)
    distill_dqn.AUTO_COMPILE_MIN_GRADIENT_STEPS = 0
    results, medians, relative, rows = measure(args, lambda a, seed: run_repeat(a, seed=seed), ALGOS, "DQN")
    lines = [
        f"Throughput, CartPole-v1, train_freq=1, gradient_steps=1, batch_size={args.batch_size}, "
        f"teacher net_arch={args.net_arch}, student net_arch={args.student_net_arch}, M={args.n_teachers}, "
        f"real-time students {args.realtime_students}",
        *rows,
    ]
    lines += ["", "Wall time per environment step vs plain SB3 DQN (median over repeats of the per-repeat ratio):"]
    lines += [f"- {algo}: {relative[algo]:.2f}x" for algo in ALGOS if algo != "DQN"]
    report = "\n".join(lines)
    print("\n" + report)

    args.output.mkdir(parents=True, exist_ok=True)
    stem = f"throughput_{args.device.replace(':', '')}"
    (args.output / f"{stem}.md").write_text(report + "\n")
    summary = {"args": vars(args) | {"output": str(args.output)}, "steps_per_s": results, "medians": medians}
    (args.output / f"{stem}.json").write_text(json.dumps(summary | {"wall_time_vs_dqn": relative}, indent=2))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(7, 3.5))
    labels = [algo.replace(" (", "\n(") for algo in ALGOS]
    errors = [[medians[a] - min(results[a]) for a in ALGOS], [max(results[a]) - medians[a] for a in ALGOS]]
    ax.bar(labels, [medians[a] for a in ALGOS], yerr=errors)
    ax.set_ylabel("env steps / s (median)")
    ax.set_title(f"CartPole-v1, {args.device}, M={args.n_teachers} teachers + student")
    fig.tight_layout()
    fig.savefig(args.output / f"{stem}.png", dpi=100)


if __name__ == "__main__":
    main()
