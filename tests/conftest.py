"""Session-wide fixtures: tiny-llama and the real SmolLM2 are loaded once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Nothing may be fetched from a hub at test time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Nor is the user's cache read or written: a warm factor, baseline or prefix cache from
# earlier runs made timing-dependent tests (interrupting a sweep after two points) see a
# sweep finish first. One fresh cache per session, as on a new machine; the subprocesses
# tests start inherit it. DSE_TEST_CACHE_DIR chooses another (e.g. to keep one warm).
if "DSE_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["DSE_CACHE_DIR"] = os.environ.get("DSE_TEST_CACHE_DIR") or tempfile.mkdtemp(prefix="dse-test-cache-")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real benchmark files (../shared/data beside the checkout, or $DSE_DATA_DIR)."""
    from space.env import default_data_dir

    found = default_data_dir()
    if found is None or not found.is_dir():
        pytest.skip("benchmark data directory not found (../shared/data or $DSE_DATA_DIR)")
    return found


@pytest.fixture(scope="session")
def tiny_llama():  # type: ignore[no-untyped-def]
    """A seeded random 4-layer Llama with SmolLM2's tokenizer (LoadedModel)."""
    from dse.models import load_model

    return load_model("tiny-llama")


@pytest.fixture(scope="session")
def smollm2():  # type: ignore[no-untyped-def]
    """The real pretrained SmolLM2-135M-Instruct in float32 on CPU (LoadedModel).

    Tests using it must be marked ``@pytest.mark.slow``; surgery they apply must be
    undone (use ``dse.surgery.decomposed``), since the model is shared.
    """
    from dse.models import load_model

    return load_model("smollm2-135m")


@pytest.fixture
def sigint_default():  # type: ignore[no-untyped-def]
    """SIGINT handled (not ignored) while the test runs, so the processes it starts take Ctrl-C.

    A shell starts background jobs (``nohup``, ``make test &``) with SIGINT ignored; an
    ignored signal stays ignored across exec, and Python then installs no
    KeyboardInterrupt handler, so a test's interrupt would never arrive.
    """
    import signal

    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
