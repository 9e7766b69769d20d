//! The few JSON shapes the webhook writes, appended to one buffer.
//!
//! Layer: pure core. Strings go through serde_json's own escaper, so the bytes
//! are exactly those a serde encoder writes (a test compares them with the
//! serde-encoded response for a corpus of Pods); only the structure around
//! them, which is fixed, is written here.

/// Whether serde_json would escape anything in `text`: it escapes exactly
/// `"`, `\` and control characters, and most of what detour writes
/// (references, names, pointers, log fields) has none; a scan for them is
/// much faster than escaping byte by byte.
pub fn needs_escape(text: &str) -> bool {
    // Whole chunks without an early exit inside, which the compiler turns
    // into vector compares (log lines carry kilobytes of references).
    let special = |b: &u8| (*b == b'"') | (*b == b'\\') | (*b < 0x20);
    let mut chunks = text.as_bytes().chunks_exact(32);
    let found = chunks
        .by_ref()
        .any(|chunk| chunk.iter().fold(false, |seen, b| seen | special(b)));
    found || chunks.remainder().iter().any(special)
}

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
pub fn base64_string(out: &mut Vec<u8>, bytes: &[u8]) {
    use base64::Engine as _;
    out.push(b'"');
    let start = out.len();
    let len = base64::encoded_len(bytes.len(), true).unwrap_or(0);
    out.resize(start + len, 0);
    match base64::engine::general_purpose::STANDARD.encode_slice(bytes, &mut out[start..]) {
        Ok(written) => out.truncate(start + written),
        // Only on a length overflow, which a 7 MiB body cannot reach.
        Err(_) => out.truncate(start),
    }
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
    fn needs_escape_finds_a_special_byte_anywhere() {
        let plain = "registry.k8s.io/ingress-nginx/controller:v1.9.4 ünï ".repeat(5);
        assert!(!needs_escape(&plain));
        for at in [0, 1, 31, 32, 33, 100, plain.len()] {
            for special in ['"', '\\', '\n', '\u{1f}', '\0'] {
                let mut text = plain.clone();
                text.insert(at, special);
                assert!(needs_escape(&text), "{special:?} at {at}");
            }
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
        for bytes in [&b""[..], b"a", b"ab", b"abc", b"[{\"op\":\"replace\"}]"] {
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
