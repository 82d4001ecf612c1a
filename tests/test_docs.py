"""The project cites only documents it ships: every document a tracked file names (a `docs/…` page or an upper-case
`NAME.md` such as README.md) exists in the repository (relative to the repository or to the citing file), so a user
who clones it can read what the code and the schema point to. Generated outputs (`table2.md`) are not documents."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CITED = re.compile(r"(?<![\w/.:-])((?:[\w.-]+/)*(?:[A-Z][A-Z_]*|(?<=docs/)[\w.-]+)\.md)\b")
TEXT = (".py", ".md", ".yaml", ".yml", ".smk", ".rst", ".sh", ".toml", ".cfg")


def tracked_text_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    return [
        REPO / name
        for name in listed
        if (name.endswith(TEXT) or Path(name).name in ("Makefile", "Snakefile")) and name != "tests/test_docs.py"
    ]


def missing_citations(files: list[Path]) -> list[str]:
    """'<file> cites <document>' for every cited document found neither in the repository nor beside the file."""
    missing = []
    for path in files:
        for cited in CITED.findall(path.read_text(encoding="utf-8", errors="replace")):
            if not ((REPO / cited).is_file() or (path.parent / cited).is_file()):
                missing.append(f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path.name} cites {cited}")
    return missing


def test_every_cited_document_is_in_the_repository():
    files = tracked_text_files()
    assert len(files) > 50 and REPO / "docs" / "design.md" in files
    assert not missing_citations(files)


def test_the_check_finds_a_missing_document(tmp_path):
    citing = tmp_path / "x.py"
    citing.write_text('"""See DESIGN.md and docs/design.md."""\n')
    assert missing_citations([REPO / "README.md"]) == []
    found = [line.split(" cites ")[1] for line in missing_citations([citing])]
    assert found == ["DESIGN.md"]
