//! A webhook receiver on 127.0.0.1:0 — a small raw HTTP/1.1 server on tokio.
//! It verifies every request the way a Standard Webhooks consumer does
//! (HMAC-SHA256 over `id.timestamp.body`, keyed with the decoded `whsec_`
//! secret, compared against each `v1,` entry of `webhook-signature`, with a
//! timestamp tolerance), and answers with scripted status codes.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as received.
#[derive(Clone, Debug)]
pub struct Hook {
    pub path: String,
    pub webhook_id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: Value,
    /// The signature matched one of the receiver's secrets.
    pub verified: bool,
    /// The status code the receiver answered.
    pub answered: u16,
}

#[derive(Default)]
struct Inner {
    secrets: Vec<String>,
    script: VecDeque<u16>,
    default_status: u16,
    received: Vec<Hook>,
    /// Paths starting with the prefix are answered only after the delay
    /// (recorded when the request arrives).
    delays: Vec<(String, Duration)>,
    /// Requests being answered now, and the most at once.
    open: usize,
    peak: usize,
}

#[derive(Clone)]
pub struct Receiver {
    port: u16,
    inner: Arc<Mutex<Inner>>,
}

impl Receiver {
    /// Answers 200 unless scripted otherwise.
    pub async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let inner = Arc::new(Mutex::new(Inner {
            default_status: 200,
            ..Default::default()
        }));
        let shared = inner.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, shared).await;
                });
            }
        });
        Receiver { port, inner }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Adds a `whsec_…` secret that signatures are checked against.
    pub fn add_secret(&self, secret: &str) {
        self.inner.lock().unwrap().secrets.push(secret.to_string());
    }

    /// The next requests get these codes, in order; then the default.
    pub fn script(&self, codes: &[u16]) {
        self.inner.lock().unwrap().script.extend(codes);
    }

    /// Requests to paths starting with `prefix` wait `delay` before the
    /// answer: a slow or hanging endpoint.
    pub fn delay(&self, prefix: &str, delay: Duration) {
        self.inner
            .lock()
            .unwrap()
            .delays
            .push((prefix.to_string(), delay));
    }

    pub fn set_default_status(&self, code: u16) {
        self.inner.lock().unwrap().default_status = code;
    }

    /// The most requests this receiver was answering at once.
    pub fn peak(&self) -> usize {
        self.inner.lock().unwrap().peak
    }

    pub fn received(&self) -> Vec<Hook> {
        self.inner.lock().unwrap().received.clone()
    }

    /// Waits until `pred` holds for the received requests.
    pub async fn wait_until(&self, timeout: Duration, pred: impl Fn(&[Hook]) -> bool) -> Vec<Hook> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self.received();
            if pred(&got) {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "webhook receiver: condition not met; received {:#?}",
                got.iter()
                    .map(|h| (&h.webhook_id, h.body["type"].as_str(), h.answered))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The Standard Webhooks verification, written out independently of the
/// server's signing code.
pub fn verify(secret: &str, id: &str, timestamp: &str, body: &[u8], header: &str) -> bool {
    let Some(key) = secret
        .strip_prefix("whsec_")
        .and_then(|s| STANDARD.decode(s).ok())
    else {
        return false;
    };
    let Ok(ts) = timestamp.parse::<i64>() else {
        return false;
    };
    if (chrono::Utc::now().timestamp() - ts).abs() > 300 {
        return false;
    }
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let expected = STANDARD.encode(mac.finalize().into_bytes());
    header
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .any(|sig| sig == expected)
}

async fn serve(mut stream: TcpStream, inner: Arc<Mutex<Inner>>) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let path = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or("/")
        .to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let length: usize = header("content-length").parse().unwrap_or(0);
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = &buf[head_end..(head_end + length).min(buf.len())];
    let (id, ts, sig) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    let (answered, delay) = {
        let mut inner = inner.lock().unwrap();
        let delay = inner
            .delays
            .iter()
            .find(|(p, _)| path.starts_with(p.as_str()))
            .map(|(_, d)| *d);
        let verified = inner
            .secrets
            .iter()
            .any(|s| verify(s, &id, &ts, body, &sig));
        let answered = inner.script.pop_front().unwrap_or(inner.default_status);
        inner.open += 1;
        inner.peak = inner.peak.max(inner.open);
        inner.received.push(Hook {
            path,
            webhook_id: id,
            timestamp: ts,
            signature: sig,
            body: serde_json::from_slice(body).unwrap_or(Value::Null),
            verified,
            answered,
        });
        (answered, delay)
    };
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    let reply =
        format!("HTTP/1.1 {answered} Scripted\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    let written = stream.write_all(reply.as_bytes()).await;
    inner.lock().unwrap().open -= 1;
    written?;
    stream.shutdown().await
}
