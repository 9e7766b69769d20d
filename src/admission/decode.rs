//! The AdmissionReview request as detour reads it: borrowed from the body.
//!
//! Layer: pure core. One pass over the body decodes the envelope and the
//! Pod's few fields ([`super::pod::PodView`]); every other value (managed
//! fields, user info, the rest of the spec) is skipped by the parser without
//! being built. Strings are borrowed from the body unless they hold escapes.

use std::borrow::Cow;
use std::fmt;

use kube::core::admission::Operation;
use serde::de::{IgnoredAny, Visitor};
use serde::{Deserialize, Deserializer};

use super::pod::PodView;

/// A JSON string, borrowed from the body when it has no escapes.
///
/// (serde's own `Cow<str>` always copies unless it is a struct field marked
/// `borrow`; this one also borrows inside `Option`, `Vec` and maps.)
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Text<'a>(pub Cow<'a, str>);

impl std::ops::Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

#[derive(Deserialize)]
#[serde(
    rename_all = "camelCase",
    bound(deserialize = "O: Deserialize<'de>, 'de: 'a")
)]
pub struct ReviewEnvelope<'a, O> {
    #[serde(default, borrow)]
    pub api_version: Text<'a>,
    #[serde(default, borrow)]
    pub kind: Text<'a>,
    pub request: Option<RequestEnvelope<'a, O>>,
}

/// The request; `O` is [`PodView`] on the fast path (one pass over the
/// body), or `IgnoredAny` when the object is not a readable Pod.
#[derive(Deserialize)]
#[serde(
    rename_all = "camelCase",
    bound(deserialize = "O: Deserialize<'de>, 'de: 'a")
)]
pub struct RequestEnvelope<'a, O> {
    #[serde(borrow)]
    pub uid: Text<'a>,
    #[serde(borrow)]
    pub kind: GroupVersionKind<'a>,
    // Read only to refuse a request without one, as kube's typed request does.
    #[allow(dead_code)]
    #[serde(borrow)]
    pub resource: GroupVersionResource<'a>,
    #[serde(default, borrow)]
    pub sub_resource: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub name: Text<'a>,
    #[serde(default, borrow)]
    pub namespace: Option<Text<'a>>,
    pub operation: Operation,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default = "none")]
    pub object: Option<O>,
    #[serde(default = "none")]
    pub old_object: Option<O>,
}

fn none<O>() -> Option<O> {
    None
}

#[derive(Deserialize)]
pub struct GroupVersionKind<'a> {
    #[serde(borrow)]
    pub group: Text<'a>,
    #[allow(dead_code)]
    #[serde(borrow)]
    pub version: Text<'a>,
    #[serde(borrow)]
    pub kind: Text<'a>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
pub struct GroupVersionResource<'a> {
    #[serde(borrow)]
    pub group: Text<'a>,
    #[serde(borrow)]
    pub version: Text<'a>,
    #[serde(borrow)]
    pub resource: Text<'a>,
}

/// The decoded objects, or why the object could not be read as a Pod.
pub type Objects<'a> = Result<(Option<PodView<'a>>, Option<PodView<'a>>), String>;

/// Decodes the body in one pass when it holds a readable Pod; otherwise
/// decodes the envelope alone, so that other kinds are still answered.
pub fn decode(
    body: &[u8],
) -> Result<(ReviewEnvelope<'_, IgnoredAny>, Objects<'_>), serde_json::Error> {
    // A body checked as UTF-8 once (a fast whole-buffer check) is parsed
    // without checking each string again; one that is not UTF-8 takes the
    // byte parser, which says where the JSON is wrong, as before.
    let text = std::str::from_utf8(body).ok();
    match parse::<ReviewEnvelope<PodView>>(text, body) {
        Ok(envelope) => {
            let (request, objects) = match envelope.request {
                Some(r) => {
                    let objects = Ok((r.object, r.old_object));
                    let request = RequestEnvelope {
                        uid: r.uid,
                        kind: r.kind,
                        resource: r.resource,
                        sub_resource: r.sub_resource,
                        name: r.name,
                        namespace: r.namespace,
                        operation: r.operation,
                        dry_run: r.dry_run,
                        object: None,
                        old_object: None,
                    };
                    (Some(request), objects)
                }
                None => (None, Ok((None, None))),
            };
            let envelope = ReviewEnvelope {
                api_version: envelope.api_version,
                kind: envelope.kind,
                request,
            };
            Ok((envelope, objects))
        }
        Err(pod_error) => {
            let envelope = parse::<ReviewEnvelope<IgnoredAny>>(text, body)?;
            Ok((envelope, Err(format!("cannot read Pod: {pod_error}"))))
        }
    }
}

/// Parses the body from `text` (the body, already checked as UTF-8) when
/// there is one, else from the bytes.
fn parse<'a, T: Deserialize<'a>>(text: Option<&'a str>, body: &'a [u8]) -> serde_json::Result<T> {
    match text {
        Some(text) => serde_json::from_str(text),
        None => serde_json::from_slice(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_borrows_unless_the_string_has_escapes() {
        let body = br#"["plain", "esc\u0061ped", "tab\t"]"#;
        let texts: Vec<Text> = serde_json::from_slice(body).unwrap();
        assert!(matches!(texts[0].0, Cow::Borrowed("plain")));
        assert!(matches!(&texts[1].0, Cow::Owned(s) if s == "escaped"));
        assert_eq!(&*texts[2], "tab\t");
        assert!(serde_json::from_slice::<Text>(b"1").is_err());
        assert!(serde_json::from_slice::<Text>(b"null").is_err());
    }
}
