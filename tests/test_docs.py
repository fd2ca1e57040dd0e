"""The docs state what the code does: the exit codes and every field of results.json."""

import os
import re

import pytest

from tests.processes import ROOT
from trainer import errors
from trainer.records import run_record


def docs_section(page: str, title: str) -> str:
  """The `## title` section of `page` (a path from the repository root), up to the next one."""
  with open(os.path.join(ROOT, page)) as f:
    text = f.read()
  start = text.index(f"\n## {title}\n")
  end = text.find("\n## ", start + 1)
  return text[start:end if end != -1 else None]


def table_rows(section: str) -> list:
  return [[cell.strip() for cell in line.strip("|").split("|")]
          for line in section.splitlines() if line.startswith("| ") and "---" not in line]


def test_the_exit_code_table_is_the_one_in_errors():
  rows = table_rows(docs_section("docs/troubleshooting.md", "Exit codes"))[1:]
  assert {int(code): meaning for code, meaning in rows} == errors.EXIT_CODES


def test_every_results_field_is_documented():
  documented = [name.strip() for row in table_rows(docs_section("docs/benchmarking.md", "results.json"))[1:]
                for name in row[0].replace("`", "").split(",")]
  assert documented == list(run_record.FIELDS)


@pytest.mark.parametrize("entry_point", ["main", "sweep", "tfrecords", "compare", "evaluate",
                                         "benchmark"])
def test_each_entry_points_usage_reads_as_written(entry_point):
  # A backslash at a docstring line's end joins the lines, and --help showed a run of spaces.
  import ast  # pylint: disable=g-import-not-at-top
  with open(os.path.join(ROOT, "trainer", f"{entry_point}.py")) as f:
    usage = ast.get_docstring(ast.parse(f.read()), clean=False)
  for line in usage.splitlines():
    assert not re.search(r"\S {4,}--", line), line
