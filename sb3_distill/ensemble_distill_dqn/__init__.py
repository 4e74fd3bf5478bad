from sb3_distill.ensemble_distill_dqn.ensemble_distill_dqn import EnsembleDistillDQN
from sb3_distill.ensemble_distill_dqn.policies import CnnPolicy, EnsembleDistillDQNPolicy, MlpPolicy

__all__ = ["CnnPolicy", "EnsembleDistillDQN", "EnsembleDistillDQNPolicy", "MlpPolicy"]
