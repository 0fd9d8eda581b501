"""make bench's one table: rows from every benchmark, and the README block it replaces."""

from __future__ import annotations

import json

from bench import run_all
from bench.report import Row, markdown, ratio, write_json


def test_rows_become_one_markdown_table(tmp_path):
    path = tmp_path / "rows.json"
    write_json(str(path), [Row("fan-out", 24.0, "fps", 25.0, "frames received", ratio(24.0, 25.0), "≥ 0.9×", load=3.0),
                           Row("oldest frame", 420, "ms", goal="≤ 500 ms", load=3.0)])
    table = markdown(json.loads(path.read_text()))
    assert table.splitlines()[2] == "| fan-out | 24 fps | 25 fps (frames received) | 0.96× | ≥ 0.9× | 3.0 |"
    assert table.splitlines()[3] == "| oldest frame | 420 ms |  | – | ≤ 500 ms | 3.0 |"


def test_the_table_replaces_only_the_block_of_each_page(tmp_path, monkeypatch):
    docs, readme, other = tmp_path / "benchmarks.md", tmp_path / "README.md", tmp_path / "other.md"
    docs.write_text(f"intro\n{run_all.BEGIN}\nold table\n{run_all.END}\nrest\n")
    readme.write_text(f"# project\n{run_all.BEGIN}\nolder table\n{run_all.END}\n")
    other.write_text("no block here\n")
    monkeypatch.setattr(run_all, "PAGES", (str(docs), str(readme), str(other)))
    run_all.put_in_pages("| new |")
    assert docs.read_text() == f"intro\n{run_all.BEGIN}\n| new |\n{run_all.END}\nrest\n"
    assert readme.read_text() == f"# project\n{run_all.BEGIN}\n| new |\n{run_all.END}\n"
    assert other.read_text() == "no block here\n"
