"""Shared test set-up: offline hubs, quiet imports, one spaCy pipeline per session."""

import os

# Nothing in the test suite may reach a model hub; img2dataset's albumentations would check for updates.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest


@pytest.fixture(scope="session")
def nlp():
    """The default English pipeline, loaded once (the real en_core_web_sm files)."""
    from grit_pipeline.text import load_pipeline

    return load_pipeline()
