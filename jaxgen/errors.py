"""Errors raised at the edge: bad config values and bad checkpoints."""


class ConfigError(ValueError):
    """A config value is invalid. The message names the key, the value and what is accepted."""


class CheckpointError(RuntimeError):
    """A checkpoint is missing or cannot be restored. The message names the path."""


class TrainingError(RuntimeError):
    """Training cannot go on (a NaN or Inf loss). The message names the step and the metric."""
