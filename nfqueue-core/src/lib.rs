//! Safe single-queue NFQUEUE API (being written).
#![warn(missing_docs)]

pub mod net;
