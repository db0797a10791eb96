"""Evaluation: the metrics of a trained classifier on the test split, computed once from its logits
(:mod:`pipeline.evaluation.metrics`). The report renders them (:mod:`pipeline.report`)."""
