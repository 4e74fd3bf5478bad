"""
``python -m sb3_distill.plots {plot_train,all_plots,plot_from_file} [arguments]``: rl-zoo3's plotting scripts
(see :mod:`sb3_distill.zoo`).
"""

from sb3_distill.zoo.plots import plots

if __name__ == "__main__":
    plots()
