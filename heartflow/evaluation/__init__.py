"""How a model is judged: metrics, held-out scoring, plots, cross-validation, baselines."""
