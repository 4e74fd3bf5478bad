from sb3_distill.common.teachers import load_teacher
from sb3_distill.policy_distillation.policies import CnnPolicy, DistillationPolicy, MlpPolicy, MultiInputPolicy
from sb3_distill.policy_distillation.policy_distillation import PolicyDistillation

__all__ = ["CnnPolicy", "DistillationPolicy", "MlpPolicy", "MultiInputPolicy", "PolicyDistillation", "load_teacher"]
