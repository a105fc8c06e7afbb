"""ModelMine: a decentralized network for training machine-learning models."""

__version__ = "0.1.0"
