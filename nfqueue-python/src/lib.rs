//! The Python module `netfilterqueue`: a drop-in for the package
//! NetfilterQueue 1.1.0 on `nfqueue-core`. Built with maturin
//! (`pip install ./nfqueue-python`), it runs programs written for that package
//! unchanged:
//!
//! ```python
//! from netfilterqueue import NetfilterQueue
//!
//! def print_and_accept(pkt):
//!     print(pkt)
//!     pkt.accept()
//!
//! nfqueue = NetfilterQueue()
//! nfqueue.bind(1, print_and_accept)
//! try:
//!     nfqueue.run()
//! except KeyboardInterrupt:
//!     print('')
//! nfqueue.unbind()
//! ```
//!
//! `run()` reads up to 16 packets per `recvmmsg`. The verdicts its callbacks
//! give go out together in one `sendmsg` when the burst is done, or at most
//! 200 us after they were given if a callback takes longer (`run(batch=True)`:
//! when the burst is done). The GIL is released while it waits and during
//! kernel round trips. The module links libnetfilter_queue, so a wheel of it is
//! GPL-2.0-or-later.
#![warn(missing_docs)]

mod dispatch;
mod errors;
mod gil;
mod ints;
mod packet;
mod protocols;
mod queue;
mod received;
mod verdicts;
mod wait;

use pyo3::prelude::*;
use pyo3::types::PyDict;

/// The release of the reference package whose API this module has.
const API_VERSION: (u8, u8, u8) = (1, 1, 0);

/// `netfilterqueue._impl`; the package `netfilterqueue` re-exports it.
#[pymodule]
#[pyo3(name = "_impl")]
fn netfilterqueue(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("COPY_NONE", queue::COPY_NONE)?;
    m.add("COPY_META", queue::COPY_META)?;
    m.add("COPY_PACKET", queue::COPY_PACKET)?;
    m.add_class::<queue::NetfilterQueue>()?;
    m.add_class::<packet::Packet>()?;
    gil::install(m)?;
    let protocols = PyDict::new(py);
    for (number, name) in protocols::PROTOCOLS {
        protocols.set_item(number, name)?;
    }
    m.add("PROTOCOLS", protocols)?;
    // Programs test VERSION for features of the reference: say which release
    // this module matches, and NFQUEUE_VERSION for the release of this one.
    m.add("VERSION", API_VERSION)?;
    let (major, minor, patch) = API_VERSION;
    m.add("__version__", format!("{major}.{minor}.{patch}"))?;
    m.add("NFQUEUE_VERSION", env!("CARGO_PKG_VERSION"))?;
    m.add(
        "SKB_CSUM_NOT_READY",
        nfqueue_core::SkbInfo::CSUM_NOT_READY.bits(),
    )?;
    m.add("SKB_GSO", nfqueue_core::SkbInfo::GSO.bits())?;
    m.add(
        "SKB_CSUM_NOT_VERIFIED",
        nfqueue_core::SkbInfo::CSUM_NOT_VERIFIED.bits(),
    )?;
    Ok(())
}
