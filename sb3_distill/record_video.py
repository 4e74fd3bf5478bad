"""
``python -m sb3_distill.record_video``: rl-zoo3's ``record_video`` with the sb3_distill algorithms
(see :mod:`sb3_distill.zoo`).
"""

from sb3_distill.zoo.record import record_video

if __name__ == "__main__":
    record_video()
