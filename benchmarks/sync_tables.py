"""Copy the benchmark tables of ``benchmarks/results`` into the docs.

    python benchmarks/sync_tables.py          # rewrite docs/*.rst where a table changed
    python benchmarks/sync_tables.py --check  # exit 1, naming the pages, if one is stale

Sphinx could include the result files, but GitHub shows an ``.rst`` page without its
includes: a reader there saw the text around each table and not the table. So every table
sits in its page as a ``.. code:: text`` block under a comment naming its file, and this
script (run after a benchmark writes a result) copies the files in again;
``tests/test_docs_tables.py`` fails while a page and its file disagree. A
``.. literalinclude::`` of a result file is turned into such a block the same way.
"""

import argparse
import pathlib
import re
import sys

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
NOTE = "copied by ``python benchmarks/sync_tables.py``"
# A results table's first line: an include of it, or the comment over its copy.
HEAD = re.compile(r"^(?P<indent> *)\.\. (?P<kind>literalinclude::|results:) "
                  r"(?P<path>\S*benchmarks/results/[^\s,]+)")


def synced(text, folder=DOCS):
    """``text`` (an ``.rst`` page in ``folder``) with every results table copied in."""
    lines = text.splitlines()
    out, i = [], 0
    while i < len(lines):
        head = HEAD.match(lines[i])
        if head is None:
            out.append(lines[i])
            i += 1
            continue
        indent = head["indent"]
        i = _end_of_table(lines, i + 1, len(indent), head["kind"] == "results:")
        out.extend(_table_block(indent, head["path"], folder))
    return "\n".join(out) + "\n"


def _end_of_table(lines, i, width, copied):
    """Past an include's options, or a comment's copied block (``copied``), and the blank
    lines after: a code block that follows an include is the page's own, and stays."""
    i = _past_indented(lines, i, width)
    if copied and i < len(lines) and lines[i] == " " * width + ".. code:: text":
        i = _past_indented(lines, i + 1, width)
    return i


def _past_indented(lines, i, width):
    while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > width):
        i += 1
    return i


def _indent(line):
    return len(line) - len(line.lstrip())


def _table_block(indent, path, folder):
    table = (folder / path).read_text().rstrip("\n").splitlines() or ["(empty)"]
    body = [indent + "   " + line if line.strip() else "" for line in table]
    return [f"{indent}.. results: {path}, {NOTE}", "", f"{indent}.. code:: text", "", *body, ""]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if a page's table differs from its file")
    args = parser.parse_args(argv)
    stale = []
    for page in sorted(DOCS.glob("*.rst")):
        text = page.read_text()
        new = synced(text)
        if new != text:
            stale.append(page.name)
            if not args.check:
                page.write_text(new)
    verb = "stale" if args.check else "rewritten"
    print(f"{verb}: {', '.join(stale)}" if stale else "every table is up to date")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
