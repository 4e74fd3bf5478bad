"""
``python -m sb3_distill.load_from_hub``: rl-zoo3's ``load_from_hub`` with the sb3_distill algorithms registered
(run as ``__main__``, as :mod:`sb3_distill.zoo.record` runs ``record_video``). It needs the Hugging Face Hub:
only its argument parsing is tested here. rl-zoo3's ``push_to_hub`` is not wrapped: with rl-zoo3 2.9.2 and
huggingface-sb3 3.2 it fails on import (``generate_metadata`` is gone from ``huggingface_sb3.push_to_hub``).
"""

from sb3_distill.zoo.record import run_script


def load_from_hub(argv: list[str] | None = None) -> None:
    """
    rl-zoo3's ``load_from_hub`` (every rl-zoo3 argument works): download a run into the log folder.

    :param argv: the command-line arguments (default: ``sys.argv[1:]``)
    """
    run_script("rl_zoo3.load_from_hub", argv)
