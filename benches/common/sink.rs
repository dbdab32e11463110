//! The in-process SMTP sink (`tests/suite/common/smtp_sink.rs`) on its own thread,
//! so its CPU can be told apart from the server's, and 202 → sink latency.

use std::collections::HashMap;
use std::time::Instant;

use super::cpu;
use super::http::Outcome;
use super::Samples;

#[path = "../../tests/suite/common/smtp_sink.rs"]
pub mod smtp_sink;

use smtp_sink::SmtpSink;

/// The in-process sink on its own thread and current-thread runtime.
pub struct SinkThread {
    pub sink: SmtpSink,
    pub tid: i32,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SinkThread {
    pub fn start() -> SinkThread {
        Self::start_with(smtp_sink::SinkConfig::default())
    }

    /// A sink that counts without keeping (`SinkConfig::count_only`), so a
    /// soak's RSS is the server's, not the messages the sink received.
    pub fn start_with(cfg: smtp_sink::SinkConfig) -> SinkThread {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("sink runtime");
            rt.block_on(async move {
                let sink = SmtpSink::start_with(cfg).await;
                let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                tx.send((sink, cpu::tid(), stop))
                    .expect("hand over the sink");
                let _ = stopped.await;
            });
        });
        let (sink, tid, stop) = rx.recv().expect("sink started");
        SinkThread {
            sink,
            tid,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for SinkThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Per accepted message: sink arrival − 202 arrival, matched by Message-ID
/// (`<{id without dashes}@domain>`, see `emails::service`).
pub fn latency_to_sink(sent: &Outcome, received: &[smtp_sink::ReceivedMessage]) -> Samples {
    let mut accepted: HashMap<String, Instant> = HashMap::with_capacity(sent.bodies.len());
    for (at, body) in &sent.bodies {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        if let Some(id) = v["id"].as_str() {
            accepted.insert(id.replace('-', ""), *at);
        }
    }
    let mut out = Samples::with_capacity(received.len());
    for m in received {
        let text = String::from_utf8_lossy(&m.data[..m.data.len().min(4096)]).into_owned();
        let id = text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("message-id").then(|| {
                v.trim()
                    .trim_start_matches('<')
                    .split('@')
                    .next()
                    .map(str::to_string)
            })?
        });
        if let Some(at) = id.and_then(|id| accepted.get(&id)) {
            out.push(m.received_at.saturating_duration_since(*at));
        }
    }
    out
}
