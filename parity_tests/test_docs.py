"""docs/README.md's op table stays true: every file it names exists, and every op family's test
file (``parity_tests/ops/test_*.py``) has a row, so a new family without one fails here."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
COLUMNS = ["op family", "math page", "functional", "kernel", "nn", "twin", "tests", "benchmark"]


def op_table(text: str) -> list[dict[str, str]]:
    """The rows of the table under ``## Op table``, each as {column: cell text}."""
    start = text.index("\n## Op table\n")
    end = text.find("\n## ", start + 1)
    lines = [line for line in text[start:end if end >= 0 else None].splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header == COLUMNS, header
    rows = []
    for line in lines[2:]:  # after the header and its |---| line
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        assert len(cells) == len(COLUMNS), f"a row with {len(cells)} cells: {line}"
        rows.append(dict(zip(COLUMNS, cells)))
    return rows


def paths_in(cell: str) -> list[str]:
    """Repository paths written in backticks (``scratch/kernels/linear.py``), relative to the root."""
    return [token for token in re.findall(r"`([^`]+)`", cell) if "/" in token and re.fullmatch(r"[\w./-]+", token)]


def links_in(cell: str) -> list[str]:
    """Markdown link targets to other files (anchors within the page left out), relative to docs/."""
    return [target for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", cell)]


def missing_files(rows, root: Path = ROOT) -> list[str]:
    missing = []
    for row in rows:
        for column, cell in row.items():
            missing += [f"{row['op family']} / {column}: {path}" for path in paths_in(cell) if not (root / path).exists()]
            missing += [f"{row['op family']} / {column}: docs/{link}" for link in links_in(cell)
                        if not (root / "docs" / link).exists()]
    return missing


def families_without_a_row(rows, root: Path = ROOT) -> list[str]:
    listed = {path for row in rows for path in paths_in(row["tests"])}
    present = sorted(path.relative_to(root).as_posix() for path in (root / "parity_tests" / "ops").glob("test_*.py"))
    return [path for path in present if path not in listed]


def _rows():
    return op_table((DOCS / "README.md").read_text(encoding="utf-8"))


def test_every_path_in_the_op_table_exists():
    rows = _rows()
    assert len(rows) >= 10
    assert missing_files(rows) == []
    for row in rows:
        assert paths_in(row["tests"]), f"{row['op family']}: no test file named"


def test_every_op_family_test_file_has_a_row():
    assert families_without_a_row(_rows()) == []


def test_the_checks_see_a_planted_file_and_a_broken_path(tmp_path):
    """Neither check passes vacuously: a family file without a row, and a row naming a file that
    is not there, are both reported."""
    (tmp_path / "parity_tests" / "ops").mkdir(parents=True)
    (tmp_path / "docs").mkdir()
    for name in ("test_linear.py", "test_planted.py"):
        (tmp_path / "parity_tests" / "ops" / name).write_text("", encoding="utf-8")
    (tmp_path / "docs" / "linear.md").write_text("", encoding="utf-8")
    row = dict.fromkeys(COLUMNS, "—")
    row.update({"op family": "Linear", "math page": "[linear.md](linear.md)", "kernel": "`scratch/kernels/gone.py`",
                "tests": "`parity_tests/ops/test_linear.py`"})
    assert families_without_a_row([row], tmp_path) == ["parity_tests/ops/test_planted.py"]
    assert missing_files([row], tmp_path) == ["Linear / kernel: scratch/kernels/gone.py"]
