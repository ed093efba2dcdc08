"""The README's Python examples run as written, in order, in one namespace."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def quick_start_runs(tmp_path_factory) -> Path:
    """The runs/ folder of the quick start's `autoencoders train mlp-ae` (3 epochs of its 100, for time)."""
    from autoencoders.cli import main

    folder = tmp_path_factory.mktemp("quick-start")
    before = os.getcwd()
    try:
        os.chdir(folder)
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["train", "mlp-ae", "--epochs", "3", "--quiet"]) == 0
    finally:
        os.chdir(before)
    return folder / "runs"


@pytest.fixture
def in_a_folder_with_the_quick_starts_run(quick_start_runs, tmp_path, monkeypatch):
    """A fresh working folder holding a copy of the quick start's run: what the README's loading
    example reads (and where its training example writes)."""
    shutil.copytree(quick_start_runs, tmp_path / "runs")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_python_examples_run(in_a_folder_with_the_quick_starts_run):
    blocks = _blocks()
    assert len(blocks) >= 3
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 - our own README
    assert namespace["dx"].shape == (32, 784)
    assert set(namespace["out"]) == {"loss", "recon"}
    assert tuple(namespace["path"].shape) == (5, 64) and tuple(namespace["samples"].shape) == (16, 64)
    assert namespace["run"].config.model_config["input_dim"] == 64


@pytest.mark.parametrize("number", range(len(_blocks())))
def test_each_readme_python_example_runs_pasted_on_its_own(in_a_folder_with_the_quick_starts_run, number):
    """Each block in a fresh namespace, as a reader pastes it (the gradcheck example once raised
    NameError: nn, its imports being in an earlier block)."""
    exec(compile(_blocks()[number], f"{README}: python block {number + 1}", "exec"),  # noqa: S102 - our own README
         {"__name__": f"readme_block_{number + 1}"})


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
