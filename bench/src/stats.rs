//! The numbers the measuring, the targets, the report and the chart share:
//! the median, and the spread (median, min, max) of a set of numbers.

/// The median of `values` (0 when there are none); sorts them.
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// Median, min and max of a set of numbers, and how many there were.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Spread {
    /// `None` for no numbers (NaNs do not count).
    pub fn of(mut values: Vec<f64>) -> Option<Spread> {
        values.retain(|v| !v.is_nan());
        if values.is_empty() {
            return None;
        }
        Some(Spread {
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            n: values.len(),
            median: median(&mut values),
        })
    }
}

/// `median [min-max]` with `digits` decimals (`[min to max]` when a bound
/// is negative, so that no minus sign reads as the dash).
pub fn spread_text(spread: &Spread, digits: usize) -> String {
    let dash = if spread.min < 0.0 || spread.max < 0.0 {
        " to "
    } else {
        "-"
    };
    format!(
        "{:.digits$} [{:.digits$}{dash}{:.digits$}]",
        spread.median, spread.min, spread.max
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_no_numbers() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }

    #[test]
    fn a_spread_leaves_out_nans_and_says_negative_bounds_in_words() {
        let s = Spread::of(vec![2.0, f64::NAN, -1.0, 5.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, -1.0, 5.0, 3));
        assert_eq!(spread_text(&s, 1), "2.0 [-1.0 to 5.0]");
        let s = Spread::of(vec![1.0, 3.0]).unwrap();
        assert_eq!(spread_text(&s, 0), "2 [1-3]");
        assert!(Spread::of(vec![f64::NAN]).is_none());
    }
}
