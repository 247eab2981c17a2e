//! The egress proxy over real sockets on loopback: what it tunnels and
//! forwards, and every way to this machine or a private network it refuses.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use runtime::egress::{self, Policy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A proxy with `policy`, served on loopback; its address.
async fn proxy(policy: Policy) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(egress::serve(listener, Arc::new(policy), "test-site".to_owned()));
    addr
}

/// Sends `request` to the proxy and reads all it answers (until it closes,
/// or 15 s).
async fn ask(proxy: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_all(&mut stream).await
}

async fn read_all(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// An upstream that echoes what it reads.
async fn echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    addr
}

/// Nothing connected to `listener` (it is never accepted from elsewhere).
async fn accepted_nothing(listener: &TcpListener) -> bool {
    tokio::time::timeout(Duration::from_millis(300), listener.accept()).await.is_err()
}

fn refused(answer: &str) -> bool {
    answer.starts_with("HTTP/1.1 403 ") && answer.contains("is not on the outside network")
}

/// A non-loopback IPv4 address of this machine's interfaces, read here
/// with getifaddrs (not through the policy).
fn interface_v4() -> Option<Ipv4Addr> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list`, freed below.
    assert_eq!(unsafe { libc::getifaddrs(&mut list) }, 0);
    let mut found = None;
    let mut cursor = list;
    while !cursor.is_null() {
        // SAFETY: a node of the list, not yet freed.
        let entry = unsafe { &*cursor };
        // SAFETY: ifa_addr, when set, is a sockaddr; AF_INET ones are sockaddr_in.
        if !entry.ifa_addr.is_null() && i32::from(unsafe { (*entry.ifa_addr).sa_family }) == libc::AF_INET {
            let sin = unsafe { &*entry.ifa_addr.cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            if !ip.is_loopback() && found.is_none() {
                found = Some(ip);
            }
        }
        cursor = entry.ifa_next;
    }
    // SAFETY: freed once, nothing refers to it.
    unsafe { libc::freeifaddrs(list) };
    found
}

#[tokio::test]
async fn a_connect_to_an_allowed_upstream_tunnels_bytes_both_ways() {
    let upstream = echo().await;
    let proxy = proxy(Policy::outside().unwrap().allowing(&[upstream])).await;
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    // The first bytes of the tunnel come with the head, as TLS clients send them.
    stream.write_all(format!("CONNECT {upstream} HTTP/1.1\r\nHost: {upstream}\r\n\r\nhello").as_bytes()).await.unwrap();
    let established = b"HTTP/1.1 200 Connection Established\r\n\r\n";
    let mut head = vec![0u8; established.len()];
    stream.read_exact(&mut head).await.unwrap();
    assert_eq!(head, established);
    let mut echoed = [0u8; 5];
    stream.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"hello");
    stream.write_all(b" world").await.unwrap();
    let mut echoed = [0u8; 6];
    stream.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b" world");
}

#[tokio::test]
async fn a_connect_to_loopback_is_refused_and_connects_nothing() {
    let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = target.local_addr().unwrap().port();
    let proxy = proxy(Policy::outside().unwrap()).await;
    for destination in [format!("127.0.0.1:{port}"), format!("127.1.2.3:{port}")] {
        let answer = ask(proxy, format!("CONNECT {destination} HTTP/1.1\r\n\r\n").as_bytes()).await;
        assert!(refused(&answer), "{destination}: {answer}");
        assert!(answer.contains(&destination), "the answer names the destination: {answer}");
    }
    assert!(accepted_nothing(&target).await);
}

#[tokio::test]
async fn a_connect_to_ipv6_loopback_is_refused_and_connects_nothing() {
    let Ok(target) = TcpListener::bind("[::1]:0").await else {
        eprintln!("no IPv6 loopback here: only the refusal is checked");
        let answer = ask(proxy(Policy::outside().unwrap()).await, b"CONNECT [::1]:22 HTTP/1.1\r\n\r\n").await;
        assert!(refused(&answer), "{answer}");
        return;
    };
    let port = target.local_addr().unwrap().port();
    let answer =
        ask(proxy(Policy::outside().unwrap()).await, format!("CONNECT [::1]:{port} HTTP/1.1\r\n\r\n").as_bytes()).await;
    assert!(refused(&answer), "{answer}");
    assert!(accepted_nothing(&target).await);
}

#[tokio::test]
async fn a_connect_to_localhost_by_name_is_refused_and_connects_nothing() {
    let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = target.local_addr().unwrap().port();
    let target6 = TcpListener::bind(format!("[::1]:{port}")).await.ok();
    let answer =
        ask(proxy(Policy::outside().unwrap()).await, format!("CONNECT localhost:{port} HTTP/1.1\r\n\r\n").as_bytes())
            .await;
    assert!(refused(&answer), "{answer}");
    assert!(accepted_nothing(&target).await);
    if let Some(target6) = target6 {
        assert!(accepted_nothing(&target6).await);
    }
}

#[tokio::test]
async fn a_connect_to_ipv4_mapped_or_compatible_loopback_is_refused_and_connects_nothing() {
    let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = target.local_addr().unwrap().port();
    let proxy = proxy(Policy::outside().unwrap()).await;
    for host in ["[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "[::127.0.0.1]", "[64:ff9b::7f00:1]"] {
        let answer = ask(proxy, format!("CONNECT {host}:{port} HTTP/1.1\r\n\r\n").as_bytes()).await;
        assert!(refused(&answer), "{host}: {answer}");
    }
    assert!(accepted_nothing(&target).await);
}

#[tokio::test]
async fn a_connect_to_the_unspecified_address_is_refused_and_connects_nothing() {
    // On Linux, connecting to 0.0.0.0 (or ::) reaches this machine.
    let target = TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = target.local_addr().unwrap().port();
    let proxy = proxy(Policy::outside().unwrap()).await;
    for host in ["0.0.0.0", "[::]", "0"] {
        let answer = ask(proxy, format!("CONNECT {host}:{port} HTTP/1.1\r\n\r\n").as_bytes()).await;
        assert!(refused(&answer), "{host}: {answer}");
    }
    assert!(accepted_nothing(&target).await);
}

#[tokio::test]
async fn a_connect_to_cloud_metadata_or_a_private_network_is_refused() {
    let proxy = proxy(Policy::outside().unwrap()).await;
    for destination in [
        "169.254.169.254:80",
        "10.0.0.1:80",
        "172.16.0.1:80",
        "192.168.1.1:80",
        "100.64.0.1:80",
        "[fd00::1]:80",
        "[fe80::1]:80",
    ] {
        let started = std::time::Instant::now();
        let answer = ask(proxy, format!("CONNECT {destination} HTTP/1.1\r\n\r\n").as_bytes()).await;
        assert!(refused(&answer), "{destination}: {answer}");
        // Refused before any connection is tried (which would take long or fail: 502/504).
        assert!(started.elapsed() < Duration::from_secs(2), "{destination}");
    }
}

#[tokio::test]
async fn a_connect_to_this_machines_own_interface_address_is_refused_and_connects_nothing() {
    let own = interface_v4().expect("this test needs a non-loopback IPv4 interface");
    let target = TcpListener::bind(SocketAddr::new(IpAddr::V4(own), 0)).await.unwrap();
    let destination = target.local_addr().unwrap();
    let answer =
        ask(proxy(Policy::outside().unwrap()).await, format!("CONNECT {destination} HTTP/1.1\r\n\r\n").as_bytes())
            .await;
    assert!(refused(&answer), "{destination}: {answer}");
    assert!(accepted_nothing(&target).await);
}

#[tokio::test]
async fn a_malformed_request_line_gets_400() {
    let proxy = proxy(Policy::outside().unwrap()).await;
    for request in
        [&b"CONNECT\r\n\r\n"[..], b"GET  HTTP/1.1\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"]
    {
        let answer = ask(proxy, request).await;
        assert!(answer.starts_with("HTTP/1.1 400 "), "{request:?}: {answer}");
    }
    for target in ["example.org", "example.org:0", "example.org:http", "[::1", "user@example.org:443", "exa mple:443"] {
        let answer = ask(proxy, format!("CONNECT {target} HTTP/1.1\r\n\r\n").as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400 "), "{target}: {answer}");
    }
}

#[tokio::test]
async fn an_oversized_head_gets_431() {
    let proxy = proxy(Policy::outside().unwrap()).await;
    let request = format!("CONNECT example.org:443 HTTP/1.1\r\nX-Padding: {}\r\n\r\n", "a".repeat(20 * 1024));
    let answer = ask(proxy, request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431 ") && answer.contains("16 KiB"), "{answer}");
}

#[tokio::test]
async fn a_head_that_never_arrives_gets_408_after_10_seconds() {
    let proxy = proxy(Policy::outside().unwrap()).await;
    let started = std::time::Instant::now();
    let answer = ask(proxy, b"CONNECT exam").await;
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(9) && waited < Duration::from_secs(13), "{waited:?}");
}

#[tokio::test]
async fn a_plain_http_request_is_forwarded_in_origin_form_without_proxy_headers() {
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = upstream.local_addr().unwrap();
    let received = tokio::spawn(async move {
        let (mut stream, _) = upstream.accept().await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nfrom up\n").await.unwrap();
        String::from_utf8(head).unwrap()
    });
    let proxy = proxy(Policy::outside().unwrap().allowing(&[addr])).await;
    let request = format!(
        "GET http://{addr}/x?y=1 HTTP/1.1\r\nHost: elsewhere.example\r\nProxy-Authorization: Basic c2VjcmV0\r\n\
         Proxy-Connection: keep-alive\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nAccept: */*\r\n\r\n"
    );
    let answer = ask(proxy, request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK") && answer.ends_with("from up\n"), "{answer}");
    let head = received.await.unwrap();
    assert!(head.starts_with("GET /x?y=1 HTTP/1.1\r\n"), "{head}");
    assert!(head.contains(&format!("\r\nHost: {addr}\r\n")) && !head.contains("elsewhere"), "{head}");
    assert!(head.contains("\r\nConnection: close\r\n") && !head.contains("keep-alive"), "{head}");
    assert!(!head.to_ascii_lowercase().contains("proxy-"), "{head}");
    assert!(!head.contains("X-Hop") && head.contains("\r\nAccept: */*\r\n"), "{head}");
}

#[tokio::test]
async fn a_plain_http_request_to_loopback_is_refused_and_connects_nothing() {
    let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = target.local_addr().unwrap();
    let answer = ask(
        proxy(Policy::outside().unwrap()).await,
        format!("GET http://{addr}/ HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(refused(&answer), "{answer}");
    assert!(accepted_nothing(&target).await);
}

#[tokio::test]
async fn an_origin_form_request_gets_405() {
    let answer = ask(proxy(Policy::outside().unwrap()).await, b"GET /x HTTP/1.1\r\nHost: proxy\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 405 ") && answer.contains("CONNECT"), "{answer}");
}

#[tokio::test]
async fn a_name_that_does_not_resolve_gets_502() {
    let answer =
        ask(proxy(Policy::outside().unwrap()).await, b"CONNECT nothing-here.invalid:443 HTTP/1.1\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 502 ") && answer.contains("does not resolve"), "{answer}");
}

#[tokio::test]
async fn a_refused_connection_to_an_allowed_address_gets_502() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let answer = ask(
        proxy(Policy::outside().unwrap().allowing(&[closed])).await,
        format!("CONNECT {closed} HTTP/1.1\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 502 "), "{answer}");
}

#[tokio::test]
async fn more_than_256_connections_at_once_get_503() {
    let proxy = proxy(Policy::outside().unwrap()).await;
    let mut held = Vec::new();
    for _ in 0..egress::CONNECTIONS_MAX {
        held.push(TcpStream::connect(proxy).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut one_more = TcpStream::connect(proxy).await.unwrap();
    let answer = read_all(&mut one_more).await;
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    // A held one closing frees its place.
    held.pop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let answer = ask(proxy, b"GET /x HTTP/1.1\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 405 "), "{answer}");
}

fn allowed(addr: &str) -> bool {
    let addr: SocketAddr = addr.parse().unwrap();
    Policy::outside().unwrap().allows(addr)
}

#[test]
fn the_policy_allows_public_addresses_and_the_registries_documentation_address() {
    for addr in [
        "203.0.113.80:443",
        "1.1.1.1:443",
        "8.8.8.8:53",
        "151.101.0.223:443",
        "100.63.255.255:80",
        "100.128.0.1:80",
        "172.15.255.255:80",
        "172.32.0.1:80",
        "169.253.0.1:80",
        "192.167.0.1:80",
        "11.0.0.1:80",
        "223.255.255.255:80",
        "[2606:4700::1111]:443",
        "[2a04:4e42::223]:443",
        "[::ffff:203.0.113.80]:443",
        "[::ffff:1.1.1.1]:443",
        "[64:ff9b::101:101]:443",
        "[2002:101:101::1]:443",
    ] {
        assert!(allowed(addr), "{addr} should be allowed");
    }
}

#[test]
fn the_policy_refuses_special_ipv4_ranges() {
    for addr in [
        "127.0.0.1:5432",
        "127.255.255.254:80",
        "0.0.0.0:80",
        "0.1.2.3:80",
        "10.0.0.1:80",
        "10.255.255.53:53",
        "172.16.0.1:80",
        "172.31.255.255:80",
        "192.168.1.1:80",
        "169.254.169.254:80",
        "100.64.0.1:80",
        "100.127.255.255:80",
        "224.0.0.1:80",
        "239.255.255.250:1900",
        "240.0.0.1:80",
        "255.255.255.255:80",
    ] {
        assert!(!allowed(addr), "{addr} should be refused");
    }
}

#[test]
fn the_policy_refuses_special_ipv6_ranges() {
    for addr in [
        "[::1]:80",
        "[::]:80",
        "[fe80::1]:80",
        "[febf::1]:80",
        "[fc00::1]:80",
        "[fd00::2]:80",
        "[ff02::1]:80",
        "[fec0::1]:80",
        "[64:ff9b:1::1]:80",
    ] {
        assert!(!allowed(addr), "{addr} should be refused");
    }
}

#[test]
fn the_policy_judges_ipv6_forms_by_the_ipv4_address_they_embed() {
    for addr in [
        "[::ffff:127.0.0.1]:80",
        "[::ffff:7f00:1]:80",
        "[::127.0.0.1]:80",
        "[::ffff:0:127.0.0.1]:80",
        "[::ffff:10.0.0.1]:80",
        "[::ffff:169.254.169.254]:80",
        "[::ffff:192.168.0.1]:80",
        "[::ffff:100.64.0.1]:80",
        "[::ffff:0.0.0.0]:80",
        "[64:ff9b::a9fe:a9fe]:80",
        "[64:ff9b::127.0.0.1]:80",
        "[2002:7f00:1::]:80",
        "[2002:a00:1::1]:80",
    ] {
        assert!(!allowed(addr), "{addr} should be refused");
    }
}

#[test]
fn the_policy_refuses_this_machines_own_interface_addresses() {
    let own = interface_v4().expect("this test needs a non-loopback IPv4 interface");
    let policy = Policy::outside().unwrap();
    assert!(policy.own_addresses().contains(&IpAddr::V4(own)), "{:?}", policy.own_addresses());
    assert!(!policy.allows(SocketAddr::new(IpAddr::V4(own), 443)), "{own}");
    assert!(!policy.allows(SocketAddr::new(IpAddr::V6(own.to_ipv6_mapped()), 443)), "{own} mapped");
}

#[test]
fn allowing_allows_exactly_the_given_addresses() {
    let upstream: SocketAddr = "127.0.0.1:4000".parse().unwrap();
    let policy = Policy::outside().unwrap().allowing(&[upstream]);
    assert!(policy.allows(upstream));
    assert!(!policy.allows("127.0.0.1:4001".parse().unwrap()));
    assert!(!policy.allows("[::ffff:127.0.0.1]:4000".parse().unwrap()));
}

#[tokio::test]
#[ignore = "reaches PyPI: needs the network (cargo test -p runtime --test egress -- --ignored)"]
async fn real_clients_reach_the_package_registries_through_the_proxy() {
    // Nothing allowed beyond the outside network: the registries must be on it.
    let proxy = format!("http://{}", proxy(Policy::outside().unwrap()).await);
    let dir = tempfile::tempdir().unwrap();
    let curl = tokio::process::Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "30", "https://pypi.org/simple/flask/"])
        .env("HTTPS_PROXY", &proxy)
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&curl.stdout), "200", "{}", String::from_utf8_lossy(&curl.stderr));
    let pip = tokio::process::Command::new("pip3")
        .args([
            "download",
            "--no-deps",
            "--no-cache-dir",
            "--no-index",
            "--find-links",
            "https://pypi.org/simple/itsdangerous/",
        ])
        .arg("-d")
        .arg(dir.path())
        .arg("itsdangerous")
        .env("HTTPS_PROXY", &proxy)
        .env("https_proxy", &proxy)
        .env_remove("PIP_FIND_LINKS")
        .output()
        .await
        .unwrap();
    assert!(pip.status.success(), "{}{}", String::from_utf8_lossy(&pip.stdout), String::from_utf8_lossy(&pip.stderr));
    assert!(std::fs::read_dir(dir.path()).unwrap().count() > 0);
}

/// The provider's network is not the outside: a neighbour on this
/// machine's own link (its router, say) is refused like the machine.
#[test]
fn the_policy_refuses_this_machines_neighbours_on_its_own_networks() {
    let own = interface_v4().expect("this test needs a non-loopback IPv4 interface");
    let [a, b, c, d] = own.octets();
    // The other end of the same /31 at least: on every network this machine is on.
    let neighbour = Ipv4Addr::new(a, b, c, d ^ 1);
    let policy = Policy::outside().unwrap();
    assert!(!policy.allows(SocketAddr::new(IpAddr::V4(neighbour), 80)), "{neighbour} is on {own}'s network");
    // And the outside still is.
    assert!(policy.allows("203.0.113.80:443".parse().unwrap()) || own.octets()[..3] == [203, 0, 113]);
}
