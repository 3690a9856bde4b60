"""The benchmark tables copied into the docs (for readers on GitHub) match their files."""

import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _sync_tables():
    spec = importlib.util.spec_from_file_location("sync_tables",
                                                  ROOT / "benchmarks" / "sync_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sync_tables = _sync_tables()


@pytest.mark.parametrize("page", sorted(DOCS.glob("*.rst")), ids=lambda page: page.name)
def test_every_table_in_the_docs_is_its_results_file(page):
    text = page.read_text()
    assert "literalinclude:: ../benchmarks/results" not in text  # GitHub shows no includes
    assert sync_tables.synced(text) == text, (
        f"docs/{page.name} differs from benchmarks/results: run "
        "python benchmarks/sync_tables.py")


def test_an_include_becomes_a_copy_that_follows_its_file(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    table = tmp_path / "benchmarks" / "results" / "t.md"
    table.write_text("| a | b |\n|---|---|\n| 1 | 2 |\n\nnote\n")
    page = ("Intro\n\n- item:\n\n  .. literalinclude:: ../benchmarks/results/t.md\n"
            "     :language: none\n\n  More of the item.\n\nAfter.\n")
    copied = sync_tables.synced(page, folder)
    assert "  .. code:: text\n\n     | a | b |\n     |---|---|\n     | 1 | 2 |\n\n     note\n" \
        in copied
    assert copied.endswith("\n  More of the item.\n\nAfter.\n")
    assert sync_tables.synced(copied, folder) == copied  # a second run changes nothing
    table.write_text("| a | b |\n|---|---|\n| 3 | 4 |\n")
    refreshed = sync_tables.synced(copied, folder)
    assert "| 3 | 4 |" in refreshed and "| 1 | 2 |" not in refreshed and "note" not in refreshed
    assert refreshed.endswith("\n  More of the item.\n\nAfter.\n")


def test_a_pages_own_code_block_after_an_include_stays_and_an_empty_file_says_so(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results" / "e.md").write_text("")
    page = (".. literalinclude:: ../benchmarks/results/e.md\n   :language: text\n\n"
            ".. code:: text\n\n   the page's own example\n\nAfter.\n")
    copied = sync_tables.synced(page, folder)
    assert copied.count(".. code:: text") == 2 and "   the page's own example\n" in copied
    assert ".. code:: text\n\n   (empty)\n" in copied  # a code block with no content is an error
    assert sync_tables.synced(copied, folder) == copied
