//! Active health checks: one probe of one instance.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Whether the instance at `addr` is healthy: it accepts a connection
/// within `timeout` and, when the site has a health path, answers
/// `GET path` with a 2xx or 3xx status within `timeout`.
pub(crate) async fn probe(
    instances: &netns::Directory,
    addr: SocketAddr,
    site: &str,
    path: Option<&str>,
    timeout: Duration,
) -> bool {
    let check = async {
        let mut stream = instances.connect(addr).await.ok()?;
        let Some(path) = path else { return Some(true) };
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {site}\r\nUser-Agent: commons-health\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        // "HTTP/1.1 200" is all that is needed.
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.ok()?;
        let status = std::str::from_utf8(&head[9..12]).ok()?.parse::<u16>().ok()?;
        Some(head.starts_with(b"HTTP/1.") && (200..400).contains(&status))
    };
    tokio::time::timeout(timeout, check).await.ok().flatten().unwrap_or(false)
}
