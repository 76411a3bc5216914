//! Bad input from the network, sent by hand (no SIPp) to a real `voxline run`:
//! voxline answers what it can answer with an error (400 with a reason phrase, 513),
//! drops what it cannot, and keeps working (each test ends with OPTIONS -> 200).
//! Also TCP framing by Content-Length (RFC 3261 18.3): two messages in one write, and
//! one message split across writes.

use crate::common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use common::{
    RawUdp, VoxlineProcess, header, options_request, read_tcp_messages, reason_phrase, sdp_offer,
    status_code, unique, uri_of,
};

/// voxline refuses messages larger than this in these tests (`sip.max_message_bytes`).
const MAX_MESSAGE_BYTES: usize = 4096;

const CONFIG: &str = r#"
[sip]
max_message_bytes = 4096
"#;

/// How long to wait for an answer that must come.
const ANSWER: Duration = Duration::from_secs(3);
/// How long to wait to be sure no answer comes.
const SILENCE: Duration = Duration::from_millis(500);

/// voxline still answers an OPTIONS over UDP with 200.
fn assert_answers_options(vox: &mut VoxlineProcess) {
    vox.assert_running();
    let udp = RawUdp::bind();
    let call_id = unique("alive-");
    udp.send(
        vox.sip_addr(),
        options_request("UDP", udp.local, vox.sip_addr(), &call_id).as_bytes(),
    );
    let reply = udp
        .final_response(vox.sip_addr(), ANSWER)
        .expect("no answer to OPTIONS");
    assert_eq!(
        status_code(&reply),
        Some(200),
        "OPTIONS after bad input: {reply}"
    );
    assert_eq!(header(&reply, "Call-ID", Some("i")), Some(call_id.as_str()));
}

/// An INVITE from `from` with the given CSeq line (None: no CSeq header), a body and
/// the Content-Length to announce.
fn invite(
    transport: &str,
    from: SocketAddr,
    to: SocketAddr,
    call_id: &str,
    cseq: Option<&str>,
    body: &str,
    content_length: usize,
) -> String {
    let cseq = cseq.map(|c| format!("CSeq: {c}\r\n")).unwrap_or_default();
    format!(
        "INVITE sip:1000@{to} SIP/2.0\r\n\
         Via: SIP/2.0/{transport} {from};branch={branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:tester@{from}>;tag={tag}\r\n\
         To: <sip:1000@{to}>\r\n\
         Call-ID: {call_id}\r\n\
         {cseq}\
         Contact: <sip:tester@{from};transport={lower}>\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {content_length}\r\n\r\n{body}",
        branch = unique("z9hG4bK-inv"),
        tag = unique("t"),
        lower = transport.to_ascii_lowercase(),
    )
}

/// Send `request` over UDP and expect a 400 with a non-empty reason phrase, for our Call-ID.
fn expect_400(vox: &VoxlineProcess, udp: &RawUdp, request: &str, call_id: &str, what: &str) {
    udp.send(vox.sip_addr(), request.as_bytes());
    let reply = udp
        .final_response(vox.sip_addr(), ANSWER)
        .unwrap_or_else(|| panic!("{what}: no answer (a 400 was expected)"));
    assert_eq!(status_code(&reply), Some(400), "{what}: {reply}");
    let reason = reason_phrase(&reply).unwrap_or_default();
    assert!(
        !reason.is_empty(),
        "{what}: 400 without a reason phrase: {reply}"
    );
    assert_eq!(
        header(&reply, "Call-ID", Some("i")),
        Some(call_id),
        "{what}: {reply}"
    );
}

#[test]
fn garbage_datagrams_get_no_answer_and_voxline_keeps_working() {
    let mut vox = VoxlineProcess::spawn(CONFIG);
    let udp = RawUdp::bind();
    // Deterministic pseudo-random bytes.
    let mut x: u32 = 0x1234_5678;
    let noise: Vec<u8> = (0..700)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let garbage: [&[u8]; 6] = [
        &noise,
        b"\0\0\0\0\0\0\0\0",
        b"hello voxline\r\n\r\n",
        b"INVITE\r\n\r\n",
        b"SIP/2.0 200 OK\r\n\r\n",
        b"\xff\xfe\xfd INVITE sip:x SIP/2.0\r\n",
    ];
    for datagram in garbage {
        udp.send(vox.sip_addr(), datagram);
        if let Some(reply) = udp.recv_from(vox.sip_addr(), SILENCE) {
            panic!(
                "voxline answered garbage {:?}: {reply}",
                String::from_utf8_lossy(datagram)
            );
        }
    }
    assert_answers_options(&mut vox);
}

#[test]
fn invite_without_cseq_gets_400_with_a_reason() {
    let mut vox = VoxlineProcess::spawn(CONFIG);
    let udp = RawUdp::bind();
    let call_id = unique("nocseq-");
    let body = sdp_offer(40_000);
    let req = invite(
        "UDP",
        udp.local,
        vox.sip_addr(),
        &call_id,
        None,
        &body,
        body.len(),
    );
    expect_400(&vox, &udp, &req, &call_id, "INVITE without CSeq");
    assert_answers_options(&mut vox);
}

#[test]
fn invite_with_bad_cseq_gets_400_with_a_reason() {
    let mut vox = VoxlineProcess::spawn(CONFIG);
    let udp = RawUdp::bind();
    for cseq in ["abc INVITE", "1", "99999999999999999999 INVITE"] {
        let call_id = unique("badcseq-");
        let body = sdp_offer(40_000);
        let req = invite(
            "UDP",
            udp.local,
            vox.sip_addr(),
            &call_id,
            Some(cseq),
            &body,
            body.len(),
        );
        expect_400(
            &vox,
            &udp,
            &req,
            &call_id,
            &format!("INVITE with CSeq: {cseq}"),
        );
    }
    assert_answers_options(&mut vox);
}

#[test]
fn body_shorter_than_content_length_gets_400() {
    let mut vox = VoxlineProcess::spawn(CONFIG);
    let udp = RawUdp::bind();
    let call_id = unique("short-");
    let body = sdp_offer(40_000);
    // RFC 3261 18.3: over UDP, a Content-Length larger than the body is answered 400.
    let req = invite(
        "UDP",
        udp.local,
        vox.sip_addr(),
        &call_id,
        Some("1 INVITE"),
        &body,
        body.len() + 50,
    );
    expect_400(
        &vox,
        &udp,
        &req,
        &call_id,
        "body shorter than Content-Length",
    );
    assert_answers_options(&mut vox);
}

#[test]
fn message_over_the_size_limit_is_dropped_or_gets_513() {
    let mut vox = VoxlineProcess::spawn(CONFIG);
    let udp = RawUdp::bind();
    let call_id = unique("huge-");
    let base = options_request("UDP", udp.local, vox.sip_addr(), &call_id);
    // Pad with a header so the datagram is 2.5 times the limit (well under UDP's 65507).
    let pad = format!("X-Padding: {}\r\n", "a".repeat(MAX_MESSAGE_BYTES * 5 / 2));
    let huge = base.replacen(
        "Content-Length: 0\r\n",
        &format!("{pad}Content-Length: 0\r\n"),
        1,
    );
    assert!(huge.len() > MAX_MESSAGE_BYTES * 2);
    udp.send(vox.sip_addr(), huge.as_bytes());
    if let Some(reply) = udp.recv_from(vox.sip_addr(), SILENCE) {
        assert_eq!(status_code(&reply), Some(513), "oversized message: {reply}");
    }
    assert_answers_options(&mut vox);
}

#[test]
fn tcp_two_messages_in_one_write_get_two_answers() {
    let mut vox = VoxlineProcess::spawn(CONFIG);
    let mut tcp = TcpStream::connect(vox.sip_addr()).expect("connect TCP");
    let local = tcp.local_addr().expect("local_addr");
    let (id1, id2) = (unique("tcp-a-"), unique("tcp-b-"));
    let both = format!(
        "{}{}",
        options_request("TCP", local, vox.sip_addr(), &id1),
        options_request("TCP", local, vox.sip_addr(), &id2)
    );
    tcp.write_all(both.as_bytes()).expect("write");
    let replies = read_tcp_messages(&mut tcp, 2, ANSWER);
    assert_eq!(replies.len(), 2, "expected two answers, got {replies:?}");
    for (reply, id) in replies.iter().zip([&id1, &id2]) {
        assert_eq!(status_code(reply), Some(200), "{reply}");
        assert_eq!(
            header(reply, "Call-ID", Some("i")),
            Some(id.as_str()),
            "{reply}"
        );
    }
    assert_answers_options(&mut vox);
}

#[test]
fn tcp_request_followed_by_garbage_in_the_same_write_is_still_answered() {
    let mut vox = VoxlineProcess::spawn(CONFIG);
    let mut tcp = TcpStream::connect(vox.sip_addr()).expect("connect TCP");
    let local = tcp.local_addr().expect("local_addr");
    let id = unique("tcp-garbage-");
    // A well-framed OPTIONS, then a head with no Content-Length: the stream cannot be
    // framed past it, so voxline closes the connection, but only after answering.
    let both = format!(
        "{}GARBAGE / NOT SIP\r\nX: y\r\n\r\n",
        options_request("TCP", local, vox.sip_addr(), &id)
    );
    tcp.write_all(both.as_bytes()).expect("write");
    let replies = read_tcp_messages(&mut tcp, 1, ANSWER);
    assert_eq!(
        replies.len(),
        1,
        "the OPTIONS was not answered: {replies:?}"
    );
    assert_eq!(status_code(&replies[0]), Some(200), "{}", replies[0]);
    assert_eq!(header(&replies[0], "Call-ID", Some("i")), Some(id.as_str()));
    assert_answers_options(&mut vox);
}

#[test]
fn tcp_message_split_across_writes_is_reassembled_by_content_length() {
    let mut vox = VoxlineProcess::spawn(CONFIG);
    let mut tcp = TcpStream::connect(vox.sip_addr()).expect("connect TCP");
    tcp.set_nodelay(true).expect("nodelay");
    let local = tcp.local_addr().expect("local_addr");
    let call_id = unique("split-");
    let body = sdp_offer(40_000);
    let req = invite(
        "TCP",
        local,
        vox.sip_addr(),
        &call_id,
        Some("1 INVITE"),
        &body,
        body.len(),
    );
    // Three writes: in the middle of a header, just after the blank line, and in the
    // middle of the body. voxline must wait for all Content-Length bytes of the body.
    let head_end = req.find("\r\n\r\n").expect("blank line") + 4;
    let cuts = [20, head_end, head_end + body.len() / 2, req.len()];
    let mut from = 0;
    for to in cuts {
        tcp.write_all(&req.as_bytes()[from..to]).expect("write");
        tcp.flush().expect("flush");
        from = to;
        thread::sleep(Duration::from_millis(150));
    }

    // Provisional answers, then the 200 with an SDP answer.
    let mut ok = None;
    for _ in 0..4 {
        let Some(msg) = read_tcp_messages(&mut tcp, 1, ANSWER).pop() else {
            break;
        };
        if status_code(&msg).is_some_and(|c| c >= 200) {
            ok = Some(msg);
            break;
        }
    }
    let ok = ok.expect("no final answer to the INVITE split across writes");
    assert_eq!(status_code(&ok), Some(200), "{ok}");
    assert_eq!(header(&ok, "Call-ID", Some("i")), Some(call_id.as_str()));
    assert!(ok.contains("m=audio "), "200 without an SDP answer: {ok}");

    // ACK and BYE in the dialog, on the same connection.
    let to = header(&ok, "To", Some("t")).expect("To").to_string();
    let from_hdr = header(&req, "From", Some("f")).expect("From").to_string();
    let contact = header(&ok, "Contact", Some("m")).expect("Contact in the 200");
    let target = uri_of(contact).to_string();
    let in_dialog = |method: &str, cseq: u32| {
        format!(
            "{method} {target} SIP/2.0\r\n\
             Via: SIP/2.0/TCP {local};branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: {from_hdr}\r\n\
             To: {to}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\n\
             Content-Length: 0\r\n\r\n",
            branch = unique("z9hG4bK-dlg"),
        )
    };
    tcp.write_all(in_dialog("ACK", 1).as_bytes())
        .expect("write ACK");
    thread::sleep(Duration::from_millis(200));
    tcp.write_all(in_dialog("BYE", 2).as_bytes())
        .expect("write BYE");
    let mut bye_ok = None;
    for _ in 0..4 {
        let Some(msg) = read_tcp_messages(&mut tcp, 1, ANSWER).pop() else {
            break;
        };
        if header(&msg, "CSeq", None).is_some_and(|c| c.ends_with("BYE")) {
            bye_ok = Some(msg);
            break;
        }
    }
    let bye_ok = bye_ok.expect("no answer to the BYE");
    assert_eq!(status_code(&bye_ok), Some(200), "{bye_ok}");
    assert_answers_options(&mut vox);
}
