//! Kubernetes `resource.Quantity` strings for metric values.
//!
//! The HPA reads external metric values with `Quantity.MilliValue()`, so we hold every value as integer
//! milli-units and print the canonical decimal form: `"3"` when the value is whole, `"1500m"` otherwise.
//! Finer precision than a milli-unit is rounded up, as apimachinery does, and values that cannot be
//! represented (NaN, infinities, out of `i64` range) are refused rather than printed as something the
//! client would misread.

use thiserror::Error;

#[derive(Debug, Error, PartialEq)]
pub(crate) enum QuantityError {
    #[error("value {0} is not a finite number and cannot be served as a Quantity")]
    NotFinite(f64),
    #[error("value {0} is out of the range a Quantity can hold in milli-units")]
    OutOfRange(f64),
}

/// Converts a float to milli-units, rounding up like `resource.NewMilliQuantity` after `Quantity.RoundUp(-3)`.
pub(crate) fn milli_from_f64(value: f64) -> Result<i64, QuantityError> {
    if !value.is_finite() {
        return Err(QuantityError::NotFinite(value));
    }
    let milli = (value * 1000.0).ceil();
    // i64::MAX as f64 rounds up to 2^63, which is itself out of range, hence the strict comparison.
    if milli >= i64::MAX as f64 || milli < i64::MIN as f64 {
        return Err(QuantityError::OutOfRange(value));
    }
    #[allow(clippy::cast_possible_truncation)] // An integer within i64's range, checked above.
    Ok(milli as i64)
}

/// Milli-units that print (and serialize) as a canonical decimal-SI Quantity, straight into the
/// writer: the request path writes each answer's value without a string of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Milli(pub i64);

impl std::fmt::Display for Milli {
    /// Whole numbers use the largest SI suffix that keeps the mantissa an integer (`2000` → `"2k"`),
    /// which is what apimachinery's canonical form prints; others are milli-units (`1500m`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const SUFFIXES: [&str; 7] = ["", "k", "M", "G", "T", "P", "E"];
        let milli = self.0;
        if milli % 1000 != 0 {
            return write!(f, "{milli}m");
        }
        let mut mantissa = milli / 1000;
        if mantissa == 0 {
            return f.write_str("0");
        }
        let mut exp = 0;
        while mantissa % 1000 == 0 && exp < SUFFIXES.len() - 1 {
            mantissa /= 1000;
            exp += 1;
        }
        write!(f, "{mantissa}{}", SUFFIXES[exp])
    }
}

impl serde::Serialize for Milli {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_canonical_forms() {
        let cases: &[(i64, &str)] = &[
            (0, "0"),
            (1, "1m"),
            (1000, "1"),
            (1500, "1500m"),
            (3000, "3"),
            (2_000_000, "2k"),
            (1_500_000, "1500"),
            (-2000, "-2"),
            (-1500, "-1500m"),
            (10_000_000_000, "10M"),
        ];
        for (milli, want) in cases {
            assert_eq!(Milli(*milli).to_string(), *want, "milli={milli}");
            assert_eq!(
                serde_json::to_string(&Milli(*milli)).unwrap(),
                format!("{want:?}")
            );
        }
    }

    #[test]
    fn converts_floats_rounding_up() {
        let cases: &[(f64, i64)] = &[
            (0.0, 0),
            (1.0, 1000),
            (1.5, 1500),
            (0.0001, 1),
            (4.0 / 3.0, 1334),
            (2.0, 2000),
            (-0.0004, 0),
        ];
        for (value, want) in cases {
            assert_eq!(milli_from_f64(*value), Ok(*want), "value={value}");
        }
    }

    #[test]
    fn refuses_unrepresentable_values() {
        assert!(matches!(
            milli_from_f64(f64::NAN),
            Err(QuantityError::NotFinite(_))
        ));
        assert!(matches!(
            milli_from_f64(f64::INFINITY),
            Err(QuantityError::NotFinite(_))
        ));
        assert!(matches!(
            milli_from_f64(1e20),
            Err(QuantityError::OutOfRange(_))
        ));
    }
}
