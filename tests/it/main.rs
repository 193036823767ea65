//! The integration tests, one crate: each module is one area, run against the real binaries, real TLS
//! and real servers on loopback (the end-to-end suite against a real control plane is `tests/e2e`).
//! One crate links the library once instead of once per area.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    clippy::too_many_lines
)] // Scenarios, fixtures and measurements, not product code.

mod cli;
mod hardening;
mod layering;
mod leader;
mod manifests;
mod scaler;
mod server;
mod sources;
mod status;
mod support;
mod vllm_defs;
mod zero;
