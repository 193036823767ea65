//! wva-metrics-server: a Kubernetes aggregated API server for `external.metrics.k8s.io/v1beta1` that
//! answers the HPA's `inferno_desired_replicas` requests with WVA's saturation-driven targets.
//!
//! Data flows one way: [`cluster`] and [`sources`] fill stores, [`engine`] reads them and decides,
//! [`server`] authenticates ([`auth`]), asks the engine and encodes.

pub mod app;
pub mod auth;
pub mod changes;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod duration;
pub mod engine;
pub mod error;
pub mod follow;
pub mod health;
pub mod provider;
pub mod saturation;
pub mod scaler;
pub mod server;
pub mod sources;
pub mod standalone;
pub mod status;
pub mod supervisor;
pub mod target;
pub mod telemetry;
pub mod tls;
