import os

# Tests never reach for the hub: a missing model must fail at once, not after retries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def smollm2_dir():
    """The embedded SmolLM2 converted into the cache (once per machine)."""
    from prefixlab.training.model_loading import SMOLLM2, resolve

    return resolve(SMOLLM2)


@pytest.fixture(scope="session")
def tiny_models():
    """tests/tiny_models.py: the tiny random GPT-2 / Llama / BART / T5 builders shared by the suite."""
    import tiny_models

    return tiny_models
