//! JSON log lines, written the way tracing-subscriber's JSON formatter
//! writes them, at a fraction of its cost.
//!
//! Layer: runtime wiring. Every patched admission logs one line; under load
//! the stock formatter (a serde map serializer over a `fmt::Write` adapter,
//! escaping byte by byte, the timestamp through `Display`) was one of the
//! largest costs of an admission. This one writes the same bytes into one
//! reused buffer: strings that need no escape are copied as they are, the
//! timestamp's date and time are computed, not formatted. Events inside spans
//! (none are detour's; a dependency's could be) and events bridged from the
//! `log` crate are handed to the stock formatter, which knows how to write
//! spans and log metadata. A test compares the two on every kind of field.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::format::{Format, Json, Writer};
use tracing_subscriber::fmt::time::SystemTime as StockTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::json_scan::needs_escape;

/// `tracing_subscriber::fmt().json().flatten_event(true)`'s lines.
pub struct JsonLines {
    stock: Format<Json, StockTime>,
}

impl Default for JsonLines {
    fn default() -> Self {
        JsonLines {
            stock: tracing_subscriber::fmt::format().json().flatten_event(true),
        }
    }
}

thread_local! {
    static LINE: RefCell<String> = const { RefCell::new(String::new()) };
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let in_span =
            event.parent().is_some() || (event.is_contextual() && ctx.lookup_current().is_some());
        let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH);
        let (false, false, Ok(since_epoch)) = (in_span, event.is_log(), since_epoch) else {
            return self.stock.format_event(ctx, writer, event);
        };
        let mut write_line = |line: &mut String| {
            line.clear();
            line.push_str(r#"{"timestamp":""#);
            timestamp(line, since_epoch.as_secs(), since_epoch.subsec_micros());
            line.push_str(r#"","level":""#);
            line.push_str(level(event.metadata().level()));
            line.push('"');
            event.record(&mut Fields { line });
            line.push_str(r#","target":"#);
            string(line, event.metadata().target());
            line.push_str("}\n");
            writer.write_str(line)
        };
        // The thread's buffer; a fresh one should it be in use (tracing does
        // not dispatch nested events today, so that is only a safeguard).
        LINE.with(|buffer| match buffer.try_borrow_mut() {
            Ok(mut line) => write_line(&mut line),
            Err(_) => write_line(&mut String::new()),
        })
    }
}

fn level(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARN",
        Level::INFO => "INFO",
        Level::DEBUG => "DEBUG",
        Level::TRACE => "TRACE",
    }
}

/// Each field as `,"name":value`, typed as tracing_serde types it.
struct Fields<'a> {
    line: &'a mut String,
}

impl Fields<'_> {
    fn key(&mut self, field: &Field) {
        self.line.push(',');
        string(self.line, field.name());
        self.line.push(':');
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        string(self.line, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.line.push_str(if value { "true" } else { "false" });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        self.line.push_str(itoa::Buffer::new().format(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        self.line.push_str(itoa::Buffer::new().format(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        // serde_json's own float text (and `null` for NaN and infinities).
        self.line
            .push_str(&serde_json::to_string(&value).unwrap_or_else(|_| "null".into()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.key(field);
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        string(self.line, &text);
    }
}

/// Appends `text` as serde_json writes a string.
fn string(line: &mut String, text: &str) {
    if needs_escape(text) {
        // A &str always serializes.
        line.push_str(&serde_json::to_string(text).unwrap_or_default());
    } else {
        line.push('"');
        line.push_str(text);
        line.push('"');
    }
}

/// `YYYY-MM-DDTHH:MM:SS.uuuuuuZ` (UTC), as tracing-subscriber's `SystemTime`
/// writes it.
fn timestamp(line: &mut String, unix_seconds: u64, micros: u32) {
    let (year, month, day) = civil_from_days(unix_seconds / 86_400);
    let seconds_of_day = unix_seconds % 86_400;
    let mut number = |separator: Option<char>, value: u64, width: u32| {
        if let Some(separator) = separator {
            line.push(separator);
        }
        // Zero-padded: the digits of value + 10^width after the leading 1.
        let padded = 10u64.pow(width) + value % 10u64.pow(width);
        line.push_str(&itoa::Buffer::new().format(padded)[1..]);
    };
    number(None, year, 4);
    number(Some('-'), month, 2);
    number(Some('-'), day, 2);
    number(Some('T'), seconds_of_day / 3600, 2);
    number(Some(':'), seconds_of_day % 3600 / 60, 2);
    number(Some(':'), seconds_of_day % 60, 2);
    number(Some('.'), u64::from(micros), 6);
    line.push('Z');
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`, for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests;
