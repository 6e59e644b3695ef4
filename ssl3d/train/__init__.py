"""One training loop for every job: named phases, hooks for the methods, checkpoints, events, DDP."""
