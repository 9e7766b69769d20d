//! The few JSON shapes the webhook writes, appended to one buffer.
//!
//! Layer: domain (no I/O). Strings go through serde_json's own escaper, so the bytes
//! are exactly those a serde encoder writes (a test compares them with the
//! serde-encoded response for a corpus of Pods); only the structure around
//! them, which is fixed, is written here. The scan for the bytes JSON must
//! escape ([`needs_escape`]) lives in `detour_serve::json_scan`, shared with
//! the reader (which looks for the same bytes to find a string's end) and
//! the log formatter.

use detour_serve::json_scan::needs_escape;

/// Appends `text` as a JSON string, escaped.
pub fn string(out: &mut Vec<u8>, text: &str) {
    if !needs_escape(text) {
        out.reserve(text.len() + 2);
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
        return;
    }
    // Writing into a Vec cannot fail, and a &str always serializes.
    let _ = serde::Serialize::serialize(text, &mut serde_json::Serializer::new(&mut *out));
}

/// Appends `"key":` (the key is escaped).
pub fn key(out: &mut Vec<u8>, key: &str) {
    string(out, key);
    out.push(b':');
}

/// Appends the JSON object of `entries` (string keys and values), itself
/// as a JSON string: what an annotation holding a JSON map is.
pub fn object_as_string(out: &mut Vec<u8>, entries: &[(&str, &str)]) {
    let plain = entries
        .iter()
        .all(|(k, v)| !needs_escape(k) && !needs_escape(v));
    if !plain {
        // Escapes inside escapes: serde_json writes the object, and the
        // result is escaped as a string.
        let map: serde_json::Map<String, serde_json::Value> = entries
            .iter()
            .map(|(k, v)| (k.to_string(), (*v).into()))
            .collect();
        string(out, &serde_json::Value::Object(map).to_string());
        return;
    }
    // Nothing to escape but the quotes the object itself writes.
    out.extend_from_slice(b"\"{");
    for (n, (k, v)) in entries.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"\\\"");
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b"\\\":\\\"");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\\\"");
    }
    out.extend_from_slice(b"}\"");
}

/// Appends `bytes` in standard base64 (with padding) as a JSON string.
///
/// base64-simd picks the widest vector unit the CPU has at run time (AVX2
/// here): a 60-container Pod's patch took 2.2 µs with the scalar `base64`
/// engine.
pub fn base64_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    base64_simd::STANDARD.encode_append(bytes, out);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    #[test]
    fn strings_are_escaped_as_serde_json_does() {
        for text in [
            "plain",
            "quote \" backslash \\ /",
            "tab\tnl\n\u{1}",
            "ünï ☃ 😀",
            "",
        ] {
            let mut out = Vec::new();
            string(&mut out, text);
            assert_eq!(out, serde_json::to_vec(text).unwrap());
        }
    }

    #[test]
    fn objects_as_strings_are_serde_json_twice() {
        for entries in [
            vec![],
            vec![("c0", "registry.k8s.io/pause:3.9")],
            vec![("a", "x:1"), ("b", "y@sha256:00")],
            vec![("q\"uote", "v"), ("t\tab", "ü☃")],
            vec![("k", "back\\slash")],
        ] {
            let map: std::collections::BTreeMap<&str, &str> = entries.iter().copied().collect();
            let inner = serde_json::to_string(&map).unwrap();
            let mut out = Vec::new();
            object_as_string(&mut out, &entries);
            assert_eq!(out, serde_json::to_vec(&inner).unwrap(), "{entries:?}");
        }
    }

    #[test]
    fn base64_matches_the_engine() {
        // Every length up to 300 (the vector paths take 24- and 48-byte
        // blocks, with scalar heads and tails) and a patch-sized input, of
        // all byte values.
        let all: Vec<u8> = (0..20_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let inputs = (0..300)
            .map(|n| &all[n..2 * n])
            .chain([&all[..], b"[{\"op\":\"replace\"}]"]);
        for bytes in inputs {
            let mut out = b"x".to_vec();
            base64_string(&mut out, bytes);
            let expected = format!(
                "x\"{}\"",
                base64::engine::general_purpose::STANDARD.encode(bytes)
            );
            assert_eq!(String::from_utf8(out).unwrap(), expected);
        }
    }
}
