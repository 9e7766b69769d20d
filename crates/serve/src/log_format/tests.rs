//! The fast formatter against tracing-subscriber's JSON formatter: the same
//! lines for every kind of field, timestamps aside (checked on their own).

use std::io;
use std::sync::{Arc, Mutex};

use tracing_subscriber::fmt::format::JsonFields;
use tracing_subscriber::fmt::time::FormatTime;

use super::*;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl io::Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn lines(&self) -> Vec<String> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

#[derive(Debug)]
struct Failure;

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("it \"broke\"\n badly")
    }
}

impl std::error::Error for Failure {}

/// Every kind of field tracing records, with text that needs escaping.
fn events() {
    tracing::info!(
        uid = "plain",
        name = "quote \" backslash \\ tab\t ünï ☃",
        "admission"
    );
    tracing::warn!(
        status = 400u16,
        count = -3i64,
        big = u64::MAX,
        ok = true,
        "refused {}",
        "x\"y"
    );
    tracing::error!(
        ratio = 1.5f64,
        nan = f64::NAN,
        inf = f64::INFINITY,
        tiny = 1e-300f64,
        "floats"
    );
    tracing::debug!(shown = %"display \u{1} text", debugged = ?vec!["a", "b\""], "formatting");
    let failure = Failure;
    tracing::trace!(
        error = &failure as &(dyn std::error::Error + 'static),
        r#type = "raw",
        wide = 1u128 << 100,
        "errors"
    );
    tracing::info!(message = "explicit message field");
    tracing::info!("");
    let span = tracing::info_span!("outer", key = "value");
    span.in_scope(|| tracing::info!(inner = 1, "inside a span"));
    tracing::info!(parent: &span, "with an explicit parent");
}

fn lines(fast: bool) -> Vec<String> {
    let capture = Capture::default();
    let writer = capture.clone();
    let builder = tracing_subscriber::fmt()
        .with_max_level(Level::TRACE)
        .with_writer(move || writer.clone());
    if fast {
        let subscriber = builder
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines::default())
            .finish();
        tracing::subscriber::with_default(subscriber, events);
    } else {
        let subscriber = builder.json().flatten_event(true).finish();
        tracing::subscriber::with_default(subscriber, events);
    }
    capture.lines()
}

/// The line with its timestamp value replaced, after checking its shape.
fn without_timestamp(line: &str) -> String {
    let prefix = r#"{"timestamp":""#;
    assert!(line.starts_with(prefix), "{line}");
    let stamp = &line[prefix.len()..prefix.len() + 27];
    let shape: String = stamp
        .chars()
        .map(|c| if c.is_ascii_digit() { '9' } else { c })
        .collect();
    assert_eq!(shape, "9999-99-99T99:99:99.999999Z", "{line}");
    format!("{prefix}T{}", &line[prefix.len() + 27..])
}

#[test]
fn lines_equal_the_stock_json_formatter() {
    let fast = lines(true);
    let stock = lines(false);
    assert_eq!(fast.len(), 9, "{fast:#?}");
    assert_eq!(fast.len(), stock.len());
    for (fast, stock) in fast.iter().zip(&stock) {
        assert_eq!(without_timestamp(fast), without_timestamp(stock));
        // Each line is one JSON object.
        serde_json::from_str::<serde_json::Value>(fast).unwrap();
    }
    assert!(fast[0].contains(r#""name":"quote \" backslash \\ tab\t ünï ☃""#));
    assert!(
        fast[7].contains(r#""span":{"#),
        "a span's event went to the stock formatter"
    );
}

#[test]
fn timestamps_are_utc_calendar_dates() {
    for (seconds, micros, expected) in [
        (0, 0, "1970-01-01T00:00:00.000000Z"),
        (951_782_400, 7, "2000-02-29T00:00:00.000007Z"),
        (1_709_251_199, 999_999, "2024-02-29T23:59:59.999999Z"),
        (1_780_000_000, 123_456, "2026-05-28T20:26:40.123456Z"),
        (4_102_444_799, 500_000, "2099-12-31T23:59:59.500000Z"),
    ] {
        let mut line = String::new();
        timestamp(&mut line, seconds, micros);
        assert_eq!(line, expected);
    }
    // And the clock's now, as the stock formatter writes it (retried across
    // a second boundary).
    for _ in 0..5 {
        let mut stock = String::new();
        StockTime.format_time(&mut Writer::new(&mut stock)).unwrap();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let mut ours = String::new();
        timestamp(&mut ours, now.as_secs(), now.subsec_micros());
        if stock[..19] == ours[..19] {
            return;
        }
    }
    panic!("the date and time never matched the stock formatter's");
}

/// A field whose Debug logs while its line is being written.
struct Logs;

impl fmt::Debug for Logs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        tracing::info!(nested = true, "inner");
        f.write_str("outer value")
    }
}

#[test]
fn a_field_that_logs_leaves_the_line_whole() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .fmt_fields(JsonFields::new())
        .event_format(JsonLines::default())
        .finish();
    tracing::subscriber::with_default(subscriber, || tracing::info!(field = ?Logs, "outer"));
    // tracing does not dispatch an event from inside another on the same
    // thread, so only the outer line is written, and it is whole.
    let lines = capture.lines();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let line: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(line["message"], "outer");
    assert_eq!(line["field"], "outer value");
}
