"""Assertions shared by several test files."""

import torch as th


def assert_optimizer_states_equal(first: th.optim.Optimizer, second: th.optim.Optimizer) -> None:
    """Two optimizers have the same hyperparameters and the same (non-empty) per-parameter state, exactly."""
    first_state, second_state = first.state_dict(), second.state_dict()
    assert first_state["param_groups"] == second_state["param_groups"]
    assert first_state["state"].keys() == second_state["state"].keys()
    assert len(first_state["state"]) > 0
    for key, state in first_state["state"].items():
        for name, value in state.items():
            assert th.equal(th.as_tensor(value), th.as_tensor(second_state["state"][key][name]))
