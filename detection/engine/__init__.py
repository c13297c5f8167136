"""Training: the loop and its hooks, optimizer and schedule, checkpoints, RNG state, benchmarks."""
