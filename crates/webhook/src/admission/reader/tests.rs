//! The reader against serde_json, the parser it replaced: the same bodies are
//! accepted and refused, and read strings decode to the same text.

use super::*;
use serde::de::IgnoredAny;

fn reader_accepts(body: &[u8]) -> bool {
    let mut reader = Reader::new(body);
    reader.skip().and_then(|()| reader.end()).is_ok()
}

fn serde_accepts(body: &[u8]) -> bool {
    serde_json::from_slice::<IgnoredAny>(body).is_ok()
}

const DOCUMENTS: &[&str] = &[
    r#"{"a": [1, -2.5e+3, 0, -0.0, 1E9, true, false, null, "s\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00"], "b": {}, "c": [], "d": {"e": [{"f": ""}]}}"#,
    r#"[ "plain ascii text of some length", "ünïcödé ☃", 12345678901234567890, {"k": "v", "k": "w"} ]"#,
    "  \t\r\n {\"x\" : 1 }  \n",
    r#""just a string""#,
    "-12.5",
    "null",
];

/// Every single-byte edit of every document: each is accepted by the reader
/// exactly when serde_json accepts it.
#[test]
fn accepts_and_refuses_what_serde_json_does() {
    let replacements: &[u8] = b"\"\\{}[],:0123-+.eEuntf \t\n\x01\x1f\x7fa/";
    let mut checked = 0;
    let mut refused = 0;
    for document in DOCUMENTS {
        let bytes = document.as_bytes();
        let mut variants = vec![bytes.to_vec()];
        for at in 0..bytes.len() {
            let mut deleted = bytes.to_vec();
            deleted.remove(at);
            variants.push(deleted);
            for &b in replacements {
                let mut replaced = bytes.to_vec();
                replaced[at] = b;
                variants.push(replaced);
                let mut inserted = bytes.to_vec();
                inserted.insert(at, b);
                variants.push(inserted);
            }
        }
        for variant in variants {
            let expected = serde_accepts(&variant);
            assert_eq!(
                reader_accepts(&variant),
                expected,
                "{:?}",
                String::from_utf8_lossy(&variant)
            );
            checked += 1;
            refused += usize::from(!expected);
        }
    }
    assert!(
        checked > 10_000 && refused > checked / 4,
        "{checked} checked, {refused} refused"
    );
}

#[test]
fn strings_decode_as_serde_json_decodes_them() {
    for string in [
        r#""plain""#,
        r#""""#,
        r#""esc\u0061ped \"q\" \\ \/ \b\f\n\r\t""#,
        r#""\ud83d\ude00 \u00e9 \u2603""#,
        "\"raw ünï ☃ 😀\"",
        r#""\ud83d""#,
        r#""\ude00""#,
        r#""\ud83d\u0041""#,
        r#""\ud83dx""#,
        "\"\u{7f}\"",
        "\"a\tb\"",
        "\"\\x\"",
        "\"\\u12\"",
        "\"open",
    ] {
        let expected = serde_json::from_str::<String>(string).ok();
        let got = Reader::new(string.as_bytes()).string().ok();
        assert_eq!(got.as_deref(), expected.as_deref(), "{string}");
    }
    // Borrowed unless there is an escape to decode.
    let mut reader = Reader::new(br#"["plain", "esc\u0061ped"]"#);
    let mut texts = vec![];
    reader.array(|r| r.string().map(|t| texts.push(t))).unwrap();
    assert!(matches!(texts[0].0, Cow::Borrowed("plain")));
    assert!(matches!(&texts[1].0, Cow::Owned(s) if s == "escaped"));
    // Not UTF-8: refused when read, as serde_json's slice reader refuses it.
    assert!(Reader::new(b"\"\xff\"").string().is_err());
    assert!(serde_json::from_slice::<String>(b"\"\xff\"").is_err());
}

#[test]
fn nesting_has_no_limit_and_uses_no_stack() {
    // serde_json's skipping of ignored values has no depth limit either.
    for depth in [1, 127, 128, 129, 100_000] {
        let body = format!("{}0{}", "[{\"k\":".repeat(depth), "}]".repeat(depth));
        assert!(serde_accepts(body.as_bytes()), "depth {depth}");
        assert!(reader_accepts(body.as_bytes()), "depth {depth}");
    }
    // Unclosed, a million levels deep: refused, and the thread's stack is
    // never involved.
    assert!(!reader_accepts("[".repeat(1 << 20).as_bytes()));
    assert!(!reader_accepts("{\"a\":".repeat(1 << 18).as_bytes()));
}

#[test]
fn text_that_is_not_utf8_is_refused_where_it_starts() {
    let mut reader = Reader::new(b"{\"a\":\n  \"ok \xff\"}");
    let error = reader
        .object(|r, _| r.string().map(drop))
        .unwrap_err()
        .to_string();
    assert_eq!(error, "a string that is not UTF-8 at line 2 column 2");
    let mut reader = Reader::new(b"{\"k\xff\":\"v\"}");
    let error = reader
        .object(|r, key| {
            r.key_text(key)?;
            r.skip()
        })
        .unwrap_err()
        .to_string();
    assert_eq!(error, "a key that is not UTF-8 at line 1 column 6");
}

#[test]
fn errors_say_where() {
    let mut reader = Reader::new(b"{\n  \"a\": tru }");
    let error = reader.skip().unwrap_err().to_string();
    assert_eq!(error, "expected a value at line 2 column 7");
    let mut reader = Reader::new(b"{} x");
    reader.skip().unwrap();
    assert_eq!(
        reader.end().unwrap_err().to_string(),
        "trailing characters at line 1 column 3"
    );
}
