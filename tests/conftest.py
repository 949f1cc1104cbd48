"""Fixtures shared by every system's tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from paperlab.testing import start_transformers_serve, stop_process

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def timeout_scale() -> float:
    """One knob for every timeout in the tests: PAPERLAB_TEST_TIMEOUT_SCALE (default 1)."""
    return float(os.environ.get("PAPERLAB_TEST_TIMEOUT_SCALE", "1"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the repository; tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"needs real data in {SHARED_DATA} (the ../shared checkout beside the repo)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tscale() -> float:
    """The timeout scale as a fixture (see :func:`timeout_scale`)."""
    return timeout_scale()


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """The packaged SmolLM2 as a transformers directory (converted once, then cached)."""
    from paperlab.llm.packaged import smollm2_dir

    return smollm2_dir()


@pytest.fixture(scope="session")
def served_smollm2(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory, tscale: float):
    """A real `transformers serve` process serving the packaged SmolLM2 (session-wide)."""
    log_path = tmp_path_factory.mktemp("serve") / "transformers-serve.log"
    served = start_transformers_serve(smollm2_path, log_path, startup_timeout=180 * tscale)
    yield served
    stop_process(served.proc)
