"""The RL engine: rollout actors, learner, algorithms, the training loop."""
