"""Prediction: a run's fold models soft-voted stage by stage and combined (`predict_items`),
several runs voted together (`predict_runs`), written as CSV, in shards when asked."""
