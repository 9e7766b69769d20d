//! A strict, pull-style JSON reader over a request body.
//!
//! Layer: pure (no I/O). The webhook reads a handful of fields from bodies that
//! are mostly other things (managed fields, the rest of the spec), so the
//! decoder ([`super::decode`]) asks this reader for an object's keys, a
//! string or a bool, and skips every other value. Skipping still checks the
//! whole grammar (RFC 8259: strings without raw control characters, valid
//! escapes, number syntax, literals), so a body that is not JSON is refused
//! wherever the fault is, as serde_json refused it. Skipping does not
//! recurse (a stack of open brackets instead), so 7 MiB of `[` costs memory
//! in proportion to the body, never the thread's stack.
//!
//! Strings that are read are borrowed from the body unless they hold escapes,
//! and checked as UTF-8 (the whole body at once, and a string at a time only
//! when the body is not all UTF-8); skipped strings and keys are not decoded
//! at all (as with serde_json's slice reader, a stray non-UTF-8 byte in a
//! value detour never reads is not its concern). The hot path keeps errors
//! out of line and boxed, and finds a string's end 16 bytes at a time
//! ([`special_byte`]).

use std::borrow::Cow;
use std::fmt;

use detour_serve::json_scan::special_byte;

/// A JSON string, borrowed from the body when it has no escapes.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Text<'a>(pub Cow<'a, str>);

/// Debug-formatted as the string it is (`"nginx:1.25"`), as a `String` would
/// be: warnings quote images with `{:?}`.
impl fmt::Debug for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self)
    }
}

impl<'a> From<&'a str> for Text<'a> {
    fn from(text: &'a str) -> Self {
        Text(Cow::Borrowed(text))
    }
}

impl From<String> for Text<'_> {
    fn from(text: String) -> Self {
        Text(Cow::Owned(text))
    }
}

impl std::ops::Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// Why a body could not be read, and where. Boxed: every read returns a
/// `Result`, and one pointer keeps those in registers on the hot path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(Box<ErrorDetail>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct ErrorDetail {
    message: Cow<'static, str>,
    line: usize,
    column: usize,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ErrorDetail {
            message,
            line,
            column,
        } = &*self.0;
        write!(f, "{message} at line {line} column {column}")
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// A position to come back to (see [`Reader::rewind`]).
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    at: usize,
}

pub struct Reader<'a> {
    body: &'a [u8],
    /// The body as text when all of it is UTF-8 (nearly always): read
    /// strings are then sliced from it without a check each.
    text: Option<&'a str>,
    at: usize,
    /// The closing brackets of the containers [`Reader::skip`] is inside;
    /// kept between calls so that its allocation is reused.
    open: Vec<u8>,
}

impl<'a> Reader<'a> {
    pub fn new(body: &'a [u8]) -> Self {
        Reader {
            body,
            text: std::str::from_utf8(body).ok(),
            at: 0,
            open: Vec::new(),
        }
    }

    /// An error at the current position (line and column counted only now,
    /// on the error path).
    pub fn error(&self, message: impl Into<Cow<'static, str>>) -> Error {
        self.error_at(message.into())
    }

    #[cold]
    #[inline(never)]
    fn error_at(&self, message: Cow<'static, str>) -> Error {
        let before = &self.body[..self.at.min(self.body.len())];
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        Error(Box::new(ErrorDetail {
            message,
            line: 1 + before.iter().filter(|&&b| b == b'\n').count(),
            column: before.len() - line_start,
        }))
    }

    pub fn mark(&self) -> Mark {
        Mark { at: self.at }
    }

    pub fn rewind(&mut self, mark: Mark) {
        self.at = mark.at;
    }

    #[inline]
    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.body.get(self.at) {
            self.at += 1;
        }
    }

    /// The next byte that is not whitespace, not consumed.
    #[inline]
    fn peek(&mut self) -> Option<u8> {
        // The apiserver writes compact JSON: whitespace is the rare case.
        match self.body.get(self.at) {
            Some(b' ' | b'\t' | b'\n' | b'\r') => {
                self.skip_whitespace();
                self.body.get(self.at).copied()
            }
            next => next.copied(),
        }
    }

    /// An error for `found` where `expected` was wanted.
    #[cold]
    #[inline(never)]
    fn unexpected(&self, expected: &str) -> Error {
        match self.body.get(self.at) {
            None => self.error(format!("end of input, expected {expected}")),
            Some(_) => self.error(format!("expected {expected}")),
        }
    }

    #[inline]
    fn expect(&mut self, byte: u8, what: &str) -> Result<()> {
        if self.peek() == Some(byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(self.unexpected(what))
        }
    }

    /// Reads an object, calling `field` with each key; `field` reads or
    /// skips the value. The key is the raw bytes between the quotes when
    /// they hold no escape (the common case, compared without decoding),
    /// else the decoded bytes; neither is checked as UTF-8 yet (see
    /// [`Reader::utf8`]).
    #[inline]
    pub fn object(&mut self, mut field: impl FnMut(&mut Self, &[u8]) -> Result<()>) -> Result<()> {
        self.sequence(b'{', "an object", |r| {
            let (start, decoded) = r.quoted("a key (a string)")?;
            let raw = &r.body[start..r.at - 1];
            r.expect(b':', "`:`")?;
            field(r, decoded.as_deref().unwrap_or(raw))
        })
    }

    /// Reads an array, calling `item` for each element.
    #[inline]
    pub fn array(&mut self, item: impl FnMut(&mut Self) -> Result<()>) -> Result<()> {
        self.sequence(b'[', "an array", item)
    }

    /// `open`, then elements separated by commas, then the closing bracket.
    #[inline]
    fn sequence(
        &mut self,
        open: u8,
        what: &str,
        mut element: impl FnMut(&mut Self) -> Result<()>,
    ) -> Result<()> {
        self.expect(open, what)?;
        let close = closing(open);
        if self.peek() == Some(close) {
            self.at += 1;
            return Ok(());
        }
        loop {
            element(self)?;
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(c) if c == close => {
                    self.at += 1;
                    return Ok(());
                }
                _ => return Err(self.unexpected(after_element(close))),
            }
        }
    }

    /// Consumes a `null` if one comes next.
    #[inline]
    pub fn null(&mut self) -> Result<bool> {
        if self.peek() == Some(b'n') {
            self.literal(b"null")?;
            return Ok(true);
        }
        Ok(false)
    }

    pub fn bool(&mut self) -> Result<bool> {
        match self.peek() {
            Some(b't') => self.literal(b"true").map(|()| true),
            Some(b'f') => self.literal(b"false").map(|()| false),
            _ => Err(self.unexpected("a boolean")),
        }
    }

    /// Reads a string, decoded and checked as UTF-8.
    #[inline]
    pub fn string(&mut self) -> Result<Text<'a>> {
        let (start, decoded) = self.quoted("a string")?;
        let raw = &self.body[start..self.at - 1];
        let text = if let Some(decoded) = decoded {
            String::from_utf8(decoded).ok().map(Cow::Owned)
        } else {
            // The quotes are ASCII, so in UTF-8 text they are at character
            // boundaries and the slice is always there.
            match self.text {
                Some(text) => text.get(start..self.at - 1),
                None => std::str::from_utf8(raw).ok(),
            }
            .map(Cow::Borrowed)
        };
        match text {
            Some(text) => Ok(Text(text)),
            None => Err(self.not_utf8(start - 1)),
        }
    }

    /// The error for a read string that is not UTF-8, reported at its
    /// opening quote (at `quote`).
    #[cold]
    fn not_utf8(&mut self, quote: usize) -> Error {
        self.at = quote;
        self.error("a string that is not UTF-8")
    }

    /// An object key's bytes (as [`Reader::object`] hands them over) as
    /// text, checked as UTF-8.
    pub fn key_text<'k>(&self, bytes: &'k [u8]) -> Result<&'k str> {
        std::str::from_utf8(bytes).map_err(|_| self.error("a key that is not UTF-8"))
    }

    /// Skips one value of any kind, checking its grammar.
    pub fn skip(&mut self) -> Result<()> {
        let skipped = self.skip_value();
        self.open.clear();
        skipped
    }

    fn skip_value(&mut self) -> Result<()> {
        loop {
            // A value.
            match self.peek() {
                Some(b'"') => {
                    self.at += 1;
                    self.scan_string()?;
                }
                Some(open @ (b'{' | b'[')) => {
                    self.at += 1;
                    let close = closing(open);
                    if self.peek() == Some(close) {
                        self.at += 1;
                    } else {
                        self.open.push(close);
                        if close == b'}' {
                            self.skip_key()?;
                        }
                        continue;
                    }
                }
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                Some(b'-' | b'0'..=b'9') => self.number()?,
                _ => return Err(self.unexpected("a value")),
            }
            // What follows it: the next element, or the end of containers.
            loop {
                let Some(&close) = self.open.last() else {
                    return Ok(());
                };
                match self.peek() {
                    Some(b',') => {
                        self.at += 1;
                        if close == b'}' {
                            self.skip_key()?;
                        }
                        break;
                    }
                    Some(c) if c == close => {
                        self.at += 1;
                        self.open.pop();
                    }
                    _ => return Err(self.unexpected(after_element(close))),
                }
            }
        }
    }

    /// Skips an object key and its `:`.
    fn skip_key(&mut self) -> Result<()> {
        if self.peek() != Some(b'"') {
            return Err(self.unexpected("a key (a string)"));
        }
        self.at += 1;
        self.scan_string()?;
        self.expect(b':', "`:`")
    }

    /// Checks that nothing but whitespace follows.
    pub fn end(&mut self) -> Result<()> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(self.error("trailing characters")),
        }
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<()> {
        if self.body[self.at..].starts_with(word) {
            self.at += word.len();
            Ok(())
        } else {
            Err(self.error("expected a value"))
        }
    }

    fn number(&mut self) -> Result<()> {
        let digits = |reader: &mut Self| {
            let start = reader.at;
            while let Some(b'0'..=b'9') = reader.body.get(reader.at) {
                reader.at += 1;
            }
            if reader.at == start {
                Err(reader.error("invalid number"))
            } else {
                Ok(())
            }
        };
        if self.body.get(self.at) == Some(&b'-') {
            self.at += 1;
        }
        if self.body.get(self.at) == Some(&b'0') {
            self.at += 1;
            if let Some(b'0'..=b'9') = self.body.get(self.at) {
                return Err(self.error("invalid number (leading zero)"));
            }
        } else {
            digits(self)?;
        }
        if self.body.get(self.at) == Some(&b'.') {
            self.at += 1;
            digits(self)?;
        }
        if let Some(b'e' | b'E') = self.body.get(self.at) {
            self.at += 1;
            if let Some(b'+' | b'-') = self.body.get(self.at) {
                self.at += 1;
            }
            digits(self)?;
        }
        Ok(())
    }

    /// Reads the string that comes next (`what` names it in the error when
    /// something else does): where its raw bytes start (they end before the
    /// closing quote, at `self.at - 1`), and its decoded bytes when it holds
    /// escapes. Object keys and read strings both come through here.
    #[inline(always)]
    fn quoted(&mut self, what: &str) -> Result<(usize, Option<Vec<u8>>)> {
        if self.peek() != Some(b'"') {
            return Err(self.unexpected(what));
        }
        self.at += 1;
        let start = self.at;
        let decoded = if self.scan_string()? {
            Some(self.unescape(start)?)
        } else {
            None
        };
        Ok((start, decoded))
    }

    /// The decoded bytes of the checked string whose raw bytes run from
    /// `start` to its closing quote (an error in them is reported at `start`).
    #[cold]
    fn unescape(&mut self, start: usize) -> Result<Vec<u8>> {
        let body = self.body;
        unescape(&body[start..self.at - 1]).map_err(|message| {
            self.at = start;
            self.error(message)
        })
    }

    /// Moves past the closing quote of a string whose opening quote is
    /// consumed, checking it; says whether it holds escapes.
    #[inline(always)]
    fn scan_string(&mut self) -> Result<bool> {
        // Most strings have no escape: one scan to the closing quote, inline;
        // the rest out of line.
        self.at = special_byte(self.body, self.at);
        if self.body.get(self.at) == Some(&b'"') {
            self.at += 1;
            return Ok(false);
        }
        self.scan_string_rest()
    }

    /// [`Reader::scan_string`] from a byte that is not a closing quote.
    #[inline(never)]
    fn scan_string_rest(&mut self) -> Result<bool> {
        let mut escaped = false;
        loop {
            match self.body.get(self.at) {
                Some(b'"') => {
                    self.at += 1;
                    return Ok(escaped);
                }
                Some(b'\\') => {
                    escaped = true;
                    self.at += 1;
                    self.scan_escape()?;
                }
                Some(_) => return Err(self.error("control character in a string")),
                None => return Err(self.error("end of input in a string")),
            }
            self.at = special_byte(self.body, self.at);
        }
    }

    /// Checks the escape after a `\` (its code points are checked only when
    /// the string is decoded).
    fn scan_escape(&mut self) -> Result<()> {
        match self.body.get(self.at) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                self.at += 1;
                Ok(())
            }
            Some(b'u') => match self.body.get(self.at + 1..self.at + 5) {
                Some(hex) if hex.iter().all(u8::is_ascii_hexdigit) => {
                    self.at += 5;
                    Ok(())
                }
                _ => Err(self.error("invalid \\u escape")),
            },
            _ => Err(self.error("invalid escape")),
        }
    }
}

/// The bracket that closes `open`.
fn closing(open: u8) -> u8 {
    if open == b'{' {
        b'}'
    } else {
        b']'
    }
}

/// What may follow an element of the container that `close` closes.
fn after_element(close: u8) -> &'static str {
    if close == b'}' {
        "`,` or `}`"
    } else {
        "`,` or `]`"
    }
}

/// Decodes the escapes of a checked string's raw bytes.
fn unescape(raw: &[u8]) -> std::result::Result<Vec<u8>, &'static str> {
    let mut out = Vec::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(at) = rest.iter().position(|&b| b == b'\\') {
        out.extend_from_slice(&rest[..at]);
        let (escape, after) = rest[at + 1..].split_first().ok_or("invalid escape")?;
        rest = after;
        let byte = match escape {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let (unit, after) = hex4(rest)?;
                rest = after;
                let c = match unit {
                    0xd800..=0xdbff => {
                        let low = rest
                            .strip_prefix(b"\\u")
                            .ok_or("lone leading surrogate in a \\u escape")?;
                        let (low, after) = hex4(low)?;
                        if !(0xdc00..=0xdfff).contains(&low) {
                            return Err("lone leading surrogate in a \\u escape");
                        }
                        rest = after;
                        0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00)
                    }
                    0xdc00..=0xdfff => return Err("lone trailing surrogate in a \\u escape"),
                    unit => unit,
                };
                let c = char::from_u32(c).ok_or("invalid \\u escape")?;
                out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                continue;
            }
            _ => return Err("invalid escape"),
        };
        out.push(byte);
    }
    out.extend_from_slice(rest);
    Ok(out)
}

/// Four hex digits as a code unit, and what follows them.
fn hex4(bytes: &[u8]) -> std::result::Result<(u32, &[u8]), &'static str> {
    let hex = bytes.get(..4).ok_or("invalid \\u escape")?;
    let text = std::str::from_utf8(hex).map_err(|_| "invalid \\u escape")?;
    let unit = u32::from_str_radix(text, 16).map_err(|_| "invalid \\u escape")?;
    Ok((unit, &bytes[4..]))
}

#[cfg(test)]
mod tests;
