import torch as th


def pytest_configure(config):
    # Tiny networks: one thread per test process is fastest, and keeps `pytest -n 2` from oversubscribing 2 cores
    th.set_num_threads(1)
