"""
``python -m sb3_distill.record_training``: rl-zoo3's ``record_training`` with the sb3_distill algorithms
(see :mod:`sb3_distill.zoo`).
"""

from sb3_distill.zoo.record import record_training

if __name__ == "__main__":
    record_training()
