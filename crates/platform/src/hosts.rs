//! Who may answer at which host name: a host belongs to exactly one site,
//! and the names under the platform domain are the platform's and its
//! sites' (`<site>.<domain>`), never a custom host.
//!
//! The gateway keeps the same rules when it builds its routes
//! (`gateway::Routes::add_site`), so a store written by older code, or a
//! domain changed since, still never routes one host to two sites.

use store::Store;

use crate::BadInput;

/// The domain `commons up` serves unless told otherwise.
pub const DEFAULT_DOMAIN: &str = "commons.localhost";

/// Labels under the platform domain kept for the platform itself: no site
/// may be named one (it would answer at `<label>.<domain>`).
pub const RESERVED_LABELS: &[&str] =
    &["www", "api", "admin", "login", "auth", "account", "accounts", "mail", "status", "static", "control", "internal"];

/// The platform domain as `commons up` last recorded it in `store`, else
/// the default.
pub fn domain(store: &mut Store) -> anyhow::Result<String> {
    Ok(store.domain()?.unwrap_or_else(|| DEFAULT_DOMAIN.to_owned()))
}

/// Refuses a site id that is a label the platform keeps.
pub fn check_site_id(id: &str) -> Result<(), BadInput> {
    match RESERVED_LABELS.iter().find(|label| id.eq_ignore_ascii_case(label)) {
        Some(label) => Err(BadInput(format!("site id {label:?} is reserved for the platform ({label}.<domain>)"))),
        None => Ok(()),
    }
}

/// `host` in the one spelling hosts are compared in: lower case, without a
/// trailing dot. Err unless it is a host name (labels of letters, digits
/// and dashes, joined by dots).
pub fn normalize(host: &str) -> Result<String, BadInput> {
    let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let label_ok =
        |l: &str| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(BadInput(format!("--host {host:?} is not a host name")));
    }
    Ok(name)
}

/// The hosts `site` asks for, normalized, once each, and which of them are
/// new claims (not already `site`'s). Refused, naming the host: the
/// platform domain or a name under it, and a host another site has or
/// another deployment asks for. Nothing is written.
pub fn claim(store: &mut Store, site: &str, hosts: &[String]) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let domain = domain(store)?;
    let mut wanted: Vec<String> = Vec::new();
    for host in hosts {
        let name = normalize(host)?;
        if name == domain || name.ends_with(&format!(".{domain}")) {
            return Err(BadInput(format!(
                "--host {host:?} is under the platform domain {domain}: those names are the platform's and its sites' (this site answers at {site}.{domain} already)"
            ))
            .into());
        }
        if !wanted.contains(&name) {
            wanted.push(name);
        }
    }
    // Who holds each host now: live sites, and deployments asked for
    // (their hosts go to the site when it is published).
    let mut holders: Vec<(String, String)> = Vec::new();
    for s in store.sites()? {
        holders.extend(s.custom_hosts.iter().map(|h| (normalize(h).unwrap_or_else(|_| h.clone()), s.id.clone())));
    }
    for d in store.deployments()? {
        holders.extend(d.hosts.iter().map(|h| (normalize(h).unwrap_or_else(|_| h.clone()), d.site.clone())));
    }
    if let Some((host, other)) = holders.iter().find(|(host, holder)| holder != site && wanted.contains(host)) {
        return Err(BadInput(format!("host {host} belongs to site {other:?}: a host answers for one site only")).into());
    }
    let new = wanted.iter().filter(|w| !holders.iter().any(|(host, holder)| holder == site && host == *w)).cloned();
    let new = new.collect();
    Ok((wanted, new))
}

/// Records in the public history that `site` claimed each of `hosts`.
pub fn record_claims(store: &mut Store, site: &str, hosts: &[String], at_ms: u64) -> anyhow::Result<()> {
    for host in hosts {
        store.record_history(at_ms, "claim-host", site, &format!("host {host}"))?;
    }
    Ok(())
}
