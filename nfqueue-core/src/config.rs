//! How a queue is configured: copy mode, queue length and flags.

use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::verdict::VerdictKind;
use nfqueue_sys as sys;
use std::time::Duration;

/// The largest copy range the kernel accepts (`0xffff` minus a netlink attribute
/// header); a larger one is clamped by the kernel.
pub const MAX_COPY_RANGE: u32 = 0xffff - 4;

/// The kernel's default queue length (`NFQNL_QMAX_DEFAULT`), the default of
/// [`QueueConfig::max_len`].
pub const DEFAULT_MAX_LEN: u32 = 1024;

/// How much of each packet the kernel copies to user space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyMode {
    /// Nothing. Refused by [`Queue::bind`](crate::Queue::bind) and
    /// [`Queue::configure`](crate::Queue::configure): in this mode the kernel
    /// refuses to queue any packet (`EINVAL` in `nfqnl_enqueue_packet`) and
    /// drops every one, even under `--queue-bypass`, counting none. Use
    /// [`Meta`](Self::Meta) for the metadata without the payload.
    None,
    /// Metadata only: every attribute but the payload.
    Meta,
    /// Metadata and up to this many bytes of payload (at most
    /// [`MAX_COPY_RANGE`]; the kernel takes 0 for the maximum). With
    /// [`QueueFlags::GSO`] a GSO super-packet of up to 64 KiB arrives whole
    /// when the range allows.
    Packet(u32),
}

impl Default for CopyMode {
    /// Whole packets: `Packet(MAX_COPY_RANGE)`, so nothing is truncated.
    fn default() -> Self {
        CopyMode::Packet(MAX_COPY_RANGE)
    }
}

impl CopyMode {
    /// The `NFQNL_COPY_*` mode and range sent to the kernel, or why this mode
    /// would lose packets.
    pub(crate) fn to_raw(self) -> Result<(u8, u32)> {
        use sys::nfqnl_config_mode as mode;
        Ok(match self {
            CopyMode::None => {
                return Err(Error::InvalidArgument(
                    "CopyMode::None: the kernel refuses to queue any packet in this mode and \
                     drops them all (use CopyMode::Meta for metadata without payload)",
                ))
            }
            CopyMode::Meta => (mode::NFQNL_COPY_META as u8, 0),
            CopyMode::Packet(range) if range > MAX_COPY_RANGE => {
                return Err(Error::OutOfRange {
                    name: "CopyMode::Packet range",
                    value: range.into(),
                    min: 0,
                    max: MAX_COPY_RANGE.into(),
                    why: "the kernel cannot copy more in one netlink attribute",
                })
            }
            CopyMode::Packet(range) => (mode::NFQNL_COPY_PACKET as u8, range),
        })
    }
}

bitflags::bitflags! {
    /// Per-queue flags (`NFQA_CFG_F_*`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct QueueFlags: u32 {
        /// Accept packets instead of dropping them when the queue or the socket's
        /// receive buffer is full.
        const FAIL_OPEN = sys::NFQA_CFG_F_FAIL_OPEN;
        /// Attach each packet's conntrack entry and state (`NFQA_CT`,
        /// `NFQA_CT_INFO`), read with
        /// [`PacketView::conntrack_view`](crate::PacketView::conntrack_view).
        ///
        /// It needs the kernel's conntrack glue
        /// (`CONFIG_NETFILTER_NETLINK_GLUE_CT`, part of
        /// `nf_conntrack_netlink`): without it `nfqnl_recv_config` refuses
        /// the flag (`EOPNOTSUPP`, after trying to load the module), and the
        /// bind fails with [`Error::Config`](crate::Error::Config). Packets
        /// without a conntrack entry (untracked) come without the
        /// attributes. The flag is not needed for the conntrack changes of a
        /// verdict ([`Verdict::with_connmark`](crate::Verdict::with_connmark)),
        /// but they need the same glue, so a bind with the flag is the way
        /// to find out whether the kernel has it (`nfq-doctor` does).
        const CONNTRACK = sys::NFQA_CFG_F_CONNTRACK;
        /// Deliver GSO super-packets whole instead of segmenting them first.
        const GSO = sys::NFQA_CFG_F_GSO;
        /// Attach the uid and gid of the socket a local packet belongs to.
        const UID_GID = sys::NFQA_CFG_F_UID_GID;
        /// Attach the security context (needs CONFIG_NETWORK_SECMARK).
        const SECCTX = sys::NFQA_CFG_F_SECCTX;
    }
}

/// Settings applied to a queue number when it is bound (or by
/// [`Queue::configure`](crate::Queue::configure)). Every field is applied
/// each time, defaults included: configuring a queue with
/// `QueueConfig::default()` puts it back to whole packets, a length of 1024,
/// no flags and drop for unanswered packets, whatever it had before. Settings
/// that would bind a queue and then lose its packets are refused.
///
/// ```
/// use nfqueue_core::{CopyMode, QueueConfig, QueueFlags, VerdictKind};
///
/// let config = QueueConfig::default()
///     .copy_mode(CopyMode::Packet(128))
///     .max_len(4096)
///     .flags(QueueFlags::FAIL_OPEN)
///     // A packet the program forgets passes: say so where the queue is bound.
///     .unanswered(VerdictKind::Accept);
/// assert_eq!(config.unanswered_verdict(), VerdictKind::Accept);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueConfig {
    pub(crate) copy_mode: CopyMode,
    pub(crate) max_len: u32,
    pub(crate) flags: QueueFlags,
    pub(crate) unanswered: VerdictKind,
    deadline_after: Option<Duration>,
    deadline_verdict: VerdictKind,
}

impl Default for QueueConfig {
    /// Whole packets, the kernel's queue length (1024), no flags, and drop for
    /// packets left without a verdict.
    fn default() -> Self {
        QueueConfig {
            copy_mode: CopyMode::default(),
            max_len: DEFAULT_MAX_LEN,
            flags: QueueFlags::empty(),
            unanswered: VerdictKind::Drop,
            deadline_after: None,
            deadline_verdict: VerdictKind::Drop,
        }
    }
}

impl QueueConfig {
    /// What the kernel copies of each packet. Default: whole packets.
    pub fn copy_mode(mut self, mode: CopyMode) -> Self {
        self.copy_mode = mode;
        self
    }

    /// Most packets waiting for a verdict before the kernel drops new ones (or
    /// accepts them under [`QueueFlags::FAIL_OPEN`]). Default
    /// [`DEFAULT_MAX_LEN`], the kernel's 1024. At least 1: a length of 0 is
    /// refused, since every packet would overflow it.
    pub fn max_len(mut self, max_len: u32) -> Self {
        self.max_len = max_len;
        self
    }

    /// The flags; flags not set here are cleared. Default: none.
    pub fn flags(mut self, flags: QueueFlags) -> Self {
        self.flags = flags;
        self
    }

    /// The verdict a packet of this queue gets when its holder
    /// ([`Packet`](crate::Packet), [`PendingVerdict`](crate::PendingVerdict),
    /// [`OwnedPacket`](crate::OwnedPacket)) is dropped without one, and the
    /// verdict a dispatcher gives the packets it reads while stopping.
    /// Default: [`VerdictKind::Drop`], so that a forgotten packet does not
    /// pass unless the bind says so, and `drop(packet)` means what
    /// `packet.drop()` means.
    pub fn unanswered(mut self, kind: VerdictKind) -> Self {
        self.unanswered = kind;
        self
    }

    /// The verdict for packets left without one (see
    /// [`unanswered`](Self::unanswered)).
    pub fn unanswered_verdict(&self) -> VerdictKind {
        self.unanswered
    }

    /// Gives every packet of the queue held in user space longer than
    /// `after` the deadline verdict ([`deadline_verdict`](Self::deadline_verdict),
    /// drop unless changed), and refuses the verdict its holder gives later
    /// ([`Error::DeadlinePassed`]): one slow decision cannot hold a packet,
    /// and the kernel's queue room, for ever. Default: no deadline. From
    /// 1 µs to [`Deadline::MAX`].
    ///
    /// On a [`Queue`](crate::Queue), a thread per socket watches the packets
    /// handed out ([`Packet`](crate::Packet), [`PendingVerdict`](crate::PendingVerdict),
    /// [`OwnedPacket`](crate::OwnedPacket), and so `AsyncQueue`'s); it wakes
    /// when the first one is due, so a packet gets its deadline verdict within
    /// about a millisecond of its deadline (the time to wake a thread and
    /// send). Each packet then costs an allocation, a lock and a clock read
    /// when received, and an atomic operation when answered. Packets detached
    /// for verdicts by key are not watched. A dispatcher applies the deadline
    /// in its receive threads instead (see `DispatcherBuilder::queue_config`).
    pub fn deadline(mut self, after: Duration) -> Self {
        self.deadline_after = Some(after);
        self
    }

    /// The verdict a packet held past the deadline gets (default drop);
    /// takes effect with [`deadline`](Self::deadline).
    pub fn deadline_verdict(mut self, kind: VerdictKind) -> Self {
        self.deadline_verdict = kind;
        self
    }

    /// The deadline, if any (see [`deadline`](Self::deadline)).
    pub fn packet_deadline(&self) -> Option<Deadline> {
        Some(Deadline {
            after: self.deadline_after?,
            verdict: self.deadline_verdict,
        })
    }

    /// This configuration without its deadline: what a dispatcher binds, as
    /// it applies the deadline itself.
    pub fn without_deadline(mut self) -> Self {
        self.deadline_after = None;
        self
    }

    /// Checks every setting, as binding or configuring a queue does first.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for [`CopyMode::None`], [`Error::OutOfRange`]
    /// for a copy range over [`MAX_COPY_RANGE`] or a `max_len` of 0.
    pub fn validate(&self) -> Result<()> {
        self.copy_mode.to_raw()?;
        if let Some(deadline) = self.packet_deadline() {
            if deadline.after.is_zero() || deadline.after > Deadline::MAX {
                return Err(Error::OutOfRange {
                    name: "deadline (µs)",
                    value: deadline.after.as_micros().min(u64::MAX.into()) as u64,
                    min: 1,
                    max: Deadline::MAX.as_micros() as u64,
                    why: "a packet must be given some time, and not be held for ever",
                });
            }
        }
        if self.max_len == 0 {
            return Err(Error::OutOfRange {
                name: "max_len",
                value: 0,
                min: 1,
                max: u32::MAX.into(),
                why: "a queue of length 0 overflows on every packet",
            });
        }
        Ok(())
    }

    /// Adds the settings to the configuration request that `nlh` heads, as
    /// the attributes the kernel applies together (copy mode and range, queue
    /// length, flags with the mask of every flag): it checks the flags before
    /// it changes anything, so one request takes all of them or none.
    ///
    /// # Safety
    /// `nlh` heads a request buffer with room for these attributes (60 bytes).
    pub(crate) unsafe fn put(&self, nlh: *mut sys::nlmsghdr) -> Result<()> {
        let (mode, range) = self.copy_mode.to_raw()?;
        let flags = self.flags.bits();
        let mask = QueueFlags::all().bits();
        // SAFETY: the caller gives a request buffer with room for them; the
        // kernel reads the flag words in network byte order.
        unsafe {
            sys::nfq_nlmsg_cfg_put_params(nlh, mode, range as i32);
            sys::nfq_nlmsg_cfg_put_qmaxlen(nlh, self.max_len);
            sys::mnl_attr_put_u32(
                nlh,
                sys::nfqnl_attr_config::NFQA_CFG_FLAGS as u16,
                flags.to_be(),
            );
            sys::mnl_attr_put_u32(
                nlh,
                sys::nfqnl_attr_config::NFQA_CFG_MASK as u16,
                mask.to_be(),
            );
        }
        Ok(())
    }
}
