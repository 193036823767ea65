//! The HTTPS front door.

pub mod quantity;
pub mod selector;
