"""Tracking: every MLflow call of the pipeline, and nothing else of it imports ``mlflow``.

Where runs go and what each holds, in one place (a remote server, another tracker, or the
question "what does this run hold?" starts here):

- :mod:`.uri`: the tracking URI (``MLFLOW_TRACKING_URI``, else ``sqlite:///<project>/mlflow.db``),
  artifacts beside a SQLite database, the reachability check before any training;
- :mod:`.logger`: Lightning's MLflow logger for one training run (a cell, or a pretraining run):
  params, tags, per-step and per-epoch metrics, outages spooled to a file and replayed;
  :func:`~.logger.make_logger` opens a new or a resumed run;
- :mod:`.callbacks`: what a training run ran on (the prepared splits as MLflow datasets, system
  metrics while fitting) and the error that ended it;
- :mod:`.datasets`: the splits as MLflow datasets (a training run's train and validation; the
  test split, for the test metrics);
- :mod:`.runs`: a run that still exists, and ending an abandoned one KILLED;
- :mod:`.serving`: a trained model logged as an MLflow model (``pt2``, preprocessing inside) and
  registered;
- :mod:`.searches`: a search, a parent run with a child run per trial (params, validation
  curve, state, compute);
- :mod:`.comparison`: the comparison, the parent run over every cell's run, the test metrics in
  each cell's run and the study's aggregates and the report in the parent;
- :mod:`.model_uris`: a model file from ``runs:/...`` or ``models:/...`` (``vit-predict``);
- :mod:`.ui`: where the UI shows the newest comparison (``make ui``).

A training run (child) holds: params (the resolved recipe, the cell's seed and budget, the data
manifest's and the pretrained weights' sha256), tags (``stage``, ``variant``, ``seed``, ``budget``,
the git commit, DVC's experiment name), ``train/*`` and ``val/*`` metrics, learning rates,
throughput and MFU, ``system/*``, the datasets, the model file under ``trained/``; after
``evaluate``: ``test/*`` metrics linked to its logged model ``model`` (registered as
``<evaluate.registered_model>-<variant>``). The comparison's parent holds ``top1_mean.*``,
``gain.*``, with tuned cells ``gain_shift.*``, and TTA aggregates (each with ``_low``/``_high``),
per search ``search_val_acc.*``, ``search_seconds.*``, ``search_gflops.*``, ``search_trials.*``,
and the report.

Importing this package or :mod:`.uri` does not import MLflow: the ``prepare`` stage stays light.
"""
