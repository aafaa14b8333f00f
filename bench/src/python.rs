//! The Python consumers of the benchmark and their virtualenvs.

use crate::cmd::Result;
use std::fs;
use std::path::Path;
use xtask_support::venv::Venv;

/// The Python consumers of `cargo xtask bench`: the same script
/// (`bench/nfq_python.py`), each from a venv (under the bench's output
/// directory) that holds one of the two modules named `netfilterqueue`.
pub const BENCH_CONSUMERS: &[(&str, &str, &str)] = &[
    (
        "py-reference",
        "venv-reference",
        "Python, the reference package NetfilterQueue 1.1.0 from PyPI (bench/nfq_python.py)",
    ),
    (
        "py-nfqueue",
        "venv-nfqueue",
        "Python, nfqueue-python: the same script on our module (bench/nfq_python.py)",
    ),
];

/// Makes the bench's venvs in `out` (the reference from PyPI, ours built by
/// maturin in release mode) and copies the script into `bin`.
pub fn prepare_bench(root: &Path, out: &Path, bin: &Path) -> Result<()> {
    Venv::ensure(&out.join("venv-reference"), &["NetfilterQueue==1.1.0"])?;
    Venv::ensure(&out.join("venv-nfqueue"), &["maturin>=1.5,<2"])?.install_module(root)?;
    fs::copy(root.join("bench/nfq_python.py"), bin.join("nfq_python.py"))?;
    Ok(())
}
