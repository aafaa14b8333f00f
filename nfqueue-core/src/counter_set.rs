//! One list of counters, from which a public statistics struct, the atomics
//! behind it, a snapshot and the names and docs of its fields are made. Used by
//! this crate's [`Stats`](crate::Stats) and the `nfqueue` crate's
//! `DispatchStats`, so that a counter is written down once.

/// Defines `pub struct $stats` with one documented `u64` field per counter,
/// `pub(crate) struct $atomics` with an `AtomicU64` for each, and:
/// `$atomics::snapshot()`, `$stats::named()` (every counter with its name, in
/// field order), `$stats::describe(name)` (the counter's doc text) and
/// `AddAssign` for `$stats` (sums).
#[doc(hidden)]
#[macro_export]
macro_rules! counter_set {
    (
        $(#[$meta:meta])*
        pub struct $stats:ident;
        $(#[$atomics_meta:meta])*
        pub(crate) struct $atomics:ident;
        $( $(#[doc = $doc:literal])+ $field:ident, )*
    ) => {
        $(#[$meta])*
        pub struct $stats {
            $( $(#[doc = $doc])+ pub $field: u64, )*
        }

        $(#[$atomics_meta])*
        #[derive(Debug, Default)]
        pub(crate) struct $atomics {
            $( pub(crate) $field: ::std::sync::atomic::AtomicU64, )*
        }

        impl $atomics {
            /// The counters now.
            pub(crate) fn snapshot(&self) -> $stats {
                $stats {
                    $( $field: self.$field.load(::std::sync::atomic::Ordering::Relaxed), )*
                }
            }
        }

        impl ::std::ops::AddAssign for $stats {
            /// Adds every counter of `other`: totals over queues or handles.
            fn add_assign(&mut self, other: $stats) {
                $( self.$field += other.$field; )*
            }
        }

        impl $stats {
            /// Every counter with its field name, in the order of the fields:
            /// for printing and for export (see the `prometheus` module).
            pub fn named(&self) -> impl Iterator<Item = (&'static str, u64)> {
                [$( (stringify!($field), self.$field), )*].into_iter()
            }

            /// The documentation of the counter named `field` (as
            /// [`named`](Self::named) names it), in the markdown of its doc
            /// comment; `None` for another name.
            pub fn describe(field: &str) -> Option<&'static str> {
                match field {
                    $( stringify!($field) => Some(concat!($($doc, "\n"),+)), )*
                    _ => None,
                }
            }
        }
    };
}
