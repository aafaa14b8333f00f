"""Programs run unchanged: the reference README's two examples, ours, and the
type check of the stubs and examples."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import List

import pytest

import reference_examples as reference_examples_copy
import scripts
from conftest import TIMEOUT, Net, kernel_queues
from netns import B

HERE = Path(__file__).resolve().parent
CRATE = HERE.parent


def reference_examples() -> List[str]:
    """The reference README's two examples: the copy in reference_examples.py,
    checked against the code blocks of the reference package's README (its
    metadata, where the test venv has the package) that use the package."""
    readme = scripts.REFERENCE_DIR / "netfilterqueue-1.1.0.dist-info" / "METADATA"
    if readme.exists():
        assert readme_blocks(readme) == reference_examples_copy.EXAMPLES
    return reference_examples_copy.EXAMPLES


def readme_blocks(readme: Path) -> List[str]:
    """The code blocks of a README that use the package."""
    lines = readme.read_text().splitlines()
    blocks = []
    for at, line in enumerate(lines):
        if line.strip() == "from netfilterqueue import NetfilterQueue":
            indent = line[: len(line) - len(line.lstrip())]
            block = []
            for following in lines[at:]:
                if following.strip() and not following.startswith(indent):
                    break
                block.append(following)
            blocks.append(textwrap.dedent("\n".join(block)).strip() + "\n")
    assert len(blocks) == 2, blocks
    return blocks


def run_program(net: Net, source: str) -> str:
    """Runs a program that serves queue 1 until Ctrl-C; sends it a datagram
    through the FORWARD rule; returns what it printed."""
    # Python ignores SIGINT when started with it ignored; restore the default.
    prelude = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler)\n"
    child = subprocess.Popen([sys.executable, "-c", prelude + source],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not any(line[0] == 1 for line in kernel_queues()):
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "the program did not bind queue 1"
            time.sleep(0.02)
        net.rule("FORWARD", "-d", B.ipv4, "-p", "udp", "-j", "NFQUEUE", "--queue-num", "1")
        # Idle a while first: a loop that gives up when nothing comes (as
        # run_socket once did after 100 ms) ends the program before its packet.
        time.sleep(0.5)
        net.send(b"hello")
        net.expect(b"hello")
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=TIMEOUT)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == 0, err
    assert kernel_queues() == []
    return out


@pytest.mark.parametrize("which", [0, 1], ids=["run", "run_socket"])
def test_reference_readme_example(net: Net, which: int) -> None:
    out = run_program(net, reference_examples()[which])
    assert out.splitlines() == ["UDP packet, 33 bytes", ""]


def test_asyncio_example(net: Net) -> None:
    out = run_program(net, (CRATE / "examples" / "asyncio_print.py").read_text())
    assert out.splitlines() == ["UDP packet, 33 bytes"]


def test_threads_example(net: Net) -> None:
    net.rule("FORWARD", "-d", B.ipv4, "-p", "udp", "-j", "NFQUEUE", "--queue-num", "1")
    net.rule("POSTROUTING", "-d", B.ipv4, "-m", "mark", "--mark", "0x1", table="mangle")
    child = subprocess.Popen([sys.executable, str(CRATE / "examples" / "threads.py"), "1.5"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not any(line[0] == 1 for line in kernel_queues()):
            assert time.monotonic() < deadline and child.poll() is None
            time.sleep(0.02)
        net.send(b"a", b"b")
        net.expect(b"a", b"b")
        out, err = child.communicate(timeout=TIMEOUT)
    finally:
        child.kill()
        child.wait()
    assert (child.returncode, err) == (0, "")
    assert out.startswith("2 packets, ")
    from conftest import rule_count

    assert rule_count(net, "POSTROUTING", "mark match 0x1", table="mangle") == 2


def test_stubs_and_examples_pass_mypy_strict() -> None:
    files = [str(CRATE / "examples"), str(CRATE / "python" / "netfilterqueue" / "__init__.pyi")]
    done = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                           "--cache-dir", os.devnull, *files],
                          capture_output=True, text=True, timeout=300, cwd=CRATE)
    assert done.returncode == 0, done.stdout + done.stderr
