//! Idle keep-alive connections to the sites' instances, for the HTTP/1
//! engine: one [`Pool`] per worker.
//!
//! # Invariants
//! - At most [`IDLE_MAX`] idle connections per address and pool.
//!
//! # Deliberately absent
//! An idle timeout: an idle connection the site has closed is noticed
//! (readable) and dropped when it is next taken.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::task::Context;

use foldhash::HashMap;
use tokio::net::TcpStream;

/// Most idle connections kept per upstream instance and worker.
pub(crate) const IDLE_MAX: usize = 1024;

/// Idle keep-alive connections to upstream instances, one pool per worker.
#[derive(Default)]
pub(crate) struct Pool {
    idle: Mutex<HashMap<SocketAddr, Vec<TcpStream>>>,
}

impl Pool {
    /// An idle connection to `addr` that the upstream has not closed.
    pub(crate) fn take(&self, addr: SocketAddr) -> Option<TcpStream> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let conns = idle.get_mut(&addr)?;
        while let Some(conn) = conns.pop() {
            // Idle, it has nothing to say: readable means closed (or
            // broken). The readiness is cached; this costs no system call.
            if !is_readable(&conn) {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps `conn` for the next request to `addr`, if there is room.
    pub(crate) fn put(&self, addr: SocketAddr, conn: TcpStream) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let conns = idle.entry(addr).or_default();
        if conns.len() < IDLE_MAX {
            conns.push(conn);
        }
    }
}

fn is_readable(conn: &TcpStream) -> bool {
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    conn.poll_read_ready(&mut cx).is_ready()
}
