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
    text.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20)
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
