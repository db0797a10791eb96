"""DVC stages: each a thin CLI (``python -m pipeline.stages.<name>``) over library functions."""
