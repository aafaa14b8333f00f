//! What `xtask` and the benchmark harness (`nfqueue-bench`) share: running
//! commands (echoed, waited for with a deadline, their exit status passed on),
//! installing Debian packages, and the Python virtualenvs that hold the
//! `nfqueue-python` module.
//!
//! Like xtask, it depends on no library crate of the workspace: `cargo xtask
//! prereqs` installs the system libraries those need before they can build.

pub mod cmd;
pub mod venv;
