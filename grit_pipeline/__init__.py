"""grit-pipeline: build GRIT-style grounded image-text corpora and train Kosmos-2 on them."""

__version__ = "0.1.0"
