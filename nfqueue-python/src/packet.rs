//! `netfilterqueue.Packet`: one queued packet, its metadata, and its verdict.

use crate::errors;
use crate::ints;
use crate::protocols;
use crate::queue::NetfilterQueue;
use crate::received::Received;
use crate::verdicts::Binding;
use nfqueue_core::{Error as CoreError, Verdict, VerdictKind, MAX_PAYLOAD};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyTuple};
use pyo3::{PyTraverseError, PyVisit};
use std::sync::{Arc, Mutex, MutexGuard};

/// A packet received from a queue, handed to the callback of `bind()`.
/// `Packet()` makes one of no queue (every number 0, no payload), and the
/// class can be subclassed: unit tests fake packets so, as with the reference.
#[pyclass(frozen, subclass, module = "netfilterqueue", name = "Packet")]
pub(crate) struct Packet {
    info: Received,
    /// Bytes copied from the kernel (`info.payload` is moved out to here).
    payload_len: usize,
    state: Mutex<PacketState>,
    origin: Option<Origin>,
}

/// Where a received packet came from. The packet keeps its queue alive, as
/// the reference's does: the queue stays bound while a packet of it waits for
/// a verdict.
struct Origin {
    queue: Py<NetfilterQueue>,
    binding: Arc<Binding>,
}

/// What changes after the packet is made.
#[derive(Default)]
struct PacketState {
    /// The payload while the callback runs; gone after it unless retained.
    live: Option<LivePayload>,
    /// What `retain()` kept.
    retained: Option<Py<PyBytes>>,
    given_payload: Option<Py<PyBytes>>,
    given_mark: Option<u32>,
    verdict_given: bool,
}

/// The payload during the callback: raw bytes until Python first asks for them.
enum LivePayload {
    Raw(Vec<u8>),
    Bytes(Py<PyBytes>),
}

/// The reference's message for a verdict on a packet whose queue is gone.
const UNBOUND: &str = "Parent queue has already been unbound";

impl Packet {
    pub(crate) fn new(
        mut info: Received,
        queue: Py<NetfilterQueue>,
        binding: Arc<Binding>,
    ) -> Self {
        let payload = std::mem::take(&mut info.payload);
        let payload_len = payload.len();
        let state = PacketState {
            // No payload (COPY_META) reads as "no payload", as in the reference.
            live: (!payload.is_empty()).then_some(LivePayload::Raw(payload)),
            ..PacketState::default()
        };
        Packet {
            info,
            payload_len,
            state: Mutex::new(state),
            origin: Some(Origin { queue, binding }),
        }
    }

    /// The callback returned: an unretained payload is no longer available.
    pub(crate) fn end_callback(&self) {
        let live = self.state().live.take();
        drop(live);
    }

    /// The mark set with `set_mark()`, else the mark the packet arrived with.
    fn mark_now(&self, state: &PacketState) -> u32 {
        state.given_mark.unwrap_or(self.info.mark)
    }

    fn state(&self) -> MutexGuard<'_, PacketState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Gives the verdict, with the mark and payload set before.
    fn verdict(&self, py: Python<'_>, kind: VerdictKind, mark: Option<u32>) -> PyResult<()> {
        let (origin, mark, payload) = {
            let mut state = self.state();
            if state.verdict_given {
                return Err(PyRuntimeError::new_err(
                    "Verdict already given for this packet",
                ));
            }
            // A packet of no queue (made in Python) has no one to send it to.
            let Some(origin) = self.origin.as_ref().filter(|o| !o.binding.is_unbound()) else {
                return Err(PyRuntimeError::new_err(UNBOUND));
            };
            if mark.is_some() {
                state.given_mark = mark;
            }
            // Taken before sending, so that two threads cannot both send one.
            state.verdict_given = true;
            (
                origin,
                state.given_mark,
                state.given_payload.as_ref().map(|p| p.clone_ref(py)),
            )
        };
        let given = origin.binding.give(
            self.info.id,
            kind,
            mark,
            payload.as_ref().map(|p| p.as_bytes(py)),
        );
        given.map_err(|err| {
            self.state().verdict_given = false;
            match err {
                // Unbound (and perhaps bound again) since the check above.
                CoreError::StaleBinding { .. } => PyRuntimeError::new_err(UNBOUND),
                err => errors::os_error_errno(py, "Failed to send verdict", &err),
            }
        })
    }

    /// The bytes `str()` and `retain()` see: retained, else live.
    fn payload_now(&self, py: Python<'_>) -> Option<Py<PyBytes>> {
        let mut state = self.state();
        if let Some(retained) = &state.retained {
            return Some(retained.clone_ref(py));
        }
        let bytes = match state.live.take()? {
            LivePayload::Raw(raw) => PyBytes::new(py, &raw).unbind(),
            LivePayload::Bytes(bytes) => bytes,
        };
        state.live = Some(LivePayload::Bytes(bytes.clone_ref(py)));
        Some(bytes)
    }

    fn name(&self, index: Option<u32>) -> Option<String> {
        let origin = self.origin.as_ref()?;
        Some(origin.binding.interface_name(index?)?.as_str().to_owned())
    }
}

#[pymethods]
impl Packet {
    /// A packet of no queue. Arguments are taken and ignored, so that a
    /// subclass's `__init__` may have its own.
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn py_new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> Self {
        Packet {
            info: Received::default(),
            payload_len: 0,
            state: Mutex::default(),
            origin: None,
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(origin) = &self.origin {
            visit.call(&origin.queue)?;
        }
        Ok(())
    }

    /// The packet id the kernel gave it.
    #[getter]
    fn id(&self) -> u32 {
        self.info.id
    }

    /// The link-layer protocol (EtherType), e.g. 0x0800 for IPv4.
    #[getter]
    fn hw_protocol(&self) -> u16 {
        self.info.hw_protocol
    }

    /// The netfilter hook: 0 PREROUTING, 1 INPUT, 2 FORWARD, 3 OUTPUT, 4 POSTROUTING.
    #[getter]
    fn hook(&self) -> u8 {
        self.info.hook
    }

    /// The mark the packet had when it was queued.
    #[getter(mark)]
    fn arrival_mark(&self) -> u32 {
        self.info.mark
    }

    /// Index of the interface the packet arrived on; 0 when none.
    #[getter]
    fn indev(&self) -> u32 {
        self.info.indev.unwrap_or(0)
    }

    /// Index of the interface the packet leaves on; 0 when none.
    #[getter]
    fn outdev(&self) -> u32 {
        self.info.outdev.unwrap_or(0)
    }

    /// Index of the bridge port the packet arrived on; 0 when none.
    #[getter]
    fn physindev(&self) -> u32 {
        self.info.physindev.unwrap_or(0)
    }

    /// Index of the bridge port the packet leaves on; 0 when none.
    #[getter]
    fn physoutdev(&self) -> u32 {
        self.info.physoutdev.unwrap_or(0)
    }

    /// Name of `indev`, looked up in the queue socket's network namespace.
    #[getter]
    fn indev_name(&self) -> Option<String> {
        self.name(self.info.indev)
    }

    /// Name of `outdev`.
    #[getter]
    fn outdev_name(&self) -> Option<String> {
        self.name(self.info.outdev)
    }

    /// Name of `physindev`.
    #[getter]
    fn physindev_name(&self) -> Option<String> {
        self.name(self.info.physindev)
    }

    /// Name of `physoutdev`.
    #[getter]
    fn physoutdev_name(&self) -> Option<String> {
        self.name(self.info.physoutdev)
    }

    /// The uid of the local sender (bind with `uid_gid=True`).
    #[getter]
    fn uid(&self) -> Option<u32> {
        self.info.uid
    }

    /// The gid of the local sender (bind with `uid_gid=True`).
    #[getter]
    fn gid(&self) -> Option<u32> {
        self.info.gid
    }

    /// The packet's full length; more than `get_payload_len()` when the copy
    /// range cut it.
    #[getter]
    fn original_len(&self) -> usize {
        self.info.original_len
    }

    /// True when the payload is shorter than the packet.
    #[getter]
    fn is_truncated(&self) -> bool {
        self.info.original_len > self.payload_len
    }

    /// The kernel's `NFQA_SKB_*` bits: `SKB_CSUM_NOT_READY`, `SKB_GSO`,
    /// `SKB_CSUM_NOT_VERIFIED`.
    #[getter]
    fn skb_info(&self) -> u32 {
        self.info.skb_info
    }

    /// True for a GSO super-packet (bind with `gso=True`).
    #[getter]
    fn is_gso(&self) -> bool {
        self.info.skb_info & nfqueue_core::SkbInfo::GSO.bits() != 0
    }

    /// The security context (bind with `secctx=True`).
    #[getter]
    fn secctx<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        self.info.secctx.as_deref().map(|s| PyBytes::new(py, s))
    }

    /// The conntrack entry as raw nested `CTA_*` attributes (bind with
    /// `conntrack=True`).
    #[getter]
    fn conntrack<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        self.info.conntrack.as_deref().map(|s| PyBytes::new(py, s))
    }

    /// The conntrack state (`enum ip_conntrack_info`).
    #[getter]
    fn conntrack_info(&self) -> Option<u32> {
        self.info.conntrack_info
    }

    /// The source hardware address, as long as the kernel says (6 bytes on
    /// Ethernet), or None when the kernel sent none.
    fn get_hw<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        self.info.hw_addr.as_deref().map(|hw| PyBytes::new(py, hw))
    }

    /// When the kernel received the packet, as a Unix time; 0.0 when it did not
    /// stamp it.
    fn get_timestamp(&self) -> f64 {
        self.info.timestamp.unwrap_or(0.0)
    }

    /// The payload from the IP header on: what `set_payload()` gave, what
    /// `retain()` kept, or, inside the callback, what the kernel sent.
    fn get_payload(&self, py: Python<'_>) -> PyResult<Py<PyBytes>> {
        {
            let state = self.state();
            if let Some(given) = &state.given_payload {
                return Ok(given.clone_ref(py));
            }
        }
        if let Some(bytes) = self.payload_now(py) {
            return Ok(bytes);
        }
        Err(PyRuntimeError::new_err(if self.payload_len == 0 {
            "Packet has no payload -- perhaps you're using COPY_META mode?"
        } else {
            "Payload data is no longer available. You must call retain() within the \
             user_callback in order to copy the payload if you need to expect it after \
             your callback has returned."
        }))
    }

    /// How many bytes of the packet the kernel copied.
    fn get_payload_len(&self) -> usize {
        self.payload_len
    }

    /// Replaces the packet with `payload` in the verdict. `None` or an empty
    /// `bytes` takes back an earlier `set_payload()`, as in the reference (which
    /// sends no payload for either). One over 65531 bytes is a ValueError: a
    /// verdict cannot carry it. In a non-initial user namespace (a rootless
    /// container) some kernels drop a packet given a payload, with no error:
    /// see the guide's kernel facts.
    fn set_payload(&self, payload: &Bound<'_, PyAny>) -> PyResult<()> {
        let given = if payload.is_none() {
            None
        } else {
            let bytes = payload.cast::<PyBytes>().map_err(|_| {
                let got = payload
                    .get_type()
                    .name()
                    .map_or_else(|_| "object".to_owned(), |n| n.to_string());
                PyTypeError::new_err(format!(
                    "Argument 'payload' has incorrect type (expected bytes, got {got})"
                ))
            })?;
            let len = bytes.as_bytes().len();
            if len > MAX_PAYLOAD {
                return Err(PyValueError::new_err(format!(
                    "payload of {len} bytes is longer than the {MAX_PAYLOAD} bytes a verdict can carry"
                )));
            }
            (len > 0).then(|| bytes.clone().unbind())
        };
        self.state().given_payload = given;
        Ok(())
    }

    /// Sets the mark given with the verdict (any number `int()` takes, as in
    /// the reference: `set_mark(x / 2)` works). With `mask`, only the bits of
    /// the mask are set, to those of `mark`, and the others keep the value
    /// `get_mark()` had: `(get_mark() & ~mask) | (mark & mask)`, so that
    /// calls with different masks add up.
    #[pyo3(signature = (mark, *, mask=None))]
    fn set_mark(&self, mark: &Bound<'_, PyAny>, mask: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let mark = ints::u32_arg(mark)?;
        let mask = mask.map(ints::u32_arg).transpose()?;
        let mut state = self.state();
        let mark = match mask {
            // The bits resolved as nfqueue-core resolves them for any holder.
            Some(mask) => Verdict::accept()
                .with_mark_bits(mark, mask)
                .resolve_mark(self.mark_now(&state))
                .mark()
                .expect("a resolved mark is whole"),
            None => mark,
        };
        state.given_mark = Some(mark);
        Ok(())
    }

    /// The mark set with `set_mark()`, else the mark the packet arrived with.
    fn get_mark(&self) -> u32 {
        self.mark_now(&self.state())
    }

    /// Keeps the payload for `get_payload()` after the callback returns.
    fn retain(&self, py: Python<'_>) -> PyResult<()> {
        let payload = self.get_payload(py)?;
        self.state().retained = Some(payload);
        Ok(())
    }

    /// Accepts the packet, optionally with a new mark.
    #[pyo3(signature = (*, mark=None))]
    fn accept(&self, py: Python<'_>, mark: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let mark = mark.map(ints::u32_arg).transpose()?;
        self.verdict(py, VerdictKind::Accept, mark)
    }

    /// Drops the packet.
    fn drop(&self, py: Python<'_>) -> PyResult<()> {
        self.verdict(py, VerdictKind::Drop, None)
    }

    /// Sends the packet through its hook again, optionally with a new mark.
    #[pyo3(signature = (*, mark=None))]
    fn repeat(&self, py: Python<'_>, mark: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let mark = mark.map(ints::u32_arg).transpose()?;
        self.verdict(py, VerdictKind::Repeat, mark)
    }

    /// Hands the packet to queue `num`; with `bypass`, it is accepted when no
    /// program has bound `num`, else dropped.
    #[pyo3(signature = (num, bypass=false))]
    fn queue_to(&self, py: Python<'_>, num: &Bound<'_, PyAny>, bypass: bool) -> PyResult<()> {
        let num = ints::unsigned(num, u16::MAX.into(), "u_int16_t")? as u16;
        self.verdict(py, VerdictKind::Queue { num, bypass }, None)
    }

    /// `"UDP packet, 33 bytes"`, or `"N byte packet, contents unretained"`
    /// after the callback when the payload was not retained.
    fn __str__(&self, py: Python<'_>) -> String {
        match self.payload_now(py) {
            Some(bytes) => {
                let protocol = protocol_of(bytes.as_bytes(py))
                    .and_then(protocols::name)
                    .unwrap_or("Unknown protocol");
                format!("{protocol} packet, {} bytes", self.payload_len)
            }
            None => format!("{} byte packet, contents unretained", self.payload_len),
        }
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "<netfilterqueue.Packet id={} hook={} {}>",
            self.info.id,
            self.info.hook,
            self.__str__(py)
        )
    }
}

/// The protocol field: IPv4's protocol, IPv6's next header.
fn protocol_of(ip: &[u8]) -> Option<u8> {
    let at = if ip.first()? >> 4 == 6 { 6 } else { 9 };
    ip.get(at).copied()
}
