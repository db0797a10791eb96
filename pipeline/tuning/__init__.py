"""Tuning: hyperparameter searches with Optuna, selected on the validation split (the test split
is in a dir of its own, which a search never reads). :mod:`.search` runs one search (K trials in
one process, resumable from its journal, several workers through shared storage); :mod:`.pruning`
is the Lightning callback that stops a hopeless trial when the study's pruner says so. The
searches' params are :mod:`pipeline.config.tune`'s; their summaries for the report are
:mod:`pipeline.evaluation.search_summary`'s."""
