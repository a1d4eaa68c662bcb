//! `lenet serve` against clients that hold connections (issue 24, item 7): slowloris
//! (headers sent a byte at a time, never finished), idle connections, and more
//! connections than the caps, from several loopback addresses (127.0.0.2, …) beside a
//! well-behaved client on 127.0.0.1. The slow ones are cut at the header timeout, the
//! ones over a cap hear 503 and are closed at once, and the good client is served.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

#[path = "common/server.rs"]
mod server;
use server::Server;

/// A connection to the server from `from` (an address of 127.0.0.0/8).
fn connect_from(from: Ipv4Addr, server: &Server) -> TcpStream {
    let to: SocketAddr = server.url.trim_start_matches("http://").parse().unwrap();
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::new(from.into(), 0).into()).unwrap();
    socket.connect(&to.into()).unwrap();
    socket.into()
}

/// What the server says on this connection within `wait`: the bytes it sent before
/// closing it, or None while it keeps the connection open and silent.
fn heard(conn: &mut TcpStream, wait: Duration) -> Option<Vec<u8>> {
    conn.set_read_timeout(Some(wait)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return Some(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::ConnectionReset) => return Some(got),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return if got.is_empty() { None } else { Some(got) };
            }
            Err(e) => panic!("{e}"),
        }
    }
}

fn good_request(server: &Server) -> Result<u16, String> {
    match ureq::get(&format!("{}/api/models", server.url)).timeout(Duration::from_secs(10)).call() {
        Ok(r) => Ok(r.status()),
        Err(ureq::Error::Status(code, r)) => {
            assert_eq!(r.header("retry-after"), Some("1"));
            Ok(code)
        }
        Err(e) => Err(e.to_string()),
    }
}

#[test]
fn slow_and_idle_clients_are_cut_at_the_header_timeout_while_others_are_served() {
    let server = Server::start(&["--header-timeout", "1", "--rate-limit", "0"], &[]);
    let attacker = Ipv4Addr::new(127, 0, 0, 2);
    let started = Instant::now();
    // Slowloris: a request line and a header, then a byte every 100 ms, never the end.
    let slow: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut c = connect_from(attacker, &server);
            c.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n").unwrap();
            c
        })
        .collect();
    let trickle = std::thread::spawn(move || {
        let mut slow = slow;
        let mut cut_after = vec![None; slow.len()];
        while cut_after.iter().any(Option::is_none) && started.elapsed() < Duration::from_secs(8) {
            std::thread::sleep(Duration::from_millis(100));
            for (c, cut) in slow.iter_mut().zip(&mut cut_after) {
                if cut.is_none() && c.write_all(b"x").is_err() {
                    *cut = Some(started.elapsed());
                }
            }
        }
        cut_after
    });
    // Idle: connected, saying nothing; and one kept alive after a request.
    let mut idle: Vec<TcpStream> = (0..8).map(|_| connect_from(attacker, &server)).collect();
    let mut kept = connect_from(Ipv4Addr::LOCALHOST, &server);
    kept.write_all(b"GET /api/models HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    // Meanwhile the good client is answered, every time.
    for _ in 0..30 {
        assert_eq!(good_request(&server), Ok(200));
    }
    // The server closes the slow, idle and kept-alive connections: the writes of the slow
    // ones start failing, the others read the end of the stream.
    for c in &mut idle {
        let said = heard(c, Duration::from_secs(5)).expect("an idle connection is closed");
        assert!(said.is_empty() || said.starts_with(b"HTTP/1.1 408"), "{}", String::from_utf8_lossy(&said));
    }
    let answer = heard(&mut kept, Duration::from_secs(5)).expect("a kept-alive connection idling is closed");
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
    let cut = trickle.join().unwrap();
    assert!(cut.iter().all(Option::is_some), "slow connections still open after 8 s: {cut:?}");
    println!("slowloris connections cut after {cut:?} (header timeout 1 s)");
    assert_eq!(good_request(&server), Ok(200));
}

#[test]
fn connections_over_the_caps_hear_503_and_close_and_room_comes_back() {
    let server =
        Server::start(&["--max-connections", "12", "--max-connections-per-address", "4", "--header-timeout", "5"], &[]);
    let from = |last: u8| Ipv4Addr::new(127, 0, 0, last);
    let wait = Duration::from_millis(300);
    // Six from one address: four held open, two refused.
    let mut first: Vec<TcpStream> = (0..6).map(|_| connect_from(from(2), &server)).collect();
    let said: Vec<Option<Vec<u8>>> = first.iter_mut().map(|c| heard(c, wait)).collect();
    let refused: Vec<&Vec<u8>> = said.iter().flatten().collect();
    assert_eq!(refused.len(), 2, "{said:?}");
    for r in refused {
        let text = String::from_utf8_lossy(r);
        assert!(text.starts_with("HTTP/1.1 503") && text.contains("too many connections"), "{text}");
    }
    // Four each from two more addresses (well inside the 5 s the first ones have): the
    // server is at its cap of 12…
    let mut more: Vec<TcpStream> =
        (3..=4).flat_map(|a| (0..4).map(move |_| a)).map(|a| connect_from(from(a), &server)).collect();
    assert!(more.iter_mut().all(|c| heard(c, Duration::from_millis(50)).is_none()), "all twelve held");
    // …so the next connection, from anywhere, hears 503 (and a client can read it).
    assert_eq!(good_request(&server), Ok(503));
    // The idle ones are closed at the header timeout, and room comes back.
    let started = Instant::now();
    for c in first.iter_mut().chain(&mut more) {
        assert!(heard(c, Duration::from_secs(10)).is_some(), "closed by the header timeout");
    }
    println!("twelve idle connections closed {:?} after the caps were reached", started.elapsed());
    assert_eq!(good_request(&server), Ok(200));
}

/// A client that sends requests and never reads the answers (a slow read): once its
/// socket is full the server's writes stall, and after the header timeout the server
/// drops it, freeing its place under the caps.
#[test]
fn a_client_that_never_reads_its_answers_is_dropped() {
    let server =
        Server::start(&["--header-timeout", "1", "--rate-limit", "0", "--max-connections-per-address", "1"], &[]);
    let to: SocketAddr = server.url.trim_start_matches("http://").parse().unwrap();
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind(&SocketAddr::new(Ipv4Addr::new(127, 0, 0, 2).into(), 0).into()).unwrap();
    socket.connect(&to.into()).unwrap();
    let mut reader: TcpStream = socket.into();
    // 2,000 pipelined requests for the page: tens of megabytes of answers, never read.
    let requests = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n".repeat(2000);
    let mut sending = reader.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = sending.write_all(&requests);
    });
    std::thread::sleep(Duration::from_secs(4));
    // Meanwhile, and after, others are served.
    assert_eq!(good_request(&server), Ok(200));
    // Its place is free again: a new connection from its address (cap 1) is served.
    let mut again = connect_from(Ipv4Addr::new(127, 0, 0, 2), &server);
    again.write_all(b"GET /api/models HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").unwrap();
    let answer = heard(&mut again, Duration::from_secs(5)).expect("answered and closed");
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer[..answer.len().min(200)]));
    // And the reader finds its connection ended part-way through the answers.
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    reader.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    loop {
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    let page = ureq::get(&server.url).call().unwrap().into_string().unwrap().len();
    assert!(got < 2000 * page, "all {got} bytes of answers arrived: it was never dropped");
    writer.join().unwrap();
}
