"""docs/datasets.md explains every numbered dataset quirk (Q1-Q22) the loaders' docstrings cite."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_cited_quirk_is_explained():
    cited = set()
    for path in (ROOT / "training").rglob("*.py"):  # training/data/ is a package
        cited |= {int(n) for n in re.findall(r"\bQ(\d+)\b", path.read_text())}
    explained = {int(n) for n in re.findall(r"\*\*Q(\d+) ", (ROOT / "docs" / "datasets.md").read_text())}
    assert cited and cited <= explained, f"cited but not explained: {sorted(cited - explained)}"
    assert explained == set(range(1, 23))
