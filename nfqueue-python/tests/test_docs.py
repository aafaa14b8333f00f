"""The Python blocks of the README and of the guide (docs/*.md) run as they
are shown. Each block is a whole program that serves queue 1 until Ctrl-C
and prints each packet, as the reference README's examples do: it must
compile, pass mypy, and print the packet sent through the queue."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List, Tuple

import pytest

from conftest import Net
from test_examples import run_program

HERE = Path(__file__).resolve().parent
CRATE = HERE.parent
ROOT = CRATE.parent
FENCE = re.compile(r"^```python\n(.*?)^```\n", re.DOTALL | re.MULTILINE)


def doc_pages() -> List[Path]:
    """The README and every page of the guide."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def python_blocks() -> List[Tuple[str, str]]:
    """Every ```python block of the pages, as (page:line, source)."""
    if not (ROOT / "README.md").exists():
        return []
    blocks = []
    for page in doc_pages():
        text = page.read_text()
        for found in FENCE.finditer(text):
            line = text.count("\n", 0, found.start()) + 1
            blocks.append((f"{page.relative_to(ROOT)}:{line}", found.group(1)))
    return blocks


BLOCKS = python_blocks()


def test_the_pages_have_python_blocks() -> None:
    if not (ROOT / "README.md").exists():
        pytest.skip("the tests run outside a checkout: no README.md beside them")
    pages = {where.split(":")[0] for where, _ in BLOCKS}
    assert {"README.md", os.path.join("docs", "python.md")} <= pages, pages


@pytest.mark.parametrize("where,source", BLOCKS, ids=[where for where, _ in BLOCKS])
def test_a_block_compiles(where: str, source: str) -> None:
    compile(source, where, "exec")


def test_the_blocks_pass_mypy() -> None:
    if not BLOCKS:
        pytest.skip("the tests run outside a checkout: no README.md beside them")
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for n, (where, source) in enumerate(BLOCKS):
            path = Path(tmp) / f"block_{n}.py"
            path.write_text(f"# {where}\n{source}")
            files.append(str(path))
        # The blocks copy the reference's untyped callbacks, so not --strict;
        # their bodies are checked all the same.
        done = subprocess.run([sys.executable, "-m", "mypy", "--check-untyped-defs",
                               "--no-incremental", "--cache-dir", os.devnull, *files],
                              capture_output=True, text=True, timeout=300,
                              env={**os.environ, "MYPYPATH": str(CRATE / "python")})
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("where,source", BLOCKS, ids=[where for where, _ in BLOCKS])
def test_a_block_serves_the_queue(net: Net, where: str, source: str) -> None:
    out = run_program(net, source)
    assert "UDP packet, 33 bytes" in out.splitlines(), f"{where} printed {out!r}"
