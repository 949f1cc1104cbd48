"""paradiff fixtures: the tiny preset trained once (then reused from the cache) for all tests."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="session", autouse=True)
def _torch_threads() -> None:
    from paperlab.paradiff.train import set_threads

    set_threads()


@pytest.fixture(scope="session")
def trained() -> Any:
    """The tiny VQ + joint model from the cache ($PAPERLAB_CACHE), trained on first use."""
    from paperlab.paradiff.config import get_preset
    from paperlab.paradiff.train import ensure_model

    return ensure_model(get_preset("tiny"))
