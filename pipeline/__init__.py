"""How much does pretraining help a Vision Transformer? A reproducible experiment pipeline."""

__version__ = "0.1.0"
