"""The docs name the tests that show their claims (`test_bad_input.py::test_…`, then `::test_…` for more of that file):
each must be a test in that file. 31 continuations once read against the wrong file and named no test there."""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# a file (maybe tests/…) and a test, or a continuation `::test`; `…` ends a prefix, [id] is a parametrized case
REFERENCE = re.compile(r"(?:(?:tests/)?(test_[A-Za-z0-9_]+\.py))?::(test[A-Za-z0-9_…]*)(?:\[[^\]]*\])?")


@functools.cache
def defined_tests(file_name: str) -> frozenset[str]:
    """The test functions a test file defines, read with ast: no test module is imported."""
    path = REPO / "tests" / file_name
    if not path.is_file():
        return frozenset()
    return frozenset(
        node.name for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test")
    )


def cells_and_paragraphs(text: str) -> Iterator[tuple[int, str]]:
    """(first line, text) of each table cell and each paragraph: the span a `::test` continuation is read within."""
    paragraph: list[str] = []
    paragraph_start = 0
    for line_number, line in enumerate([*text.split("\n"), ""], 1):
        if line.startswith("|") or not line.strip():
            if paragraph:
                yield paragraph_start, "\n".join(paragraph)
                paragraph = []
            if line.startswith("|"):
                yield from ((line_number, cell) for cell in line.split(" | "))
        else:
            paragraph_start = paragraph_start if paragraph else line_number
            paragraph.append(line)


def unresolved_references(text: str) -> list[str]:
    """`line: reference: why` for each reference that names no test: in its file, or in the file named last before it
    in the same cell or paragraph (a continuation with none before it names no file)."""
    problems = []
    for first_line, span in cells_and_paragraphs(text):
        file_name = None
        for reference in REFERENCE.finditer(span):
            file_name = reference.group(1) or file_name
            test_name = reference.group(2)
            line_number = first_line + span.count("\n", 0, reference.start())
            if file_name is None:
                problems.append(f"{line_number}: {reference.group(0)}: no file named before it in its cell or paragraph")
            elif "…" in test_name:
                prefix = test_name.split("…")[0]
                if not any(name.startswith(prefix) for name in defined_tests(file_name)):
                    problems.append(f"{line_number}: {reference.group(0)}: no test in {file_name} starts so")
            elif test_name not in defined_tests(file_name):
                problems.append(f"{line_number}: {reference.group(0)}: no such test in {file_name}")
    return problems


@pytest.mark.parametrize("doc", DOCS, ids=[doc.relative_to(REPO).as_posix() for doc in DOCS])
def test_every_test_a_doc_names_is_a_test_in_the_file_it_names(doc):
    assert unresolved_references(doc.read_text(encoding="utf-8")) == []


def test_a_continuation_is_read_against_the_file_named_before_it_in_its_cell_or_paragraph():
    """Not the file of an earlier row or paragraph: a reader of one row sees only that row."""
    this_file = Path(__file__).name
    table = (
        "| fault | behaviour | test |\n"
        f"| a | b | `{this_file}::test_every_test_a_doc_names_is_a_test_in_the_file_it_names`, `::test_a_continuation_…` |\n"
        "| c | d | `::test_every_test_a_doc_names_is_a_test_in_the_file_it_names` |\n"
    )
    prose = f"Shown by `tests/{this_file}::test_a_contin…` and\n`::test_every_test_a_doc_names_is_a_test_in_the_file_it_names[README.md]`.\n\nAnd `::test_nothing`.\n"
    assert unresolved_references(table) == [
        "3: ::test_every_test_a_doc_names_is_a_test_in_the_file_it_names: no file named before it in its cell or paragraph",
    ]
    assert unresolved_references(prose) == ["4: ::test_nothing: no file named before it in its cell or paragraph"]
    assert unresolved_references("`test_bad_input.py::test_a_continuation_is_read_against_the_file_named_before_it_in_its_cell_or_paragraph`") == [
        "1: test_bad_input.py::test_a_continuation_is_read_against_the_file_named_before_it_in_its_cell_or_paragraph: no such test in test_bad_input.py",
    ]
