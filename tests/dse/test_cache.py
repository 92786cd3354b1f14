"""FactorCache: slices served exactly, disk round trips, corruption caught, LRU eviction, CLI."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import pytest
import torch

from dse.cache import SCHEMA_VERSION, FactorCache
from dse.cli import main
from dse.decompose import decompose
from space.errors import InvalidConfigError, StorageError, UnknownNameError

FP = "0123456789abcdef"


def _weight(height: int = 48, width: int = 80, seed: int = 0) -> torch.Tensor:
    return torch.randn(height, width, generator=torch.Generator().manual_seed(seed))


def _files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.safetensors"))


def _same(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_lower_rank_is_an_exact_slice_and_a_hit(tmp_path: Path) -> None:
    cache = FactorCache(tmp_path)
    weight = _weight()
    first, hit = cache.factors(FP, 3, "q", weight, 16)
    assert not hit and cache.stats.decompositions == 1 and cache.stats.misses == 1
    assert _same(first, decompose(weight, 16))
    for rank in (1, 4, 16):
        factors, hit = cache.factors(FP, 3, "q", weight, rank)
        assert hit
        assert _same(factors, decompose(weight, rank))  # bit for bit
        assert cache.last is not None and cache.last.source == "memory"
        assert cache.last.stored_rank == 16 and cache.last.decompose_seconds == 0.0
    assert cache.stats.decompositions == 1 and cache.stats.hits == 3


def test_larger_rank_is_a_miss_that_recomputes_and_replaces(tmp_path: Path) -> None:
    cache = FactorCache(tmp_path)
    weight = _weight()
    cache.factors(FP, 0, "q", weight, 4)
    factors, hit = cache.factors(FP, 0, "q", weight, 20)
    assert not hit and cache.stats.decompositions == 2
    assert cache.last is not None and cache.last.source == "computed"
    assert cache.last.decompose_seconds > 0 and cache.stats.decompose_seconds > 0
    assert _same(factors, decompose(weight, 20))
    assert cache.info().entries == 1 and len(_files(tmp_path)) == 1  # the rank-4 file is gone
    assert cache.factors(FP, 0, "q", weight, 12)[1]


def test_keys_separate_models_layers_tensors_and_methods(tmp_path: Path) -> None:
    cache = FactorCache(tmp_path)
    weight = _weight()
    for fingerprint, layer, tensor in ((FP, 0, "q"), ("other", 0, "q"), (FP, 1, "q"), (FP, 0, "k")):
        assert not cache.factors(fingerprint, layer, tensor, weight, 2)[1]
    assert not cache.factors(FP, 0, "q", weight, 2, "hooi")[1]
    info = cache.info()
    assert info.entries == 5
    assert {fp: usage.entries for fp, usage in info.models.items()} == {FP: 4, "other": 1}
    assert info.bytes == sum(p.stat().st_size for p in _files(tmp_path))


def test_hooi_entries_are_keyed_by_rank(tmp_path: Path) -> None:
    cache = FactorCache(tmp_path)
    weight = _weight()
    factors, hit = cache.factors(FP, 0, "q", weight, 3, "hooi")
    assert not hit and _same(factors, decompose(weight, 3, method="hooi"))
    assert cache.factors(FP, 0, "q", weight, 3, "hooi")[1]
    assert not cache.factors(FP, 0, "q", weight, 2, "hooi")[1]  # not a slice: recomputed
    assert cache.stats.decompositions == 2
    fresh = FactorCache(tmp_path)
    assert fresh.factors(FP, 0, "q", weight, 2, "hooi")[1]
    assert fresh.factors(FP, 0, "q", weight, 3, "hooi")[1]
    assert fresh.stats.decompositions == 0 and fresh.stats.disk_hits == 2


def test_disk_round_trip_without_decomposing(tmp_path: Path) -> None:
    weight = _weight()
    FactorCache(tmp_path).factors(FP, 5, "gate", weight, 10)
    fresh = FactorCache(tmp_path)
    factors, hit = fresh.factors(FP, 5, "gate", weight, 7)
    assert hit and fresh.last is not None and fresh.last.source == "disk"
    assert fresh.stats.decompositions == 0 and fresh.stats.disk_hits == 1
    assert _same(factors, decompose(weight, 7))
    assert fresh.factors(FP, 5, "gate", weight, 10)[1]
    assert fresh.last.source == "memory"


def test_factors_follow_the_weights_dtype_and_are_copies(tmp_path: Path) -> None:
    cache = FactorCache(tmp_path)
    weight = _weight()
    bf16, _ = cache.factors(FP, 0, "q", weight.bfloat16(), 4)
    assert {t.dtype for t in bf16} == {torch.bfloat16}
    factors, _ = cache.factors(FP, 0, "q", weight, 4)
    factors.u1.zero_()
    again, _ = cache.factors(FP, 0, "q", weight, 4)
    assert again.u1.abs().sum() > 0


def test_the_same_gamma_twice_decomposes_nothing_the_second_time(
    tiny_llama, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    loaded = tiny_llama
    spec = loaded.spec
    blocks = loaded.model.get_submodule(spec.layer_path)
    pairs = [(layer, t) for layer in (1, 3) for t in spec.tensors]
    cache = FactorCache(tmp_path)

    def apply_once(target: FactorCache) -> None:
        for layer, t in pairs:
            weight = blocks[layer].get_submodule(t.path).weight.detach()
            target.factors(loaded.fingerprint, layer, t.name, weight, 2, label=loaded.name)

    apply_once(cache)
    assert cache.stats.decompositions == len(pairs)
    before = cache.stats.snapshot()
    apply_once(cache)
    delta = cache.stats - before
    assert delta.decompositions == 0 and delta.hits == len(pairs) and delta.misses == 0
    fresh = FactorCache(tmp_path)
    apply_once(fresh)
    assert fresh.stats.decompositions == 0 and fresh.stats.disk_hits == len(pairs)
    info = fresh.info()
    assert info.models[loaded.fingerprint].entries == len(pairs)
    assert info.models[loaded.fingerprint].label == loaded.name


def _only_file(root: Path) -> Path:
    (path,) = _files(root)
    return path


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_a_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x10  # inside the tensor data: still parses, wrong numbers
    path.write_bytes(bytes(data))


def _garble_header(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[10:20] = b"\xff" * 10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_truncate, _flip_a_bit, _garble_header, Path.unlink])
def test_a_corrupt_entry_is_reported_deleted_and_recomputed(
    damage, tmp_path: Path, caplog: pytest.LogCaptureFixture  # type: ignore[no-untyped-def]
) -> None:
    weight = _weight()
    FactorCache(tmp_path).factors(FP, 2, "v", weight, 6)
    damage(_only_file(tmp_path))
    fresh = FactorCache(tmp_path)
    with caplog.at_level(logging.WARNING, logger="dse.cache"):
        factors, hit = fresh.factors(FP, 2, "v", weight, 6)
    assert not hit
    assert fresh.stats.corrupt == 1 and fresh.stats.decompositions == 1
    assert _same(factors, decompose(weight, 6))  # never the damaged numbers
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "corrupt" in warnings[0].getMessage() and "\n" not in warnings[0].getMessage()
    # The recomputed entry replaced it on disk and reads back cleanly.
    assert len(_files(tmp_path)) == 1
    again = FactorCache(tmp_path)
    assert again.factors(FP, 2, "v", weight, 6)[1] and again.stats.corrupt == 0


def test_an_unreadable_index_is_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    weight = _weight()
    with FactorCache(tmp_path) as cache:
        cache.factors(FP, 0, "q", weight, 2)
    (tmp_path / "index.sqlite").write_bytes(b"this is not a database" * 100)
    fresh = FactorCache(tmp_path)
    with caplog.at_level(logging.WARNING, logger="dse.cache"):
        assert not fresh.factors(FP, 0, "q", weight, 2)[1]
    assert "unreadable" in caplog.text
    assert fresh.info().entries == 1 and len(_files(tmp_path)) == 1


def test_a_newer_schema_is_refused_with_the_fix(tmp_path: Path) -> None:
    with FactorCache(tmp_path) as cache:
        cache.factors(FP, 0, "q", _weight(), 2)
    with sqlite3.connect(tmp_path / "index.sqlite") as conn:
        conn.execute("UPDATE meta SET value = ? WHERE name = 'schema_version'",
                     (str(SCHEMA_VERSION + 1),))
    with pytest.raises(StorageError, match=r"schema version 2.*dse cache clear"):
        FactorCache(tmp_path).info()
    FactorCache(tmp_path).clear()  # clearing always works
    assert FactorCache(tmp_path).info().entries == 0


def test_eviction_keeps_the_disk_under_max_bytes_least_recently_used_first(tmp_path: Path) -> None:
    weights = [_weight(seed=i) for i in range(4)]
    FactorCache(tmp_path).factors(FP, 0, "q", weights[0], 8)
    entry_bytes = FactorCache(tmp_path).info().bytes
    limit = 2 * entry_bytes + entry_bytes // 2  # room for two entries
    cache = FactorCache(tmp_path, max_bytes=limit)
    cache.factors(FP, 1, "q", weights[1], 8)
    FactorCache(tmp_path).factors(FP, 0, "q", weights[0], 8)  # a disk hit: layer 0 is now newer
    cache.factors(FP, 2, "q", weights[2], 8)
    assert cache.stats.evictions == 1
    info = cache.info()
    assert info.entries == 2 and info.bytes <= limit and len(_files(tmp_path)) == 2
    fresh = FactorCache(tmp_path, max_bytes=limit)
    assert fresh.factors(FP, 0, "q", weights[0], 8)[1]
    assert fresh.factors(FP, 2, "q", weights[2], 8)[1]
    assert not fresh.factors(FP, 1, "q", weights[1], 8)[1]  # the least recently used went


def test_max_bytes_zero_keeps_nothing_on_disk(tmp_path: Path) -> None:
    cache = FactorCache(tmp_path, max_bytes=0)
    weight = _weight()
    cache.factors(FP, 0, "q", weight, 4)
    assert cache.factors(FP, 0, "q", weight, 4)[1]  # still served from memory
    assert _files(tmp_path) == [] and cache.info().entries == 0


def test_memory_limit_falls_back_to_disk(tmp_path: Path) -> None:
    cache = FactorCache(tmp_path, memory_bytes=1)
    a, b = _weight(seed=1), _weight(seed=2)
    cache.factors(FP, 0, "q", a, 4)
    cache.factors(FP, 1, "q", b, 4)
    assert cache.factors(FP, 0, "q", a, 4)[1]
    assert cache.last is not None and cache.last.source == "disk"
    assert cache.stats.decompositions == 2


def test_clear_removes_entries_files_and_memory_but_nothing_else(tmp_path: Path) -> None:
    cache = FactorCache(tmp_path)
    weight = _weight()
    cache.factors(FP, 0, "q", weight, 4)
    cache.factors(FP, 1, "k", weight, 4)
    keep = tmp_path / "notes.txt"
    keep.write_text("mine")
    removed = cache.clear()
    assert removed.entries == 2 and removed.bytes > 0
    assert _files(tmp_path) == [] and keep.read_text() == "mine"
    assert cache.info().entries == 0
    assert not cache.factors(FP, 0, "q", weight, 4)[1]  # memory was cleared too
    assert cache.stats.decompositions == 3


def test_nothing_touches_the_disk_until_the_first_write(tmp_path: Path) -> None:
    root = tmp_path / "deep" / "factors"
    cache = FactorCache(root)
    assert cache.info().entries == 0 and cache.clear().entries == 0
    assert not root.exists()
    cache.factors(FP, 0, "q", _weight(), 1)
    assert (root / "index.sqlite").is_file()


def test_default_root_follows_dse_cache_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DSE_CACHE_DIR", str(tmp_path / "env"))
    assert FactorCache().root == tmp_path / "env" / "factors"
    assert FactorCache.for_cache_dir().root == tmp_path / "env" / "factors"
    assert FactorCache.for_cache_dir(tmp_path / "cli").root == tmp_path / "cli" / "factors"


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfigError, match="max_bytes must be a non-negative integer"):
        FactorCache(tmp_path, max_bytes=-1)
    cache = FactorCache(tmp_path)
    with pytest.raises(UnknownNameError, match="Did you mean 'svd'"):
        cache.factors(FP, 0, "q", _weight(), 2, "svdd")
    with pytest.raises(InvalidConfigError, match="rank must be"):
        cache.factors(FP, 0, "q", _weight(), 49)
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError, match="is a file, not a directory"):
        FactorCache(tmp_path / "file").factors(FP, 0, "q", _weight(), 2)


def test_cli_info_and_clear_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = FactorCache.for_cache_dir(tmp_path)
    cache.factors(FP, 0, "q", _weight(), 3, label="tiny")
    cache.factors(FP, 1, "q", _weight(), 3, label="tiny")
    main(["cache", "info", "--cache-dir", str(tmp_path), "--json"])
    info = json.loads(capsys.readouterr().out)
    assert info["root"] == str(tmp_path / "factors")
    assert info["entries"] == 2 and info["bytes"] > 0 and info["max_bytes"] == 2 * 1024**3
    assert info["models"] == {FP: {"entries": 2, "bytes": info["bytes"], "label": "tiny"}}
    main(["cache", "info", "--cache-dir", str(tmp_path)])
    text = capsys.readouterr().out
    assert "2 entries" in text and FP in text
    main(["cache", "clear", "--cache-dir", str(tmp_path), "--json"])
    cleared = json.loads(capsys.readouterr().out)
    assert cleared == {"schema_version": 1, "root": str(tmp_path / "factors"), "removed_entries": 2,
                       "removed_bytes": info["bytes"]}
    main(["cache", "clear", "--cache-dir", str(tmp_path)])
    assert "removed 0 entries" in capsys.readouterr().out


def test_cli_uses_dse_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DSE_CACHE_DIR", str(tmp_path))
    main(["cache", "info", "--json"])
    assert json.loads(capsys.readouterr().out)["root"] == str(tmp_path / "factors")


def test_cli_errors_are_one_line_and_exit_2(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "factors").write_text("not a directory")
    for command in ("info", "clear"):
        with pytest.raises(SystemExit) as excinfo:
            main(["cache", command, "--cache-dir", str(tmp_path)])
        assert excinfo.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error: factor cache directory") and err.count("\n") == 1
    with pytest.raises(SystemExit) as excinfo:
        main(["cache", "purge"])
    assert excinfo.value.code == 2
