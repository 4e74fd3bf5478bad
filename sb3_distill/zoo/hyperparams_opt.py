"""
Optuna samplers for rl-zoo3's ``-optimize``, one per sb3_distill algorithm (model: ``rl_zoo3/hyperparams_opt.py``).

Each sampler starts from rl-zoo3's own DQN or SAC sampler, so the RL hyperparameters are searched exactly as
for plain DQN / SAC, and adds what distillation adds (temperature, ensemble size, loss, student learning rate,
...). Every value a sampler can emit is accepted by the algorithm's ``_setup_model``: a constructor error ends
an rl-zoo3 worker instead of pruning the trial (``tests/test_zoo.py`` draws each sampler many times with
Optuna's ``RandomSampler`` and builds every model).

The sampled names are the constructor's names, except rl-zoo3's own encodings (``one_minus_gamma``,
``batch_size_pow``, ``net_arch``, ``subsample_steps``), which the converters turn back into hyperparameters;
``--trial-id`` uses the converter on a stored trial's ``params``.
"""

from typing import Any

import optuna
from rl_zoo3.hyperparams_opt import (
    convert_offpolicy_params,
    convert_onpolicy_params,
    sample_dqn_params,
    sample_ppo_params,
    sample_sac_params,
)

from sb3_distill.common.losses import DISTILLATION_LOSSES, ENSEMBLE_REDUCTIONS
from sb3_distill.common.utils import LinearDecay


def sample_distillation_params(trial: optuna.Trial, losses: tuple[str, ...] = DISTILLATION_LOSSES) -> dict[str, Any]:
    """
    The distillation hyperparameters shared by the DQN algorithms: softmax temperature tau (log-uniform around
    the papers' 0.1), the loss, and the student's learning rate (the papers use a slightly higher rate for the
    student than for the teacher, hence a range that extends above rl-zoo3's DQN range).

    :param trial: the Optuna trial
    :param losses: the loss names to choose from
    :return: the sampled hyperparameters
    """
    return {
        "temperature": trial.suggest_float("temperature", 0.01, 1.0, log=True),
        "distill_loss": trial.suggest_categorical("distill_loss", list(losses)),
        "student_learning_rate": trial.suggest_float("student_learning_rate", 1e-5, 0.005, log=True),
    }


def sample_ensemble_distill_dqn_params(
    trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict
) -> dict[str, Any]:
    """
    Sampler for EnsembleDistillDQN: rl-zoo3's DQN sampler (the teachers' hyperparameters), the number of
    teachers M, the ensemble reduction and :func:`sample_distillation_params`.

    :param trial: the Optuna trial
    :param n_actions: number of actions (unused, rl-zoo3's signature)
    :param n_envs: number of environments (unused, rl-zoo3's signature)
    :param additional_args: rl-zoo3's extra arguments (HER settings)
    :return: the hyperparameters, ready for the constructor
    """
    hyperparams = sample_dqn_params(trial, n_actions, n_envs, additional_args)
    hyperparams.update(sample_distillation_params(trial))
    hyperparams["n_teachers"] = trial.suggest_categorical("n_teachers", [2, 3, 5])
    hyperparams["ensemble_reduction"] = trial.suggest_categorical("ensemble_reduction", list(ENSEMBLE_REDUCTIONS))
    return hyperparams


def sample_realtime_distill_dqn_params(
    trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict
) -> dict[str, Any]:
    """
    Sampler for RealTimeDistillDQN: rl-zoo3's DQN sampler (the teacher's hyperparameters),
    :func:`sample_distillation_params`, the weight of the students' own TD loss (``self_learning_coef``, in
    [0, 1]; the distillation term keeps its weight 1, so the students always get a signal) and the students'
    TD target (``imitation``: the teacher's greedy action, Eq. 5, or their own, Eq. 4).

    :param trial: the Optuna trial
    :param n_actions: number of actions (unused, rl-zoo3's signature)
    :param n_envs: number of environments (unused, rl-zoo3's signature)
    :param additional_args: rl-zoo3's extra arguments (HER settings)
    :return: the hyperparameters, ready for the constructor
    """
    hyperparams = sample_dqn_params(trial, n_actions, n_envs, additional_args)
    hyperparams.update(sample_distillation_params(trial))
    hyperparams["self_learning_coef"] = trial.suggest_float("self_learning_coef", 0.0, 1.0)
    hyperparams["imitation"] = trial.suggest_categorical("imitation", [True, False])
    return hyperparams


def sample_piekd_sac_params(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """
    Sampler for PIEKDSAC: rl-zoo3's SAC sampler (every member's SAC hyperparameters), the ensemble size K in
    {2, 3, 5} (the paper uses 3), the distillation interval I (the paper uses 5000 steps), and the
    distillation phase's batch size and learning rate (the other PIEKD settings come from the config).

    :param trial: the Optuna trial
    :param n_actions: dimension of the action space, passed to rl-zoo3's SAC sampler
    :param n_envs: number of environments (unused, rl-zoo3's signature)
    :param additional_args: rl-zoo3's extra arguments (HER settings)
    :return: the hyperparameters, ready for the constructor
    """
    hyperparams = sample_sac_params(trial, n_actions, n_envs, additional_args)
    hyperparams["ensemble_size"] = trial.suggest_categorical("ensemble_size", [2, 3, 5])
    hyperparams["distill_interval"] = trial.suggest_categorical("distill_interval", [1000, 2000, 5000, 10000, 20000])
    hyperparams["distill_batch_size"] = trial.suggest_categorical("distill_batch_size", [64, 128, 256, 512])
    hyperparams["distill_learning_rate"] = trial.suggest_float("distill_learning_rate", 1e-5, 0.002, log=True)
    return hyperparams


#: PolicyDistillation's ``control`` values (``sb3_distill.policy_distillation.policy_distillation.CONTROL_POLICIES``)
CONTROL_POLICIES = ("teacher", "student", "mixture")


def sample_policy_distillation_params(
    trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict
) -> dict[str, Any]:
    """
    Sampler for PolicyDistillation (a fixed teacher, named in the config, and a student trained to imitate it):
    the student's optimisation (learning rate, batch size, updates per step as rl-zoo3's ratio of 1), who acts
    (``control``; ``teacher_prob`` only with ``"mixture"``), and, for a discrete action space, the loss and the
    temperature. With a continuous action space the loss keeps its default for the teacher's kind (MSE for
    TD3/DDPG, forward KL for SAC/PPO): the sampler cannot tell these teachers apart, and a loss the teacher does
    not allow is a constructor error. The student's network comes from the config.

    :param trial: the Optuna trial
    :param n_actions: dimension of a Box action space, 0 for a discrete one (rl-zoo3 sets it)
    :param n_envs: number of environments (unused, rl-zoo3's signature)
    :param additional_args: rl-zoo3's extra arguments (unused)
    :return: the hyperparameters, ready for the constructor
    """
    sampled: dict[str, Any] = {
        "learning_rate": trial.suggest_float("learning_rate", 1e-5, 0.005, log=True),
        # From 2**5=32 to 2**9=512
        "batch_size_pow": trial.suggest_int("batch_size_pow", 5, 9),
        "train_freq": trial.suggest_int("train_freq", 1, 10),
        "control": trial.suggest_categorical("control", list(CONTROL_POLICIES)),
    }
    if sampled["control"] == "mixture":
        sampled["teacher_prob"] = trial.suggest_float("teacher_prob", 0.0, 1.0)
    if n_actions == 0:
        sampled["loss"] = trial.suggest_categorical("loss", list(DISTILLATION_LOSSES))
        # around the papers' 0.01 for Q-value teachers and 1 for policy logits
        sampled["temperature"] = trial.suggest_float("temperature", 0.001, 2.0, log=True)
    trial.set_user_attr("batch_size", 2 ** sampled["batch_size_pow"])
    return convert_policy_distillation_params(sampled)


#: MultiTaskPolicyDistillation's ``control`` values
MULTITASK_CONTROL_POLICIES = ("teacher", "student", "mixture")


def sample_multitask_policy_distillation_params(
    trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict
) -> dict[str, Any]:
    """
    Sampler for MultiTaskPolicyDistillation (discrete-action teachers named in the config, one per task): the
    student's optimisation (learning rate, batch size split across tasks, one gradient step per step of the
    multi-task env), who acts (``control``; ``teacher_prob`` only with ``"mixture"``), the loss and the
    temperature. The student's trunk comes from the config.

    :param trial: the Optuna trial
    :param n_actions: 0 (rl-zoo3 sets it; the tasks' actions are discrete)
    :param n_envs: number of environments (unused, rl-zoo3's signature)
    :param additional_args: rl-zoo3's extra arguments (unused)
    :return: the hyperparameters, ready for the constructor
    """
    sampled: dict[str, Any] = {
        "learning_rate": trial.suggest_float("learning_rate", 1e-5, 0.005, log=True),
        # From 2**5=32 to 2**9=512, split across the tasks
        "batch_size_pow": trial.suggest_int("batch_size_pow", 5, 9),
        "train_freq": trial.suggest_int("train_freq", 1, 10),
        "control": trial.suggest_categorical("control", list(MULTITASK_CONTROL_POLICIES)),
        "loss": trial.suggest_categorical("loss", list(DISTILLATION_LOSSES)),
        # around Rusu's 0.01 for Q-value teachers and 1 for policy logits
        "temperature": trial.suggest_float("temperature", 0.001, 2.0, log=True),
    }
    if sampled["control"] == "mixture":
        sampled["teacher_prob"] = trial.suggest_float("teacher_prob", 0.0, 1.0)
    trial.set_user_attr("batch_size", 2 ** sampled["batch_size_pow"])
    return convert_policy_distillation_params(sampled)


def convert_policy_distillation_params(sampled_params: dict[str, Any]) -> dict[str, Any]:
    """
    Turn a PolicyDistillation trial's ``params`` back into hyperparameters: ``batch_size_pow`` to
    ``batch_size``, and one gradient step per environment step (``gradient_steps = train_freq``).

    :param sampled_params: the trial's ``params``
    :return: the hyperparameters, ready for the constructor
    """
    hyperparams = dict(sampled_params)
    hyperparams["batch_size"] = 2 ** hyperparams.pop("batch_size_pow")
    hyperparams["gradient_steps"] = hyperparams["train_freq"]
    return hyperparams


def convert_distill_offpolicy_params(sampled_params: dict[str, Any]) -> dict[str, Any]:
    """
    Turn a trial's ``params`` back into hyperparameters (used by ``--trial-id``): rl-zoo3's off-policy
    converter decodes its own encodings and passes the distillation names, which are the constructor's
    names, through unchanged.

    :param sampled_params: the trial's ``params``
    :return: the hyperparameters, ready for the constructor
    """
    return convert_offpolicy_params(dict(sampled_params))


#: The rules of DistillPPO (``sb3_distill.common.losses.DISTILL_UPDATE_RULES``, repeated so that the sampler
#: does not import the algorithm)
DISTILL_PPO_RULES = (
    "teacher_distill",
    "on_policy_distill",
    "entropy_regularised",
    "n_distill",
    "expected_entropy_regularised",
    "teacher_v_reward",
    "teacher_v_bootstrap",
)
#: The rules with a "+R" variant to choose (Table 1), and those with a loss l (value gating applies)
_PLUS_R_RULES = ("on_policy_distill", "entropy_regularised", "n_distill", "expected_entropy_regularised")
_LOSS_RULES = ("teacher_distill", "on_policy_distill", "n_distill", "expected_entropy_regularised")
#: The keys DistillPPO adds to rl-zoo3's PPO sampler
_DISTILL_PPO_KEYS = (
    "update_rule",
    "env_reward",
    "distill_coef",
    "distill_coef_schedule",
    "value_gating",
    "control",
    "teacher_prob",
    "temperature",
)


def sample_distill_ppo_params(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """
    Sampler for DistillPPO: rl-zoo3's PPO sampler, plus the update rule of Czarnecki et al. 2019 and what goes
    with it: the "+R" choice where Table 1 has one, the weight ``distill_coef`` (constant, or decaying linearly to
    0 as in kickstarting), value gating for the rules with a loss, the control policy (not for teacher distill,
    which is teacher-driven), and for a discrete action space the teacher's temperature. The teacher comes
    from the config.

    :param trial: the Optuna trial
    :param n_actions: dimension of a Box action space, 0 for a discrete one (rl-zoo3 sets it)
    :param n_envs: number of environments
    :param additional_args: rl-zoo3's extra arguments
    :return: the hyperparameters, ready for the constructor
    """
    sample_ppo_params(trial, n_actions, n_envs, additional_args)
    update_rule = trial.suggest_categorical("update_rule", list(DISTILL_PPO_RULES))
    if update_rule in _PLUS_R_RULES:
        trial.suggest_categorical("env_reward", [False, True])
    trial.suggest_float("distill_coef", 0.01, 10.0, log=True)
    trial.suggest_categorical("distill_coef_schedule", ["constant", "linear"])
    if update_rule in _LOSS_RULES:
        trial.suggest_categorical("value_gating", [False, True])
    if update_rule != "teacher_distill":
        control = trial.suggest_categorical("control", ["student", "teacher", "mixture", "uniform"])
        if control == "mixture":
            trial.suggest_float("teacher_prob", 0.0, 1.0)
    if n_actions == 0:
        # around 0.01 for Q-value teachers and 1 for policy logits
        trial.suggest_float("temperature", 0.001, 2.0, log=True)
    return convert_distill_ppo_params(trial.params)


def convert_distill_ppo_params(sampled_params: dict[str, Any]) -> dict[str, Any]:
    """
    Turn a DistillPPO trial's ``params`` back into hyperparameters: rl-zoo3's on-policy converter for the PPO
    part, and ``distill_coef`` with ``distill_coef_schedule="linear"`` into a :class:`LinearDecay`.

    :param sampled_params: the trial's ``params``
    :return: the hyperparameters, ready for the constructor
    """
    ppo_params = {key: value for key, value in sampled_params.items() if key not in _DISTILL_PPO_KEYS}
    distill_params = {key: value for key, value in sampled_params.items() if key in _DISTILL_PPO_KEYS}
    if distill_params.pop("distill_coef_schedule", "constant") == "linear":
        distill_params["distill_coef"] = LinearDecay(distill_params["distill_coef"])
    return {**convert_onpolicy_params(ppo_params), **distill_params}
