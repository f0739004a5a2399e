"""The engine: the training loop, the device mesh, checkpoints, logging and image files."""
