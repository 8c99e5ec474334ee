"""rlkit: reinforcement-learning experiments on Ray clusters."""

__version__ = "0.3.0"
