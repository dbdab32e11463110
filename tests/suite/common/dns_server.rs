//! An authoritative DNS server on loopback (UDP and TCP on one port), built
//! on hickory-server, answering the TXT and CNAME records a test publishes
//! and changes at run time (and the MX, A and AAAA records of direct
//! delivery). Names it does not hold are NXDOMAIN.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, MX, TXT};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;

type Zone = Arc<Mutex<HashMap<(String, RecordType), Vec<RData>>>>;

#[derive(Clone, Default)]
struct Handler {
    zone: Zone,
    /// The TTL of every answer (0 unless a test sets it).
    ttl: Arc<std::sync::atomic::AtomicU32>,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
        let Ok(info) = request.request_info() else {
            let msg = builder.error_msg(&request.metadata, ResponseCode::FormErr);
            return response.send_response(msg).await.expect("dns reply");
        };
        let qname = info
            .query
            .name()
            .to_string()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let qtype = info.query.query_type();
        let ttl = self.ttl.load(std::sync::atomic::Ordering::SeqCst);
        let (name_known, answers) = {
            let zone = self.zone.lock().unwrap();
            let known = zone.keys().any(|(n, _)| *n == qname);
            let owner = Name::from_ascii(format!("{qname}.")).unwrap();
            let answers: Vec<Record> = zone
                .get(&(qname.clone(), qtype))
                .map(|v| {
                    v.iter()
                        .map(|d| Record::from_rdata(owner.clone(), ttl, d.clone()))
                        .collect()
                })
                .unwrap_or_default();
            (known, answers)
        };
        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.authoritative = true;
        if !name_known {
            meta.response_code = ResponseCode::NXDomain;
        }
        let msg = builder.build(meta, answers.iter(), None.iter(), None.iter(), None.iter());
        response.send_response(msg).await.expect("dns reply")
    }
}

/// The running server; records can be changed while it runs.
pub struct DnsServer {
    pub addr: SocketAddr,
    zone: Zone,
    ttl: Arc<std::sync::atomic::AtomicU32>,
    _task: tokio::task::JoinHandle<()>,
}

impl DnsServer {
    pub async fn start() -> DnsServer {
        // UDP and TCP on one port: the kernel's free UDP port may be taken
        // for TCP by another test, so try a few.
        let mut tries = 0;
        let (udp, tcp) = loop {
            let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let addr = udp.local_addr().unwrap();
            match tokio::net::TcpListener::bind(addr).await {
                Ok(tcp) => break (udp, tcp),
                Err(_) if tries < 20 => tries += 1,
                Err(e) => panic!("no port free for both UDP and TCP: {e}"),
            }
        };
        let addr = udp.local_addr().unwrap();
        let handler = Handler::default();
        let zone = handler.zone.clone();
        let ttl = handler.ttl.clone();
        let mut server = Server::new(handler);
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 64);
        let task = tokio::spawn(async move {
            let _ = server.block_until_done().await;
        });
        DnsServer {
            addr,
            zone,
            ttl,
            _task: task,
        }
    }

    /// `"127.0.0.1:port"` for `dns.nameservers`.
    pub fn nameserver(&self) -> String {
        self.addr.to_string()
    }

    /// Publishes a TXT record (added to those at the name). Values longer
    /// than 255 bytes are split into several strings, as DNS requires.
    pub fn add_txt(&self, name: &str, value: &str) {
        let parts: Vec<String> = value
            .as_bytes()
            .chunks(255)
            .map(|c| String::from_utf8(c.to_vec()).unwrap())
            .collect();
        self.zone
            .lock()
            .unwrap()
            .entry((name.to_ascii_lowercase(), RecordType::TXT))
            .or_default()
            .push(RData::TXT(TXT::new(parts)));
    }

    pub fn add_cname(&self, name: &str, target: &str) {
        let target = Name::from_ascii(format!("{target}.")).unwrap();
        self.zone
            .lock()
            .unwrap()
            .entry((name.to_ascii_lowercase(), RecordType::CNAME))
            .or_default()
            .push(RData::CNAME(CNAME(target)));
    }

    fn add(&self, name: &str, rtype: RecordType, data: RData) {
        self.zone
            .lock()
            .unwrap()
            .entry((name.to_ascii_lowercase(), rtype))
            .or_default()
            .push(data);
    }

    pub fn add_mx(&self, name: &str, preference: u16, exchange: &str) {
        let exchange = Name::from_ascii(format!("{exchange}.")).unwrap();
        self.add(
            name,
            RecordType::MX,
            RData::MX(MX::new(preference, exchange)),
        );
    }

    /// `MX 0 .` (RFC 7505): the domain accepts no mail.
    pub fn add_null_mx(&self, name: &str) {
        self.add(name, RecordType::MX, RData::MX(MX::new(0, Name::root())));
    }

    pub fn add_ip(&self, name: &str, ip: std::net::IpAddr) {
        match ip {
            std::net::IpAddr::V4(v4) => self.add(name, RecordType::A, RData::A(A(v4))),
            std::net::IpAddr::V6(v6) => self.add(name, RecordType::AAAA, RData::AAAA(AAAA(v6))),
        }
    }

    /// The TTL of answers from now on (resolvers may cache them this long).
    pub fn set_ttl(&self, secs: u32) {
        self.ttl.store(secs, std::sync::atomic::Ordering::SeqCst);
    }

    /// Removes every record at `name`.
    pub fn remove(&self, name: &str) {
        let name = name.to_ascii_lowercase();
        self.zone.lock().unwrap().retain(|(n, _), _| *n != name);
    }
}
