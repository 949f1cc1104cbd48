"""paradiff fixtures: the `test` preset (trained in seconds) for plumbing, and the tiny preset
(trained once, minutes, then reused from the cache) for the slow lane's quality checks."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="session", autouse=True)
def _torch_threads() -> None:
    """One torch thread: the presets train the same weights on every machine (measured figures)."""
    from paperlab.threads import set_threads

    set_threads(1)


@pytest.fixture(scope="session")
def trained() -> Any:
    """The tiny VQ + joint model from the cache ($PAPERLAB_CACHE), trained on first use (minutes)."""
    from paperlab.paradiff.config import get_preset
    from paperlab.paradiff.train import ensure_model

    return ensure_model(get_preset("tiny"))


@pytest.fixture(scope="session")
def plumbing() -> Any:
    """The `test` preset: a model of the tiny layout trained for seconds; for code paths, not quality."""
    from paperlab.paradiff.config import get_preset
    from paperlab.paradiff.train import ensure_model

    return ensure_model(get_preset("test"))
