//! The conntrack part of a verdict: a new connection mark and new connection
//! labels, sent as the `NFQA_CT` nest of the verdict message.
//!
//! The kernel reads it in `nfqnl_recv_verdict` (net/netfilter/nfnetlink_queue.c):
//!
//! ```text
//! nfnl_ct = rcu_dereference(nfnl_ct_hook);
//! if (nfqa[NFQA_CT]) {
//!         if (nfnl_ct != NULL)
//!                 ct = nfqnl_ct_parse(nfnl_ct, info->nlh, nfqa, entry, &ctinfo);
//! }
//! ```
//!
//! `nfqnl_ct_parse` takes the packet's entry (`nfnl_ct->get_ct(entry->skb,
//! ctinfo)`, NULL for an untracked packet) and hands the nest to
//! `ctnetlink_glue_parse` (net/netfilter/nf_conntrack_netlink.c), which
//! parses it with `ct_nla_policy` and applies, in this order, `CTA_TIMEOUT`,
//! `CTA_STATUS`, `CTA_HELP`, `CTA_LABELS` (`ctnetlink_attach_labels`) and
//! `CTA_MARK` (`ctnetlink_change_mark`), stopping at the first error.

use crate::attr::NLA_HDRLEN;
use crate::conntrack::{
    CtLabels, CTA_LABELS, CTA_LABELS_MASK, CTA_MARK, CTA_MARK_MASK, CT_LABELS_LEN,
};
use nfqueue_sys as sys;

/// `NLA_F_NESTED`: libmnl's `mnl_attr_nest_start` sets it, as does the
/// kernel's own `nla_nest_start` since Linux 5.2; `ctnetlink_glue_parse`
/// reads the nest either way (`nla_parse_nested_deprecated`).
const NLA_F_NESTED: u16 = 1 << 15;

/// Changes to the packet's conntrack entry that a verdict carries: see
/// [`Verdict::with_connmark`](crate::Verdict::with_connmark) and
/// [`Verdict::with_ct_labels`](crate::Verdict::with_ct_labels) for when the
/// kernel applies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CtUpdate {
    /// The mark, already masked, and the mask.
    mark: Option<(u32, u32)>,
    /// The labels, already masked, and the mask.
    labels: Option<(CtLabels, CtLabels)>,
}

impl CtUpdate {
    /// Sets the bits of `mask` of the connection mark to those of `value`.
    pub(crate) fn set_mark(&mut self, value: u32, mask: u32) {
        self.mark = Some((value & mask, mask));
    }

    /// Sets the labels of `mask` to those of `labels`.
    pub(crate) fn set_labels(&mut self, labels: CtLabels, mask: CtLabels) {
        self.labels = Some((labels.and(mask), mask));
    }

    /// The connection mark to set: the new bits (zero outside the mask) and
    /// the mask of the bits that change.
    pub fn mark(&self) -> Option<(u32, u32)> {
        self.mark
    }

    /// The connection labels to set: the new labels (none outside the mask)
    /// and the mask of the labels that change.
    pub fn labels(&self) -> Option<(CtLabels, CtLabels)> {
        self.labels
    }

    /// Writes the `NFQA_CT` nest through `put`, which appends bytes.
    ///
    /// The kernel computes `newmark = (ct->mark & ~mask) ^ mark`
    /// (`ctnetlink_change_mark`; without `CTA_MARK_MASK` the mask is all
    /// ones) and the same per 32-bit word of the labels (`replace_u32(&dst[i],
    /// mask ? ~mask[i] : 0, data[i])` in `nf_connlabels_replace`): with the
    /// value masked first, the bits outside the mask stay as they were. A
    /// full mask is left out, as it changes nothing.
    pub(crate) fn encode(&self, put: &mut impl FnMut(&[u8])) {
        let attr = |put: &mut dyn FnMut(&[u8]), kind: u16, value: &[u8]| {
            put(&((NLA_HDRLEN + value.len()) as u16).to_ne_bytes());
            put(&kind.to_ne_bytes());
            put(value);
        };
        put(&(self.encoded_len() as u16).to_ne_bytes());
        put(&(sys::nfqnl_attr_type::NFQA_CT as u16 | NLA_F_NESTED).to_ne_bytes());
        if let Some((labels, mask)) = self.labels {
            // ctnetlink_attach_labels: `if (len & (sizeof(u32)-1))` and the
            // mask must be as long as the labels.
            attr(put, CTA_LABELS, labels.as_bytes());
            if mask != CtLabels::ALL {
                attr(put, CTA_LABELS_MASK, mask.as_bytes());
            }
        }
        if let Some((mark, mask)) = self.mark {
            // ct_nla_policy: [CTA_MARK] = { .type = NLA_U32 }, read with
            // ntohl(nla_get_be32(cda[CTA_MARK])).
            attr(put, CTA_MARK, &mark.to_be_bytes());
            if mask != u32::MAX {
                attr(put, CTA_MARK_MASK, &mask.to_be_bytes());
            }
        }
    }

    /// Bytes of the whole nest (every value is a multiple of 4 bytes long,
    /// so there is no padding).
    pub(crate) fn encoded_len(&self) -> usize {
        let mut len = NLA_HDRLEN;
        if let Some((_, mask)) = self.labels {
            len += NLA_HDRLEN + CT_LABELS_LEN;
            if mask != CtLabels::ALL {
                len += NLA_HDRLEN + CT_LABELS_LEN;
            }
        }
        if let Some((_, mask)) = self.mark {
            len += NLA_HDRLEN + 4;
            if mask != u32::MAX {
                len += NLA_HDRLEN + 4;
            }
        }
        len
    }
}
