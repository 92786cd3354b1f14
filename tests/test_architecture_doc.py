"""docs/architecture.md names every module of the three packages (so it stays true)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_module_is_named_in_the_architecture_doc() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", doc))
    missing = [
        str(path.relative_to(ROOT))
        for package in ("space", "objectives", "dse")
        for path in sorted((ROOT / package).rglob("*.py"))
        if path.name not in ("__init__.py", "__main__.py") and path.stem not in words
    ]
    assert missing == [], f"modules not in docs/architecture.md: {missing}"
