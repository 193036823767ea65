//! The crate's typed errors: every place where a caller decides something from an error matches on a
//! variant here, never on the text of a message.
//!
//! * [`Error`](enum@Error): what ends a command (`serve`, `analyze`, `scrape`) with a message for the
//!   operator.
//!
//! The other typed errors live with the module that produces them: `cluster::Exclusion` (why a variant
//! cannot be decided) and `sources::MissingSample` (why a pod has no usable sample).
//! * `api_status_code`: the HTTP status of a Kubernetes API error, for hints and retries.

use std::fmt;

use thiserror::Error;

/// What ends a command.
#[derive(Debug, Error)]
pub enum Error {
    /// A flag, environment variable or input file is unusable; the message names it.
    #[error("{0}")]
    Config(String),
    /// The `analyze` input is malformed or inconsistent; the message names the JSON path or rule.
    #[error("invalid input{}: {message}", path.as_deref().map(|p| format!(" at {p}")).unwrap_or_default())]
    Input {
        path: Option<String>,
        message: String,
    },
    /// Reading or writing a local file or stream.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// Building the Kubernetes client.
    #[error("{context}: {source}")]
    Kube {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Certificates and keys for serving or for clients.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// Fetching a page for `scrape`.
    #[error("{0}")]
    Fetch(String),
    /// `scrape` found no model with both signals; the extraction is in the message.
    #[error("{extraction}\nno model with both KV-cache usage and queue length found in {source_name} (expected vllm:kv_cache_usage_perc and vllm:num_requests_waiting with a model_name label)")]
    NoModel {
        extraction: String,
        source_name: String,
    },
    /// A supervised task kept failing and could not be restarted.
    #[error("task {task} failed {failures} times in a row (last: {last}); giving up so that the pod restarts")]
    TaskFailed {
        task: &'static str,
        failures: u32,
        last: String,
    },
    /// Encoding our own output.
    #[error("encoding the output: {0}")]
    Encode(#[from] serde_json::Error),
}

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// The HTTP status code of a Kubernetes API error, however it arrived (a list, a watch, a request).
pub(crate) fn api_status_code(e: &kube::runtime::watcher::Error) -> Option<u16> {
    use kube::runtime::watcher::Error as W;
    match e {
        W::InitialListFailed(k) | W::WatchStartFailed(k) | W::WatchFailed(k) => client_code(k),
        W::WatchError(status) => Some(status.code),
        W::NoResourceVersion => None,
    }
}

/// The HTTP status code of a kube client error, when the API server answered with one.
pub(crate) fn client_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// How many names a message or log line lists before it says "and N more".
pub(crate) const MAX_NAMES_LISTED: usize = 5;

/// The longest model ID a variant may name (Hugging Face IDs are at most 96 + 1 + 96 bytes).
pub const MAX_MODEL_ID_BYTES: usize = 256;

/// How much of a caller's input a message or log line repeats.
pub const MAX_ECHO_BYTES: usize = 256;

/// The longest `message` of a metav1.Status this server sends.
pub const MAX_STATUS_MESSAGE_BYTES: usize = 2048;

/// `s` cut at `max` bytes (on a character boundary) with its full length named.
pub fn cap(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}… ({} bytes)", &s[..end], s.len()))
}

/// Displays caller input, cut at [`MAX_ECHO_BYTES`] with its full length named: error bodies and log
/// lines stay small however large the input.
pub struct Echo<'a>(pub &'a str);

impl fmt::Display for Echo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&cap(self.0, MAX_ECHO_BYTES))
    }
}

/// Displays a list of names, at most `max` of them, and how many more there are: messages and log
/// lines stay small whatever the input.
pub(crate) struct Capped<'a, T>(pub &'a [T], pub usize);

impl<T: fmt::Display> fmt::Display for Capped<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Capped(items, max) = *self;
        for (i, item) in items.iter().take(max).enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{item}")?;
        }
        if items.len() > max {
            write!(f, " and {} more", items.len() - max)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_are_cut_with_their_length() {
        assert_eq!(Echo("short").to_string(), "short");
        let long = "é".repeat(400);
        let shown = Echo(&long).to_string();
        assert!(shown.len() < MAX_ECHO_BYTES + 20, "{}", shown.len());
        assert!(shown.ends_with("… (800 bytes)"), "{shown}");
    }

    #[test]
    fn capped_lists_say_how_many_were_left_out() {
        let names = ["a", "b", "c", "d"];
        assert_eq!(Capped(&names, 2).to_string(), "a, b and 2 more");
        assert_eq!(Capped(&names, 4).to_string(), "a, b, c, d");
        assert_eq!(Capped::<&str>(&[], 3).to_string(), "");
    }
}
