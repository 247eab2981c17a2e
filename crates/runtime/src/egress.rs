//! The egress proxy: an app's only way to the outside network.
//!
//! An instance's network namespace has only loopback; the node agent
//! creates a listening socket inside it and serves this proxy on it, from
//! the host's namespace. Apps and their install steps get
//! `HTTPS_PROXY`/`HTTP_PROXY` pointing at it. Because the connections the
//! proxy opens start from the host, it is the proxy that keeps an app from
//! the host's own services (the gateway, the internal and control
//! listeners, PostgreSQL on loopback, other instances), the provider's
//! private network and cloud metadata endpoints: every destination is
//! resolved once, every resolved address checked against a [`Policy`], and
//! only a checked address is connected to (nothing is resolved again after
//! the check, so DNS rebinding has no window).
//!
//! Each connection carries one request: `CONNECT host:port` (tunnelled
//! both ways until either side closes) or an absolute-form plain-HTTP
//! request (`GET http://host/path`, forwarded in origin form with
//! `Connection: close` and no `Proxy-*` headers, its response streamed
//! back). Everything else is answered with an HTTP error and a one-line
//! text body saying what was wrong.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, timeout, timeout_at};

/// The largest request head read (request line and headers).
pub const HEAD_MAX: usize = 16 * 1024;
/// How long a client has to send its request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long resolving and connecting to a destination may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections one proxy serves at once; more are answered 503.
pub const CONNECTIONS_MAX: usize = 256;
/// Headers of a request head, at most.
const HEADERS_MAX: usize = 100;
/// How long writing one of the proxy's own answers may take.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Which destinations the proxy may connect to.
#[derive(Clone, Debug)]
pub struct Policy {
    /// This machine's own interface addresses, read at construction.
    own: Vec<IpAddr>,
    /// Allowed whatever they are (tests' loopback upstreams).
    allowed: Vec<SocketAddr>,
}

impl Policy {
    /// The outside network only: refuses loopback, unspecified, link-local
    /// (169.254/16, fe80::/10: cloud metadata), multicast, broadcast and
    /// reserved (224/3), private (10/8, 172.16/12, 192.168/16, fc00::/7,
    /// the deprecated site-local fec0::/10), shared/CGNAT 100.64/10,
    /// 0.0.0.0/8, the local-use NAT64 prefix 64:ff9b:1::/48, the IPv6 forms
    /// that embed an IPv4 address (mapped `::ffff:a.b.c.d`, compatible
    /// `::a.b.c.d`, translated `::ffff:0:a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`,
    /// 6to4 `2002:aabb:ccdd::`) judged by the address they embed, the
    /// benchmarking 198.18/15 and protocol-assignment 192.0.0/24 ranges,
    /// and every address of this machine's own interfaces and of the
    /// networks they are on (its neighbours, its router: the provider's
    /// network), read with `getifaddrs` at every check, so that an address
    /// added later counts too. Documentation ranges (192.0.2/24,
    /// 198.51.100/24, 203.0.113/24) count as outside unless a link of this
    /// machine's is there: a machine may reach its package registries there.
    pub fn outside() -> std::io::Result<Policy> {
        let own = interface_addresses()?.into_iter().map(|(ip, _)| ip).collect();
        Ok(Policy { own, allowed: Vec::new() })
    }

    /// For tests: also allows exactly these addresses (e.g. a loopback
    /// upstream the test runs).
    pub fn allowing(mut self, addrs: &[SocketAddr]) -> Policy {
        self.allowed.extend_from_slice(addrs);
        self
    }

    /// Whether the proxy may connect to `addr`.
    pub fn allows(&self, addr: SocketAddr) -> bool {
        if self.allowed.contains(&addr) {
            return true;
        }
        let ip = addr.ip();
        let own = |candidate: IpAddr| self.own.iter().any(|&own| own == candidate || canonical(own) == candidate);
        if own(ip) || own(canonical(ip)) {
            return false;
        }
        // This machine's links as they are now (a failure to read them
        // refuses: better no way out than one onto the provider's network).
        let Ok(links) = interface_addresses() else { return false };
        if links.iter().any(|&(net, prefix)| same_network(net, canonical(ip), prefix) || same_network(net, ip, prefix))
        {
            return false;
        }
        match ip {
            IpAddr::V4(v4) => v4_outside(v4),
            IpAddr::V6(v6) => v6_outside(v6),
        }
    }

    /// This machine's own interface addresses, as read at construction.
    pub fn own_addresses(&self) -> &[IpAddr] {
        &self.own
    }
}

/// Whether `ip` is on the network `net`/`prefix` (same family only).
fn same_network(net: IpAddr, ip: IpAddr, prefix: u8) -> bool {
    match (net, ip) {
        (IpAddr::V4(net), IpAddr::V4(ip)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix.min(32))).unwrap_or(0);
            u32::from(net) & mask == u32::from(ip) & mask
        }
        (IpAddr::V6(net), IpAddr::V6(ip)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix.min(128))).unwrap_or(0);
            u128::from(net) & mask == u128::from(ip) & mask
        }
        _ => false,
    }
}

/// An address as the IPv4 one it embeds, if it is an IPv6 form embedding
/// one; otherwise itself.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => embedded_v4(v6).map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// The IPv4 address an IPv6 address carries: mapped (`::ffff:0:0/96`),
/// compatible (`::/96`, which holds `::` and `::1` as 0.0.0.0 and 0.0.0.1),
/// translated (`::ffff:0:0:0/96`), NAT64's well-known prefix
/// (`64:ff9b::/96`) and 6to4 (`2002::/16`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let [.., a, b, c, d] = ip.octets();
    let low = Ipv4Addr::new(a, b, c, d);
    match ip.segments() {
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0, 0, 0, 0, 0, 0, _, _] | [0, 0, 0, 0, 0xffff, 0, _, _] => Some(low),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        [0x2002, high, low16, ..] => Some(Ipv4Addr::from((u32::from(high) << 16) | u32::from(low16))),
        _ => None,
    }
}

/// An IPv4 address on the outside network.
fn v4_outside(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    let refused = a == 0 // 0.0.0.0/8, "this network" (connecting to 0.0.0.0 reaches loopback)
        || a == 10 // private
        || a == 127 // loopback
        || (a == 100 && b & 0xc0 == 64) // shared address space, CGNAT
        || (a == 169 && b == 254) // link-local, cloud metadata
        || (a == 172 && b & 0xf0 == 16) // private
        || (a == 192 && b == 168) // private
        || (a == 198 && b & 0xfe == 18) // benchmarking 198.18/15
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments 192.0.0/24
        || a >= 224; // multicast 224/4, reserved 240/4, broadcast
    !refused
}

/// An IPv6 address on the outside network.
fn v6_outside(ip: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_v4(ip) {
        return v4_outside(v4);
    }
    let s = ip.segments();
    let refused = s[0] & 0xff00 == 0xff00 // multicast
        || s[0] & 0xffc0 == 0xfe80 // link-local
        || s[0] & 0xffc0 == 0xfec0 // site-local (deprecated)
        || s[0] & 0xfe00 == 0xfc00 // unique local
        || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) // local-use NAT64
        || (s[0] == 0x100 && s[1] == 0 && s[2] == 0 && s[3] == 0); // discard-only
    !refused
}

/// The addresses of this machine's interfaces (`getifaddrs`).
/// This machine's interface addresses, each with its network's prefix
/// length (from its netmask; the full length when it has none).
fn interface_addresses() -> std::io::Result<Vec<(IpAddr, u8)>> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs(3) fills `list` with a list we free below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut addrs = Vec::new();
    let mut cursor = list;
    while !cursor.is_null() {
        // SAFETY: a node of the list getifaddrs returned, not yet freed.
        let entry = unsafe { &*cursor };
        if !entry.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr whose family says which
            // sockaddr_* it is.
            let family = i32::from(unsafe { (*entry.ifa_addr).sa_family });
            let mask = entry.ifa_netmask;
            if family == libc::AF_INET {
                // SAFETY: an AF_INET address (and its netmask) is a sockaddr_in.
                let sin = unsafe { &*entry.ifa_addr.cast::<libc::sockaddr_in>() };
                // SAFETY: as above, when the netmask is there.
                let prefix = if mask.is_null() {
                    32
                } else {
                    unsafe { &*mask.cast::<libc::sockaddr_in>() }.sin_addr.s_addr.count_ones() as u8
                };
                addrs.push((IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))), prefix));
            } else if family == libc::AF_INET6 {
                // SAFETY: an AF_INET6 address (and its netmask) is a sockaddr_in6.
                let sin6 = unsafe { &*entry.ifa_addr.cast::<libc::sockaddr_in6>() };
                // SAFETY: as above, when the netmask is there.
                let prefix = if mask.is_null() {
                    128
                } else {
                    unsafe { &*mask.cast::<libc::sockaddr_in6>() }
                        .sin6_addr
                        .s6_addr
                        .iter()
                        .map(|b| b.count_ones() as u8)
                        .sum()
                };
                addrs.push((IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)), prefix));
            }
        }
        cursor = entry.ifa_next;
    }
    // SAFETY: the list getifaddrs returned, freed once; no reference to it
    // outlives this.
    unsafe { libc::freeifaddrs(list) };
    Ok(addrs)
}

/// Serves the proxy on `listener` until the listener fails (drop or abort
/// the future to stop it sooner: connections already being served go on
/// until either side closes). Each connection gets one request: `CONNECT
/// host:port` is resolved, every resolved address checked against
/// `policy`, the first allowed one that answers connected to, and bytes
/// tunnelled both ways; an absolute-form `GET http://host/path` (any
/// method) is forwarded in origin form likewise. At most
/// [`CONNECTIONS_MAX`] at once (beyond: 503); the head must arrive within
/// [`HEAD_TIMEOUT`] and fit in [`HEAD_MAX`]. `site` names the app in logs.
pub async fn serve(listener: TcpListener, policy: Arc<Policy>, site: String) {
    let site: Arc<str> = site.into();
    let permits = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) if transient(&e) => {
                tracing::warn!(site = %site, error = %e, "the egress proxy cannot accept a connection now");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(site = %site, error = %e, "the egress proxy's listener failed; the proxy stops");
                return;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Never waited for: a short answer fits in the socket's buffer.
            let message = format!("the egress proxy already serves {CONNECTIONS_MAX} connections; try again later");
            let _ = stream.try_write(&answer_bytes(503, &message));
            continue;
        };
        let (policy, site) = (policy.clone(), site.clone());
        tokio::spawn(async move {
            let _permit = permit;
            handle(stream, &policy, &site).await;
        });
    }
}

/// Accept errors the listener survives: a connection gone before it was
/// accepted, or descriptors or memory short for a moment.
fn transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionReset, Interrupted};
    matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted)
        || matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

/// Why a request is not proxied: the status answered and its one line.
#[derive(Debug)]
struct Refusal {
    status: u16,
    message: String,
}

fn refuse(status: u16, message: impl Into<String>) -> Refusal {
    Refusal { status, message: message.into() }
}

/// A parsed request head, owned.
struct Head {
    method: String,
    target: String,
    /// The minor HTTP version: 0 or 1.
    version: u8,
    headers: Vec<(String, Vec<u8>)>,
}

/// Serves one connection: reads its head, proxies it, or answers why not.
async fn handle(mut client: TcpStream, policy: &Policy, site: &str) {
    let read = match timeout(HEAD_TIMEOUT, read_head(&mut client)).await {
        Ok(read) => read,
        Err(_) => Err(refuse(408, format!("the request head did not arrive within {} s", HEAD_TIMEOUT.as_secs()))),
    };
    let outcome = match read {
        // Closed before a whole head: nobody to answer.
        Ok(None) => return,
        Ok(Some((head, rest))) => proxy(&mut client, head, rest, policy, site).await,
        Err(refusal) => Err(refusal),
    };
    if let Err(Refusal { status, message }) = outcome {
        answer(&mut client, status, &message).await;
    }
}

/// Reads a request head: the head and the bytes after it, or `None` if
/// the client closed first.
async fn read_head(client: &mut TcpStream) -> Result<Option<(Head, Vec<u8>)>, Refusal> {
    let mut buf = Vec::with_capacity(4096);
    loop {
        let mut chunk = [0u8; 4096];
        let room = (HEAD_MAX - buf.len()).min(chunk.len());
        let n = match client.read(&mut chunk[..room]).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let head = Head {
                    method: request.method.unwrap_or_default().to_owned(),
                    target: request.path.unwrap_or_default().to_owned(),
                    version: request.version.unwrap_or(1),
                    headers: request.headers.iter().map(|h| (h.name.to_owned(), h.value.to_vec())).collect(),
                };
                return Ok(Some((head, buf.split_off(len))));
            }
            Ok(httparse::Status::Partial) if buf.len() >= HEAD_MAX => {
                return Err(refuse(431, format!("the request head is larger than {} KiB", HEAD_MAX / 1024)));
            }
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => {
                return Err(refuse(431, format!("the request head has more than {HEADERS_MAX} headers")));
            }
            Err(e) => return Err(refuse(400, format!("malformed request head: {e}"))),
        }
    }
}

/// Proxies one parsed request: a CONNECT tunnel or a forwarded plain-HTTP
/// request.
async fn proxy(client: &mut TcpStream, head: Head, rest: Vec<u8>, policy: &Policy, site: &str) -> Result<(), Refusal> {
    if head.method == "CONNECT" {
        let Some((host, port)) = authority(&head.target, None) else {
            return Err(refuse(400, format!("CONNECT needs host:port, not `{}`", head.target)));
        };
        let mut upstream = connect(&host, port, policy, site).await?;
        if !write_answer(client, b"HTTP/1.1 200 Connection Established\r\n\r\n").await {
            return Ok(());
        }
        if !rest.is_empty() && upstream.write_all(&rest).await.is_err() {
            return Ok(());
        }
        let _ = tokio::io::copy_bidirectional(client, &mut upstream).await;
        return Ok(());
    }
    let Some(after_scheme) = strip_prefix_ignore_case(&head.target, "http://") else {
        if head.target.contains("://") {
            return Err(refuse(
                400,
                format!("`{}`: only http:// is proxied this way; use CONNECT for https", head.target),
            ));
        }
        return Err(refuse(
            405,
            format!(
                "{} {}: this is a proxy: send CONNECT host:port or an absolute http:// URL",
                head.method, head.target
            ),
        ));
    };
    let split = after_scheme.find(['/', '?', '#']).unwrap_or(after_scheme.len());
    let (host_port, path) = after_scheme.split_at(split);
    let Some((host, port)) = authority(host_port, Some(80)) else {
        return Err(refuse(400, format!("`{}` names no host[:port] the proxy takes", head.target)));
    };
    let path = match path.split('#').next().unwrap_or_default() {
        "" => "/".to_owned(),
        query if query.starts_with('?') => format!("/{query}"),
        path => path.to_owned(),
    };
    let mut upstream = connect(&host, port, policy, site).await?;
    let request = origin_form(&head, &path, host_port);
    if upstream.write_all(&request).await.is_err() || upstream.write_all(&rest).await.is_err() {
        return Err(refuse(502, format!("{host}:{port} closed before taking the request")));
    }
    let (mut client_read, mut client_write) = client.split();
    let (mut upstream_read, mut upstream_write) = upstream.split();
    // The body (if any) goes up while the response comes down; the
    // response's end (the upstream closes: `Connection: close`) ends both.
    let body = async {
        let _ = tokio::io::copy(&mut client_read, &mut upstream_write).await;
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = body => {}
        _ = tokio::io::copy(&mut upstream_read, &mut client_write) => {}
    }
    let _ = client_write.shutdown().await;
    Ok(())
}

/// The request head rewritten for the origin: origin-form `path`, `Host`
/// from the URL's `authority`, `Connection: close`, and without hop-by-hop
/// headers (`Proxy-*`, `Connection`, `Keep-Alive` and those `Connection`
/// names).
fn origin_form(head: &Head, path: &str, authority: &str) -> Vec<u8> {
    let named: Vec<String> = head
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, value)| {
            String::from_utf8_lossy(value).split(',').map(|t| t.trim().to_owned()).collect::<Vec<_>>()
        })
        .collect();
    let hop_by_hop = |name: &str| {
        strip_prefix_ignore_case(name, "proxy-").is_some()
            || ["connection", "keep-alive", "host", "te", "trailer", "upgrade"]
                .iter()
                .any(|h| name.eq_ignore_ascii_case(h))
            || named.iter().any(|n| n.eq_ignore_ascii_case(name))
    };
    let mut out = format!("{} {path} HTTP/1.{}\r\nHost: {authority}\r\n", head.method, head.version).into_bytes();
    for (name, value) in head.headers.iter().filter(|(name, _)| !hop_by_hop(name)) {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &text[prefix.len()..])
}

/// `host:port` (`host` a name, an IPv4 address or a bracketed IPv6 one;
/// the port may be left out when there is a `default`): the host (without
/// brackets) and the port, or `None` if it is not one.
fn authority(text: &str, default: Option<u16>) -> Option<(String, u16)> {
    let port = |p: Option<&str>| match p {
        None => default,
        Some(p) => p.parse::<u16>().ok(),
    };
    let (host, port) = if let Some(bracketed) = text.strip_prefix('[') {
        let (ip, after) = bracketed.split_once(']')?;
        let port = match after {
            "" => port(None),
            after => port(Some(after.strip_prefix(':')?)),
        };
        (ip.parse::<Ipv6Addr>().ok()?.to_string(), port?)
    } else {
        let (host, port) = match text.rsplit_once(':') {
            Some((host, p)) => (host, port(Some(p))?),
            None => (text, port(None)?),
        };
        let name = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_');
        if host.is_empty() || host.len() > 253 || !host.bytes().all(name) {
            return None;
        }
        (host.to_owned(), port)
    };
    (port != 0).then_some((host, port))
}

/// Resolves `host` (once), checks every address against `policy` and
/// connects to the first allowed one that answers, all within
/// [`CONNECT_TIMEOUT`].
async fn connect(host: &str, port: u16, policy: &Policy, site: &str) -> Result<TcpStream, Refusal> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    let destination = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    let resolved: Vec<SocketAddr> = match timeout_at(deadline, tokio::net::lookup_host((host, port))).await {
        Ok(Ok(addrs)) => addrs.collect(),
        Ok(Err(e)) => return Err(refuse(502, format!("{destination} does not resolve: {e}"))),
        Err(_) => {
            return Err(refuse(504, format!("{destination} did not resolve within {} s", CONNECT_TIMEOUT.as_secs())));
        }
    };
    let (allowed, refused): (Vec<SocketAddr>, Vec<SocketAddr>) = resolved.iter().partition(|&&a| policy.allows(a));
    if allowed.is_empty() {
        if resolved.is_empty() {
            return Err(refuse(502, format!("{destination} resolves to no address")));
        }
        tracing::warn!(site = %site, destination = %destination, addresses = ?refused, "the egress proxy refused a destination off the outside network");
        return Err(refuse(
            403,
            format!(
                "{destination} is not on the outside network: the proxy refuses loopback, private, link-local, \
                 multicast and this machine's own addresses ({destination} is {})",
                refused.iter().map(|a| a.ip().to_string()).collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    if !refused.is_empty() {
        tracing::debug!(site = %site, destination = %destination, refused = ?refused, "some addresses of a destination are refused");
    }
    let mut failure = None;
    for addr in allowed {
        match timeout_at(deadline, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => failure = Some(format!("{addr}: {e}")),
            Err(_) => {
                return Err(refuse(
                    504,
                    format!("connecting to {destination} took longer than {} s", CONNECT_TIMEOUT.as_secs()),
                ));
            }
        }
    }
    Err(refuse(502, format!("connecting to {destination} failed ({})", failure.unwrap_or_default())))
}

/// An answer of the proxy's own, with a one-line text body.
fn answer_bytes(status: u16, message: &str) -> Vec<u8> {
    let reason = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    };
    let body = format!("{message}\n");
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Writes `bytes` to the client within [`ANSWER_TIMEOUT`]: false if it is
/// gone or not reading.
async fn write_answer(client: &mut TcpStream, bytes: &[u8]) -> bool {
    matches!(timeout(ANSWER_TIMEOUT, client.write_all(bytes)).await, Ok(Ok(())))
}

/// Answers `status` with `message`, then closes: the write side first,
/// then what the client still sends is read and dropped for a moment, so
/// that unread bytes (an oversized head) do not reset the connection
/// before the client reads the answer.
async fn answer(client: &mut TcpStream, status: u16, message: &str) {
    if !write_answer(client, &answer_bytes(status, message)).await {
        return;
    }
    let _ = client.shutdown().await;
    let drain = async {
        let mut sink = [0u8; 4096];
        let mut left: usize = 64 * 1024;
        while left > 0 {
            match client.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = timeout(Duration::from_secs(1), drain).await;
}
