from sb3_distill.common.multitask import MultiTaskVecEnv
from sb3_distill.multitask_policy_distillation.multitask_policy_distillation import MultiTaskPolicyDistillation
from sb3_distill.multitask_policy_distillation.policies import MultiInputPolicy, MultiTaskDistillationPolicy

__all__ = ["MultiInputPolicy", "MultiTaskDistillationPolicy", "MultiTaskPolicyDistillation", "MultiTaskVecEnv"]
