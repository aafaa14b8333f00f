//! Closing statistics of an example: a tree of named numbers, printed as
//! aligned `name: value` lines or as one JSON object.

use nfqueue_core::Queue;
use serde_json::{Map, Value};
use std::io::{self, Write};

/// The program's own counts (`own`, first), then the counters of `queue`:
/// this handle's (`handle`) and the kernel's for each queue it binds
/// (`kernel`, `queue N`; the error's text where the kernel's file cannot be
/// read, as in a user namespace that does not own the network namespace).
pub fn of_queue(
    own: impl IntoIterator<Item = (&'static str, u64)>,
    queue: &Queue,
) -> Map<String, Value> {
    let mut kernel = Map::new();
    for number in queue.bound_queues() {
        let value = match queue.kernel_stats(number) {
            Ok(Some(stats)) => counters(stats.named()),
            Ok(None) => "not bound".into(),
            Err(err) => format!("unreadable: {err}").into(),
        };
        kernel.insert(format!("queue {number}"), value);
    }
    let Value::Object(mut stats) = counters(own) else {
        unreachable!("counters are an object")
    };
    stats.insert("handle".into(), counters(queue.stats().named()));
    stats.insert("kernel".into(), kernel.into());
    stats
}

/// Writes `stats` as aligned lines to stderr, where the examples report.
pub fn eprint(stats: &Map<String, Value>) {
    let _ = write(&mut io::stderr().lock(), stats, false);
}

/// An object of counters, from `(name, value)` pairs such as
/// [`Stats::named`](nfqueue_core::Stats::named) gives.
pub fn counters(named: impl IntoIterator<Item = (&'static str, u64)>) -> Value {
    Value::Object(
        named
            .into_iter()
            .map(|(name, value)| (name.to_string(), value.into()))
            .collect(),
    )
}

/// Writes `stats` (an object whose values are numbers, strings or nested
/// objects) as one JSON object on one line, or as `name: value` lines with the
/// values in one column and nested objects indented under their name.
///
/// # Errors
/// When `out` cannot be written.
pub fn write(out: &mut impl Write, stats: &Map<String, Value>, json: bool) -> io::Result<()> {
    if json {
        return writeln!(out, "{}", Value::Object(stats.clone()));
    }
    let mut lines = Vec::new();
    flatten(stats, 0, &mut lines);
    let label_width = lines
        .iter()
        .map(|(label, _)| label.len())
        .max()
        .unwrap_or(0);
    let value_width = lines
        .iter()
        .map(|(_, value)| value.len())
        .max()
        .unwrap_or(0);
    for (label, value) in lines {
        if value.is_empty() {
            writeln!(out, "{label}")?;
        } else {
            writeln!(out, "{label:label_width$} {value:>value_width$}")?;
        }
    }
    Ok(())
}

/// `(indented "name:", value)` per line; a nested object's line has no value.
fn flatten(stats: &Map<String, Value>, depth: usize, lines: &mut Vec<(String, String)>) {
    for (name, value) in stats {
        let label = format!("{:indent$}{name}:", "", indent = depth * 2);
        match value {
            Value::Object(inner) => {
                lines.push((label, String::new()));
                flatten(inner, depth + 1, lines);
            }
            Value::String(text) => lines.push((label, text.clone())),
            Value::Null => lines.push((label, "-".into())),
            other => lines.push((label, other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(value: Value, json: bool) -> String {
        let mut out = Vec::new();
        write(&mut out, value.as_object().unwrap(), json).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn aligns_names_and_values() {
        let stats = json!({
            "packets": 12,
            "handle": counters([("verdicts", 12), ("rejected_verdicts", 0)]),
        });
        let text = render(stats, false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "packets:             12",
                "handle:",
                "  verdicts:          12",
                "  rejected_verdicts:  0",
            ]
        );
    }

    #[test]
    fn json_is_one_parsable_line() {
        let stats = json!({"packets": 3, "kernel": {"queue 0": counters([("waiting", 0)])}});
        let text = render(stats.clone(), true);
        assert_eq!(text.lines().count(), 1);
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, stats);
    }
}
