//! A DNS server on 127.0.0.1 (UDP) that answers MX queries from a table, as an authoritative
//! server would: the listed MX records, NOERROR with no answer for a known name without
//! MX records, NXDOMAIN for any other name. Messages are parsed and built with the resolver's
//! own protocol crate (hickory-proto), so a malformed query is dropped, not guessed at.

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};

use hickory_resolver::proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_resolver::proto::rr::rdata::MX;
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};

pub struct FakeDns {
    addr: SocketAddr,
    asked: Arc<Mutex<Vec<(String, RecordType)>>>,
}

impl FakeDns {
    /// `zones`: domain → its MX hosts, most preferred first (an empty list: no MX records).
    #[must_use]
    pub fn start(zones: &[(&str, &[&str])]) -> FakeDns {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let zones: Vec<(Name, Vec<Name>)> = zones
            .iter()
            .map(|(d, mx)| {
                (
                    Name::from_ascii(format!("{d}.")).unwrap(),
                    mx.iter()
                        .map(|h| Name::from_ascii(format!("{h}.")).unwrap())
                        .collect(),
                )
            })
            .collect();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let log = asked.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                    return;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                if query.metadata.message_type != MessageType::Query || query.queries.len() != 1 {
                    continue;
                }
                let q = query.queries[0].clone();
                log.lock()
                    .unwrap()
                    .push((q.name().to_ascii().to_ascii_lowercase(), q.query_type()));
                let mut reply = Message::response(query.metadata.id, OpCode::Query);
                reply.metadata.recursion_desired = query.metadata.recursion_desired;
                reply.metadata.recursion_available = true;
                reply.metadata.authoritative = true;
                reply.add_query(q.clone());
                match zones.iter().find(|(d, _)| d == q.name()) {
                    Some((name, hosts)) if q.query_type() == RecordType::MX => {
                        for (i, host) in hosts.iter().enumerate() {
                            let pref = 10 * (i as u16 + 1);
                            reply.add_answer(Record::from_rdata(
                                name.clone(),
                                300,
                                RData::MX(MX::new(pref, host.clone())),
                            ));
                        }
                    }
                    Some(_) => {}
                    None => reply.metadata.response_code = ResponseCode::NXDomain,
                }
                if let Ok(bytes) = reply.to_vec() {
                    let _ = socket.send_to(&bytes, peer);
                }
            }
        });
        FakeDns { addr, asked }
    }

    /// `IP:PORT`, for `OAUTH2_SENDMAIL_NAMESERVER`.
    #[must_use]
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// The (name, type) of every query received.
    #[must_use]
    pub fn asked(&self) -> Vec<(String, RecordType)> {
        self.asked.lock().unwrap().clone()
    }
}
