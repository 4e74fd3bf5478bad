from sb3_distill.piekd_sac.piekd_sac import PIEKDSAC
from sb3_distill.piekd_sac.policies import MlpPolicy, PIEKDSACPolicy

__all__ = ["PIEKDSAC", "MlpPolicy", "PIEKDSACPolicy"]
