//! A real SMTP server on 127.0.0.1, port 0, for integration tests and
//! benchmarks (include it with `#[path]`; it depends only on tokio,
//! tokio-rustls and base64). Tests talk to it over a socket so the delivery code is exercised
//! exactly as against a relay, with no mocks.
//!
//! Replies are decided per recipient: a script set with [`SmtpSink::script`]
//! wins, else the local part decides (`defer…` → 451, `bounce…` → 550,
//! anything else → 250). Replies are buffered and flushed only when the
//! client has nothing more queued, so pipelining clients get batched answers
//! and the sink stays fast under load.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine;
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, BufWriter,
    ReadHalf, WriteHalf,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

/// Longest command line accepted (RFC 5321 says 512; be generous).
const MAX_COMMAND_LINE: usize = 4096;
/// Longest data line accepted; longer lines fail the message with 500.
const MAX_DATA_LINE: usize = 1024 * 1024;
/// Advertised and enforced message size limit.
const MAX_MESSAGE: usize = 50 * 1024 * 1024;

#[derive(Clone, Debug, Default)]
pub struct SinkConfig {
    /// `(user, password)`: AUTH PLAIN/LOGIN is advertised and MAIL before a
    /// successful AUTH is refused with 530.
    pub require_auth: Option<(String, String)>,
    /// Advertise STARTTLS: with `tls` the handshake is done and the session
    /// goes on encrypted; without, the command is answered 454.
    pub advertise_starttls: bool,
    /// The server side of STARTTLS (e.g. a self-signed certificate).
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    /// A slow relay: wait this long after the end of DATA before accepting.
    pub data_delay: Duration,
    /// Do not offer PIPELINING, and refuse a MAIL or RCPT that arrives with
    /// further commands behind it (554, as Postfix's
    /// `reject_unauth_pipelining` does).
    pub no_pipelining: bool,
    /// Count accepted messages without keeping them (a soak's sink):
    /// [`SmtpSink::messages`] stays empty, [`SmtpSink::count`] counts.
    pub count_only: bool,
}

/// One message accepted after `DATA` (`250`).
#[derive(Clone, Debug)]
pub struct ReceivedMessage {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// The message as sent, dot-unstuffed, CRLF line endings as received.
    pub data: Vec<u8>,
    pub auth_user: Option<String>,
    pub connection_id: u64,
    /// Received over a session that did STARTTLS.
    pub tls: bool,
    /// The client's address and its EHLO/HELO name.
    pub peer: Option<SocketAddr>,
    pub helo: String,
    /// When the final `250` was decided (benchmarks: 202-to-sink latency).
    pub received_at: std::time::Instant,
}

impl ReceivedMessage {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

#[derive(Default)]
struct Recorded {
    messages: Vec<ReceivedMessage>,
    accepted: usize,
    scripts: HashMap<String, VecDeque<u16>>,
    rejected: Vec<(String, u16)>,
}

struct Shared {
    cfg: SinkConfig,
    recorded: Mutex<Recorded>,
    /// The number of accepted messages, for [`SmtpSink::wait_for`].
    count: watch::Sender<usize>,
    connections: AtomicUsize,
    /// Sessions open now (a session that said QUIT no longer counts), and
    /// the most ever open at once.
    open: AtomicUsize,
    peak: AtomicUsize,
    /// Per client address: sessions open now and the most ever at once.
    peers: Mutex<HashMap<IpAddr, (usize, usize)>>,
    /// AUTH commands received, successful or not.
    auth_attempts: AtomicUsize,
    /// MAIL commands that arrived with more commands already behind them.
    pipelined: AtomicUsize,
    next_connection: AtomicU64,
}

impl Shared {
    /// A poisoned lock only means another connection task panicked; the
    /// records are still consistent enough for assertions.
    fn lock(&self) -> MutexGuard<'_, Recorded> {
        self.recorded.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The reply code for one RCPT attempt: the script first, else the
    /// local part.
    fn rcpt_code(&self, rcpt: &str) -> u16 {
        let key = rcpt.to_ascii_lowercase();
        let mut rec = self.lock();
        if let Some(code) = rec.scripts.get_mut(&key).and_then(|q| q.pop_front()) {
            return code;
        }
        drop(rec);
        let local = key.split('@').next().unwrap_or_default();
        if local.starts_with("defer") {
            451
        } else if local.starts_with("bounce") {
            550
        } else {
            250
        }
    }
}

pub struct SmtpSink {
    addr: SocketAddr,
    ip: IpAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
    kick: Kick,
}

impl Drop for SmtpSink {
    /// Aborting the accept task drops its `JoinSet`, which aborts every
    /// connection task with it.
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SmtpSink {
    pub async fn start() -> SmtpSink {
        Self::start_with(SinkConfig::default()).await
    }

    pub async fn start_with(cfg: SinkConfig) -> SmtpSink {
        Self::bind(0, cfg).await
    }

    /// A sink on a chosen port of 127.0.0.1 (e.g. one a relay was configured
    /// with before the sink existed).
    pub async fn start_on(port: u16) -> SmtpSink {
        Self::bind(port, SinkConfig::default()).await
    }

    /// A sink on `ip:port` (e.g. 127.0.0.3, one of many loopback addresses
    /// sharing a port, as MX hosts do on port 25).
    pub async fn start_at(ip: IpAddr, port: u16, cfg: SinkConfig) -> SmtpSink {
        Self::bind_ip(ip, port, cfg).await
    }

    async fn bind(port: u16, cfg: SinkConfig) -> SmtpSink {
        Self::bind_ip(IpAddr::V4(Ipv4Addr::LOCALHOST), port, cfg).await
    }

    async fn bind_ip(ip: IpAddr, port: u16, cfg: SinkConfig) -> SmtpSink {
        let shared = Arc::new(Shared {
            cfg,
            recorded: Mutex::default(),
            count: watch::channel(0).0,
            connections: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            peers: Mutex::default(),
            auth_attempts: AtomicUsize::new(0),
            pipelined: AtomicUsize::new(0),
            next_connection: AtomicU64::new(1),
        });
        let (addr, task, kick) = listen(ip, port, shared.clone()).await;
        SmtpSink {
            addr,
            ip,
            shared,
            task,
            kick,
        }
    }

    /// Takes the relay down: the listening socket is closed (new connections
    /// are refused) and every open session is cut, as when a relay's process
    /// dies. What was received so far stays recorded.
    pub async fn stop(&mut self) {
        self.task.abort();
        // Wait until the accept task (and with it the listener and the
        // sessions' JoinSet) is really dropped.
        let _ = (&mut self.task).await;
    }

    /// Brings a stopped sink back on the same port, keeping its records and
    /// scripts.
    pub async fn restart(&mut self) {
        let (addr, task, kick) = listen(self.ip, self.addr.port(), self.shared.clone()).await;
        self.addr = addr;
        self.task = task;
        self.kick = kick;
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Reply codes for `rcpt`, consumed one per RCPT attempt (e.g.
    /// `[451, 250]`: deferred once, then accepted); appended to any
    /// codes still queued.
    pub fn script(&self, rcpt: &str, codes: Vec<u16>) {
        self.shared
            .lock()
            .scripts
            .entry(rcpt.to_ascii_lowercase())
            .or_default()
            .extend(codes);
    }

    pub fn messages(&self) -> Vec<ReceivedMessage> {
        self.shared.lock().messages.clone()
    }

    /// Waits until at least `n` messages were accepted; panics on timeout
    /// with what did arrive, so a failing test says why.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<ReceivedMessage> {
        let mut rx = self.shared.count.subscribe();
        let waited = tokio::time::timeout(timeout, rx.wait_for(|count| *count >= n)).await;
        if waited.is_err() {
            let got = self.messages();
            panic!(
                "smtp sink: expected {n} message(s) within {timeout:?}, got {}; rejected RCPTs: {:?}",
                got.len(),
                self.rejected()
            );
        }
        self.messages()
    }

    /// Messages accepted so far (no copy of them, unlike [`SmtpSink::messages`]).
    pub fn count(&self) -> usize {
        *self.shared.count.borrow()
    }

    /// Waits until at least `n` messages were accepted; false on timeout.
    pub async fn wait_count(&self, n: usize, timeout: Duration) -> bool {
        let mut rx = self.shared.count.subscribe();
        let waited = tokio::time::timeout(timeout, rx.wait_for(|count| *count >= n)).await;
        waited.is_ok()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// The most sessions that were ever open at once.
    pub fn peak_connections(&self) -> usize {
        self.shared.peak.load(Ordering::SeqCst)
    }

    /// The most sessions ever open at once from one client address.
    pub fn peak_connections_from(&self, ip: IpAddr) -> usize {
        let peers = self.shared.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers.get(&ip).map_or(0, |p| p.1)
    }

    /// AUTH commands received: 0 means no credential reached the wire.
    pub fn auth_attempts(&self) -> usize {
        self.shared.auth_attempts.load(Ordering::SeqCst)
    }

    /// Transactions whose MAIL arrived together with the commands after it
    /// (a pipelining client).
    pub fn pipelined(&self) -> usize {
        self.shared.pipelined.load(Ordering::SeqCst)
    }

    /// Closes every open session without a word, as a relay does on its
    /// idle timeout or restart; returns once they are closed.
    pub async fn drop_connections(&self) {
        let (done, closed) = oneshot::channel();
        if self.kick.send(done).is_ok() {
            let _ = closed.await;
        }
    }

    /// RCPT replies that were not 2xx, in order.
    pub fn rejected(&self) -> Vec<(String, u16)> {
        self.shared.lock().rejected.clone()
    }
}

type Kick = mpsc::UnboundedSender<oneshot::Sender<()>>;

/// Binds `ip`:`port` (0 = any) and starts accepting. The port of a
/// sink that was just stopped can be bound again at once (tokio sets
/// SO_REUSEADDR); a few retries cover a listener still being dropped.
async fn listen(ip: IpAddr, port: u16, shared: Arc<Shared>) -> (SocketAddr, JoinHandle<()>, Kick) {
    let mut tries = 0;
    let listener = loop {
        match TcpListener::bind((ip, port)).await {
            Ok(l) => break l,
            Err(_) if tries < 50 && port != 0 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("smtp sink: bind {ip}:{port}: {e}"),
        }
    };
    let addr = listener.local_addr().expect("smtp sink: local addr");
    let (kick, kicks) = mpsc::unbounded_channel();
    let task = tokio::spawn(accept_loop(listener, shared, kicks));
    (addr, task, kick)
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut kicks: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
) {
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            Some(done) = kicks.recv() => {
                sessions.abort_all();
                while sessions.join_next().await.is_some() {}
                let _ = done.send(());
            }
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // Out of descriptors, most likely: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                shared.connections.fetch_add(1, Ordering::SeqCst);
                let now_open = shared.open.fetch_add(1, Ordering::SeqCst) + 1;
                shared.peak.fetch_max(now_open, Ordering::SeqCst);
                let peer = stream.peer_addr().ok().map(|a| a.ip());
                if let Some(ip) = peer {
                    let mut peers = shared.peers.lock().unwrap_or_else(|e| e.into_inner());
                    let p = peers.entry(ip).or_default();
                    p.0 += 1;
                    p.1 = p.1.max(p.0);
                }
                let id = shared.next_connection.fetch_add(1, Ordering::SeqCst);
                let shared = shared.clone();
                sessions.spawn(async move {
                    let mut open = OpenSession { shared: &shared, counted: true, peer };
                    // A client that hangs up mid-session is normal in tests.
                    let _ = serve(stream, id, &mut open).await;
                });
            }
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
}

/// A session in [`Shared::open`] until it said QUIT or ended (also when
/// its task is aborted).
struct OpenSession<'a> {
    shared: &'a Arc<Shared>,
    counted: bool,
    peer: Option<IpAddr>,
}

impl OpenSession<'_> {
    fn leave(&mut self) {
        if std::mem::take(&mut self.counted) {
            self.shared.open.fetch_sub(1, Ordering::SeqCst);
            if let Some(ip) = self.peer {
                let mut peers = self.shared.peers.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(p) = peers.get_mut(&ip) {
                    p.0 = p.0.saturating_sub(1);
                }
            }
        }
    }
}

impl Drop for OpenSession<'_> {
    fn drop(&mut self) {
        self.leave();
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type Stream = Box<dyn Io>;

/// Line-oriented I/O that flushes replies only before it would block.
struct Wire {
    reader: BufReader<ReadHalf<Stream>>,
    writer: BufWriter<WriteHalf<Stream>>,
    line: Vec<u8>,
}

enum Line {
    Ok,
    TooLong,
    Eof,
}

impl Wire {
    fn new(stream: Stream) -> Wire {
        let (r, w) = tokio::io::split(stream);
        Wire {
            reader: BufReader::with_capacity(64 * 1024, r),
            writer: BufWriter::with_capacity(16 * 1024, w),
            line: Vec::with_capacity(1024),
        }
    }

    /// The TLS handshake of STARTTLS (after its 220 was flushed).
    async fn starttls(
        mut self,
        config: Arc<tokio_rustls::rustls::ServerConfig>,
    ) -> io::Result<Wire> {
        self.writer.flush().await?;
        let stream = self.reader.into_inner().unsplit(self.writer.into_inner());
        let tls = tokio_rustls::TlsAcceptor::from(config)
            .accept(stream)
            .await?;
        Ok(Wire::new(Box::new(tls)))
    }

    async fn reply(&mut self, text: &str) -> io::Result<()> {
        self.writer.write_all(text.as_bytes()).await?;
        self.writer.write_all(b"\r\n").await
    }

    /// Reads one line (with its line ending) into `self.line`.
    async fn next_line(&mut self, max: usize) -> io::Result<Line> {
        if self.reader.buffer().is_empty() {
            self.writer.flush().await?;
        }
        self.line.clear();
        read_bounded_line(&mut self.reader, &mut self.line, max).await
    }

    /// The current line without its line ending, as text.
    fn text(&self) -> String {
        let mut end = self.line.len();
        while end > 0 && matches!(self.line[end - 1], b'\r' | b'\n') {
            end -= 1;
        }
        String::from_utf8_lossy(&self.line[..end]).into_owned()
    }
}

async fn read_bounded_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    out: &mut Vec<u8>,
    max: usize,
) -> io::Result<Line> {
    let mut too_long = false;
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Ok(Line::Eof);
        }
        let (take, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if out.len() + take > max {
            too_long = true;
        } else if !too_long {
            out.extend_from_slice(&buf[..take]);
        }
        r.consume(take);
        if done {
            return Ok(if too_long { Line::TooLong } else { Line::Ok });
        }
    }
}

#[derive(Default)]
struct Session {
    greeted: bool,
    auth_user: Option<String>,
    mail_from: Option<String>,
    rcpts: Vec<String>,
    rcpt_attempted: bool,
    tls: bool,
    helo: String,
}

impl Session {
    fn reset(&mut self) {
        self.mail_from = None;
        self.rcpts.clear();
        self.rcpt_attempted = false;
    }
}

async fn serve(stream: TcpStream, id: u64, open: &mut OpenSession<'_>) -> io::Result<()> {
    let shared = open.shared.clone();
    let _ = stream.set_nodelay(true);
    let peer = stream.peer_addr().ok();
    let mut wire = Wire::new(Box::new(stream));
    let mut s = Session::default();
    wire.reply("220 sink.test ESMTP postline-test-sink").await?;
    loop {
        match wire.next_line(MAX_COMMAND_LINE).await? {
            Line::Eof => return Ok(()),
            Line::TooLong => {
                wire.reply("500 5.5.2 line too long").await?;
                continue;
            }
            Line::Ok => {}
        }
        let line = wire.text();
        let (verb, arg) = match line.split_once(' ') {
            Some((v, a)) => (v.to_ascii_uppercase(), a.trim().to_string()),
            None => (line.trim().to_ascii_uppercase(), String::new()),
        };
        match verb.as_str() {
            "EHLO" => {
                s.reset();
                s.greeted = true;
                s.helo = arg.clone();
                let mut lines = vec!["250-sink.test".to_string()];
                if !shared.cfg.no_pipelining {
                    lines.push("250-PIPELINING".into());
                }
                lines.push("250-8BITMIME".into());
                if shared.cfg.advertise_starttls && !s.tls {
                    lines.push("250-STARTTLS".into());
                }
                if shared.cfg.require_auth.is_some() {
                    lines.push("250-AUTH PLAIN LOGIN".into());
                }
                lines.push(format!("250 SIZE {MAX_MESSAGE}"));
                wire.reply(&lines.join("\r\n")).await?;
            }
            "HELO" => {
                s.reset();
                s.greeted = true;
                s.helo = arg.clone();
                wire.reply("250 sink.test").await?;
            }
            "AUTH" => auth(&mut wire, &mut s, &shared, &arg).await?,
            "MAIL" => {
                let batched = !wire.reader.buffer().is_empty();
                if batched {
                    shared.pipelined.fetch_add(1, Ordering::SeqCst);
                }
                let reply = if batched && shared.cfg.no_pipelining {
                    "554 5.5.0 improper command pipelining".to_string()
                } else if !s.greeted {
                    "503 5.5.1 send EHLO first".to_string()
                } else if shared.cfg.require_auth.is_some() && s.auth_user.is_none() {
                    "530 5.7.0 Authentication required".to_string()
                } else if s.mail_from.is_some() {
                    "503 5.5.1 nested MAIL command".to_string()
                } else if let Some(from) = path_arg(&arg, "FROM:") {
                    s.mail_from = Some(from);
                    "250 2.1.0 Ok".to_string()
                } else {
                    "501 5.5.4 syntax: MAIL FROM:<address>".to_string()
                };
                wire.reply(&reply).await?;
            }
            "RCPT" => {
                let batched = !wire.reader.buffer().is_empty();
                let reply = if batched && shared.cfg.no_pipelining {
                    "554 5.5.0 improper command pipelining".to_string()
                } else if s.mail_from.is_none() {
                    "503 5.5.1 need MAIL command".to_string()
                } else if let Some(rcpt) = path_arg(&arg, "TO:") {
                    s.rcpt_attempted = true;
                    let code = shared.rcpt_code(&rcpt);
                    if (200..300).contains(&code) {
                        s.rcpts.push(rcpt);
                    } else {
                        shared.lock().rejected.push((rcpt, code));
                    }
                    rcpt_reply(code)
                } else {
                    "501 5.5.4 syntax: RCPT TO:<address>".to_string()
                };
                wire.reply(&reply).await?;
            }
            "DATA" => {
                if s.mail_from.is_none() || !s.rcpt_attempted {
                    wire.reply("503 5.5.1 need MAIL and RCPT commands").await?;
                } else if s.rcpts.is_empty() {
                    wire.reply("554 5.5.1 no valid recipients").await?;
                    s.reset();
                } else {
                    wire.reply("354 End data with <CR><LF>.<CR><LF>").await?;
                    let reply = data(&mut wire, &mut s, id, peer, &shared).await?;
                    wire.reply(&reply).await?;
                    s.reset();
                }
            }
            "RSET" => {
                s.reset();
                wire.reply("250 2.0.0 Ok").await?;
            }
            "NOOP" => wire.reply("250 2.0.0 Ok").await?,
            "STARTTLS" if shared.cfg.advertise_starttls && !s.tls => match shared.cfg.tls.clone() {
                Some(config) => {
                    wire.reply("220 2.0.0 Ready to start TLS").await?;
                    wire = wire.starttls(config).await?;
                    // RFC 3207 §4.2: the session starts over.
                    s = Session {
                        tls: true,
                        ..Session::default()
                    };
                }
                None => wire.reply("454 4.7.0 TLS not available").await?,
            },
            "QUIT" => {
                open.leave();
                wire.reply("221 2.0.0 Bye").await?;
                wire.writer.flush().await?;
                return Ok(());
            }
            _ => wire.reply("502 5.5.2 command not recognized").await?,
        }
    }
}

fn rcpt_reply(code: u16) -> String {
    match code {
        250 => "250 2.1.5 Ok".to_string(),
        451 => "451 4.3.0 try later".to_string(),
        550 => "550 5.1.1 no such user".to_string(),
        c => format!("{c} {}.0.0 scripted reply", c / 100),
    }
}

/// The address in `FROM:<a@b> PARAMS` / `TO:<a@b>`; `None` on bad syntax.
fn path_arg(arg: &str, prefix: &str) -> Option<String> {
    let head = arg.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = arg[prefix.len()..].trim_start();
    if let Some(inner) = rest.strip_prefix('<') {
        let end = inner.find('>')?;
        Some(inner[..end].to_string())
    } else {
        let token = rest.split_whitespace().next()?;
        Some(token.to_string())
    }
}

/// Reads the message up to the lone dot and records it.
async fn data(
    wire: &mut Wire,
    s: &mut Session,
    id: u64,
    peer: Option<SocketAddr>,
    shared: &Shared,
) -> io::Result<String> {
    let mut body = Vec::with_capacity(16 * 1024);
    let mut failure: Option<&str> = None;
    loop {
        match wire.next_line(MAX_DATA_LINE).await? {
            Line::Eof => return Err(io::ErrorKind::UnexpectedEof.into()),
            Line::TooLong => failure = Some("500 5.5.2 line too long"),
            Line::Ok => {
                let line = &wire.line;
                if line == b".\r\n" || line == b".\n" {
                    break;
                }
                let unstuffed = if line.first() == Some(&b'.') {
                    &line[1..]
                } else {
                    &line[..]
                };
                if body.len() + unstuffed.len() > MAX_MESSAGE {
                    failure = Some("552 5.3.4 message too big");
                } else if failure.is_none() {
                    body.extend_from_slice(unstuffed);
                }
            }
        }
    }
    if let Some(reply) = failure {
        return Ok(reply.to_string());
    }
    if !shared.cfg.data_delay.is_zero() {
        tokio::time::sleep(shared.cfg.data_delay).await;
    }
    let msg = ReceivedMessage {
        mail_from: s.mail_from.clone().unwrap_or_default(),
        rcpt_to: std::mem::take(&mut s.rcpts),
        data: body,
        auth_user: s.auth_user.clone(),
        connection_id: id,
        tls: s.tls,
        peer,
        helo: s.helo.clone(),
        received_at: std::time::Instant::now(),
    };
    let count = {
        let mut rec = shared.lock();
        if !shared.cfg.count_only {
            rec.messages.push(msg);
        }
        rec.accepted += 1;
        rec.accepted
    };
    shared.count.send_replace(count);
    Ok(format!("250 2.0.0 Ok: queued as S{id}M{count}"))
}

async fn auth(wire: &mut Wire, s: &mut Session, shared: &Shared, arg: &str) -> io::Result<()> {
    shared.auth_attempts.fetch_add(1, Ordering::SeqCst);
    let Some((user, pass)) = shared.cfg.require_auth.as_ref() else {
        return wire.reply("502 5.5.1 AUTH not available").await;
    };
    if s.auth_user.is_some() {
        return wire.reply("503 5.5.1 already authenticated").await;
    }
    let (mechanism, initial) = match arg.split_once(' ') {
        Some((m, ir)) => (m.to_ascii_uppercase(), Some(ir.trim().to_string())),
        None => (arg.to_ascii_uppercase(), None),
    };
    let given = match mechanism.as_str() {
        "PLAIN" => {
            let Some(blob) = respond(wire, initial, "").await? else {
                return Ok(());
            };
            let mut parts = blob.split(|b| *b == 0);
            let _authzid = parts.next();
            match (parts.next(), parts.next()) {
                (Some(u), Some(p)) => Some((u.to_vec(), p.to_vec())),
                _ => None,
            }
        }
        "LOGIN" => {
            let Some(u) = respond(wire, initial, "VXNlcm5hbWU6").await? else {
                return Ok(());
            };
            let Some(p) = respond(wire, None, "UGFzc3dvcmQ6").await? else {
                return Ok(());
            };
            Some((u, p))
        }
        _ => return wire.reply("504 5.5.4 mechanism not supported").await,
    };
    match given {
        Some((u, p)) if u == user.as_bytes() && p == pass.as_bytes() => {
            s.auth_user = Some(user.clone());
            wire.reply("235 2.7.0 Authentication successful").await
        }
        _ => {
            wire.reply("535 5.7.8 Authentication credentials invalid")
                .await
        }
    }
}

/// The decoded client response: the initial response when given, else the
/// answer to a `334 <challenge>`. `None` once a reply was already sent
/// (cancel, bad base64, hang-up handled by the caller's next read).
async fn respond(
    wire: &mut Wire,
    initial: Option<String>,
    challenge: &str,
) -> io::Result<Option<Vec<u8>>> {
    let text = match initial {
        Some(ir) => ir,
        None => {
            wire.reply(&format!("334 {challenge}")).await?;
            match wire.next_line(MAX_COMMAND_LINE).await? {
                Line::Eof => return Err(io::ErrorKind::UnexpectedEof.into()),
                Line::TooLong => {
                    wire.reply("500 5.5.2 line too long").await?;
                    return Ok(None);
                }
                Line::Ok => wire.text(),
            }
        }
    };
    let text = text.trim();
    if text == "*" {
        wire.reply("501 5.7.0 authentication canceled").await?;
        return Ok(None);
    }
    if text == "=" {
        return Ok(Some(Vec::new()));
    }
    match base64::engine::general_purpose::STANDARD.decode(text) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(_) => {
            wire.reply("501 5.5.2 invalid base64").await?;
            Ok(None)
        }
    }
}
