"""stridelab: train and compare TRPO and PPO on robot locomotion."""

__version__ = "0.1.0"
