//! Counters in the Prometheus text exposition format (version 0.0.4), for a
//! `/metrics` endpoint or node_exporter's textfile collector.
//!
//! ```
//! use nfqueue_core::prometheus::Exposition;
//! use nfqueue_core::{QueueStats, Stats};
//!
//! let ours = Stats::default(); // queue.stats() in a real program
//! let kernel: Vec<QueueStats> = Vec::new(); // QueueStats::read_all()?
//! let text = Exposition::new().add(&ours).add(&kernel[..]).to_string();
//! assert!(text.contains("# TYPE nfqueue_packets_total counter\nnfqueue_packets_total 0\n"));
//! ```
//!
//! Names follow the Prometheus conventions: a `nfqueue_` prefix, counters end
//! in `_total`, gauges do not, every family has its `# HELP` and `# TYPE`
//! line, and all samples of a family are written together, whatever order
//! they were added in. [`Stats`] becomes `nfqueue_<field>_total`; the kernel's
//! [`QueueStats`] become `nfqueue_kernel_*{queue="N"}`. This module writes
//! text only; serving it over HTTP is the program's business (the `firewall`
//! example does it with a plain TCP responder).

use crate::stats::{QueueStats, Stats};
use std::fmt::{self, Write as _};

/// The `Content-Type` of the text format, for an HTTP response.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The kind of a metric family, as its `# TYPE` line says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    /// Only goes up (until the process or queue restarts); the name ends in `_total`.
    Counter,
    /// Goes up and down.
    Gauge,
}

impl MetricType {
    fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
        }
    }
}

/// Counters that can be written as metrics: [`Stats`], [`QueueStats`] (and
/// slices of them), and the dispatcher's counters in the `nfqueue` crate.
pub trait Metrics {
    /// Adds this value's samples to `out`.
    fn write_metrics(&self, out: &mut Exposition);
}

/// A set of metric families, rendered in the text format by `Display`.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    families: Vec<Family>,
    /// Rendered labels that [`add_labeled`](Self::add_labeled) puts on every
    /// sample it adds.
    extra_labels: Vec<String>,
}

#[derive(Debug, Clone)]
struct Family {
    name: String,
    help: String,
    kind: MetricType,
    /// Rendered label sets (`queue="0",portid="7"`) and values.
    samples: Vec<(String, u64)>,
}

impl Exposition {
    /// An empty exposition.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the samples of `metrics`.
    pub fn add(&mut self, metrics: &(impl Metrics + ?Sized)) -> &mut Self {
        metrics.write_metrics(self);
        self
    }

    /// Adds the samples of `metrics`, each with `labels` besides its own (to
    /// tell apart two handles, say).
    ///
    /// # Panics
    /// As [`counter`](Self::counter), for a bad label name.
    pub fn add_labeled(
        &mut self,
        metrics: &(impl Metrics + ?Sized),
        labels: &[(&str, &str)],
    ) -> &mut Self {
        let added: Vec<String> = labels.iter().map(|&(k, v)| label(k, v)).collect();
        let before = self.extra_labels.len();
        self.extra_labels.extend(added);
        metrics.write_metrics(self);
        self.extra_labels.truncate(before);
        self
    }

    /// Adds a sample of the counter `name`.
    ///
    /// # Panics
    /// When `name` does not end in `_total`, is not a valid metric name, was
    /// added before as a gauge, or a label name is not valid
    /// (`[a-zA-Z_][a-zA-Z0-9_]*`): these are mistakes in the calling code.
    pub fn counter(
        &mut self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        value: u64,
    ) -> &mut Self {
        assert!(
            name.ends_with("_total"),
            "the counter {name} must end in _total"
        );
        self.sample(MetricType::Counter, name, help, labels, value)
    }

    /// Adds a sample of the gauge `name`.
    ///
    /// # Panics
    /// When `name` ends in `_total` or is not a valid metric name, was added
    /// before as a counter, or a label name is not valid.
    pub fn gauge(
        &mut self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        value: u64,
    ) -> &mut Self {
        assert!(
            !name.ends_with("_total"),
            "the gauge {name} must not end in _total"
        );
        self.sample(MetricType::Gauge, name, help, labels, value)
    }

    fn sample(
        &mut self,
        kind: MetricType,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        value: u64,
    ) -> &mut Self {
        assert!(valid_name(name, true), "{name:?} is not a metric name");
        let rendered = labels
            .iter()
            .map(|&(k, v)| label(k, v))
            .chain(self.extra_labels.iter().cloned())
            .collect::<Vec<_>>()
            .join(",");
        let family = match self.families.iter().position(|f| f.name == name) {
            Some(at) => &mut self.families[at],
            None => {
                self.families.push(Family {
                    name: name.to_string(),
                    help: help.to_string(),
                    kind,
                    samples: Vec::new(),
                });
                self.families.last_mut().expect("just pushed")
            }
        };
        assert_eq!(family.kind, kind, "{name} was added as another type");
        family.samples.push((rendered, value));
        self
    }
}

/// `name="value"` with the value escaped as the format requires.
fn label(name: &str, value: &str) -> String {
    assert!(
        valid_name(name, false) && !name.starts_with("__"),
        "{name:?} is not a label name"
    );
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    format!("{name}=\"{escaped}\"")
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*` for metrics, the same without `:` for labels.
fn valid_name(name: &str, colons: bool) -> bool {
    let ok = |c: char, first: bool| {
        c.is_ascii_alphabetic()
            || c == '_'
            || (colons && c == ':')
            || (!first && c.is_ascii_digit())
    };
    let mut chars = name.chars();
    chars.next().is_some_and(|c| ok(c, true)) && chars.all(|c| ok(c, false))
}

impl fmt::Display for Exposition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for family in &self.families {
            let help = family.help.replace('\\', "\\\\").replace('\n', "\\n");
            writeln!(f, "# HELP {} {help}", family.name)?;
            writeln!(f, "# TYPE {} {}", family.name, family.kind.as_str())?;
            for (labels, value) in &family.samples {
                f.write_str(&family.name)?;
                if !labels.is_empty() {
                    write!(f, "{{{labels}}}")?;
                }
                writeln!(f, " {value}")?;
            }
        }
        Ok(())
    }
}

impl<T: Metrics> Metrics for [T] {
    fn write_metrics(&self, out: &mut Exposition) {
        for item in self {
            item.write_metrics(out);
        }
    }
}

impl Metrics for Stats {
    /// `nfqueue_<field>_total` for every field.
    fn write_metrics(&self, out: &mut Exposition) {
        let mut name = String::new();
        for (field, value) in self.named() {
            name.clear();
            let _ = write!(name, "nfqueue_{field}_total");
            let help = help_text(Stats::describe(field).unwrap_or_default());
            out.counter(&name, &help, &[], value);
        }
    }
}

/// The HELP text of a counter from its doc comment: one line, without the
/// markdown of code spans and links.
pub fn help_text(doc: &str) -> String {
    let mut out = String::with_capacity(doc.len());
    let mut rest = doc;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        // `[text](target)` keeps its text; any other bracket stays.
        match after.find("](").and_then(|close| {
            let end = after[close..].find(')')? + close;
            Some((close, end))
        }) {
            Some((close, end)) => {
                out.push_str(&after[..close]);
                rest = &after[end + 1..];
            }
            None => {
                out.push('[');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out.replace('`', "")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

impl Metrics for QueueStats {
    /// `nfqueue_kernel_*{queue="N"}`: the queue's line of
    /// /proc/net/netfilter/nfnetlink_queue.
    fn write_metrics(&self, out: &mut Exposition) {
        // No `..`: a new field does not compile until it is exported here.
        let QueueStats {
            queue,
            portid,
            waiting,
            copy_mode,
            copy_range,
            queue_dropped,
            user_dropped,
            last_id,
        } = *self;
        let queue = queue.to_string();
        let by_queue = [("queue", queue.as_str())];
        let mode = match copy_mode {
            0 => "none".to_string(),
            1 => "meta".to_string(),
            2 => "packet".to_string(),
            other => other.to_string(),
        };
        out.gauge(
            "nfqueue_kernel_queue_info",
            "A bound queue: the netlink port id of its socket and its copy mode (value 1).",
            &[
                ("queue", &queue),
                ("portid", &portid.to_string()),
                ("copy_mode", &mode),
            ],
            1,
        )
        .gauge(
            "nfqueue_kernel_waiting",
            "Packets waiting in the kernel for a verdict.",
            &by_queue,
            waiting.into(),
        )
        .counter(
            "nfqueue_kernel_queued_total",
            "Packet ids handed out since the queue was bound (its last id): packets queued to user space.",
            &by_queue,
            last_id.into(),
        )
        .counter(
            "nfqueue_kernel_queue_dropped_total",
            "Packets dropped (or accepted, with fail-open) because the queue was full.",
            &by_queue,
            queue_dropped.into(),
        )
        .counter(
            "nfqueue_kernel_user_dropped_total",
            "Packets dropped because the socket's receive buffer was full.",
            &by_queue,
            user_dropped.into(),
        )
        .gauge(
            "nfqueue_kernel_copy_range_bytes",
            "Bytes of each packet copied to user space.",
            &by_queue,
            copy_range.into(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel(queue: u16, waiting: u32, last_id: u32) -> QueueStats {
        QueueStats::parse_line(&format!("{queue} 4242 {waiting} 2 65531 1 2 {last_id} 1"))
            .expect("a valid line")
    }

    #[test]
    fn groups_samples_by_family_whatever_the_order() {
        let text = Exposition::new()
            .add(&[kernel(0, 3, 10), kernel(1, 0, 20)][..])
            .to_string();
        let waiting: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("nfqueue_kernel_waiting"))
            .collect();
        assert_eq!(
            waiting,
            [
                "# HELP nfqueue_kernel_waiting Packets waiting in the kernel for a verdict.",
                "# TYPE nfqueue_kernel_waiting gauge",
                "nfqueue_kernel_waiting{queue=\"0\"} 3",
                "nfqueue_kernel_waiting{queue=\"1\"} 0",
            ]
        );
        assert!(text.contains("nfqueue_kernel_queued_total{queue=\"1\"} 20\n"));
        assert!(text.contains(
            "nfqueue_kernel_queue_info{queue=\"0\",portid=\"4242\",copy_mode=\"packet\"} 1\n"
        ));
        // Each family is declared once.
        assert_eq!(text.matches("# TYPE nfqueue_kernel_waiting ").count(), 1);
    }

    #[test]
    fn every_stats_field_is_a_counter_with_help() {
        let text = Exposition::new().add(&Stats::default()).to_string();
        let fields = Stats::default().named().count();
        assert_eq!(text.matches(" counter\n").count(), fields);
        for (field, _) in Stats::default().named() {
            assert!(
                text.contains(&format!("\nnfqueue_{field}_total 0\n")),
                "{field}"
            );
            assert!(
                Stats::describe(field).is_some_and(|d| !d.is_empty()),
                "{field}"
            );
        }
    }

    #[test]
    fn help_text_is_the_doc_without_markdown() {
        assert_eq!(
            help_text(" Packets dropped; see\n [`Packet::verdict`](crate::Packet::verdict).\n"),
            "Packets dropped; see Packet::verdict."
        );
        assert_eq!(help_text("a [b] c"), "a [b] c");
        let help = help_text(Stats::describe("send_retries").unwrap());
        assert_eq!(
            help,
            "Sends tried again after the kernel was short of memory (ENOBUFS, ENOMEM)."
        );
    }

    #[test]
    fn escapes_label_values_and_help() {
        let text = Exposition::new()
            .gauge("x", "a \\ b\nc", &[("path", "C:\\a \"b\"\n")], 1)
            .to_string();
        assert_eq!(
            text,
            "# HELP x a \\\\ b\\nc\n# TYPE x gauge\nx{path=\"C:\\\\a \\\"b\\\"\\n\"} 1\n"
        );
    }

    #[test]
    fn extra_labels_go_on_every_sample_of_one_add() {
        let mut out = Exposition::new();
        out.add_labeled(&kernel(0, 0, 1), &[("handle", "a")])
            .add(&kernel(1, 0, 1));
        let text = out.to_string();
        assert!(text.contains("nfqueue_kernel_waiting{queue=\"0\",handle=\"a\"} 0\n"));
        assert!(text.contains("nfqueue_kernel_waiting{queue=\"1\"} 0\n"));
    }

    #[test]
    #[should_panic(expected = "must end in _total")]
    fn a_counter_without_total_is_a_mistake() {
        Exposition::new().counter("nfqueue_packets", "", &[], 1);
    }

    #[test]
    #[should_panic(expected = "is not a label name")]
    fn a_bad_label_name_is_a_mistake() {
        Exposition::new().gauge("x", "", &[("0queue", "1")], 1);
    }

    #[test]
    fn checks_names() {
        assert!(valid_name("nfqueue_a:b_1", true));
        assert!(!valid_name("nfqueue_a:b", false));
        assert!(!valid_name("1abc", true));
        assert!(!valid_name("", true));
        assert!(!valid_name("a-b", true));
    }
}
