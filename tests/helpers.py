"""Assertions shared by several test files."""

from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces


def assert_optimizer_states_equal(first: th.optim.Optimizer, second: th.optim.Optimizer) -> None:
    """Two optimizers have the same hyperparameters and the same (non-empty) per-parameter state, exactly."""
    first_state, second_state = first.state_dict(), second.state_dict()
    assert first_state["param_groups"] == second_state["param_groups"]
    assert first_state["state"].keys() == second_state["state"].keys()
    assert len(first_state["state"]) > 0
    for key, state in first_state["state"].items():
        for name, value in state.items():
            assert th.equal(th.as_tensor(value), th.as_tensor(second_state["state"][key][name]))


def assert_observations_equal(first, second) -> None:
    """Two arrays of observations, or two dicts of them (Dict observation spaces), are equal."""
    if isinstance(first, dict):
        assert first.keys() == second.keys()
        for key in first:
            np.testing.assert_array_equal(first[key], second[key])
    else:
        np.testing.assert_array_equal(first, second)


def sample_observations(space: spaces.Space, n: int) -> Any:
    """``n`` observations of ``space`` as one batch (a Dict space: a dict of batches)."""
    samples = [space.sample() for _ in range(n)]
    if isinstance(space, spaces.Dict):
        return {key: np.stack([sample[key] for sample in samples]) for key in space.spaces}
    return np.stack(samples)
