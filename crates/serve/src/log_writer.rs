//! Log lines gathered in memory and written out in batches.
//!
//! Layer: runtime wiring. Logging formats each line on the thread that logs
//! it; this writer only appends the finished line to a shared buffer (one
//! short lock) and a background thread writes the buffer out every
//! [`FLUSH_INTERVAL`], or at once when it grows past [`FLUSH_BYTES`]. A
//! channel to a writer thread, as tracing-appender has, wakes that thread for
//! nearly every line under load: profiles of the webhook showed those
//! cross-thread wake-ups among the largest costs of an admission.
//!
//! Bounded: when the output cannot keep up and [`MAX_PENDING_BYTES`] are
//! waiting, new lines are dropped and counted, and the count is written out
//! as a line of its own once there is room. Dropping the [`FlushGuard`] at
//! exit writes whatever is pending.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a line may wait before it is written.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// Pending bytes that make the writer thread write at once.
pub const FLUSH_BYTES: usize = 256 * 1024;
/// Pending bytes beyond which new lines are dropped.
pub const MAX_PENDING_BYTES: usize = 16 * 1024 * 1024;

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    dropped_lines: u64,
    closed: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        // A panic while holding the lock leaves at worst a partial line.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Hands out writers for `tracing_subscriber::fmt().with_writer(..)`.
#[derive(Clone)]
pub struct BatchedWriter {
    shared: Arc<Shared>,
}

/// Writes what is pending and stops the writer thread when dropped.
pub struct FlushGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the writer thread that writes batches to `out`.
pub fn batched<W: Write + Send + 'static>(out: W) -> (BatchedWriter, FlushGuard) {
    let shared = Arc::new(Shared {
        pending: Mutex::new(Pending::default()),
        wake: Condvar::new(),
    });
    let thread = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("detour-log".into())
            .spawn(move || write_batches(&shared, out))
            .ok()
    };
    (
        BatchedWriter {
            shared: shared.clone(),
        },
        FlushGuard { shared, thread },
    )
}

fn write_batches<W: Write>(shared: &Shared, mut out: W) {
    let mut batch = Vec::new();
    loop {
        let (dropped, closed) = {
            let mut pending = shared.lock();
            // Lines gather for an interval, unless many are waiting already.
            let deadline = Instant::now() + FLUSH_INTERVAL;
            while pending.bytes.len() < FLUSH_BYTES && !pending.closed {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                pending = shared
                    .wake
                    .wait_timeout(pending, deadline - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            std::mem::swap(&mut batch, &mut pending.bytes);
            (std::mem::take(&mut pending.dropped_lines), pending.closed)
        };
        // Nowhere to report a failing stderr: the lines are lost either way.
        let _ = out.write_all(&batch);
        if dropped > 0 {
            let _ = writeln!(
                out,
                "detour: {dropped} log lines dropped: the log output did not keep up"
            );
        }
        let _ = out.flush();
        batch.clear();
        if closed {
            return;
        }
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One line, appended to the pending buffer in one piece.
pub struct LineWriter<'a> {
    shared: &'a Shared,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut pending = self.shared.lock();
        if pending.bytes.len() + line.len() > MAX_PENDING_BYTES {
            pending.dropped_lines += 1;
        } else {
            let was_small = pending.bytes.len() < FLUSH_BYTES;
            pending.bytes.extend_from_slice(line);
            if was_small && pending.bytes.len() >= FLUSH_BYTES {
                self.shared.wake.notify_one();
            }
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BatchedWriter {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            shared: &self.shared,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::fmt::MakeWriter;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_arrive_whole_and_in_order_and_all_are_written_at_exit() {
        let sink = Sink::default();
        let (writer, guard) = batched(sink.clone());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        let line = format!("thread {t} line {i}\n");
                        writer.make_writer().write_all(line.as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4000);
        for t in 0..4 {
            let mine: Vec<&str> = lines
                .iter()
                .filter(|l| l.starts_with(&format!("thread {t} ")))
                .copied()
                .collect();
            let expected: Vec<String> = (0..1000).map(|i| format!("thread {t} line {i}")).collect();
            assert_eq!(mine, expected);
        }
    }

    #[test]
    fn a_line_at_rest_is_written_within_the_interval() {
        let sink = Sink::default();
        let (writer, _guard) = batched(sink.clone());
        writer.make_writer().write_all(b"hello\n").unwrap();
        let deadline = std::time::Instant::now() + FLUSH_INTERVAL * 10;
        while sink.0.lock().unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "not written");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(&*sink.0.lock().unwrap(), b"hello\n");
    }

    #[test]
    fn a_stalled_output_drops_lines_and_says_how_many() {
        // An output that blocks until released: lines pile up to the bound.
        #[derive(Clone)]
        struct Stalled(Sink, Arc<(Mutex<bool>, Condvar)>);
        impl Write for Stalled {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                let (open, cond) = &*self.1;
                let mut open = open.lock().unwrap();
                while !*open {
                    open = cond.wait(open).unwrap();
                }
                self.0.write(bytes)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let sink = Sink::default();
        let (writer, guard) = batched(Stalled(sink.clone(), gate.clone()));
        // The first line is taken by the writer thread, which then blocks.
        writer.make_writer().write_all(b"first\n").unwrap();
        std::thread::sleep(FLUSH_INTERVAL * 3);
        let line = vec![b'x'; 1023];
        let total = MAX_PENDING_BYTES / 1024 + 100;
        for _ in 0..total {
            let mut l = line.clone();
            l.push(b'\n');
            writer.make_writer().write_all(&l).unwrap();
        }
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        drop(guard);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let kept = text.lines().filter(|l| l.starts_with('x')).count();
        assert_eq!(kept, MAX_PENDING_BYTES / 1024);
        assert!(
            text.contains(&format!("detour: {} log lines dropped", total - kept)),
            "{}",
            &text[text.len().saturating_sub(200)..]
        );
    }
}
