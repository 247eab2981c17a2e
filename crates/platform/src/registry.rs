//! The registry the gateway routes by: sites, users, tokens and this
//! month's subscribers, read from the store, and followed.

use std::time::Duration;

use gateway::{Gateway, Identities, Routes, SiteRoute, TierPolicy};
use store::Store;

use crate::sessions::stored_sessions;
use crate::{StoreHandle, current_period};

/// Moves the gateway to what the store says now.
#[derive(Clone)]
pub(crate) struct Reloader {
    store: StoreHandle,
    gateway: Gateway,
    domain: String,
}

impl Reloader {
    pub fn new(store: StoreHandle, gateway: Gateway, domain: &str) -> Reloader {
        Reloader { store, gateway, domain: domain.to_owned() }
    }

    /// Routes, users and tokens as stored; sessions revoked in the store
    /// end at the gateway.
    pub async fn try_reload(&self) -> anyhow::Result<u64> {
        let domain = self.domain.clone();
        let mark = self.gateway.sessions_mark();
        let (routes, identities, version, sessions) = self
            .store
            .call(move |store| {
                let (routes, identities, version) = load_registry(store, &domain)?;
                Ok::<_, anyhow::Error>((routes, identities, version, stored_sessions(store)?))
            })
            .await?;
        self.gateway.set_routes(routes);
        self.gateway.set_identities(identities);
        self.gateway.keep_only_sessions(sessions.iter().map(|s| s.token_sha256), mark);
        Ok(version)
    }
}

pub(crate) fn load_registry(store: &mut Store, domain: &str) -> anyhow::Result<(Routes, Identities, u64)> {
    let version = store.registry_version()?;
    let mut routes = Routes::new(domain);
    for site in store.sites()? {
        let hosts: Vec<&str> = site.custom_hosts.iter().map(String::as_str).collect();
        let policy = TierPolicy {
            free_requests_per_minute: site.free_requests_per_minute,
            free_concurrent_requests: site.free_concurrent_requests,
            premium_prefixes: site.premium_prefixes.clone(),
        };
        let route = SiteRoute::new(&site.id, &site.instances, site.anonymous)
            .with_policy(policy)
            .with_health_path(site.health_path.clone())
            .with_auth(site.pass_authorization, site.user_header.clone());
        for host in routes.add_site(route, &hosts) {
            tracing::warn!(site = %site.id, host = %host, "host not routed: it is under the platform domain or another site's");
        }
    }
    let mut identities = Identities::default();
    for (user, _) in store.subscriptions(current_period())? {
        identities.add_user(&user, true);
    }
    for account in store.accounts()? {
        identities.add_password(&account.user, &account.password_hash);
    }
    for token in store.tokens()? {
        identities.add_token_sha256(&token.token_sha256, &token.user);
    }
    Ok((routes, identities, version))
}

/// Reloads routes and users whenever the store's registry version moves,
/// and when a new month starts (subscriptions are per month).
pub(crate) async fn follow_registry(reloader: Reloader, store: StoreHandle, mut version: u64) {
    let mut period = current_period();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let new_period = current_period() != period;
        period = current_period();
        match store.call(|s| s.registry_version()).await {
            Ok(current) if current == version && !new_period => {}
            Ok(_) => match reloader.try_reload().await {
                Ok(current) => {
                    tracing::info!(registry.version = current, "sites and tokens reloaded");
                    version = current;
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the registry"),
            },
            Err(e) => tracing::warn!(error = %e, "cannot read the registry version"),
        }
    }
}
