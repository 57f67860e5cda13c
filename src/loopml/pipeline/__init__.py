"""The training pipeline: train, tune, evaluate, behavioral tests, gate."""
