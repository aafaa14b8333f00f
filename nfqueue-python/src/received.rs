//! A packet copied out of the receive buffer: everything a Python `Packet`
//! shows, read from nfqueue-core's packet view in this one place.

use nfqueue_core::{Binding, Hook, PacketView};
use std::time::UNIX_EPOCH;

/// What the kernel sent about one packet, owned.
#[derive(Debug, Default)]
pub(crate) struct Received {
    /// The binding it came through; a detached one when parsed from bytes
    /// read by someone else (`run_socket`), or for a packet made in Python.
    pub(crate) binding: Option<Binding>,
    pub(crate) queue: u16,
    pub(crate) id: u32,
    pub(crate) hw_protocol: u16,
    pub(crate) hook: u8,
    pub(crate) mark: u32,
    pub(crate) indev: Option<u32>,
    pub(crate) outdev: Option<u32>,
    pub(crate) physindev: Option<u32>,
    pub(crate) physoutdev: Option<u32>,
    pub(crate) hw_addr: Option<Vec<u8>>,
    /// Seconds since the epoch with microsecond precision, as the reference
    /// computes it; `None` when the kernel sent no timestamp.
    pub(crate) timestamp: Option<f64>,
    /// The copied bytes from the IP header on; empty when none were copied.
    pub(crate) payload: Vec<u8>,
    pub(crate) original_len: usize,
    pub(crate) uid: Option<u32>,
    pub(crate) gid: Option<u32>,
    pub(crate) skb_info: u32,
    pub(crate) secctx: Option<Vec<u8>>,
    pub(crate) conntrack: Option<Vec<u8>>,
    pub(crate) conntrack_info: Option<u32>,
}

impl Received {
    /// Copies what `view` holds.
    pub(crate) fn copy(view: &PacketView<'_>) -> Self {
        let timestamp = view
            .timestamp()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as f64 + f64::from(d.subsec_micros()) / 1_000_000.0);
        Received {
            binding: Some(view.key().binding()),
            queue: view.queue(),
            id: view.id(),
            hw_protocol: view.hw_protocol(),
            hook: hook_number(view.hook()),
            mark: view.mark(),
            indev: view.indev(),
            outdev: view.outdev(),
            physindev: view.physindev(),
            physoutdev: view.physoutdev(),
            hw_addr: view.hw_addr().map(<[u8]>::to_vec),
            timestamp,
            payload: view.payload().to_vec(),
            original_len: view.original_len(),
            uid: view.uid(),
            gid: view.gid(),
            skb_info: view.skb_info().bits(),
            secctx: view.secctx().map(<[u8]>::to_vec),
            conntrack: view.conntrack().map(<[u8]>::to_vec),
            conntrack_info: view.conntrack_info(),
        }
    }

    /// Parses one datagram read by someone else (`run_socket`): `None` when it
    /// holds no packet (an acknowledgement, an error report). It came through
    /// no binding that nfqueue-core saw: `binding` is `None`.
    pub(crate) fn parse_datagram(datagram: &[u8]) -> Option<Self> {
        PacketView::from_message(datagram)
            .ok()
            .map(|view| Received {
                binding: None,
                ..Self::copy(&view)
            })
    }
}

/// The hook's number, as the kernel sends it (0 PREROUTING ... 4 POSTROUTING).
fn hook_number(hook: Hook) -> u8 {
    match hook {
        Hook::PreRouting => 0,
        Hook::LocalIn => 1,
        Hook::Forward => 2,
        Hook::LocalOut => 3,
        Hook::PostRouting => 4,
        Hook::Other(n) => n,
    }
}
