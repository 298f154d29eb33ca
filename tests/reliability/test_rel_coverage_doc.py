"""CHECKLIST_COVERAGE.md names only tests that exist: every ``path::test_name`` it lists is a file of this
repository with a module-level test function of that name (renaming or deleting a test breaks this)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

DOC = Path(__file__).resolve().parent / "CHECKLIST_COVERAGE.md"
REPO = Path(__file__).resolve().parents[2]
SHORTHAND = {"rel/": "tests/reliability/"}


def node_ids(text: str) -> list[tuple[str, str]]:
    """(path from the repository root, test name) for every node id in the table.

    A cell lists ``path::name`` and then ``::other`` for more tests of the same file.
    """
    ids = []
    for row in (line for line in text.splitlines() if line.startswith("| ")):
        path = None
        for token in re.findall(r"`([^`]+)`", row):
            if "::" not in token:
                continue
            file_part, name = token.split("::", 1)
            if file_part:
                path = file_part
                for short, full in SHORTHAND.items():
                    path = full + path[len(short):] if path.startswith(short) else path
            assert path is not None, f"{token!r} continues no file in: {row[:80]}"
            ids.append((path, name))
    return ids


def _test_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text("utf-8"))
    return {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}


def test_every_node_id_in_the_coverage_doc_exists():
    text = DOC.read_text("utf-8")
    ids = node_ids(text)
    assert len(ids) > 80  # the parser found the table
    missing = []
    for path, name in ids:
        file = REPO / path
        if not file.is_file():
            missing.append(f"{path} (no such file)")
        elif name not in _test_functions(file):
            missing.append(f"{path}::{name}")
    assert not missing, "CHECKLIST_COVERAGE.md names tests that do not exist:\n" + "\n".join(missing)
    rows = {int(m) for m in re.findall(r"^\| (\d+) \|", text, flags=re.MULTILINE)}
    assert rows == set(range(1, 32))  # one row per checklist item
    assert "/work/" not in text and "FAILS" not in text


def test_the_parser_resolves_shorthand_and_continuations():
    row = "| 1 | x | `rel/test_a.py::test_one`, `::test_two`; `tests/b.py::test_three` (`HF_HUB_OFFLINE=1`) |"
    assert node_ids(row) == [("tests/reliability/test_a.py", "test_one"),
                             ("tests/reliability/test_a.py", "test_two"), ("tests/b.py", "test_three")]
