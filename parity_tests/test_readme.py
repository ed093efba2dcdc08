"""The README's Python examples run as written, in order, in one namespace."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) >= 3
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 - our own README
    assert namespace["dx"].shape == (32, 784)
    assert set(namespace["out"]) == {"loss", "recon"}


def _section(title: str) -> str:
    """The README's text from the heading ``## title`` to the next ``## `` heading."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def test_checking_your_own_layer_example_runs_on_its_own():
    """The example of "Checking your own layer" runs verbatim in a fresh namespace: its layer
    passes assert_matches_torch (float64 and float32) and gradcheck."""
    blocks = re.findall(r"```python\n(.*?)```", _section("Checking your own layer"), flags=re.S)
    assert len(blocks) == 1
    namespace: dict = {"__name__": "readme_example"}
    exec(compile(blocks[0], f"{README}: Checking your own layer", "exec"), namespace)  # noqa: S102 - our own README
    assert issubclass(namespace["SiLU"], namespace["nn"].Module)
