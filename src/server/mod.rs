//! The HTTPS front door.

pub mod provider;
pub mod quantity;
pub mod selector;
