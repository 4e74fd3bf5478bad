from sb3_distill.distill_ppo.distill_ppo import DistillPPO
from sb3_distill.distill_ppo.policies import CnnPolicy, MlpPolicy

__all__ = ["CnnPolicy", "DistillPPO", "MlpPolicy"]
