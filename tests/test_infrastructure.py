"""Atomic writes, typed config loading, provenance and the CLI's error contract."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from havana.cli import main
from havana.config import from_mapping, load_yaml, section
from havana.errors import HavanaError
from havana.utils import atomic, provenance


def test_atomic_path_renames_on_success_and_leaves_nothing_on_error(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.txt"
    atomic.write_text(target, "hello")
    assert target.read_text() == "hello"
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "hello"  # the old file survives a crash
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]  # no temporary left behind


def test_atomic_directory_replaces_whole_folder(tmp_path: Path) -> None:
    target = tmp_path / "folder"
    for content in ("first", "second"):
        with atomic.atomic_path(target, directory=True) as tmp:
            (tmp / "file").write_text(content)
    assert (target / "file").read_text() == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["folder"]


@dataclasses.dataclass
class _Inner:
    lr: float = 1e-5  # learning rate
    milestones: tuple[int, ...] = (40, 70)  # epochs at which lr drops


@dataclasses.dataclass
class _Outer:
    name: str = "x"  # a name
    inner: _Inner = dataclasses.field(default_factory=_Inner)  # nested section
    weights: str | None = None  # optional path


def test_from_mapping_builds_typed_dataclasses() -> None:
    cfg = from_mapping(_Outer, {"name": "y", "inner": {"lr": "3.5e-4", "milestones": [1, 2]}, "weights": None})
    assert cfg == _Outer(name="y", inner=_Inner(lr=3.5e-4, milestones=(1, 2)), weights=None)
    assert isinstance(cfg.inner.lr, float)


@pytest.mark.parametrize(
    "mapping, fragment",
    [
        ({"nmae": "y"}, "unknown key(s) nmae"),
        ({"inner": {"lr": "fast"}}, "config.inner.lr='fast'"),
        ({"inner": {"milestones": 3}}, "must be a list"),
        ({"name": True}, "config.name=True"),
    ],
)
def test_from_mapping_rejects_bad_values_with_a_sentence(mapping: dict, fragment: str) -> None:
    with pytest.raises(HavanaError, match=None) as info:
        from_mapping(_Outer, mapping)
    assert fragment in str(info.value)


def test_load_yaml_and_section_errors(tmp_path: Path) -> None:
    with pytest.raises(HavanaError, match="does not exist"):
        load_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(HavanaError, match="not valid YAML"):
        load_yaml(bad)
    good = tmp_path / "good.yaml"
    good.write_text("heads:\n  rows:\n    havana: {alpha: 0.2}\n")
    cfg = load_yaml(good)
    assert section(cfg, "heads", "rows", "havana") == {"alpha": 0.2}
    with pytest.raises(HavanaError, match=r"no 'vnae' under heads.rows \(known: havana\)"):
        section(cfg, "heads", "rows", "vnae")


def test_config_hash_ignores_key_order_and_sees_values() -> None:
    assert provenance.config_hash({"a": 1, "b": [1, 2]}) == provenance.config_hash({"b": [1, 2], "a": 1})
    assert provenance.config_hash({"a": 1}) != provenance.config_hash({"a": 2})


def test_write_beside_records_config_and_git_sha(tmp_path: Path) -> None:
    out = tmp_path / "head.pt"
    path = provenance.write_beside(out, _Outer())
    record = yaml.safe_load(path.read_text())
    assert path.name == "head.pt.provenance.yaml"
    assert record["config"] == {"name": "x", "inner": {"lr": 1e-5, "milestones": [40, 70]}, "weights": None}
    assert record["config_hash"] == provenance.config_hash(_Outer())
    assert record["git_sha"] == provenance.git_sha()


def test_file_sha256_matches_hashlib(tmp_path: Path) -> None:
    import hashlib

    blob = bytes(range(256)) * 5000
    (tmp_path / "f").write_bytes(blob)
    assert provenance.file_sha256(tmp_path / "f", chunk_bytes=4096) == hashlib.sha256(blob).hexdigest()


def test_cli_help_lists_subcommands_and_exits_zero() -> None:
    result = subprocess.run([sys.executable, "-m", "havana", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "COMMAND" in result.stdout


def test_cli_turns_user_errors_into_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    def failing(args: argparse.Namespace) -> int:
        raise HavanaError("the archive is missing; put it under resources/archives.")

    import havana.cli as cli

    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sub.add_parser("explode").set_defaults(func=failing)
    original = cli.build_parser
    cli.build_parser = lambda: parser
    try:
        assert main(["explode"]) == 2
    finally:
        cli.build_parser = original
    err = capsys.readouterr().err
    assert err == "havana explode: error: the archive is missing; put it under resources/archives.\n"
