//! The control and internal listeners' limits, against a real `commons
//! up`: a slow or half-sent handshake or head is cut off at the header
//! timeout, and connections beyond the cap are closed as they come.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{control_pin, control_request, free_port, up_with};

/// Whether the peer closed `stream` (rather than left it waiting until
/// the test's own 60 s failsafe).
fn closed_by_peer(stream: &mut impl Read) -> bool {
    let mut rest = Vec::new();
    match stream.read_to_end(&mut rest) {
        Ok(_) => true,
        Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
    }
}

/// `commons up` with `config`: its data, process, control listener, CA
/// and internal listener.
fn start(config: &str) -> (tempfile::TempDir, Child, SocketAddr, agent::tls::Pin, SocketAddr) {
    let (dir, child, _, control, pin, internal) = start_all(config);
    (dir, child, control, pin, internal)
}

/// `start`, with the public listener too.
fn start_all(config: &str) -> (tempfile::TempDir, Child, SocketAddr, SocketAddr, agent::tls::Pin, SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("commons.toml"), config).unwrap();
    let internal = free_port();
    let (child, public, control) = up_with(dir.path(), &internal.to_string(), &[]);
    let pin = control_pin(dir.path());
    (dir, child, public, control, pin, internal)
}

/// What the internal listener answers a request for no site: its
/// status line, or nothing when it closed the connection unanswered.
fn internal_answer(internal: SocketAddr) -> String {
    let mut stream = TcpStream::connect(internal).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: search\r\nConnection: close\r\n\r\n");
    let mut said = Vec::new();
    let _ = stream.read_to_end(&mut said);
    String::from_utf8_lossy(&said).lines().next().unwrap_or("").to_owned()
}

fn stop(mut child: Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_client_that_sends_half_a_handshake_or_half_a_head_is_disconnected_at_the_header_timeout() {
    let (_dir, child, control, pin, internal) = start("header_read_timeout_ms = 300\n");
    // Half a TLS record: the handshake never completes.
    let mut raw = TcpStream::connect(control).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    raw.write_all(&[0x16, 0x03, 0x01, 0x02]).unwrap();
    assert!(closed_by_peer(&mut raw), "a half-sent handshake was left open");

    // A finished handshake, then half a request head.
    let config = Arc::new(agent::tls::client_config(pin, Arc::default()));
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let connection = rustls::ClientConnection::new(config, name).unwrap();
    let tcp = TcpStream::connect(control).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut tls = rustls::StreamOwned::new(connection, tcp);
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: con").unwrap();
    tls.flush().unwrap();
    assert!(closed_by_peer(&mut tls), "a half-sent head was left open");

    // Half a head on the internal listener too.
    let mut raw = TcpStream::connect(internal).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: sea").unwrap();
    assert!(closed_by_peer(&mut raw), "a half-sent head was left open on the internal listener");

    // A whole request in time is answered.
    assert_eq!(control_request(control, pin, "GET", "/healthz", "", None).unwrap().0, 200);
    assert!(internal_answer(internal).starts_with("HTTP/1.1 "), "{}", internal_answer(internal));
    stop(child);
}

#[test]
fn connections_beyond_the_cap_are_refused_until_one_closes() {
    let config = "control_connections_max = 2\ninternal_connections_max = 2\nheader_read_timeout_ms = 60000\n";
    let (_dir, child, control, pin, internal) = start(config);
    assert!(internal_answer(internal).starts_with("HTTP/1.1 "));
    let held_inside: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(internal).unwrap()).collect();
    // The two are accepted before the third (one worker accepts in order).
    assert_eq!(internal_answer(internal), "", "a third internal connection was served");
    drop(held_inside);
    let deadline = Instant::now() + Duration::from_secs(20);
    while internal_answer(internal).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(internal_answer(internal).starts_with("HTTP/1.1 "), "served again");

    let held: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(control).unwrap()).collect();
    let refused = control_request(control, pin, "GET", "/healthz", "", None);
    assert!(refused.is_err(), "a third connection was served: {refused:?}");
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(20);
    while control_request(control, pin, "GET", "/healthz", "", None).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(control_request(control, pin, "GET", "/healthz", "", None).unwrap().0, 200, "served again");
    stop(child);
}

#[test]
fn the_public_listener_closes_connections_beyond_its_cap_until_one_closes() {
    // One worker, so that the held connections are accepted before the next.
    let (_dir, child, public, ..) = start_all("public_connections_max = 2\nworkers = 1\n");
    assert!(internal_answer(public).starts_with("HTTP/1.1 "));
    let held: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(public).unwrap()).collect();
    assert_eq!(internal_answer(public), "", "a third public connection was served");
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(20);
    while internal_answer(public).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(internal_answer(public).starts_with("HTTP/1.1 "), "served again");
    stop(child);
}
