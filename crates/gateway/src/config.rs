//! A gateway's limits, secrets and knobs, fixed when it is made.
//!
//! # Deliberately absent
//! Routes, users and sessions: they change while the gateway runs, and are
//! given to [`Gateway`](crate::Gateway) apart.

use std::time::Duration;

/// Limits and secrets of a gateway.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Longest wait for a site: connecting plus its response headers.
    pub upstream_timeout: Duration,
    /// Largest request body passed on.
    pub body_limit_bytes: u64,
    /// Longest a client may take to send its request headers (slow
    /// clients hold a connection for at most this long).
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers).
    pub header_limit_bytes: usize,
    /// The key of the per-site user pseudonyms.
    pub pseudonym_secret: [u8; 32],
    /// The key of provenance tokens.
    pub provenance_secret: [u8; 32],
    /// How long a login lasts.
    pub session_lifetime: Duration,
    /// The scheme users reach the gateway by (`https` behind a TLS
    /// terminator), for the redirects of the login handoff.
    pub public_scheme: String,
    /// The workers' scheduling priority (a nice value; lower is sooner),
    /// if it is to change: the gateway should not wait behind the sites it
    /// fronts on the same machine. Needs CAP_SYS_NICE to go below 0; without
    /// it the workers keep their priority, with a warning.
    pub worker_priority: Option<i32>,
    /// Whether plain HTTP/1.1 connections start on the fast engine (on by
    /// default). Off, the general (hyper) engine serves every connection:
    /// for tests that send the same request through both engines.
    pub fast_path: bool,
    /// Connections the internal listener serves at once; more are closed
    /// as they come.
    pub internal_connections_max: usize,
    /// Connections the public listener serves at once, all its workers
    /// together; more are closed as they come (with the header timeout,
    /// what keeps a flood of idle connections from taking every file
    /// descriptor).
    pub public_connections_max: usize,
    /// Password checks (Argon2id, 19 MiB each) run at once: by default
    /// the available cores. A login that finds none free within a short
    /// wait is answered 503 with `Retry-After`, before any check starts.
    pub password_checks_max: usize,
}

impl Default for GatewayConfig {
    fn default() -> GatewayConfig {
        GatewayConfig {
            upstream_timeout: Duration::from_secs(30),
            body_limit_bytes: 10 << 20,
            header_read_timeout: Duration::from_secs(10),
            header_limit_bytes: 64 << 10,
            pseudonym_secret: [0; 32],
            provenance_secret: [0; 32],
            session_lifetime: Duration::from_secs(30 * 86_400),
            public_scheme: "http".to_owned(),
            worker_priority: None,
            fast_path: true,
            internal_connections_max: 256,
            public_connections_max: 16_384,
            password_checks_max: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}
