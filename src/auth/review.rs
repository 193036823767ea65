//! TokenReview and SubjectAccessReview against the Kubernetes API.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::{Api, Client};
use serde::Serialize;
use thiserror::Error;

use super::{Decision, UserInfo};

/// What a request asks to do, in SubjectAccessReview terms.
///
/// The routes' verbs, groups and paths are static, and what a request names (its namespace and metric)
/// is borrowed from its path: building the attributes of an authorized request allocates nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Attributes<'a> {
    Resource {
        verb: Cow<'a, str>,
        group: Cow<'a, str>,
        version: Cow<'a, str>,
        resource: Cow<'a, str>,
        namespace: Cow<'a, str>,
    },
    NonResource {
        path: Cow<'a, str>,
        verb: Cow<'a, str>,
    },
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a TokenReview said about a bearer token. Both outcomes are cached; a [`ReviewError`] is not.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenOutcome {
    Authenticated(UserInfo),
    /// The API server looked at the token and refused it; `reason` is its error text, if any.
    Rejected {
        reason: String,
    },
}

/// A review that could not be obtained (the request is answered 500, nothing is cached).
#[derive(Debug, Error)]
pub enum ReviewError {
    #[error("{review} timed out after {after:?}")]
    Timeout {
        review: &'static str,
        after: Duration,
    },
    #[error("{review} failed: {source}")]
    Api {
        review: &'static str,
        #[source]
        source: kube::Error,
    },
}

pub trait Reviewer: Send + Sync {
    fn review_token<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<TokenOutcome, ReviewError>>;
    fn review_access<'a>(
        &'a self,
        user: &'a UserInfo,
        attrs: &'a Attributes<'_>,
    ) -> BoxFuture<'a, Result<Decision, ReviewError>>;
}

/// Writes the cache key into `key` (cleared first). The key is the review's spec, as in Go's webhook
/// authorizer: every distinct user, verb, resource and namespace is its own entry.
///
/// Every string and list is written after its length, so the encoding is injective: no two different
/// (user, attributes) pairs share a key, whatever bytes the names hold. It runs on every authorized
/// request, so it is plain copies into a buffer the caller reuses: no formatter, no new allocation.
pub(crate) fn write_cache_key(user: &UserInfo, attrs: &Attributes<'_>, key: &mut Vec<u8>) {
    key.clear();
    encode(user, attrs, &mut |part: &[u8]| key.extend_from_slice(part));
}

/// The cache key in a buffer of its own.
#[cfg(test)]
pub(crate) fn cache_key(user: &UserInfo, attrs: &Attributes<'_>) -> Vec<u8> {
    let mut key = Vec::new();
    write_cache_key(user, attrs, &mut key);
    key
}

/// The cache key's encoding, handed to `out` part by part.
fn encode(user: &UserInfo, attrs: &Attributes<'_>, out: &mut impl FnMut(&[u8])) {
    fn len(out: &mut impl FnMut(&[u8]), n: usize) {
        out(&(n as u64).to_le_bytes());
    }
    fn put(out: &mut impl FnMut(&[u8]), s: &str) {
        len(out, s.len());
        out(s.as_bytes());
    }
    put(out, &user.username);
    put(out, &user.uid);
    len(out, user.groups.len());
    for g in &user.groups {
        put(out, g);
    }
    len(out, user.extra.len());
    for (k, values) in &user.extra {
        put(out, k);
        len(out, values.len());
        for v in values {
            put(out, v);
        }
    }
    match attrs {
        Attributes::Resource {
            verb,
            group,
            version,
            resource,
            namespace,
        } => {
            out(b"R");
            for s in [verb, group, version, resource, namespace] {
                put(out, s);
            }
        }
        Attributes::NonResource { path, verb } => {
            out(b"N");
            put(out, path);
            put(out, verb);
        }
    }
}

pub struct KubeReviewer {
    client: Client,
    timeout: Duration,
}

impl KubeReviewer {
    pub fn new(client: Client, timeout: Duration) -> Self {
        Self { client, timeout }
    }

    /// Creates a review (cluster-scoped) within the timeout: the API server's answer, or why there is none.
    async fn create<K>(&self, review: &'static str, object: &K) -> Result<K, ReviewError>
    where
        K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope, DynamicType = ()>
            + Clone
            + Serialize
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let api: Api<K> = Api::all(self.client.clone());
        tokio::time::timeout(self.timeout, api.create(&PostParams::default(), object))
            .await
            .map_err(|_| ReviewError::Timeout {
                review,
                after: self.timeout,
            })?
            .map_err(|source| ReviewError::Api { review, source })
    }

    fn sar_spec(user: &UserInfo, attrs: &Attributes<'_>) -> SubjectAccessReviewSpec {
        let mut spec = SubjectAccessReviewSpec {
            user: Some(user.username.clone()),
            uid: (!user.uid.is_empty()).then(|| user.uid.clone()),
            groups: Some(user.groups.clone()),
            extra: (!user.extra.is_empty()).then(|| user.extra.clone().into_iter().collect()),
            ..Default::default()
        };
        match attrs {
            Attributes::Resource {
                verb,
                group,
                version,
                resource,
                namespace,
            } => {
                spec.resource_attributes = Some(ResourceAttributes {
                    verb: Some(verb.to_string()),
                    group: Some(group.to_string()),
                    version: Some(version.to_string()),
                    resource: Some(resource.to_string()),
                    namespace: Some(namespace.to_string()),
                    ..Default::default()
                });
            }
            Attributes::NonResource { path, verb } => {
                spec.non_resource_attributes = Some(NonResourceAttributes {
                    path: Some(path.to_string()),
                    verb: Some(verb.to_string()),
                });
            }
        }
        spec
    }
}

impl Reviewer for KubeReviewer {
    fn review_token<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<TokenOutcome, ReviewError>> {
        Box::pin(async move {
            let review = TokenReview {
                spec: TokenReviewSpec {
                    token: Some(token.to_string()),
                    audiences: None,
                },
                ..Default::default()
            };
            let created = self.create("TokenReview", &review).await?;
            let status = created.status.unwrap_or_default();
            if status.authenticated != Some(true) {
                let reason = status
                    .error
                    .filter(|e| !e.is_empty())
                    .unwrap_or_else(|| "token not authenticated".into());
                return Ok(TokenOutcome::Rejected { reason });
            }
            let user = status.user.unwrap_or_default();
            Ok(TokenOutcome::Authenticated(UserInfo {
                username: user.username.unwrap_or_default(),
                uid: user.uid.unwrap_or_default(),
                groups: user.groups.unwrap_or_default(),
                extra: user.extra.unwrap_or_default().into_iter().collect(),
            }))
        })
    }

    fn review_access<'a>(
        &'a self,
        user: &'a UserInfo,
        attrs: &'a Attributes<'_>,
    ) -> BoxFuture<'a, Result<Decision, ReviewError>> {
        Box::pin(async move {
            let review = SubjectAccessReview {
                spec: Self::sar_spec(user, attrs),
                ..Default::default()
            };
            let created = self.create("SubjectAccessReview", &review).await?;
            let status = created.status.unwrap_or_default();
            let mut reason = status.reason.unwrap_or_default();
            if let Some(err) = status.evaluation_error.filter(|e| !e.is_empty()) {
                reason = if reason.is_empty() {
                    err
                } else {
                    format!("{reason}; {err}")
                };
            }
            Ok(Decision {
                allowed: status.allowed && status.denied != Some(true),
                reason: reason.into(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Distinct (user, attributes) pairs never share a cache key, however their fields split.
    #[test]
    fn cache_keys_do_not_collide_across_field_boundaries() {
        let user = |name: &str, groups: &[&str]| UserInfo {
            username: name.into(),
            groups: groups.iter().map(ToString::to_string).collect(),
            ..Default::default()
        };
        let list = |ns: &'static str, resource: &'static str| Attributes::Resource {
            verb: "list".into(),
            group: "external.metrics.k8s.io".into(),
            version: "v1beta1".into(),
            resource: resource.into(),
            namespace: ns.into(),
        };
        let keys = [
            cache_key(&user("a", &["b", "c"]), &list("ns", "m")),
            cache_key(&user("a", &["bc"]), &list("ns", "m")),
            cache_key(&user("a", &["b", "c", ""]), &list("ns", "m")),
            cache_key(&user("ab", &["c"]), &list("ns", "m")),
            cache_key(&user("a", &["b", "c"]), &list("n", "sm")),
            cache_key(
                &user("a", &["b", "c"]),
                &Attributes::NonResource {
                    path: "/metrics".into(),
                    verb: "get".into(),
                },
            ),
        ];
        let distinct: std::collections::BTreeSet<&Vec<u8>> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len(), "{keys:#?}");
        assert_eq!(
            keys[0],
            cache_key(&user("a", &["b", "c"]), &list("ns", "m"))
        );
    }

    fn arb_user() -> impl Strategy<Value = UserInfo> {
        // A small alphabet with the bytes a naive encoding would confuse, so collisions are likely to be tried.
        let part = || "[ab\"\\:,]{0,3}";
        (
            part(),
            part(),
            prop::collection::vec(part(), 0..3),
            prop::collection::btree_map(part(), prop::collection::vec(part(), 0..2), 0..2),
        )
            .prop_map(|(username, uid, groups, extra)| UserInfo {
                username,
                uid,
                groups,
                extra,
            })
    }

    fn arb_attrs() -> impl Strategy<Value = Attributes<'static>> {
        let part = || "[ab\"\\:,]{0,3}";
        prop_oneof![
            (part(), part(), part(), part(), part()).prop_map(
                |(verb, group, version, resource, namespace)| Attributes::Resource {
                    verb: verb.into(),
                    group: group.into(),
                    version: version.into(),
                    resource: resource.into(),
                    namespace: namespace.into(),
                }
            ),
            (part(), part()).prop_map(|(path, verb)| Attributes::NonResource {
                path: path.into(),
                verb: verb.into(),
            }),
        ]
    }

    /// Reads a key back; `None` when it is not a whole, well-formed key.
    fn decode(key: &[u8]) -> Option<(UserInfo, Attributes<'static>)> {
        struct Reader<'a>(&'a [u8]);
        impl Reader<'_> {
            fn len(&mut self) -> Option<usize> {
                let (n, rest) = self.0.split_first_chunk::<8>()?;
                self.0 = rest;
                usize::try_from(u64::from_le_bytes(*n)).ok()
            }
            fn string(&mut self) -> Option<String> {
                let n = self.len()?;
                let (s, rest) = self.0.split_at_checked(n)?;
                self.0 = rest;
                String::from_utf8(s.to_vec()).ok()
            }
            fn strings(&mut self) -> Option<Vec<String>> {
                (0..self.len()?).map(|_| self.string()).collect()
            }
        }
        let mut r = Reader(key);
        let username = r.string()?;
        let uid = r.string()?;
        let groups = r.strings()?;
        let extra = (0..r.len()?)
            .map(|_| Some((r.string()?, r.strings()?)))
            .collect::<Option<_>>()?;
        let (tag, rest) = r.0.split_first()?;
        r.0 = rest;
        let attrs = match tag {
            b'R' => Attributes::Resource {
                verb: r.string()?.into(),
                group: r.string()?.into(),
                version: r.string()?.into(),
                resource: r.string()?.into(),
                namespace: r.string()?.into(),
            },
            b'N' => Attributes::NonResource {
                path: r.string()?.into(),
                verb: r.string()?.into(),
            },
            _ => return None,
        };
        let user = UserInfo {
            username,
            uid,
            groups,
            extra,
        };
        r.0.is_empty().then_some((user, attrs))
    }

    proptest! {
        /// The key is injective: it reads back to the very user and attributes it was made of, so two
        /// requests share a cached decision only when both are the same.
        #[test]
        fn cache_keys_read_back_to_their_request(user in arb_user(), attrs in arb_attrs()) {
            let key = cache_key(&user, &attrs);
            prop_assert_eq!(decode(&key), Some((user, attrs)));
        }
    }
}
