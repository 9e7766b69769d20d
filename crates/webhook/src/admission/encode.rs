//! The AdmissionReview response, written once into one buffer.
//!
//! Layer: pure (no I/O). The shape is that of kube's `AdmissionResponse` as serde
//! encodes it (field order included), except that the patch is base64, as the
//! AdmissionReview API documents: `{"apiVersion","kind","response":{"uid",
//! "allowed":true,"status":{},"patchType","auditAnnotations","warnings",
//! "patch"}}`, optional fields left out when empty. The test module keeps the
//! previous serde encoder and compares the two byte for byte.

use super::{json, AUDIT_ANNOTATION};

/// An allowed answer and what it carries.
pub struct Answer<'a> {
    pub api_version: &'a str,
    pub kind: &'a str,
    pub uid: &'a str,
    /// The JSON Patch as JSON (sent base64-encoded).
    pub patch: Option<&'a [u8]>,
    /// The value of the [`AUDIT_ANNOTATION`] audit annotation.
    pub audit_annotation: Option<&'a str>,
    pub warnings: &'a [String],
}

pub fn encode(answer: &Answer) -> Vec<u8> {
    let patch_len = answer.patch.map_or(0, |p| p.len() * 4 / 3 + 4);
    let audit_len = answer.audit_annotation.map_or(0, |a| a.len() + a.len() / 8);
    let warnings_len: usize = answer.warnings.iter().map(|w| w.len() + 8).sum();
    let mut out = Vec::with_capacity(160 + patch_len + audit_len + warnings_len);
    out.push(b'{');
    json::key(&mut out, "apiVersion");
    json::string(&mut out, answer.api_version);
    out.push(b',');
    json::key(&mut out, "kind");
    json::string(&mut out, answer.kind);
    out.extend_from_slice(br#","response":{"uid":"#);
    json::string(&mut out, answer.uid);
    out.extend_from_slice(br#","allowed":true,"status":{}"#);
    if answer.patch.is_some() {
        out.extend_from_slice(br#","patchType":"JSONPatch""#);
    }
    if let Some(report) = answer.audit_annotation {
        out.extend_from_slice(br#","auditAnnotations":{"#);
        json::key(&mut out, AUDIT_ANNOTATION);
        json::string(&mut out, report);
        out.push(b'}');
    }
    if !answer.warnings.is_empty() {
        out.extend_from_slice(br#","warnings":["#);
        for (n, warning) in answer.warnings.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            json::string(&mut out, warning);
        }
        out.push(b']');
    }
    if let Some(patch) = answer.patch {
        out.extend_from_slice(br#","patch":"#);
        json::base64_string(&mut out, patch);
    }
    out.extend_from_slice(b"}}");
    out
}
