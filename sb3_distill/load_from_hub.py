"""
``python -m sb3_distill.load_from_hub``: rl-zoo3's ``load_from_hub`` with the sb3_distill algorithms
(see :mod:`sb3_distill.zoo`).
"""

from sb3_distill.zoo.hub import load_from_hub

if __name__ == "__main__":
    load_from_hub()
