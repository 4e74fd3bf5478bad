"""``python -m sb3_distill.enjoy``: rl-zoo3's ``enjoy`` with the sb3_distill algorithms (see :mod:`sb3_distill.zoo`)."""

from sb3_distill.zoo.enjoy import enjoy

if __name__ == "__main__":
    enjoy()
