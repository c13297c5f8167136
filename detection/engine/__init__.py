"""Training loop, optimizer and schedule, checkpoints, distributed helpers, logging."""
