"""Fixtures of the family conformance suite: each tiny model saved once to a local directory."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny_configs import TINY_CONFIGS

_SEED = 0


@pytest.fixture(scope="session")
def family_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Family name -> a directory holding a seeded random model and SmolLM2's tokenizer.

    Built lazily, one family at a time, so a test of one family builds only its model.
    """
    return _LazyDirs(tmp_path_factory.mktemp("families"))


class _LazyDirs(dict):  # type: ignore[type-arg]
    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def __missing__(self, family: str) -> Path:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        from dse.models import _smollm2_tokenizer

        fields = dict(TINY_CONFIGS[family])
        config = AutoConfig.for_model(fields.pop("model_type"), **fields)
        state = torch.random.get_rng_state()
        try:
            torch.manual_seed(_SEED)
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        finally:
            torch.random.set_rng_state(state)
        path = self.root / family
        model.save_pretrained(path)
        _smollm2_tokenizer().save_pretrained(path)
        self[family] = path
        return path


@pytest.fixture(scope="session")
def family_models() -> dict[str, object]:
    """Family name -> LoadedModel of its saved directory, loaded once per session."""
    return {}
