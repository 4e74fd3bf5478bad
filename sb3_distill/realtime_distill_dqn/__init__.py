from sb3_distill.realtime_distill_dqn.policies import CnnPolicy, MlpPolicy, RealTimeDistillDQNPolicy
from sb3_distill.realtime_distill_dqn.realtime_distill_dqn import RealTimeDistillDQN

__all__ = ["CnnPolicy", "MlpPolicy", "RealTimeDistillDQN", "RealTimeDistillDQNPolicy"]
