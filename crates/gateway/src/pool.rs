//! Idle keep-alive connections to the sites' instances, for the HTTP/1
//! engine: one [`Pool`] per worker, and [`Pools`], which keeps every pool
//! in step with the routes.
//!
//! # Invariants
//! - A pool holds connections only to addresses the routes name now. When
//!   [`Pools::replace_routes`] drops an instance, every pool closes its
//!   idle connections to it before the call returns, and a connection to
//!   it that a request still in flight hands back afterwards is closed,
//!   not kept: a pool only keeps connections for the addresses it knows,
//!   and it learns them from the routes alone.
//! - At most [`IDLE_MAX`] idle connections per address and pool.
//!
//! # Deliberately absent
//! An idle timeout: an idle connection the site has closed is noticed
//! (readable) and dropped when it is next taken. The general engine has
//! its own pool (hyper's), which forgets what has been idle for 90 s.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::task::Context;

use arc_swap::ArcSwap;
use foldhash::{HashMap, HashSet};
use tokio::net::TcpStream;

use crate::routes::Routes;

/// Most idle connections kept per upstream instance and worker.
pub(crate) const IDLE_MAX: usize = 1024;

/// Idle keep-alive connections to upstream instances, one pool per worker.
pub(crate) struct Pool {
    /// By address: an entry for every address the routes name, none else.
    idle: Mutex<HashMap<SocketAddr, Vec<TcpStream>>>,
}

/// Every worker's pool, so that a routes update reaches them all.
#[derive(Default)]
pub(crate) struct Pools {
    /// Held while a pool is added or the routes replaced: the two are
    /// ordered, so no pool misses an update.
    pools: Mutex<Vec<Weak<Pool>>>,
}

impl Pool {
    fn new(addresses: &HashSet<SocketAddr>) -> Pool {
        Pool { idle: Mutex::new(addresses.iter().map(|&addr| (addr, Vec::new())).collect()) }
    }

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

    /// Keeps `conn` for the next request to `addr`, if the routes still
    /// name `addr` and there is room; else it is closed.
    pub(crate) fn put(&self, addr: SocketAddr, conn: TcpStream) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(conns) = idle.get_mut(&addr)
            && conns.len() < IDLE_MAX
        {
            conns.push(conn);
        }
    }

    /// Forgets the addresses not in `addresses` (closing their idle
    /// connections) and learns the new ones.
    fn follow(&self, addresses: &HashSet<SocketAddr>) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|addr, _| addresses.contains(addr));
        for &addr in addresses {
            idle.entry(addr).or_default();
        }
    }

    #[cfg(test)]
    fn idle(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).values().map(Vec::len).sum()
    }
}

impl Pools {
    /// A new pool for a worker, knowing the addresses `routes` names now
    /// and following every later [`Pools::replace_routes`].
    pub(crate) fn add(&self, routes: &ArcSwap<Routes>) -> Arc<Pool> {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools.retain(|pool| pool.strong_count() > 0);
        let pool = Arc::new(Pool::new(&routes.load().addresses()));
        pools.push(Arc::downgrade(&pool));
        pool
    }

    /// Puts `new` in place of the routes in `routes` (instances both name
    /// keep what is known of their health), then has every pool forget
    /// the instances `new` no longer names.
    pub(crate) fn replace_routes(&self, routes: &ArcSwap<Routes>, new: Routes) {
        let pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        new.keep_health_of(&routes.load());
        let addresses = new.addresses();
        routes.store(Arc::new(new));
        for pool in pools.iter().filter_map(Weak::upgrade) {
            pool.follow(&addresses);
        }
    }
}

fn is_readable(conn: &TcpStream) -> bool {
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    conn.poll_read_ready(&mut cx).is_ready()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::SiteRoute;

    fn routes(addresses: &[SocketAddr]) -> Routes {
        let mut routes = Routes::new("commons.localhost");
        routes.add_site(SiteRoute::new("site", addresses, true), &[]);
        routes
    }

    #[tokio::test]
    async fn a_pool_forgets_an_address_the_routes_drop_and_refuses_it_after() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (kept, gone) = (listener.local_addr().unwrap(), "127.0.0.1:9".parse().unwrap());
        let connect = || TcpStream::connect(kept);
        let cell = ArcSwap::from_pointee(routes(&[kept, gone]));
        let pools = Pools::default();
        let pool = pools.add(&cell);
        // A connection to `gone` stands in for one to a removed instance:
        // any socket will do, the pool only goes by the address.
        pool.put(kept, connect().await.unwrap());
        pool.put(gone, connect().await.unwrap());
        assert_eq!(pool.idle(), 2);

        pools.replace_routes(&cell, routes(&[kept]));
        assert_eq!(pool.idle(), 1, "the idle connection to the removed instance is closed");
        // One that was in flight during the update comes back: not kept.
        pool.put(gone, connect().await.unwrap());
        assert_eq!(pool.idle(), 1);
        assert!(pool.take(gone).is_none());

        // A pool added later knows the routes of now; an address added
        // back is kept again.
        pools.replace_routes(&cell, routes(&[kept, gone]));
        pool.put(gone, connect().await.unwrap());
        assert_eq!((pool.idle(), pools.add(&cell).idle()), (2, 0));
    }
}
