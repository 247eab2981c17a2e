//! Which site a Host names, and where its instances are.
//!
//! # Invariants
//! - Hosts are compared without their port, trailing dot or case.
//! - An instance keeps what is known of its health across a routes update
//!   that keeps it (`keep_health_of`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use foldhash::HashMap;

use crate::limits::TierPolicy;

/// A site as the gateway routes it.
#[derive(Debug)]
pub struct SiteRoute {
    pub site: String,
    /// The site's instances; requests go round-robin among healthy ones.
    pub instances: Vec<Instance>,
    /// Whether people who are not logged in may use it.
    pub anonymous: bool,
    /// Free-tier limits and premium-only routes.
    pub policy: TierPolicy,
    /// The path that answers 2xx when an instance is healthy; none: an
    /// instance is healthy when it accepts connections.
    pub health_path: Option<String>,
    /// The site's apps authenticate on their own: an `Authorization`
    /// header that is not the platform's credential reaches them.
    pub pass_authorization: bool,
    /// A header (lowercase) the site's apps read their user from: the
    /// gateway writes the user's per-site pseudonym there, and drops it, in
    /// every spelling, from what clients send (see `check_user_header`).
    pub user_header: Option<String>,
    next: AtomicUsize,
}

/// One running instance of a site.
#[derive(Debug)]
pub struct Instance {
    pub addr: SocketAddr,
    /// `addr` as a URI authority, made once.
    pub(crate) authority: hyper::http::uri::Authority,
    healthy: AtomicBool,
}

impl SiteRoute {
    pub fn new(site: &str, instances: &[SocketAddr], anonymous: bool) -> SiteRoute {
        SiteRoute {
            site: site.to_owned(),
            instances: instances
                .iter()
                .map(|&addr| Instance {
                    addr,
                    authority: addr.to_string().parse().expect("a socket address is an authority"),
                    healthy: AtomicBool::new(true),
                })
                .collect(),
            anonymous,
            policy: TierPolicy::default(),
            health_path: None,
            pass_authorization: false,
            user_header: None,
            next: AtomicUsize::new(0),
        }
    }

    /// The same route with a tier policy.
    pub fn with_policy(mut self, policy: TierPolicy) -> SiteRoute {
        self.policy = policy;
        self
    }

    /// The same route with the site's own authentication: `Authorization`
    /// passed through, and the user's pseudonym in `user_header` (checked
    /// with `check_user_header`).
    pub fn with_auth(mut self, pass_authorization: bool, user_header: Option<String>) -> SiteRoute {
        self.pass_authorization = pass_authorization;
        self.user_header = user_header;
        self
    }

    /// The same route with a health check path.
    pub fn with_health_path(mut self, path: Option<String>) -> SiteRoute {
        self.health_path = path;
        self
    }

    pub fn any_healthy(&self) -> bool {
        self.instances.iter().any(Instance::is_healthy)
    }

    /// The next healthy instance, round-robin; if none is marked healthy,
    /// any (the attempt itself will tell).
    pub fn choose(&self) -> Option<&Instance> {
        let n = self.instances.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &self.instances[(start + i) % n])
            .find(|instance| instance.is_healthy())
            .or(Some(&self.instances[start % n]))
    }
}

impl Instance {
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Marks the instance up or down (after a failed connection, or a
    /// health check).
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }
}

/// Host → site: `<site>.<platform domain>` for every site, plus custom
/// hosts. Replaced whole when sites change (see [`crate::Gateway::set_routes`]).
#[derive(Debug, Default)]
pub struct Routes {
    domain: String,
    sites: HashMap<String, Arc<SiteRoute>>,
    custom_hosts: HashMap<String, Arc<SiteRoute>>,
}

impl Routes {
    /// Routes under `domain` (e.g. `commons.localhost`).
    pub fn new(domain: &str) -> Routes {
        Routes { domain: domain.to_ascii_lowercase(), ..Routes::default() }
    }

    /// Adds a site with its custom hosts; returns the hosts it was not given:
    /// the platform domain and names under it (the platform's and its
    /// sites' own), and a host another site has already. A host never
    /// routes to two sites, whatever the store says.
    pub fn add_site(&mut self, route: SiteRoute, custom_hosts: &[&str]) -> Vec<String> {
        let route = Arc::new(route);
        let mut refused = Vec::new();
        for host in custom_hosts {
            let host = normalize(host).into_owned();
            let under_domain =
                host == self.domain || host.strip_suffix(self.domain.as_str()).is_some_and(|rest| rest.ends_with('.'));
            let taken = self.custom_hosts.get(&host).is_some_and(|other| other.site != route.site);
            if under_domain || taken {
                refused.push(host);
            } else {
                self.custom_hosts.insert(host, route.clone());
            }
        }
        self.sites.insert(route.site.clone(), route);
        refused
    }

    pub fn sites(&self) -> impl Iterator<Item = &Arc<SiteRoute>> {
        self.sites.values()
    }

    /// Takes over what `old` knew of the health of the instances both have.
    pub(crate) fn keep_health_of(&self, old: &Routes) {
        for (id, route) in &self.sites {
            let Some(before) = old.sites.get(id) else { continue };
            for instance in &route.instances {
                if let Some(known) = before.instances.iter().find(|i| i.addr == instance.addr) {
                    instance.set_healthy(known.is_healthy());
                }
            }
        }
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Whether a Host header names the platform domain itself (its login
    /// and account pages).
    pub fn is_platform(&self, host: &str) -> bool {
        normalize(host) == self.domain
    }

    /// The platform's login page, coming back to `path` on `host` after
    /// (the platform domain on the port the client used for `host`).
    pub(crate) fn login_url(&self, scheme: &str, host: &str, path: &str) -> String {
        let port = host.rsplit_once(':').map(|(_, p)| p).filter(|p| p.bytes().all(|b| b.is_ascii_digit()));
        let platform = match port {
            Some(port) => format!("{}:{port}", self.domain),
            None => self.domain.clone(),
        };
        let next: String = form_urlencoded::byte_serialize(format!("{scheme}://{host}{path}").as_bytes()).collect();
        format!("{scheme}://{platform}/login?next={next}")
    }

    /// Every instance address the routes name.
    pub(crate) fn addresses(&self) -> foldhash::HashSet<SocketAddr> {
        self.sites.values().flat_map(|route| route.instances.iter().map(|i| i.addr)).collect()
    }

    /// The site a Host header names (port and case ignored).
    pub fn resolve(&self, host: &str) -> Option<&Arc<SiteRoute>> {
        let host = normalize(host);
        let host = host.as_ref();
        if let Some(route) = self.custom_hosts.get(host) {
            return Some(route);
        }
        let site = host.strip_suffix(self.domain.as_str())?.strip_suffix('.')?;
        self.sites.get(site)
    }
}

/// A Host header without its port or trailing dot, in lower case.
fn normalize(host: &str) -> std::borrow::Cow<'_, str> {
    let bytes = host.as_bytes();
    let digits = bytes.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    let mut end = bytes.len() - digits;
    if end == 0 || bytes[end - 1] != b':' {
        end = bytes.len();
    } else {
        end -= 1;
    }
    while end > 0 && bytes[end - 1] == b'.' {
        end -= 1;
    }
    // Cut at ASCII bytes: still UTF-8.
    let host = &host[..end];
    if host.bytes().any(|b| b.is_ascii_uppercase()) { host.to_ascii_lowercase().into() } else { host.into() }
}

#[cfg(test)]
mod tests {
    use super::{Routes, SiteRoute, normalize};

    #[test]
    fn a_host_routes_to_one_site_and_never_shadows_the_platform_or_its_sites() {
        let mut routes = Routes::new("commons.localhost");
        assert!(routes.add_site(SiteRoute::new("notes", &[], false), &["Notes.Example.org."]).is_empty());
        let refused = routes.add_site(
            SiteRoute::new("evil", &[], false),
            &[
                "notes.example.org",
                "notes.commons.localhost",
                "commons.localhost.",
                "www.commons.localhost",
                "evil.org",
            ],
        );
        assert_eq!(
            refused,
            ["notes.example.org", "notes.commons.localhost", "commons.localhost", "www.commons.localhost"]
        );
        for (host, site) in [
            ("notes.example.org", "notes"),
            ("NOTES.example.org.:443", "notes"),
            ("notes.commons.localhost", "notes"),
            ("evil.org", "evil"),
        ] {
            assert_eq!(routes.resolve(host).map(|r| r.site.as_str()), Some(site), "{host}");
        }
        assert!(routes.resolve("www.commons.localhost").is_none());
        assert!(routes.is_platform("commons.localhost"));
    }

    #[test]
    fn a_host_is_compared_without_its_port_trailing_dot_or_case() {
        for (host, normal) in [
            ("wiki.commons.localhost", "wiki.commons.localhost"),
            ("wiki.commons.localhost:8080", "wiki.commons.localhost"),
            ("Wiki.Commons.LocalHost.:8080", "wiki.commons.localhost"),
            ("wiki.example.org.", "wiki.example.org"),
            ("wiki:", "wiki"),
            ("wiki:http", "wiki:http"),
            ("[::1]:8080", "[::1]"),
            ("[::1]", "[::1]"),
            ("8080", "8080"),
            (":8080", ""),
            ("", ""),
        ] {
            assert_eq!(normalize(host), normal, "{host}");
        }
    }
}
