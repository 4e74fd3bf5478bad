"""
The rl-zoo3 plugin: ``python -m sb3_distill.train`` / ``python -m sb3_distill.enjoy`` run rl-zoo3's own
commands with the sb3_distill algorithms, their Optuna samplers and this project's ``zoo_configs/``.

Needs the ``zoo`` extra (``pip install sb3-distill[zoo]``); ``sb3_distill`` itself never imports this package.
"""

from sb3_distill.zoo.registry import ZOO_ALGORITHMS, ZooAlgorithm, default_config_path, register_algorithms

__all__ = ["ZOO_ALGORITHMS", "ZooAlgorithm", "default_config_path", "register_algorithms"]
