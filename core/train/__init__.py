"""Training: the loss terms, one iteration, activation recomputation, several processes, the loop."""
