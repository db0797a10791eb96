"""How much does pretraining help a Vision Transformer? A reproducible experiment pipeline.

The version is the installed distribution's (``importlib.metadata.version("vit-pretraining")``).
"""
