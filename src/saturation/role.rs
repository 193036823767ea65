//! Prefill/decode disaggregation: a variant's role, read from the `llm-d.ai/role` label of its (leader)
//! pod template as WVA v0.9 reads it (`internal/engines/pipeline/engine.go`). Both engines decide each
//! role of a model on its own terms: V1 analyses each role group apart, saturation V2 charges demand
//! and sizes capacity per role and adds to all roles together.

use serde::{Deserialize, Serialize};

/// A variant's prefill/decode role: `prefill`, `decode`; anything else or nothing is `both` (a server
/// that does both). Ordered as WVA sorts role names, which is also the order V1 analyses them in.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub enum Role {
    #[default]
    Both,
    Decode,
    Prefill,
}

impl Role {
    pub const LABEL: &'static str = "llm-d.ai/role";
    pub const ALL: [Role; 3] = [Role::Both, Role::Decode, Role::Prefill];

    pub fn from_label(value: Option<&str>) -> Self {
        match value {
            Some("prefill") => Role::Prefill,
            Some("decode") => Role::Decode,
            _ => Role::Both,
        }
    }

    /// The name as it is serialized and labelled (`both`, `decode`, `prefill`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Both => "both",
            Role::Decode => "decode",
            Role::Prefill => "prefill",
        }
    }

    /// For `skip_serializing_if`: a variant that does both says nothing of its role.
    pub fn is_both(&self) -> bool {
        *self == Role::Both
    }
}

/// Whether a model is disaggregated: some variant serves one phase only.
pub fn disaggregated<'a>(roles: impl IntoIterator<Item = &'a Role>) -> bool {
    roles.into_iter().any(|r| !r.is_both())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values() {
        for (v, want) in [
            (Some("prefill"), Role::Prefill),
            (Some("decode"), Role::Decode),
            (Some("both"), Role::Both),
            (Some("Prefill"), Role::Both),
            (Some(""), Role::Both),
            (None, Role::Both),
        ] {
            assert_eq!(Role::from_label(v), want, "{v:?}");
        }
        for r in Role::ALL {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
        assert!(!disaggregated(&[Role::Both, Role::Both]));
        assert!(disaggregated(&[Role::Both, Role::Decode]));
    }
}
