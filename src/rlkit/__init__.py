"""rlkit: reinforcement-learning experiments on Ray clusters."""

__version__ = "0.2.0"
