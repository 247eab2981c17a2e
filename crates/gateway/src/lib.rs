//! The gateway: every request to a OneCommons site passes through here.
//!
//! For each request it resolves the Host to a site ([`Routes`]), finds out
//! who the user is, strips any inbound `X-Commons-*` headers and injects its
//! own (a per-site pseudonym, the tier), proxies to a healthy instance over
//! pooled keep-alive connections, streams the answer back, and records the
//! usage ([`metering::Meter`]) before the answer leaves.
//!
//! # Invariants
//! - An answered request is metered: the event is in the write-ahead log
//!   before the response is handed to the client.
//! - No inbound header can claim an identity: every `x-commons-*` header is
//!   removed before the gateway adds its own.
//! - Every failure is an HTTP answer that says whose fault it is: the
//!   client's (404 unknown site, 413 body too large), the upstream's (502
//!   down, 504 too slow), never a hang.
//!
//! Users log in on the platform domain's own pages ([`login`](self)), and
//! their session reaches each site through a one-time redirect handoff.
//!
//! # Layout
//! Policy apart from engine, as in Pingora:
//! - `pipeline`: every decision about a request and every header rewrite
//!   (route, identity, tier, limits, the heads both ways, metering), once;
//! - `server`: worker threads, listening sockets, the accept loop, the
//!   balance of connections; `h1` (the HTTP/1 engine, httparse) and
//!   `general` (hyper, HTTP/1 and HTTP/2) call the pipeline and move
//!   bytes; `pool`: the HTTP/1 engine's idle connections to sites;
//! - `login`: the platform's pages, a hook the general engine calls.
//!
//! The pipeline knows no engine, the login pages know no engine, the two
//! engines do not know each other (`tests/modules.rs` checks it).
//!
//! # Deliberately absent
//! TLS: terminate it in front (`public_scheme = "https"`); routes, users
//! and sessions' storage are given by the caller (`commons up` reads them
//! from the store).

mod body;
mod clock;
mod config;
mod error;
mod general;
mod h1;
mod health;
mod identity;
mod limits;
mod login;
mod metrics;
mod path;
mod pipeline;
mod pool;
mod provenance;
mod routes;
mod server;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::GatewayConfig;
pub use error::GatewayError;
pub use identity::{
    Identities, Identity, SESSIONS_MAX, SESSIONS_PER_USER_MAX, SessionStore, StoredSession, StoredToken, hash_password,
};
pub use limits::TierPolicy;
pub use metrics::Metrics;
pub use pipeline::{check_user_header, pseudonym};
pub use provenance::{Origin, ProvenanceError, TOKEN_LIFETIME_MS};
pub use routes::{Routes, SiteRoute};
pub use server::{Gateway, RunningGateway, WORKERS_MAX};
