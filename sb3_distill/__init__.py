import os

from sb3_distill.common.export import export_onnx
from sb3_distill.distill_ppo import DistillPPO
from sb3_distill.ensemble_distill_dqn import EnsembleDistillDQN
from sb3_distill.multitask_policy_distillation import MultiTaskPolicyDistillation
from sb3_distill.piekd_sac import PIEKDSAC
from sb3_distill.policy_distillation import PolicyDistillation
from sb3_distill.realtime_distill_dqn import RealTimeDistillDQN

# Read version from file
version_file = os.path.join(os.path.dirname(__file__), "version.txt")
with open(version_file) as file_handler:
    __version__ = file_handler.read().strip()

__all__ = [
    "PIEKDSAC",
    "DistillPPO",
    "EnsembleDistillDQN",
    "MultiTaskPolicyDistillation",
    "PolicyDistillation",
    "RealTimeDistillDQN",
    "export_onnx",
]
