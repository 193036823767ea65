//! Durations as Kubernetes users write them: Go's `time.ParseDuration` form (`1m30s`, `1.5h`, `300ms`,
//! `2h45m`, `1us`, `0`), which WVA's own ConfigMaps use, and a bare number of seconds (`30`), which this
//! server has always accepted. One parser for flags, ConfigMaps and the standalone file.

use std::time::Duration;

use thiserror::Error;

/// Why a duration was refused; the message shows the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DurationError {
    #[error("invalid duration {0:?}: expected Go's form (e.g. 500ms, 10s, 1m30s, 1.5h) or a number of seconds")]
    Syntax(String),
    #[error("invalid duration {text:?}: unknown unit {unit:?} (use ns, us, µs, ms, s, m or h)")]
    Unit { text: String, unit: String },
    #[error("invalid duration {0:?}: must not be negative")]
    Negative(String),
    #[error("invalid duration {0:?}: too large")]
    Overflow(String),
}

fn unit_nanos(unit: &str) -> Option<f64> {
    Some(match unit {
        "ns" => 1.0,
        "us" | "µs" | "μs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        "h" => 3600e9,
        _ => return None,
    })
}

/// Parses a duration: Go's `time.ParseDuration` syntax (a sequence of decimal numbers, each with a unit;
/// a leading `+`; `0` without a unit), or a plain non-negative number of seconds.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let s = text.trim();
    let syntax = || DurationError::Syntax(text.to_string());
    if s.starts_with('-') {
        return Err(DurationError::Negative(text.to_string()));
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    if s.is_empty() {
        return Err(syntax());
    }
    // A bare number: seconds (this server's historical form; Go accepts only "0" here).
    if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let secs: f64 = s.parse().map_err(|_| syntax())?;
        return Duration::try_from_secs_f64(secs)
            .map_err(|_| DurationError::Overflow(text.to_string()));
    }
    let mut nanos = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(syntax)?;
        let (num, tail) = rest.split_at(num_end);
        if num.is_empty() || num == "." {
            return Err(syntax());
        }
        let value: f64 = num.parse().map_err(|_| syntax())?;
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_end);
        let scale = unit_nanos(unit).ok_or_else(|| DurationError::Unit {
            text: text.to_string(),
            unit: unit.to_string(),
        })?;
        nanos += value * scale;
        rest = next;
    }
    // Go's limit: about 290 years.
    if !nanos.is_finite() || nanos > 9.223_372_036_854_775e18 {
        return Err(DurationError::Overflow(text.to_string()));
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    // Checked above: finite, 0 ≤ n < 2^63.
    Ok(Duration::from_nanos(nanos.round() as u64))
}

/// A duration in Go's form, as `kubectl` and Go programs print it (`1m30s`, `500ms`, `0s`).
pub fn format(d: Duration) -> String {
    let total_ms = d.as_millis();
    if total_ms == 0 {
        return if d.is_zero() {
            "0s".into()
        } else {
            format!("{}us", d.as_micros())
        };
    }
    if total_ms < 1000 {
        return format!("{total_ms}ms");
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let ms = d.subsec_millis();
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if ms > 0 {
        let frac = format!("{:03}", ms);
        out.push_str(&format!("{s}.{}s", frac.trim_end_matches('0')));
    } else {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn go_forms_and_bare_seconds() {
        let cases: &[(&str, u64)] = &[
            ("0", 0),
            ("0s", 0),
            ("30", 30_000),
            ("1.5", 1_500),
            ("500ms", 500),
            ("10s", 10_000),
            ("2m", 120_000),
            ("1m30s", 90_000),
            ("1h30m", 5_400_000),
            ("1.5h", 5_400_000),
            ("2h45m10.5s", 9_910_500),
            ("+5m", 300_000),
            (" 10m ", 600_000),
            ("1s500ms", 1_500),
            (".5s", 500),
        ];
        for (text, ms) in cases {
            assert_eq!(
                parse(text).map(|d| d.as_millis()),
                Ok(u128::from(*ms)),
                "{text}"
            );
        }
        assert_eq!(parse("1500us"), Ok(Duration::from_micros(1500)));
        assert_eq!(parse("1500µs"), Ok(Duration::from_micros(1500)));
        assert_eq!(parse("7ns"), Ok(Duration::from_nanos(7)));
    }

    #[test]
    fn bad_forms_are_typed() {
        assert!(matches!(parse(""), Err(DurationError::Syntax(_))));
        assert!(matches!(parse("s"), Err(DurationError::Syntax(_))));
        assert!(matches!(parse("1m30"), Err(DurationError::Syntax(_))));
        assert!(matches!(parse("1..5s"), Err(DurationError::Syntax(_))));
        assert!(matches!(parse("10x"), Err(DurationError::Unit { unit, .. }) if unit == "x"));
        assert!(matches!(parse("1d"), Err(DurationError::Unit { unit, .. }) if unit == "d"));
        assert!(matches!(parse("-1s"), Err(DurationError::Negative(_))));
        assert!(matches!(
            parse("99999999999h"),
            Err(DurationError::Overflow(_))
        ));
        assert!(parse("10x")
            .unwrap_err()
            .to_string()
            .contains("ms, s, m or h"));
    }

    #[test]
    fn formats_like_go() {
        for (ms, text) in [
            (0, "0s"),
            (500, "500ms"),
            (1_000, "1s"),
            (90_000, "1m30s"),
            (5_400_000, "1h30m0s"),
            (1_500, "1.5s"),
        ] {
            assert_eq!(format(Duration::from_millis(ms)), text);
        }
    }

    proptest! {
        /// Whatever is printed parses back to the same millisecond count.
        #[test]
        fn format_round_trips(ms in 0u64..400_000_000) {
            let d = Duration::from_millis(ms);
            prop_assert_eq!(parse(&format(d)).unwrap().as_millis(), d.as_millis());
        }
    }
}
