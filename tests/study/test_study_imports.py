"""The study definition and the encodings do not import each other (no cycle)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("module", "absent"),
    [("dse.study.definition", "dse.study.encoding"), ("dse.study.encoding", "dse.study.definition")],
)
def test_module_load_does_not_import_the_other(module: str, absent: str) -> None:
    # A fresh interpreter: this process has long imported both.
    code = f"import sys, {module}; print({absent!r} in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_package_names_still_resolve() -> None:
    import dse.study

    assert dse.study.build_search_space.__module__ == "dse.study.search_space"
    assert dse.study.StudyDefinition.__module__ == "dse.study.definition"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = dse.study.nope  # type: ignore[attr-defined]
