"""``python -m sb3_distill.train``: rl-zoo3's ``train`` with the sb3_distill algorithms (see :mod:`sb3_distill.zoo`)."""

from sb3_distill.zoo.train import train

if __name__ == "__main__":
    train()
