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


# Links between the docs: README.md, WORKSPACE.md and every page in docs/.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def docs_pages() -> list:
  """The pages whose links are checked, as paths from the repository root."""
  pages = ["README.md", "WORKSPACE.md"]
  pages += sorted(os.path.join("docs", name) for name in os.listdir(os.path.join(ROOT, "docs"))
                  if name.endswith(".md"))
  return pages


def prose(text: str) -> str:
  """`text` without fenced code blocks and inline code, where brackets are not links."""
  text = re.sub(r"^```.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)
  return re.sub(r"`[^`\n]*`", "", text)


def relative_links(page: str) -> list:
  """Every link of `page` that points into the repository: (path from the root, anchor)."""
  with open(os.path.join(ROOT, page)) as f:
    text = prose(f.read())
  links = []
  for target in LINK.findall(text):
    if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
      continue
    path, _, anchor = target.partition("#")
    resolved = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
    links.append((resolved, anchor))
  return links


def heading_anchors(page: str) -> set:
  """The anchors GitHub gives the headings of `page`: lower case, punctuation dropped (inline
  code keeps its text), spaces as hyphens, and -1, -2, ... on repeats."""
  with open(os.path.join(ROOT, page)) as f:
    text = re.sub(r"^```.*?^```", "", f.read(), flags=re.DOTALL | re.MULTILINE)
  anchors = set()
  for title in re.findall(r"^#{1,6} (.+?)\s*#*$", text, flags=re.MULTILINE):
    title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title).replace("`", "")
    slug = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
    anchor, repeat = slug, 0
    while anchor in anchors:
      repeat += 1
      anchor = f"{slug}-{repeat}"
    anchors.add(anchor)
  return anchors


def test_the_anchors_are_githubs():
  assert "preprocessing-on-other-machines---data_service" in heading_anchors("docs/data.md")
  assert "which-backend-tensorflow-or-jax" in heading_anchors("docs/precision.md")


@pytest.mark.parametrize("page", docs_pages())
def test_every_relative_link_resolves(page):
  broken = []
  for path, anchor in relative_links(page):
    if not os.path.exists(os.path.join(ROOT, path)):
      broken.append(f"{path}: no such file")
    elif anchor and path.endswith(".md") and anchor not in heading_anchors(path):
      broken.append(f"{path}#{anchor}: no such heading")
  assert not broken, f"{page}: " + "; ".join(broken)


def test_every_docs_page_is_reachable_from_the_readme():
  reached, frontier = {"README.md"}, ["README.md"]
  while frontier:
    page = frontier.pop()
    for path, _ in relative_links(page):
      if path.endswith(".md") and path not in reached and os.path.exists(os.path.join(ROOT, path)):
        reached.add(path)
        frontier.append(path)
  assert set(docs_pages()) - reached == set()
