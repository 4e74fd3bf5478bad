# sb3_distill: every target does its own set-up (creates .venv if missing, installs what it needs) and is idempotent.
SHELL := /bin/bash
PYTHON_BOOTSTRAP ?= python3
VENV ?= .venv
PYTHON := $(VENV)/bin/python
PIP := $(PYTHON) -m pip
# Torch first, pinned: a bare `torch` requirement could pull a multi-GB CUDA build
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=
LINT_PATHS = sb3_distill tests benchmarks examples

.PHONY: help venv install test test-slow demo bench bench-latency bench-realtime bench-control bench-online bench-multitask bench-piekd bench-distill-ppo bench-minatar bench-minatar-multitask bench-ensemble-scale lint format check-format type clean

help:
	@echo "make demo       - set up, train EnsembleDistillDQN on CartPole-v1 and print the scores table"
	@echo "make test       - set up with test extras and run pytest (what CI runs)"
	@echo "make test-slow  - the longer learning tests marked @pytest.mark.slow"
	@echo "make bench      - throughput of the distillation algorithms against plain SB3 DQN (benchmarks/)"
	@echo "make bench-latency - inference latency of teacher and students (PyTorch, SB3 predict, onnxruntime), CPU"
	@echo "make bench-realtime - real-time vs sequential distillation, time to a target student return"
	@echo "make bench-control - PolicyDistillation: teacher- vs student- vs mixture-driven, Rusu's losses"
	@echo "make bench-online - PolicyDistillation online from a training DQN teacher's checkpoints (Acrobot-v1)"
	@echo "make bench-multitask - MultiTaskPolicyDistillation of DQN teachers on CartPole-v1 + Acrobot-v1"
	@echo "make bench-piekd - PIEKDSAC vs SAC vs Ensemble-SAC sample efficiency, and PIEKDSAC vs SAC throughput"
	@echo "make bench-distill-ppo - DistillPPO: Figs. 3-6 of Distilling Policy Distillation, kickstarting vs PPO"
	@echo "make bench-minatar - the distillation papers' tables on MinAtar (teachers, real-time, ensemble, PD; hours of CPU)"
	@echo "make bench-minatar-multitask - MultiTaskPolicyDistillation and a multi-task DQN on 3 MinAtar games (Rusu's 89.3 %; hours of CPU)"
	@echo "make bench-ensemble-scale - EnsembleDistillDQN: raw vs spread-scaled temperature vs return-weighted teachers"
	@echo "make lint / format / check-format / type"

$(PYTHON):
	$(PYTHON_BOOTSTRAP) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.torch: | $(PYTHON)
	$(PIP) install --quiet "$(TORCH_SPEC)"
	touch $@

$(VENV)/.install-%: setup.cfg $(VENV)/.torch
	$(PIP) install --quiet -e ".[$*]"
	touch $@

venv: $(VENV)/.torch

install: $(VENV)/.install-tests

test: $(VENV)/.install-tests
	$(PYTHON) -m pytest -m "not slow" -n 2 -rs $(PYTEST_ARGS)

test-slow: $(VENV)/.install-tests
	$(PYTHON) -m pytest -m slow $(PYTEST_ARGS)

demo: $(VENV)/.install-tests
	$(PYTHON) examples/demo.py

bench: $(VENV)/.install-bench
	$(PYTHON) benchmarks/throughput.py

bench-latency: $(VENV)/.install-bench
	$(PYTHON) benchmarks/inference_latency.py

bench-realtime: $(VENV)/.install-bench
	$(PYTHON) benchmarks/realtime_vs_sequential.py --env CartPole-v1 --seeds 0 1 2 3 4
	$(PYTHON) benchmarks/realtime_vs_sequential.py --env Acrobot-v1 --seeds 0 1 2

bench-control: $(VENV)/.install-bench
	$(PYTHON) -m benchmarks.control_policy --env CartPole-v1 --seeds 0 1 2 3 4 5 6 7 8 9
	$(PYTHON) -m benchmarks.control_policy --env Acrobot-v1 --seeds 0 1 2 3 4 --eval-freq 250
	$(PYTHON) -m benchmarks.control_policy --env Pendulum-v1 --seeds 0 1 2 --eval-freq 500

bench-distill-ppo: $(VENV)/.install-bench
	$(PYTHON) -m benchmarks.distill_ppo_chain --seeds 0 1 2 --budget 6000 --eval-freq 128
	$(PYTHON) -m benchmarks.distill_ppo_actions --n-actions 4 64 512 --seeds 0 1 2 --budget 8192 --eval-freq 512
	$(PYTHON) -m benchmarks.distill_ppo_noisy_teacher --seeds 0 1 2
	$(PYTHON) -m benchmarks.distill_ppo_kickstart --env Acrobot-v1 --seeds 0 1 2
	$(PYTHON) -m benchmarks.distill_ppo_gridworld --n-mdps 104
bench-online: $(VENV)/.install-bench
	$(PYTHON) -m benchmarks.online_distillation --seeds 0 1 2

bench-multitask: $(VENV)/.install-bench
	$(PYTHON) -m benchmarks.multitask_distillation --seeds 0 1

bench-piekd: $(VENV)/.install-bench $(VENV)/.install-mujoco
	$(PYTHON) benchmarks/piekd_sample_efficiency.py --env Pendulum-v1 --seeds 0 1 2
	$(PYTHON) benchmarks/piekd_sample_efficiency.py --env Hopper-v5 --seeds 0 1 --timesteps 20000
	$(PYTHON) benchmarks/throughput.py --suite sac --steps 5000 --repeats 3 --sac-net-arch 64 64 --sac-batch-size 64
	$(PYTHON) benchmarks/throughput.py --suite sac --steps 2000 --repeats 2 --distill-interval 2000

# Each line is one batch, resumable (--append skips the runs already saved in benchmarks/results/minatar/);
# the teacher runs are cached there (models/) and reused by PolicyDistillation
MINATAR = $(PYTHON) -m benchmarks.minatar --games Breakout SpaceInvaders --timesteps 500000 --train-freq 4 --append
bench-minatar: $(VENV)/.install-bench
	$(PYTHON) -m benchmarks.minatar --param-counts
	$(MINATAR) --seeds 0 --variants teacher rtpd
	$(MINATAR) --seeds 1 2 --variants teacher rtpd
	$(MINATAR) --seeds 0 1 2 --variants pd
	$(MINATAR) --seeds 0 1 2 --variants ensemble
	$(PYTHON) -m benchmarks.minatar --games Breakout SpaceInvaders --seeds 0 1 2 --evaluate-teachers 100
# Resumable (--append skips the runs already saved in benchmarks/results/minatar/); teachers cached in models/
bench-minatar-multitask: $(VENV)/.install-bench
	$(PYTHON) -m benchmarks.minatar_multitask --games Breakout SpaceInvaders Freeway --seeds 0 1 2 --timesteps 500000 --distill-timesteps 250000 --mtdqn-timesteps 500000 --train-freq 4 --append
bench-ensemble-scale: $(VENV)/.install-bench $(VENV)/.install-box2d
	$(PYTHON) benchmarks/ensemble_scale.py --env LunarLander-v3 --seeds 0 1 2 3 4 --variants raw spread returns spread+returns --eval-freq 10000 --append --shared-teachers
	$(PYTHON) benchmarks/ensemble_scale.py --env CartPole-v1 --seeds 0 1 2 3 4 --append
	$(PYTHON) benchmarks/ensemble_scale.py --env Acrobot-v1 --seeds 0 1 2 3 4 --variants raw spread returns spread+returns --eval-freq 10000 --append --shared-teachers

lint: $(VENV)/.install-tests
	$(PYTHON) -m ruff check $(LINT_PATHS)

format: $(VENV)/.install-tests
	$(PYTHON) -m ruff check --select I --fix $(LINT_PATHS)
	$(PYTHON) -m black $(LINT_PATHS)

check-format: $(VENV)/.install-tests
	$(PYTHON) -m black --check $(LINT_PATHS)

type: $(VENV)/.install-tests
	$(PYTHON) -m mypy sb3_distill

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache .mypy_cache
