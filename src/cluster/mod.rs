//! Cluster state: the VariantAutoscaling CRD types, what declares a variant, the joined snapshot, the
//! kube-rs reflectors and loops that keep it and the configuration ConfigMaps current, and the Lease.

pub mod client;
pub mod configs;
pub mod crd;
pub mod declared;
pub mod exclusion;
pub mod leader;
pub mod monitors;
pub mod nodes;
pub mod pools;
pub(crate) mod reflect;
pub(crate) mod slim;
pub mod snapshot;
pub mod watch;
pub mod workload;

pub use exclusion::{Exclusion, UnresolvedAccelerator, UNRESOLVED_ACCELERATOR};
