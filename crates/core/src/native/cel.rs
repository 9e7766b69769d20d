//! CEL literals: strings, lists and maps written so that the apiserver's
//! CEL parser reads back exactly the values given.
//!
//! Layer: pure core. Every literal the native policy embeds goes through
//! here, so no rule text (a name, a host) can end a string early or inject
//! an expression.

use std::fmt::Write as _;

/// `text` as a double-quoted CEL string literal.
pub fn string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `[a, b, ...]` of already-written CEL expressions.
pub fn list<I, S>(items: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut out = String::from("[");
    for (n, item) in items.into_iter().enumerate() {
        if n > 0 {
            out.push_str(", ");
        }
        out.push_str(item.as_ref());
    }
    out.push(']');
    out
}

/// A list of string literals.
pub fn string_list<I, S>(items: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    list(items.into_iter().map(|s| string(s.as_ref())))
}

/// `{k: v, ...}` of already-written CEL expressions.
pub fn map<I>(entries: I) -> String
where
    I: IntoIterator<Item = (String, String)>,
{
    let mut out = String::from("{");
    for (n, (k, v)) in entries.into_iter().enumerate() {
        if n > 0 {
            out.push_str(", ");
        }
        out.push_str(&k);
        out.push_str(": ");
        out.push_str(&v);
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_escape_what_would_end_or_bend_them() {
        assert_eq!(string("plain"), r#""plain""#);
        assert_eq!(string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(string("x' + 'y"), r#""x' + 'y""#);
        assert_eq!(string("l1\nl2\u{1}"), r#""l1\nl2\x01""#);
        assert_eq!(string("ünï"), "\"ünï\"");
    }

    #[test]
    fn aggregates() {
        assert_eq!(list(Vec::<String>::new()), "[]");
        assert_eq!(list(["1", "-2"]), "[1, -2]");
        assert_eq!(string_list(["a", "b"]), r#"["a", "b"]"#);
        assert_eq!(map(Vec::new()), "{}");
    }
}
