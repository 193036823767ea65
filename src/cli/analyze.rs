//! `wva-metrics-server analyze`: the decision for one model's inputs (JSON), exactly as the server
//! decides it, without a cluster.

use super::read_input;
use crate::engine;
use crate::error::Error;

/// `analyze`: one model's snapshot in, the decision out.
pub fn analyze(input: &str) -> Result<String, Error> {
    let text = read_input(input)?;
    let decision = engine::input::analyze_json(&text)?;
    Ok(serde_json::to_string_pretty(&decision)?)
}
