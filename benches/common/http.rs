//! A lean HTTP/1.1 load client: raw keep-alive connections over tokio
//! `TcpStream` with prebuilt request bytes, one current-thread runtime on a
//! dedicated OS thread (so its CPU can be measured and subtracted), closed
//! loop (as fast as the server answers) or open loop at a fixed rate.
//!
//! Open loop avoids coordinated omission: request `i` is due at
//! `t0 + i / rate` and its latency is counted from then, so time spent
//! waiting for a free connection counts; time lost to the client's own timer
//! wheel (it wakes up to 1 ms late) does not.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::cpu;
use super::Samples;

/// `POST path` with a bearer token and a JSON body, as bytes on the wire.
pub fn post(path: &str, token: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// `GET path` (no auth), for the client/HTTP ceiling check.
pub fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").into_bytes()
}

/// One keep-alive connection.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(16 * 1024),
        })
    }

    /// Sends one request and reads the whole response: `(status, body)`.
    pub async fn roundtrip(&mut self, req: &[u8]) -> io::Result<(u16, &[u8])> {
        self.stream.write_all(req).await?;
        self.buf.clear();
        let mut chunk = [0u8; 16 * 1024];
        let (head_end, status, length) = loop {
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buf[..i]).map_err(io::Error::other)?;
                let status = head
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse::<u16>().ok())
                    .ok_or_else(|| io::Error::other("bad status line"))?;
                let length = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                break (i + 4, status, length);
            }
        };
        while self.buf.len() < head_end + length {
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        Ok((status, &self.buf[head_end..head_end + length]))
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// What to drive: `total` requests over `concurrency` connections, request
/// `i` being `requests[i % len]`; `rate` (req/s) makes it open loop.
#[derive(Clone)]
pub struct Load {
    pub addr: SocketAddr,
    pub requests: Arc<Vec<Vec<u8>>>,
    pub total: usize,
    pub concurrency: usize,
    pub rate: Option<f64>,
    pub expect: u16,
    /// Keep each accepted response body with the instant it arrived.
    pub keep_bodies: bool,
}

#[derive(Default)]
pub struct Outcome {
    pub latencies: Samples,
    pub wall: Duration,
    pub ok: usize,
    pub failed: usize,
    pub first_failure: Option<String>,
    pub bodies: Vec<(Instant, Vec<u8>)>,
    /// CPU of the client thread over the run.
    pub client_cpu: Duration,
}

impl Outcome {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.wall.as_secs_f64().max(1e-9)
    }
}

/// Runs `f` on a fresh OS thread with a current-thread runtime and returns
/// its output with that thread's CPU time.
pub fn on_client_thread<T, F, Fut>(f: F) -> (T, Duration)
where
    F: FnOnce() -> Fut + Send,
    Fut: std::future::Future<Output = T>,
    T: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("client runtime");
            let before = cpu::this_thread();
            let out = rt.block_on(f());
            (out, cpu::this_thread().saturating_sub(before))
        })
        .join()
        .expect("client thread")
    })
}

/// Drives `load` from a dedicated client thread.
pub fn drive(load: &Load) -> Outcome {
    let (mut out, cpu) = on_client_thread(|| run(load.clone()));
    out.client_cpu = cpu;
    out
}

struct PerConn {
    latencies: Samples,
    ok: usize,
    failed: usize,
    first_failure: Option<String>,
    bodies: Vec<(Instant, Vec<u8>)>,
}

async fn run(load: Load) -> Outcome {
    let mut conns = Vec::with_capacity(load.concurrency);
    for _ in 0..load.concurrency.max(1) {
        conns.push(Conn::open(load.addr).await.expect("connect to the server"));
    }
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|conn| tokio::spawn(one_conn(conn, load.clone(), next.clone(), start)))
        .collect();
    let mut out = Outcome::default();
    for t in tasks {
        let r = t.await.expect("client task");
        out.latencies.extend(r.latencies);
        out.ok += r.ok;
        out.failed += r.failed;
        out.first_failure = out.first_failure.or(r.first_failure);
        out.bodies.extend(r.bodies);
    }
    out.wall = start.elapsed();
    out
}

async fn one_conn(mut conn: Conn, load: Load, next: Arc<AtomicUsize>, t0: Instant) -> PerConn {
    let mut me = PerConn {
        latencies: Samples::with_capacity(load.total / load.concurrency.max(1) + 1),
        ok: 0,
        failed: 0,
        first_failure: None,
        bodies: Vec::new(),
    };
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= load.total {
            return me;
        }
        let begin = match load.rate {
            Some(rate) => {
                let due = t0 + Duration::from_secs_f64(i as f64 / rate);
                let now = Instant::now();
                if due > now {
                    tokio::time::sleep_until(due.into()).await;
                    // Late only by our own timer: not the server's doing.
                    Instant::now()
                } else {
                    due
                }
            }
            None => Instant::now(),
        };
        let req = &load.requests[i % load.requests.len()];
        match conn.roundtrip(req).await {
            Ok((status, body)) if status == load.expect => {
                let done = Instant::now();
                me.latencies.push(done - begin);
                me.ok += 1;
                if load.keep_bodies {
                    me.bodies.push((done, body.to_vec()));
                }
            }
            Ok((status, body)) => {
                me.failed += 1;
                if me.first_failure.is_none() {
                    me.first_failure = Some(format!("{status}: {}", String::from_utf8_lossy(body)));
                }
            }
            Err(e) => {
                me.failed += 1;
                me.first_failure.get_or_insert_with(|| e.to_string());
                match Conn::open(load.addr).await {
                    Ok(c) => conn = c,
                    Err(_) => return me,
                }
            }
        }
    }
}
