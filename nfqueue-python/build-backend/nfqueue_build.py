"""The PEP 517 build backend of nfqueue-python: maturin's, with two changes.

- Cargo builds outside the source tree: in ``CARGO_TARGET_DIR`` when it is set,
  else in a temporary directory that is removed afterwards. maturin's default,
  the workspace's ``target/``, fails on a read-only checkout and leaves build
  files behind in a writable one.
- Without ``cargo`` on PATH the build stops with a message that says what to
  do, where maturin would download a Rust toolchain (about 750 MB) into a
  temporary directory. ``MATURIN_NO_INSTALL_RUST`` is maturin's switch for that;
  set it to an empty value to let maturin download one after all.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from typing import Any, List, Mapping, Optional

os.environ.setdefault("MATURIN_NO_INSTALL_RUST", "1")

import maturin  # noqa: E402  (reads the variable above when called)

NO_CARGO = """
nfqueue-python: building it from source needs Rust's `cargo`, and none is on PATH.
  - Install Rust (https://rustup.rs; on Debian 13, `apt-get install cargo`),
    with `pkg-config libnetfilter-queue-dev libmnl-dev gcc`, then run pip again; or
  - install the prebuilt wheel instead, which needs no compiler: pip install
    nfqueue_python-*-manylinux_2_28_x86_64.whl (made by `cargo xtask wheel`).
"""


def _check_cargo() -> None:
    if os.environ.get("MATURIN_NO_INSTALL_RUST") and shutil.which("cargo") is None:
        sys.stderr.write(NO_CARGO)
        sys.exit(1)


def get_requires_for_build_wheel(config_settings: Optional[Mapping[str, Any]] = None) -> List[str]:
    _check_cargo()
    return maturin.get_requires_for_build_wheel(config_settings)


def get_requires_for_build_editable(config_settings: Optional[Mapping[str, Any]] = None) -> List[str]:
    _check_cargo()
    return maturin.get_requires_for_build_editable(config_settings)


def get_requires_for_build_sdist(config_settings: Optional[Mapping[str, Any]] = None) -> List[str]:
    return maturin.get_requires_for_build_sdist(config_settings)


def prepare_metadata_for_build_wheel(
    metadata_directory: str, config_settings: Optional[Mapping[str, Any]] = None
) -> str:
    _check_cargo()
    return maturin.prepare_metadata_for_build_wheel(metadata_directory, config_settings)


prepare_metadata_for_build_editable = prepare_metadata_for_build_wheel


def build_wheel(
    wheel_directory: str,
    config_settings: Optional[Mapping[str, Any]] = None,
    metadata_directory: Optional[str] = None,
) -> str:
    _check_cargo()
    if os.environ.get("CARGO_TARGET_DIR"):
        return maturin.build_wheel(wheel_directory, config_settings, metadata_directory)
    target = tempfile.mkdtemp(prefix="nfqueue-python-build-")
    os.environ["CARGO_TARGET_DIR"] = target
    try:
        return maturin.build_wheel(wheel_directory, config_settings, metadata_directory)
    finally:
        del os.environ["CARGO_TARGET_DIR"]
        shutil.rmtree(target, ignore_errors=True)


def build_editable(
    wheel_directory: str,
    config_settings: Optional[Mapping[str, Any]] = None,
    metadata_directory: Optional[str] = None,
) -> str:
    # An editable install builds the module into the source tree by design.
    _check_cargo()
    return maturin.build_editable(wheel_directory, config_settings, metadata_directory)


def build_sdist(sdist_directory: str, config_settings: Optional[Mapping[str, Any]] = None) -> str:
    return maturin.build_sdist(sdist_directory, config_settings)
