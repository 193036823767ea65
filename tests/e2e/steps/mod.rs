//! One file per end-to-end step, in the order `STEPS` (main.rs) runs them.

pub(crate) mod annotated_hpa;
pub(crate) mod bounds;
pub(crate) mod data_parallel;
pub(crate) mod disaggregated;
pub(crate) mod faults_hung_pod;
pub(crate) mod faults_prometheus_down;
pub(crate) mod faults_server_restart;
pub(crate) mod gpu_limiter;
pub(crate) mod leader_worker_set;
pub(crate) mod lease_handover;
pub(crate) mod load_step;
pub(crate) mod monitoring;
pub(crate) mod namespace_exclusion;
pub(crate) mod namespace_local_config;
pub(crate) mod registration;
pub(crate) mod saturation_configmap;
pub(crate) mod saturation_v2;
pub(crate) mod scrape_monitors;
pub(crate) mod security;
pub(crate) mod tolerance;
pub(crate) mod uninstall;
pub(crate) mod workloads;
