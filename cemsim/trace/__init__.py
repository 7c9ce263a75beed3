"""Key-access traces: the contract between the model side (capture) and the hardware side (simulation)."""
