"""Tuning: hyperparameter searches with Optuna, selected on the validation split (the test split
is in a dir of its own, which a search never reads). Built so far: :mod:`.pruning`, the Lightning
callback that stops a hopeless trial when the study's pruner says so."""
