//! Kubernetes label selectors: the `labelSelector` query parameter of an external-metrics request.
//!
//! This follows apimachinery's `labels.Parse`: requirements joined by `,`; operators `=`, `==`, `!=`,
//! `in (…)`, `notin (…)`, existence (`key`), non-existence (`!key`) and the integer comparisons `>`
//! and `<`. Keys and values are validated with the label-syntax rules so a typo is a clear 400 rather
//! than a selector that silently matches nothing. `Display` prints the canonical form (requirements
//! sorted by key, values sorted), which is what the HPA sends and what error messages echo back.

use std::collections::BTreeSet;
use std::fmt;

use thiserror::Error;

use crate::error::Echo;

/// The input is echoed at most [`crate::error::MAX_ECHO_BYTES`] long, so a 44 KiB selector does not
/// come back as a 176 KiB error body.
#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "unable to parse label selector \"{}\": {} (at byte {position})",
    Echo(input),
    Echo(reason)
)]
pub struct SelectorError {
    pub input: String,
    pub reason: String,
    pub position: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Operator {
    Equals,
    DoubleEquals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Requirement {
    pub key: String,
    pub operator: Operator,
    /// Sorted, de-duplicated values; empty for the existence operators.
    pub values: BTreeSet<String>,
}

/// A parsed selector. The empty selector matches everything, like `labels.Everything()`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

/// Something with labels a selector can be evaluated against.
pub trait Labels {
    fn get(&self, key: &str) -> Option<&str>;
}

/// Label maps keyed by owned names (objects' labels) or by static ones (metric items).
impl<K: std::borrow::Borrow<str> + Ord> Labels for std::collections::BTreeMap<K, String> {
    fn get(&self, key: &str) -> Option<&str> {
        std::collections::BTreeMap::get(self, key).map(String::as_str)
    }
}

impl Labels for [(&str, &str)] {
    fn get(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }
}

impl Selector {
    pub fn everything() -> Self {
        Self::default()
    }

    pub(crate) fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// `key=value` for every pair, without the label-syntax checks: for values that come from elsewhere
    /// than a label selector (a model ID such as `Qwen/Qwen3-8B` is not a valid label value).
    pub fn equal(pairs: &[(&str, &str)]) -> Self {
        Self {
            requirements: pairs
                .iter()
                .map(|(k, v)| Requirement {
                    key: (*k).to_string(),
                    operator: Operator::Equals,
                    values: BTreeSet::from([(*v).to_string()]),
                })
                .collect(),
        }
    }

    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        Parser::new(input).parse()
    }

    pub fn matches<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// The values `key` must have for a match (from `key=v`, `key==v` or `key in (…)`; the fewest of
    /// them when several requirements name the key), so a caller can look candidates up by value
    /// instead of testing everything. `None`: the selector does not pin the key.
    pub fn required_values(&self, key: &str) -> Option<&BTreeSet<String>> {
        self.requirements
            .iter()
            .filter(|r| {
                r.key == key
                    && matches!(
                        r.operator,
                        Operator::Equals | Operator::DoubleEquals | Operator::In
                    )
            })
            .map(|r| &r.values)
            .min_by_key(|v| v.len())
    }
}

impl Requirement {
    pub fn matches<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::Equals | Operator::DoubleEquals | Operator::In => {
                value.is_some_and(|v| self.values.contains(v))
            }
            Operator::NotEquals | Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(v), Some(bound)) = (value, self.values.first()) else {
                    return false;
                };
                let (Ok(v), Ok(bound)) = (v.parse::<i64>(), bound.parse::<i64>()) else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    v > bound
                } else {
                    v < bound
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join = |values: &BTreeSet<String>| values.iter().cloned().collect::<Vec<_>>().join(",");
        let first = || self.values.first().map_or("", String::as_str);
        match self.operator {
            Operator::Equals => write!(f, "{}={}", self.key, first()),
            Operator::DoubleEquals => write!(f, "{}=={}", self.key, first()),
            Operator::NotEquals => write!(f, "{}!={}", self.key, first()),
            Operator::In => write!(f, "{} in ({})", self.key, join(&self.values)),
            Operator::NotIn => write!(f, "{} notin ({})", self.key, join(&self.values)),
            Operator::Exists => write!(f, "{}", self.key),
            Operator::DoesNotExist => write!(f, "!{}", self.key),
            Operator::GreaterThan => write!(f, "{}>{}", self.key, first()),
            Operator::LessThan => write!(f, "{}<{}", self.key, first()),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token<'a> {
    Ident(&'a str),
    Comma,
    Equals,
    DoubleEquals,
    NotEquals,
    Bang,
    Gt,
    Lt,
    Open,
    Close,
    In,
    NotIn,
    End,
}

struct Parser<'a> {
    input: &'a str,
    pos: usize,
}

fn is_special(c: char) -> bool {
    matches!(c, ',' | '=' | '!' | '(' | ')' | '<' | '>') || c.is_whitespace()
}

impl<'a> Parser<'a> {
    fn new(input: &'a str) -> Self {
        Self { input, pos: 0 }
    }

    fn error(&self, position: usize, reason: impl Into<String>) -> SelectorError {
        SelectorError {
            input: self.input.to_string(),
            reason: reason.into(),
            position,
        }
    }

    /// Returns the next token and the byte offset it starts at, without consuming it.
    fn peek(&self) -> (Token<'a>, usize, usize) {
        let rest = &self.input[self.pos..];
        let trimmed = rest.trim_start();
        let start = self.pos + (rest.len() - trimmed.len());
        let mut chars = trimmed.chars();
        let Some(c) = chars.next() else {
            return (Token::End, start, start);
        };
        let two = trimmed.get(..2);
        let (token, len) = match c {
            ',' => (Token::Comma, 1),
            '(' => (Token::Open, 1),
            ')' => (Token::Close, 1),
            '>' => (Token::Gt, 1),
            '<' => (Token::Lt, 1),
            '=' if two == Some("==") => (Token::DoubleEquals, 2),
            '=' => (Token::Equals, 1),
            '!' if two == Some("!=") => (Token::NotEquals, 2),
            '!' => (Token::Bang, 1),
            _ => {
                let len = trimmed.find(is_special).unwrap_or(trimmed.len());
                let word = &trimmed[..len];
                let token = match word {
                    "in" => Token::In,
                    "notin" => Token::NotIn,
                    _ => Token::Ident(word),
                };
                (token, len)
            }
        };
        (token, start, start + len)
    }

    fn next(&mut self) -> (Token<'a>, usize) {
        let (token, start, end) = self.peek();
        self.pos = end;
        (token, start)
    }

    fn parse(mut self) -> Result<Selector, SelectorError> {
        let mut requirements = Vec::new();
        if self.input.trim().is_empty() {
            return Ok(Selector { requirements });
        }
        loop {
            requirements.push(self.requirement()?);
            match self.next() {
                (Token::End, _) => break,
                (Token::Comma, _) => continue,
                (other, at) => {
                    return Err(self.error(
                        at,
                        format!(
                            "expected ',' or end of selector, found {}",
                            describe(&other)
                        ),
                    ))
                }
            }
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Selector { requirements })
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        let (token, at) = self.next();
        let (key, negated) = match token {
            Token::Bang => match self.next() {
                (Token::Ident(k), at) => (self.key(k, at)?, true),
                (other, at) => {
                    return Err(self.error(
                        at,
                        format!("expected a label key after '!', found {}", describe(&other)),
                    ))
                }
            },
            Token::Ident(k) => (self.key(k, at)?, false),
            other => {
                return Err(self.error(
                    at,
                    format!("expected a label key, found {}", describe(&other)),
                ))
            }
        };
        if negated {
            return Ok(Requirement {
                key,
                operator: Operator::DoesNotExist,
                values: BTreeSet::new(),
            });
        }
        let (op_token, _, _) = self.peek();
        let operator = match op_token {
            Token::End | Token::Comma => {
                return Ok(Requirement {
                    key,
                    operator: Operator::Exists,
                    values: BTreeSet::new(),
                })
            }
            Token::Equals => Operator::Equals,
            Token::DoubleEquals => Operator::DoubleEquals,
            Token::NotEquals => Operator::NotEquals,
            Token::In => Operator::In,
            Token::NotIn => Operator::NotIn,
            Token::Gt => Operator::GreaterThan,
            Token::Lt => Operator::LessThan,
            other => {
                let (_, at, _) = self.peek();
                return Err(self.error(
                    at,
                    format!("expected an operator (=, ==, !=, in, notin, >, <) after key {key:?}, found {}", describe(&other)),
                ));
            }
        };
        self.next();
        let values = match operator {
            Operator::In | Operator::NotIn => self.value_set(&key)?,
            _ => {
                let (_, at, _) = self.peek();
                let value = self.single_value()?;
                if matches!(operator, Operator::GreaterThan | Operator::LessThan) {
                    if value.parse::<i64>().is_err() {
                        return Err(self.error(at, format!("value {value:?} for key {key:?} must be an integer for '>' and '<'")));
                    }
                } else {
                    self.check_value(&value, at)?;
                }
                BTreeSet::from([value])
            }
        };
        Ok(Requirement {
            key,
            operator,
            values,
        })
    }

    fn single_value(&mut self) -> Result<String, SelectorError> {
        let (token, start, _) = self.peek();
        let word = match token {
            // An empty value (`key=`) is legal: it matches a label set to the empty string.
            Token::End | Token::Comma => return Ok(String::new()),
            Token::Ident(v) => v,
            // `in`/`notin` are only keywords in operator position; as a value they are plain words.
            Token::In => "in",
            Token::NotIn => "notin",
            other => {
                return Err(self.error(
                    start,
                    format!("expected a label value, found {}", describe(&other)),
                ))
            }
        };
        self.next();
        Ok(word.to_string())
    }

    fn value_set(&mut self, key: &str) -> Result<BTreeSet<String>, SelectorError> {
        match self.next() {
            (Token::Open, _) => {}
            (other, at) => {
                return Err(self.error(
                    at,
                    format!(
                        "expected '(' after 'in'/'notin' for key {key:?}, found {}",
                        describe(&other)
                    ),
                ))
            }
        }
        let mut values = BTreeSet::new();
        loop {
            let (token, at) = self.next();
            match token {
                Token::Ident(_) | Token::In | Token::NotIn => {
                    let word = match token {
                        Token::Ident(v) => v,
                        Token::In => "in",
                        _ => "notin",
                    };
                    self.check_value(word, at)?;
                    values.insert(word.to_string());
                    match self.next() {
                        (Token::Comma, _) => continue,
                        (Token::Close, _) => break,
                        (other, at) => {
                            return Err(self.error(
                                at,
                                format!(
                                    "expected ',' or ')' in value list, found {}",
                                    describe(&other)
                                ),
                            ))
                        }
                    }
                }
                // `(a,)` and `(,a)` carry an empty value, as in apimachinery.
                Token::Comma => {
                    values.insert(String::new());
                }
                Token::Close => {
                    if values.is_empty() {
                        return Err(self.error(at, format!("for 'in' and 'notin' the value set of key {key:?} must not be empty")));
                    }
                    values.insert(String::new());
                    break;
                }
                other => {
                    return Err(self.error(
                        at,
                        format!("expected a value in the list, found {}", describe(&other)),
                    ))
                }
            }
        }
        Ok(values)
    }

    fn key(&self, key: &str, at: usize) -> Result<String, SelectorError> {
        validate_key(key).map_err(|reason| self.error(at, reason))?;
        Ok(key.to_string())
    }

    fn check_value(&self, value: &str, at: usize) -> Result<(), SelectorError> {
        validate_value(value).map_err(|reason| self.error(at, reason))
    }
}

fn describe(token: &Token<'_>) -> String {
    match token {
        Token::Ident(s) => format!("{s:?}"),
        Token::Comma => "','".into(),
        Token::Equals => "'='".into(),
        Token::DoubleEquals => "'=='".into(),
        Token::NotEquals => "'!='".into(),
        Token::Bang => "'!'".into(),
        Token::Gt => "'>'".into(),
        Token::Lt => "'<'".into(),
        Token::Open => "'('".into(),
        Token::Close => "')'".into(),
        Token::In => "'in'".into(),
        Token::NotIn => "'notin'".into(),
        Token::End => "end of selector".into(),
    }
}

/// A label name segment: at most 63 characters, alphanumeric at both ends, `-`, `_`, `.` inside.
fn is_name_segment(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A DNS-1123 subdomain, used as the optional key prefix (`example.com/`).
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && !s.is_empty()
        && s.split('.').all(|part| {
            let b = part.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

pub(crate) fn validate_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if !is_dns_subdomain(prefix) {
            return Err(format!(
                "invalid label key {key:?}: prefix {prefix:?} must be a lowercase DNS subdomain"
            ));
        }
    }
    if !is_name_segment(name) {
        return Err(format!(
            "invalid label key {key:?}: name part must be 1-63 characters of [A-Za-z0-9-_.], starting and ending with an alphanumeric character"
        ));
    }
    Ok(())
}

pub(crate) fn validate_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_name_segment(value) {
        Ok(())
    } else {
        Err(format!(
            "invalid label value {value:?}: must be empty or 1-63 characters of [A-Za-z0-9-_.], starting and ending with an alphanumeric character"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_and_prints_canonical_form() {
        let cases: &[(&str, &str)] = &[
            ("", ""),
            ("variant_name=llama", "variant_name=llama"),
            ("variant_name==llama", "variant_name==llama"),
            ("a!=b", "a!=b"),
            ("x in (b,a)", "x in (a,b)"),
            ("x   notin(c , a)", "x notin (a,c)"),
            ("b,a", "a,b"),
            ("!a", "!a"),
            (" ! a , b = c ", "!a,b=c"),
            (
                "exported_namespace=ns,variant_name=v",
                "exported_namespace=ns,variant_name=v",
            ),
            (
                "variant_name=v,exported_namespace=ns",
                "exported_namespace=ns,variant_name=v",
            ),
            ("example.com/key=v", "example.com/key=v"),
            ("a=", "a="),
            ("a in (x,)", "a in (,x)"),
            ("n>5", "n>5"),
            ("n<-5", "n<-5"),
            ("a=in", "a=in"),
        ];
        for (input, want) in cases {
            let got = Selector::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(got.to_string(), *want, "input {input:?}");
            // The canonical form parses back to the same selector.
            assert_eq!(
                Selector::parse(&got.to_string()).unwrap(),
                got,
                "round trip of {input:?}"
            );
        }
    }

    #[test]
    fn rejects_malformed_selectors_with_a_reason() {
        let cases: &[(&str, &str)] = &[
            ("a=b=c", "expected ',' or end"),
            ("a in b", "expected '('"),
            ("a in ()", "must not be empty"),
            ("a in (b", "expected ',' or ')'"),
            ("=b", "expected a label key"),
            ("a b", "expected an operator"),
            ("a>b", "must be an integer"),
            ("a,", "expected a label key"),
            ("-bad=x", "invalid label key"),
            ("a=-bad", "invalid label value"),
            ("Upper.Case/x=y", "prefix"),
            ("k=", ""),
        ];
        for (input, fragment) in cases {
            match Selector::parse(input) {
                Err(e) => assert!(e.to_string().contains(fragment), "{input:?}: {e}"),
                Ok(s) => assert!(fragment.is_empty(), "{input:?} parsed as {s}"),
            }
        }
        let long = format!("a={}", "x".repeat(64));
        assert!(Selector::parse(&long).is_err());
    }

    #[test]
    fn matches_like_apimachinery() {
        let l = labels(&[("variant_name", "llama"), ("namespace", "ns1"), ("n", "7")]);
        let cases: &[(&str, bool)] = &[
            ("", true),
            ("variant_name=llama", true),
            ("variant_name=other", false),
            ("variant_name!=other", true),
            ("missing!=x", true),
            ("variant_name in (a,llama)", true),
            ("variant_name notin (a,llama)", false),
            ("missing notin (a)", true),
            ("missing in (a)", false),
            ("namespace", true),
            ("missing", false),
            ("!missing", true),
            ("!namespace", false),
            ("n>6", true),
            ("n<7", false),
            ("variant_name>1", false),
            ("variant_name=llama,namespace=ns2", false),
        ];
        for (input, want) in cases {
            let s = Selector::parse(input).unwrap();
            assert_eq!(s.matches(&l), *want, "{input:?}");
        }
    }

    #[test]
    fn form_decoded_hpa_selectors_parse() {
        // What the aggregator forwards after re-encoding: `labelSelector=variant_name%3Dv%2Cexported_namespace%3Dns`.
        let decoded: Vec<(String, String)> = form_urlencoded::parse(
            b"labelSelector=exported_namespace%3Dns%2Cvariant_name+in+%28a%2Cb%29",
        )
        .into_owned()
        .collect();
        let s = Selector::parse(&decoded[0].1).unwrap();
        assert_eq!(s.to_string(), "exported_namespace=ns,variant_name in (a,b)");
    }

    /// Only requirements every match must satisfy pin a key's values; the narrowest one wins.
    #[test]
    fn required_values_come_from_equality_and_in_only() {
        let values = |input: &str| {
            Selector::parse(input)
                .unwrap()
                .required_values("variant_name")
                .map(|v| v.iter().cloned().collect::<Vec<_>>())
        };
        let cases: &[(&str, Option<&[&str]>)] = &[
            ("variant_name=a", Some(&["a"])),
            ("variant_name==a,namespace=ns", Some(&["a"])),
            ("variant_name in (b,a)", Some(&["a", "b"])),
            ("variant_name in (a,b),variant_name=b", Some(&["b"])),
            ("variant_name!=a", None),
            ("variant_name notin (a)", None),
            ("variant_name", None),
            ("namespace=ns", None),
            ("", None),
        ];
        for (input, want) in cases {
            let want = want.map(|w| w.iter().map(ToString::to_string).collect::<Vec<_>>());
            assert_eq!(values(input), want, "{input:?}");
        }
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    fn segment() -> impl Strategy<Value = String> {
        "[a-z0-9]([a-z0-9_.-]{0,10}[a-z0-9])?"
    }

    fn requirement() -> impl Strategy<Value = String> {
        (
            segment(),
            segment(),
            prop::collection::vec(segment(), 1..4),
            0..6usize,
        )
            .prop_map(|(k, v, vs, op)| match op {
                0 => format!("{k}={v}"),
                1 => format!("{k}!={v}"),
                2 => format!("{k} in ({})", vs.join(",")),
                3 => format!("{k} notin ({})", vs.join(",")),
                4 => k,
                _ => format!("!{k}"),
            })
    }

    proptest! {
        #[test]
        fn canonical_form_round_trips(reqs in prop::collection::vec(requirement(), 0..5)) {
            let input = reqs.join(",");
            let parsed = Selector::parse(&input).unwrap();
            let printed = parsed.to_string();
            prop_assert_eq!(Selector::parse(&printed).unwrap(), parsed);
        }
    }
}
