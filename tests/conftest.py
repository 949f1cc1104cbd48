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


@pytest.fixture(scope="session")
def smollm2_llm(smollm2_path: Path):
    """The packaged SmolLM2 loaded in this process once per test run (hf backend)."""
    from paperlab.llm import load_llm

    return load_llm(f"hf:{smollm2_path}")


@pytest.fixture(scope="session")
def vllm_style_server(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory, tscale: float):
    """The far side of the HTTP boundary answering as vLLM documents (top_logprobs, echo,
    continue_final_message), computed with plain transformers: tests/core/logprob_server.py.
    Serves the packaged model under the name "smollm2"; yields the spec."""
    from paperlab.testing import free_port, start_python_server

    port = free_port()
    log = tmp_path_factory.mktemp("lp") / "server.log"
    proc = start_python_server(REPO / "tests" / "core" / "logprob_server.py",
                               [str(smollm2_path), str(port), "smollm2"], port, log, 120 * tscale,
                               "/v1/models")
    yield f"openai:http://127.0.0.1:{port}/v1#smollm2"
    stop_process(proc)


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory, tscale: float):
    """llama-cpp-python's server on the packaged GGUF (a real server that returns top_logprobs).
    `make test-slow` installs it (`make llama-server`, a cached wheel); skipped when absent."""
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("needs llama-cpp-python[server]; run: make llama-server")
    from paperlab.llm.packaged import smollm2_gguf
    from paperlab.testing import start_llama_cpp_server

    served = start_llama_cpp_server(smollm2_gguf(), tmp_path_factory.mktemp("llama") / "server.log",
                                    120 * tscale)
    yield served
    stop_process(served.proc)
