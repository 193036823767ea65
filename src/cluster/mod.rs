//! Cluster state: the VariantAutoscaling CRD types, the joined snapshot, and the kube-rs watchers that keep it current.

pub mod crd;
pub mod declared;
pub mod leader;
pub mod monitors;
pub mod pools;
pub mod snapshot;
pub mod watch;
