//! Python virtualenvs made with Debian's `python3 -m venv`, packages from PyPI
//! installed with pip, and the `nfqueue-python` module built with maturin and
//! installed into one: the Python tests of `cargo xtask test-netns` and the
//! Python consumers of the benchmark run from them.

use crate::cmd::{self, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian's interpreter, whatever else PATH finds first: the user-namespace
/// pass runs the venv as user nobody, who must reach its interpreter.
pub const DEBIAN_PYTHON: &str = "/usr/bin/python3";

/// A virtualenv.
#[derive(Debug)]
pub struct Venv {
    dir: PathBuf,
}

impl Venv {
    /// The virtualenv at `dir`, made with Debian's python3 when it is not
    /// there yet, with `packages` installed (pip skips what is present).
    pub fn ensure(dir: &Path, packages: &[&str]) -> Result<Venv> {
        let venv = Venv {
            dir: dir.to_path_buf(),
        };
        if !venv.python().exists() {
            cmd::run_ok(Command::new(DEBIAN_PYTHON).args(["-m", "venv"]).arg(dir))?;
        }
        if !packages.is_empty() {
            let mut pip = venv.command("pip");
            pip.args(["install", "--quiet", "--disable-pip-version-check"])
                .args(packages);
            cmd::run_ok(&mut pip)?;
        }
        Ok(venv)
    }

    /// The venv's interpreter.
    pub fn python(&self) -> PathBuf {
        self.dir.join("bin/python")
    }

    /// The venv's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A program of the venv's `bin`.
    pub fn command(&self, name: &str) -> Command {
        Command::new(self.dir.join("bin").join(name))
    }

    /// Builds `nfqueue-python` (release) with maturin and installs the wheel.
    pub fn install_module(&self, root: &Path) -> Result<()> {
        let wheels = root.join("target/python/wheels");
        let _ = fs::remove_dir_all(&wheels);
        let mut build = self.command("maturin");
        build
            .current_dir(root.join("nfqueue-python"))
            // A wheel for this machine: linked to its libnetfilter_queue, not repaired
            // into a manylinux one (which would need patchelf).
            .args([
                "build",
                "--release",
                "--quiet",
                "--auditwheel",
                "skip",
                "--out",
            ])
            .arg(&wheels)
            // pyproject.toml's backend wraps maturin's; maturin would warn that
            // pip does not use maturin.
            .env("MATURIN_NO_MISSING_BUILD_BACKEND_WARNING", "1");
        cmd::run_ok(&mut build)?;
        let wheel = fs::read_dir(&wheels)?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "whl"))
            .ok_or("maturin built no wheel")?;
        let mut pip = self.command("pip");
        pip.args(["install", "--quiet", "--disable-pip-version-check"])
            .args(["--force-reinstall", "--no-deps"])
            .arg(wheel);
        cmd::run_ok(&mut pip)
    }
}
