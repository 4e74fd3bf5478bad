"""rl-zoo3 options that cannot work with the sb3_distill algorithms are refused with a clear message."""

import pytest

from sb3_distill.zoo.exp_manager import check_zoo_options
from sb3_distill.zoo.registry import ZOO_ALGORITHMS
from sb3_distill.zoo.train import train
from tests.test_zoo import make_manager

PARALLEL = "rl_zoo3.callbacks.ParallelTrainCallback"


@pytest.mark.parametrize("algo", list(ZOO_ALGORITHMS))
@pytest.mark.parametrize("callback", [PARALLEL, [PARALLEL], [{PARALLEL: dict(gradient_steps=10)}]])
def test_parallel_train_callback_refused(algo, callback, tmp_path):
    env_id = "Pendulum-v1" if algo == "piekd_sac" else "CartPole-v1"
    manager = make_manager(algo, env_id, log_folder=tmp_path)
    with pytest.raises(ValueError, match=rf"`ParallelTrainCallback` cannot be used with `--algo {algo}`: .*SAC.load"):
        manager._preprocess_hyperparams({"n_timesteps": 10, "callback": callback})


def test_other_algorithms_and_callbacks_untouched():
    # rl-zoo3's own algorithms keep rl-zoo3's behaviour; other callbacks pass
    check_zoo_options("sac", {"callback": PARALLEL})
    check_zoo_options("piekd_sac", {"callback": "rl_zoo3.callbacks.SaveVecNormalizeCallback"})
    check_zoo_options("piekd_sac", {})


def test_train_command_refuses_parallel_training(tmp_path):
    # The whole command: refused while reading the hyperparameters, before any env or model is built
    argv = ["--algo", "piekd_sac", "--env", "Pendulum-v1", "-f", str(tmp_path), "-n", "100"]
    with pytest.raises(ValueError, match="`ParallelTrainCallback` cannot be used with `--algo piekd_sac`"):
        train([*argv, "-params", f"callback:'{PARALLEL}'"])
    assert not list(tmp_path.rglob("*.zip"))
