//! Locating SIP servers (RFC 3263) through the tokio resolver, without any network:
//! IP literals and `localhost` need no DNS server at all, and SRV/A/AAAA behaviour is checked
//! against a tiny DNS server on 127.0.0.1 built in this file.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, Protocol, ResolverConfig, ResolverOpts};
use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA, SRV};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use hickory_resolver::proto::serialize::binary::{BinDecodable, BinEncodable};
use tokio::net::UdpSocket;
use voxline::runtime::dns::{Resolver, resolve};
use voxline::sip::resolve::{Candidate, ResolveError, SipTarget, TargetList, TargetTransport};

fn target(uri: &str) -> SipTarget {
    SipTarget::from_uri(uri).unwrap()
}

fn cand(addr: &str, transport: TargetTransport) -> Candidate {
    Candidate {
        addr: addr.parse().unwrap(),
        transport,
    }
}

fn all(list: &TargetList) -> Vec<Candidate> {
    list.as_slice().to_vec()
}

#[tokio::test]
async fn ipv4_literal_with_port_needs_no_dns() {
    let list = resolve(&target("sip:127.0.0.1:5070")).await.unwrap();
    assert_eq!(all(&list), [cand("127.0.0.1:5070", TargetTransport::Udp)]);
}

#[tokio::test]
async fn ipv6_literal_defaults_to_5060() {
    let list = resolve(&target("sip:[::1]")).await.unwrap();
    assert_eq!(all(&list), [cand("[::1]:5060", TargetTransport::Udp)]);
}

#[tokio::test]
async fn localhost_with_port_and_tcp() {
    let mut list = resolve(&target("sip:localhost:5080;transport=tcp"))
        .await
        .unwrap();
    let first = list.next().unwrap();
    assert_eq!(first.addr.port(), 5080);
    assert_eq!(first.transport, TargetTransport::Tcp);
    assert!(first.addr.ip().is_loopback(), "{first:?}");
    for rest in list {
        assert!(rest.addr.ip().is_loopback() && rest.addr.port() == 5080);
    }
}

#[tokio::test]
async fn localhost_without_port_goes_through_srv_then_a() {
    // `_sip._udp.localhost.` is answered negatively by the resolver itself (RFC 6761), so the
    // A/AAAA fallback on 5060 applies.
    let list = tokio::time::timeout(Duration::from_secs(20), resolve(&target("sip:localhost")))
        .await
        .expect("no network needed")
        .unwrap();
    let first = list.peek().unwrap();
    assert_eq!(first.addr.port(), 5060);
    assert!(first.addr.ip().is_loopback());
    assert_eq!(first.transport, TargetTransport::Udp);
}

// ---- a fake DNS server ------------------------------------------------------------------------

/// Answers from a fixed table; unknown names get NXDOMAIN, known names without records of
/// the asked type get an empty NOERROR.
fn answer(name: &str, rtype: RecordType) -> Result<Vec<RData>, ResponseCode> {
    let srv = |p, w, port, t: &str| RData::SRV(SRV::new(p, w, port, Name::from_ascii(t).unwrap()));
    let a = |ip: [u8; 4]| RData::A(A::from(Ipv4Addr::from(ip)));
    let known: &[(&str, RecordType, Vec<RData>)] = &[
        (
            "_sip._udp.multi.test.",
            RecordType::SRV,
            vec![
                srv(20, 0, 5062, "b.multi.test."),
                srv(10, 0, 5061, "a.multi.test."),
            ],
        ),
        (
            "_sip._tcp.multi.test.",
            RecordType::SRV,
            vec![srv(10, 0, 5070, "a.multi.test.")],
        ),
        ("a.multi.test.", RecordType::A, vec![a([127, 0, 0, 2])]),
        ("b.multi.test.", RecordType::A, vec![a([127, 0, 0, 3])]),
        ("multi.test.", RecordType::A, vec![a([127, 0, 0, 9])]),
        ("nosrv.test.", RecordType::A, vec![a([127, 0, 0, 5])]),
        (
            "v6only.test.",
            RecordType::AAAA,
            vec![RData::AAAA(AAAA::from(Ipv6Addr::new(
                0xfd00, 0, 0, 0, 0, 0, 0, 5,
            )))],
        ),
        (
            "_sip._udp.closed.test.",
            RecordType::SRV,
            vec![srv(0, 0, 0, ".")],
        ),
        ("closed.test.", RecordType::A, vec![a([127, 0, 0, 6])]),
        (
            "_sip._udp.dangling.test.",
            RecordType::SRV,
            vec![srv(0, 0, 5060, "missing.test.")],
        ),
        ("dangling.test.", RecordType::A, vec![a([127, 0, 0, 7])]),
    ];
    let mut name_exists = false;
    for (n, t, rdata) in known {
        if n.eq_ignore_ascii_case(name) {
            name_exists = true;
            if *t == rtype {
                return Ok(rdata.clone());
            }
        }
    }
    if name_exists {
        Ok(Vec::new())
    } else {
        Err(ResponseCode::NXDomain)
    }
}

async fn fake_dns_server() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((len, peer)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let Ok(request) = Message::from_bytes(&buf[..len]) else {
                continue;
            };
            let mut response = Message::new();
            response
                .set_id(request.id())
                .set_message_type(MessageType::Response)
                .set_op_code(request.op_code())
                .set_recursion_desired(request.recursion_desired())
                .set_recursion_available(true)
                .set_authoritative(true);
            if let Some(query) = request.queries().first() {
                response.add_query(query.clone());
                let name = query.name().to_ascii();
                match answer(&name, query.query_type()) {
                    Ok(rdatas) => {
                        for rdata in rdatas {
                            response.add_answer(Record::from_rdata(
                                query.name().clone(),
                                60,
                                rdata,
                            ));
                        }
                    }
                    Err(code) => {
                        response.set_response_code(code);
                    }
                }
            }
            let bytes = response.to_bytes().unwrap();
            let _ = socket.send_to(&bytes, peer).await;
        }
    });
    addr
}

async fn local_resolver() -> Resolver {
    let server = fake_dns_server().await;
    let mut config = ResolverConfig::new();
    config.add_name_server(NameServerConfig::new(server, Protocol::Udp));
    let mut opts = ResolverOpts::default();
    opts.timeout = Duration::from_secs(2);
    opts.attempts = 1;
    opts.use_hosts_file = false;
    Resolver::with_config(config, opts)
}

#[tokio::test]
async fn srv_records_are_ordered_by_priority_and_resolved() {
    let resolver = local_resolver().await;
    let list = resolver
        .resolve(&target("sip:alice@multi.test"))
        .await
        .unwrap();
    assert_eq!(
        all(&list),
        [
            cand("127.0.0.2:5061", TargetTransport::Udp),
            cand("127.0.0.3:5062", TargetTransport::Udp),
        ]
    );
}

#[tokio::test]
async fn transport_tcp_queries_the_tcp_srv_name() {
    let resolver = local_resolver().await;
    let list = resolver
        .resolve(&target("sip:multi.test;transport=tcp"))
        .await
        .unwrap();
    assert_eq!(all(&list), [cand("127.0.0.2:5070", TargetTransport::Tcp)]);
}

#[tokio::test]
async fn explicit_port_skips_srv() {
    let resolver = local_resolver().await;
    let list = resolver
        .resolve(&target("sip:multi.test:5099"))
        .await
        .unwrap();
    assert_eq!(all(&list), [cand("127.0.0.9:5099", TargetTransport::Udp)]);
}

#[tokio::test]
async fn no_srv_falls_back_to_a_on_5060() {
    let resolver = local_resolver().await;
    let list = resolver.resolve(&target("sip:nosrv.test")).await.unwrap();
    assert_eq!(all(&list), [cand("127.0.0.5:5060", TargetTransport::Udp)]);
}

#[tokio::test]
async fn aaaa_is_used_when_there_is_no_a() {
    let resolver = local_resolver().await;
    let list = resolver
        .resolve(&target("sip:v6only.test:5070"))
        .await
        .unwrap();
    assert_eq!(all(&list), [cand("[fd00::5]:5070", TargetTransport::Udp)]);
}

#[tokio::test]
async fn srv_dot_target_means_no_service() {
    let resolver = local_resolver().await;
    let err = resolver
        .resolve(&target("sip:closed.test"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ResolveError::ServiceUnavailable(_)),
        "{err:?}"
    );
}

#[tokio::test]
async fn srv_targets_that_do_not_resolve_do_not_fall_back_to_a() {
    // RFC 3263 §4.2: the A/AAAA fallback applies only when there are no SRV records.
    let resolver = local_resolver().await;
    let err = resolver
        .resolve(&target("sip:dangling.test"))
        .await
        .unwrap_err();
    assert!(matches!(err, ResolveError::NoAddresses(_)), "{err:?}");
}

#[tokio::test]
async fn unknown_host_is_no_addresses() {
    let resolver = local_resolver().await;
    let err = resolver
        .resolve(&target("sip:nowhere.test:5060"))
        .await
        .unwrap_err();
    assert_eq!(err, ResolveError::NoAddresses("nowhere.test".into()));
}

#[tokio::test]
async fn ip_literal_never_asks_the_server() {
    // A resolver pointing at a port where nothing listens still resolves literals at once.
    let mut config = ResolverConfig::new();
    config.add_name_server(NameServerConfig::new(
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9),
        Protocol::Udp,
    ));
    let resolver = Resolver::with_config(config, ResolverOpts::default());
    let list = tokio::time::timeout(
        Duration::from_millis(500),
        resolver.resolve(&target("sip:bob@192.0.2.1;transport=tcp")),
    )
    .await
    .expect("no DNS query for an IP literal")
    .unwrap();
    assert_eq!(all(&list), [cand("192.0.2.1:5060", TargetTransport::Tcp)]);
}
