//! A slow network link for the proxy benchmark: a TCP relay from LISTEN to
//! UPSTREAM that adds DELAY_MS before each request chunk reaches the upstream
//! (the round trip) and shares RATE_MBIT between all its connections for the
//! bytes coming back (one link, as to a registry across the wall).
//!
//!   cargo run --release --example link -- 127.0.0.1:PORT 127.0.0.1:UPSTREAM 1000 20
//!
//! A bench helper (not part of detour): `bench/proxy-pull.sh` puts it in
//! front of the upstream registry, so that direct pulls and the proxy's
//! upstream fetches cross the same link and warm pulls do not.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

/// Bytes the link may still send, refilled at its rate.
struct Bucket {
    bytes_per_sec: f64,
    available: f64,
    refilled: Instant,
}

impl Bucket {
    /// Waits until `n` bytes may pass.
    async fn take(bucket: &Mutex<Bucket>, n: usize) {
        loop {
            let wait = {
                let mut b = bucket.lock().await;
                let now = Instant::now();
                let rate = b.bytes_per_sec;
                b.available = (b.available + now.duration_since(b.refilled).as_secs_f64() * rate)
                    .min(rate / 20.0);
                b.refilled = now;
                if b.available >= n as f64 {
                    b.available -= n as f64;
                    return;
                }
                Duration::from_secs_f64((n as f64 - b.available) / rate)
            };
            tokio::time::sleep(wait).await;
        }
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, listen, upstream, mbit, delay_ms] = args.as_slice() else {
        eprintln!("usage: link LISTEN UPSTREAM RATE_MBIT DELAY_MS");
        std::process::exit(2);
    };
    let rate = mbit.parse::<f64>().expect("RATE_MBIT") * 1e6 / 8.0;
    let delay = Duration::from_millis(delay_ms.parse().expect("DELAY_MS"));
    let bucket = Arc::new(Mutex::new(Bucket {
        bytes_per_sec: rate,
        available: 0.0,
        refilled: Instant::now(),
    }));
    let listener = TcpListener::bind(listen).await?;
    loop {
        let (client, _) = listener.accept().await?;
        let (upstream, bucket) = (upstream.clone(), bucket.clone());
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(&upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            let up = async move {
                let mut buffer = vec![0; 64 * 1024];
                loop {
                    let n = client_read.read(&mut buffer).await?;
                    if n == 0 {
                        return server_write.shutdown().await;
                    }
                    tokio::time::sleep(delay).await;
                    server_write.write_all(&buffer[..n]).await?;
                }
            };
            let down = async move {
                let mut buffer = vec![0; 64 * 1024];
                loop {
                    let n = server_read.read(&mut buffer).await?;
                    if n == 0 {
                        return client_write.shutdown().await;
                    }
                    Bucket::take(&bucket, n).await;
                    client_write.write_all(&buffer[..n]).await?;
                }
            };
            let _: (std::io::Result<()>, std::io::Result<()>) = tokio::join!(up, down);
        });
    }
}
