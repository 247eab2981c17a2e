//! Who a request is from: API tokens, platform accounts (Argon2id password
//! hashes), login sessions and the one-time codes that hand a session from
//! the platform domain to a site.
//!
//! Tokens, passwords and session tokens are never kept in the clear: tokens
//! and sessions by SHA-256 (they are long random strings), passwords by
//! Argon2id (they are not).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, RwLock};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use foldhash::HashMap;
use hyper::header::{COOKIE, HeaderMap};
use sha2::{Digest, Sha256};

/// The cookie of a platform session, on the platform domain.
pub(crate) const PLATFORM_COOKIE: &str = "commons_session";
/// The cookie of a session handed to one site, on that site's host.
pub(crate) const SITE_COOKIE: &str = "commons_site";
/// The cookie the login form's token is bound to.
pub(crate) const FORM_COOKIE: &str = "commons_login";
/// The cookie a site's host sets before it sends a browser to log in: a
/// handoff code is redeemed only by the browser that holds it.
pub(crate) const STATE_COOKIE: &str = "commons_state";

/// The names of the gateway's cookies as it sets and reads them: under
/// https with the `__Host-` prefix, so that a browser refuses the same
/// name set by a sibling host with `Domain=` (or without `Secure`, or on
/// a narrower `Path`); over plain HTTP (development) as they are.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CookieNames {
    pub(crate) platform: &'static str,
    pub(crate) site: &'static str,
    pub(crate) form: &'static str,
    pub(crate) state: &'static str,
}

/// Every name a gateway cookie may have, in either scheme.
const GATEWAY_COOKIES: [&str; 8] = [
    PLATFORM_COOKIE,
    SITE_COOKIE,
    FORM_COOKIE,
    STATE_COOKIE,
    "__Host-commons_session",
    "__Host-commons_site",
    "__Host-commons_login",
    "__Host-commons_state",
];

impl CookieNames {
    pub(crate) fn new(https: bool) -> CookieNames {
        match https {
            true => CookieNames {
                platform: GATEWAY_COOKIES[4],
                site: GATEWAY_COOKIES[5],
                form: GATEWAY_COOKIES[6],
                state: GATEWAY_COOKIES[7],
            },
            false => {
                CookieNames { platform: PLATFORM_COOKIE, site: SITE_COOKIE, form: FORM_COOKIE, state: STATE_COOKIE }
            }
        }
    }
}

/// Whether a cookie name (any case) is one of the gateway's, in either
/// scheme: no site sets one, and none reaches a site.
pub(crate) fn is_gateway_cookie_name(name: &[u8]) -> bool {
    GATEWAY_COOKIES.iter().any(|ours| ours.len() == name.len() && name.eq_ignore_ascii_case(ours.as_bytes()))
}
/// How long a handoff code may wait to be used.
pub(crate) const HANDOFF_LIFETIME_MS: u64 = 60_000;

/// A user as the gateway knows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    /// Subscribed this period: the premium tier on every site.
    pub premium: bool,
}

/// Users, their API tokens and password hashes. Replaced whole when the
/// registry changes (see [`crate::Gateway::set_identities`]).
#[derive(Clone, Debug, Default)]
pub struct Identities {
    users: HashMap<String, Arc<Identity>>,
    /// Token SHA-256 → user.
    tokens: HashMap<[u8; 32], String>,
    /// User → PHC string.
    passwords: HashMap<String, String>,
}

impl Identities {
    /// Adds a user, or sets whether they are a subscriber.
    pub fn add_user(&mut self, user: &str, premium: bool) {
        self.users.insert(user.to_owned(), Arc::new(Identity { user: user.to_owned(), premium }));
    }

    /// Adds an API token of `user` (who is added if new, as a free user).
    pub fn add_token(&mut self, token: &str, user: &str) {
        self.add_token_hash(sha256(token), user);
    }

    /// Adds a token by its SHA-256 in hex (as [`commons_core::token_sha256`]
    /// gives it); a malformed hash is ignored (it cannot match any token).
    pub fn add_token_sha256(&mut self, sha256_hex: &str, user: &str) {
        if let Some(hash) = hex::decode(sha256_hex).ok().and_then(|b| <[u8; 32]>::try_from(b).ok()) {
            self.add_token_hash(hash, user);
        }
    }

    /// Forgets the token with this SHA-256 (in hex) if it is `user`'s.
    pub(crate) fn remove_token_sha256(&mut self, sha256_hex: &str, user: &str) {
        if let Some(hash) = hex::decode(sha256_hex).ok().and_then(|b| <[u8; 32]>::try_from(b).ok())
            && self.tokens.get(&hash).is_some_and(|owner| owner == user)
        {
            self.tokens.remove(&hash);
        }
    }

    fn add_token_hash(&mut self, hash: [u8; 32], user: &str) {
        if !self.users.contains_key(user) {
            self.add_user(user, false);
        }
        self.tokens.insert(hash, user.to_owned());
    }

    /// Gives `user` (added if new) a password, by its hash from
    /// [`hash_password`].
    pub fn add_password(&mut self, user: &str, password_hash: &str) {
        if !self.users.contains_key(user) {
            self.add_user(user, false);
        }
        self.passwords.insert(user.to_owned(), password_hash.to_owned());
    }

    pub(crate) fn user(&self, user: &str) -> Option<&Arc<Identity>> {
        self.users.get(user)
    }

    pub(crate) fn by_token(&self, token: &str) -> Option<&Arc<Identity>> {
        self.users.get(self.tokens.get(&sha256(token))?)
    }

    /// The stored hash of `user`'s password, if they have one.
    pub(crate) fn password_hash(&self, user: &str) -> Option<&str> {
        self.passwords.get(user).map(String::as_str)
    }
}

/// Hashes a password with Argon2id (19 MiB, 2 passes: OWASP's baseline) and
/// a random salt, as a PHC string.
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| format!("no randomness: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
}

/// Whether `password` matches `hash`. With no hash (no such user), a hash
/// is still computed so that the answer takes as long either way.
/// A well-formed hash with the default parameters, checked when a user has
/// no password.
const DECOY: &str = "$argon2id$v=19$m=19456,t=2,p=1$ZGVjb3lkZWNveWRlY295$x8kRz5yQwz0cL0m4m7oVb9M3dUu8b5J0X3mR1w2Lk7A";

pub(crate) fn verify_password(password: &str, hash: Option<&str>) -> bool {
    let Ok(parsed) = PasswordHash::new(hash.unwrap_or(DECOY)) else { return false };
    Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok() && hash.is_some()
}

/// A login session as it is kept: by its token's SHA-256.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredSession {
    pub token_sha256: [u8; 32],
    pub user: String,
    /// None: the platform session; else the one site it was handed to.
    pub site: Option<String>,
    /// When it began: the oldest of a user's sessions goes first.
    pub created_ms: u64,
    pub expires_ms: u64,
}

/// Most live sessions one user has (platform and site sessions together);
/// a new one ends their oldest.
pub const SESSIONS_PER_USER_MAX: usize = 32;

/// Most live sessions the gateway keeps in all; past it, the expired go,
/// then the oldest of anyone's.
pub const SESSIONS_MAX: usize = 1 << 20;

/// Where sessions are kept so that they outlive the process. Called off
/// the event loop; the login is answered only once `save` returned.
pub trait SessionStore: Send + Sync {
    /// Keeps `session`, ending the user's oldest beyond
    /// [`SESSIONS_PER_USER_MAX`] as the live ones do.
    fn save(&self, session: &StoredSession) -> Result<(), String>;
    /// Ends every session of `user`.
    fn end(&self, user: &str) -> Result<(), String>;
    /// Ends `user`'s session with this token hash (in hex), as
    /// `commons session revoke` does. By default it cannot.
    fn revoke_session(&self, user: &str, token_sha256: &str) -> Result<(), String> {
        let _ = (user, token_sha256);
        Err("this store cannot revoke one session".into())
    }
    /// `user`'s API tokens, as `commons token list` shows them (none by
    /// default).
    fn tokens_of(&self, user: &str) -> Result<Vec<StoredToken>, String> {
        let _ = user;
        Ok(Vec::new())
    }
    /// Revokes `user`'s API token with this hash (in hex), as `commons
    /// token revoke` does; false if they have none such.
    fn revoke_token(&self, user: &str, token_sha256: &str) -> Result<bool, String> {
        let _ = (user, token_sha256);
        Err("this store cannot revoke tokens".into())
    }
}

/// An API token as its user sees it on the platform's `/sessions` page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredToken {
    /// Its SHA-256, in hex.
    pub token_sha256: String,
    pub created_ms: u64,
}

/// A live session, and when the gateway took it (see [`Sessions::mark`]).
struct Live {
    session: StoredSession,
    taken: u64,
}

#[derive(Default)]
struct Table {
    by_token: HashMap<[u8; 32], Live>,
    /// Each user's session tokens, oldest first.
    by_user: HashMap<String, Vec<[u8; 32]>>,
    /// How many sessions were ever taken.
    taken: u64,
}

impl Table {
    fn remove(&mut self, token: &[u8; 32]) {
        let Some(live) = self.by_token.remove(token) else { return };
        if let Some(tokens) = self.by_user.get_mut(&live.session.user) {
            tokens.retain(|t| t != token);
            if tokens.is_empty() {
                self.by_user.remove(&live.session.user);
            }
        }
    }

    fn retain(&mut self, mut keep: impl FnMut(&Live) -> bool) {
        let gone: Vec<[u8; 32]> = self.by_token.iter().filter(|(_, live)| !keep(live)).map(|(t, _)| *t).collect();
        for token in gone {
            self.remove(&token);
        }
    }
}

/// The live sessions, by token hash: at most [`SESSIONS_PER_USER_MAX`] per
/// user and [`SESSIONS_MAX`] in all.
#[derive(Default)]
pub(crate) struct Sessions {
    table: RwLock<Table>,
}

impl Sessions {
    pub(crate) fn insert(&self, session: StoredSession, now_ms: u64) {
        let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
        table.remove(&session.token_sha256);
        if table.by_token.len() >= SESSIONS_MAX {
            table.retain(|live| live.session.expires_ms > now_ms);
        }
        if table.by_token.len() >= SESSIONS_MAX
            && let Some(oldest) =
                table.by_token.iter().min_by_key(|(_, l)| (l.session.created_ms, l.taken)).map(|(t, _)| *t)
        {
            table.remove(&oldest);
        }
        let tokens = table.by_user.get(&session.user).cloned().unwrap_or_default();
        let mut tokens: Vec<([u8; 32], (u64, u64))> = tokens
            .into_iter()
            .filter_map(|t| table.by_token.get(&t).map(|l| (t, (l.session.created_ms, l.taken))))
            .collect();
        tokens.sort_by_key(|(_, age)| *age);
        for (token, _) in tokens.iter().take((tokens.len() + 1).saturating_sub(SESSIONS_PER_USER_MAX)) {
            table.remove(token);
        }
        table.taken += 1;
        let taken = table.taken;
        table.by_user.entry(session.user.clone()).or_default().push(session.token_sha256);
        table.by_token.insert(session.token_sha256, Live { session, taken });
    }

    /// The user of session `token` if it is live at `now_ms` and good for
    /// `site` (None: the platform).
    pub(crate) fn user(&self, token: &str, site: Option<&str>, now_ms: u64) -> Option<String> {
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        let session = &table.by_token.get(&sha256(token))?.session;
        (session.expires_ms > now_ms && session.site.as_deref() == site).then(|| session.user.clone())
    }

    /// When the platform session `token` ends.
    pub(crate) fn expiry(&self, token: &str) -> Option<u64> {
        self.table.read().unwrap_or_else(|e| e.into_inner()).by_token.get(&sha256(token)).map(|l| l.session.expires_ms)
    }

    /// Ends every session of `user`, and forgets the expired.
    pub(crate) fn end(&self, user: &str, now_ms: u64) {
        self.table
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|live| live.session.user != user && live.session.expires_ms > now_ms);
    }

    /// `user`'s sessions live at `now_ms`, oldest first.
    pub(crate) fn of_user(&self, user: &str, now_ms: u64) -> Vec<StoredSession> {
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        let mut sessions: Vec<StoredSession> = table
            .by_user
            .get(user)
            .into_iter()
            .flatten()
            .filter_map(|t| table.by_token.get(t))
            .filter(|l| l.session.expires_ms > now_ms)
            .map(|l| l.session.clone())
            .collect();
        sessions.sort_by_key(|s| (s.created_ms, s.token_sha256));
        sessions
    }

    /// Ends `user`'s session `token_sha256`; whether they had it.
    pub(crate) fn end_one(&self, user: &str, token_sha256: &[u8; 32]) -> bool {
        let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
        if table.by_token.get(token_sha256).is_none_or(|l| l.session.user != user) {
            return false;
        }
        table.remove(token_sha256);
        true
    }

    /// Forgets the sessions expired at `now_ms`.
    pub(crate) fn purge(&self, now_ms: u64) {
        self.table.write().unwrap_or_else(|e| e.into_inner()).retain(|live| live.session.expires_ms > now_ms);
    }

    /// How many sessions were taken so far: give it to
    /// [`Sessions::keep_only`] with what the store held after it.
    pub(crate) fn mark(&self) -> u64 {
        self.table.read().unwrap_or_else(|e| e.into_inner()).taken
    }

    /// Ends the sessions taken by `mark` that `stored` no longer holds
    /// (revoked in the store). Sessions taken since are kept: they were
    /// saved after the store was read.
    pub(crate) fn keep_only(&self, stored: &foldhash::HashSet<[u8; 32]>, mark: u64) {
        self.table
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|live| live.taken > mark || stored.contains(&live.session.token_sha256));
    }

    #[cfg(test)]
    fn tokens_of(&self, user: &str) -> Vec<[u8; 32]> {
        self.table.read().unwrap().by_user.get(user).cloned().unwrap_or_default()
    }
}

/// A one-time code that hands a platform session to one site.
struct Handoff {
    user: String,
    site: String,
    /// The SHA-256 of the state cookie of the browser it was issued for
    /// (set on the site's host before the browser went to log in): only
    /// that browser redeems it.
    state: [u8; 32],
    /// When the code stops working.
    code_expires_ms: u64,
    /// When the session it gives ends (with the platform session).
    session_expires_ms: u64,
}

/// Most codes one user may have waiting; a new one drops their oldest.
pub(crate) const HANDOFFS_PER_USER_MAX: usize = 8;
/// Most codes waiting in all; a new one drops the oldest.
pub(crate) const HANDOFFS_MAX: usize = 1 << 16;

#[derive(Default)]
struct Pending {
    by_code: HashMap<[u8; 32], Handoff>,
    /// Codes as they were issued, with when they expire: all live equally
    /// long, so the oldest expire first. It may still hold codes redeemed
    /// or dropped since (skipped as they come up).
    queue: VecDeque<([u8; 32], u64)>,
    /// Each user's waiting codes, oldest first.
    by_user: HashMap<String, VecDeque<[u8; 32]>>,
}

impl Pending {
    fn remove(&mut self, code: &[u8; 32]) -> Option<Handoff> {
        let handoff = self.by_code.remove(code)?;
        if let Some(codes) = self.by_user.get_mut(&handoff.user) {
            codes.retain(|c| c != code);
            if codes.is_empty() {
                self.by_user.remove(&handoff.user);
            }
        }
        Some(handoff)
    }
}

/// The codes waiting to be redeemed: at most [`HANDOFFS_PER_USER_MAX`] per
/// user and [`HANDOFFS_MAX`] in all, expired from the front of a queue.
#[derive(Default)]
pub(crate) struct Handoffs {
    pending: Mutex<Pending>,
}

impl Handoffs {
    /// A new code for `user` on `site`, for the browser whose state cookie
    /// has SHA-256 `state`.
    pub(crate) fn issue(
        &self,
        user: &str,
        site: &str,
        state: [u8; 32],
        session_expires_ms: u64,
        now_ms: u64,
    ) -> String {
        let code = random_token();
        let hash = sha256(&code);
        let mut guard = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let pending = &mut *guard;
        while let Some(&(oldest, expires_ms)) = pending.queue.front() {
            if expires_ms > now_ms && pending.by_code.len() < HANDOFFS_MAX && pending.by_code.contains_key(&oldest) {
                break;
            }
            pending.queue.pop_front();
            pending.remove(&oldest);
        }
        if pending.queue.len() >= 2 * HANDOFFS_MAX {
            let Pending { by_code, queue, .. } = &mut *pending;
            queue.retain(|(code, _)| by_code.contains_key(code));
        }
        let codes = pending.by_user.entry(user.to_owned()).or_default();
        if codes.len() >= HANDOFFS_PER_USER_MAX
            && let Some(oldest) = codes.pop_front()
        {
            pending.by_code.remove(&oldest);
        }
        codes.push_back(hash);
        let code_expires_ms = now_ms + HANDOFF_LIFETIME_MS;
        pending.queue.push_back((hash, code_expires_ms));
        pending.by_code.insert(
            hash,
            Handoff { user: user.to_owned(), site: site.to_owned(), state, code_expires_ms, session_expires_ms },
        );
        code
    }

    /// Uses up `code` for `site`, in a browser holding `state` (its state
    /// cookie): the user and when their session ends. A code works once,
    /// on the site it was issued for, in the browser it was issued for,
    /// until it expires.
    pub(crate) fn redeem(&self, code: &str, site: &str, state: Option<&str>, now_ms: u64) -> Option<(String, u64)> {
        let handoff = self.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&sha256(code))?;
        let same_browser = state.is_some_and(|state| sha256(state) == handoff.state);
        (handoff.site == site && handoff.code_expires_ms > now_ms && same_browser)
            .then_some((handoff.user, handoff.session_expires_ms))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.pending.lock().unwrap().by_code.len()
    }
}

/// 32 random bytes in hex: session tokens and handoff codes.
pub(crate) fn random_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS has randomness");
    hex::encode(bytes)
}

pub(crate) fn sha256(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// The value of cookie `name`, if the request sent it once (see
/// [`cookie_in`]).
pub(crate) fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    // UTF-8, not only visible ASCII: a sibling's cookie with a non-ASCII
    // name must not hide the whole line.
    cookie_in(headers.get_all(COOKIE).iter().filter_map(|v| std::str::from_utf8(v.as_bytes()).ok()), name)
}

/// The value of cookie `name` in these `Cookie` header values, if it is
/// there once. Twice, one of them was planted (by a sibling host's
/// `Domain=` cookie on a longer `Path`, which browsers send first): the
/// request has none, rather than whichever came first.
pub(crate) fn cookie_in<'h>(values: impl Iterator<Item = &'h str>, name: &str) -> Option<&'h str> {
    let mut found = Seen::None;
    // Only ASCII whitespace is trimmed, as browsers do: `str::trim` would
    // make "\u{a0}__Host-commons_site", a name any sibling may set with
    // `Domain=`, into the gateway's own.
    for (key, value) in values.flat_map(|v| v.split(';')).filter_map(|pair| pair.trim_ascii().split_once('=')) {
        if key == name {
            found.see(value);
        }
    }
    found.once()
}

/// A cookie as a request's `Cookie` lines hold it: absent, once, or more
/// than once (then it counts as absent).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Seen<'h> {
    #[default]
    None,
    Once(&'h str),
    Repeated,
}

impl<'h> Seen<'h> {
    pub(crate) fn see(&mut self, value: &'h str) {
        *self = match self {
            Seen::None => Seen::Once(value),
            _ => Seen::Repeated,
        };
    }

    pub(crate) fn once(self) -> Option<&'h str> {
        match self {
            Seen::Once(value) => Some(value),
            _ => None,
        }
    }
}

/// Whether a `name=value` pair of a `Cookie` line is one of the gateway's
/// cookies (which no site ever sees), in either scheme's spelling.
pub(crate) fn is_session_cookie(pair: &[u8]) -> bool {
    let pair = pair.trim_ascii();
    let key = pair.iter().position(|&b| b == b'=').map_or(pair, |at| &pair[..at]);
    is_gateway_cookie_name(key.trim_ascii())
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderValue;

    use super::*;

    #[test]
    fn passwords_verify_only_against_their_own_hash() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", Some(&hash)));
        assert!(!verify_password("correct horsf", Some(&hash)));
        assert!(!verify_password("correct horse", None));
        assert!(!verify_password("x", Some("not a phc string")));
        assert!(PasswordHash::new(DECOY).is_ok(), "the decoy costs a real verification");
        assert_ne!(hash, hash_password("correct horse").unwrap(), "salted");
    }

    #[test]
    fn handoff_codes_work_once_on_their_site_in_their_browser_until_they_expire() {
        let handoffs = Handoffs::default();
        let state = sha256("alice's browser");
        let ours = Some("alice's browser");
        let code = handoffs.issue("alice", "wiki", state, 9_000_000, 1_000);
        assert_eq!(handoffs.redeem(&code, "chat", ours, 1_001), None, "another site");
        let code = handoffs.issue("alice", "wiki", state, 9_000_000, 1_000);
        assert_eq!(handoffs.redeem(&code, "wiki", ours, 1_001), Some(("alice".into(), 9_000_000)));
        assert_eq!(handoffs.redeem(&code, "wiki", ours, 1_002), None, "used");
        let code = handoffs.issue("alice", "wiki", state, 9_000_000, 1_000);
        assert_eq!(handoffs.redeem(&code, "wiki", ours, 1_000 + HANDOFF_LIFETIME_MS), None, "expired");
        for other in [None, Some("another browser"), Some("")] {
            let code = handoffs.issue("alice", "wiki", state, 9_000_000, 1_000);
            assert_eq!(handoffs.redeem(&code, "wiki", other, 1_001), None, "{other:?}");
        }
    }

    #[test]
    fn handoff_codes_are_capped_per_user_and_in_all_and_expire_in_order() {
        let handoffs = Handoffs::default();
        let (state, ours) = (sha256("s"), Some("s"));
        let first = handoffs.issue("alice", "wiki", state, 9_000_000, 1_000);
        let rest: Vec<String> =
            (0..HANDOFFS_PER_USER_MAX).map(|_| handoffs.issue("alice", "wiki", state, 9_000_000, 1_000)).collect();
        assert_eq!(handoffs.len(), HANDOFFS_PER_USER_MAX, "a user's oldest goes");
        assert_eq!(handoffs.redeem(&first, "wiki", ours, 1_001), None);
        for code in &rest {
            assert!(handoffs.redeem(code, "wiki", ours, 1_001).is_some());
        }

        let first = handoffs.issue("u0", "wiki", state, 9_000_000, 2_000);
        for n in 1..=HANDOFFS_MAX {
            handoffs.issue(&format!("u{n}"), "wiki", state, 9_000_000, 2_000);
        }
        assert_eq!(handoffs.len(), HANDOFFS_MAX, "the oldest of anyone's goes");
        assert_eq!(handoffs.redeem(&first, "wiki", ours, 2_001), None);
        let late = handoffs.issue("bob", "wiki", state, 9_000_000, 2_000 + HANDOFF_LIFETIME_MS);
        assert_eq!(handoffs.len(), 1, "the expired are gone");
        assert!(handoffs.redeem(&late, "wiki", ours, 2_001 + HANDOFF_LIFETIME_MS).is_some());
    }

    fn session(n: u8, user: &str, created_ms: u64) -> StoredSession {
        StoredSession { token_sha256: [n; 32], user: user.into(), site: None, created_ms, expires_ms: 10_000 }
    }

    #[test]
    fn a_new_session_past_a_users_cap_ends_their_oldest() {
        let sessions = Sessions::default();
        // Taken out of order: the oldest is the first created, not the first taken.
        sessions.insert(session(1, "alice", 2), 0);
        sessions.insert(session(0, "alice", 1), 0);
        for n in 2..SESSIONS_PER_USER_MAX as u8 {
            sessions.insert(session(n, "alice", 2 + u64::from(n)), 0);
        }
        sessions.insert(session(200, "bob", 0), 0);
        assert_eq!(sessions.tokens_of("alice").len(), SESSIONS_PER_USER_MAX);
        sessions.insert(session(100, "alice", 500), 0);
        let alice = sessions.tokens_of("alice");
        assert_eq!(alice.len(), SESSIONS_PER_USER_MAX);
        assert!(!alice.contains(&[0; 32]) && alice.contains(&[1; 32]) && alice.contains(&[100; 32]));
        assert_eq!(sessions.tokens_of("bob"), vec![[200; 32]], "nobody else's");
    }

    #[test]
    fn expired_sessions_are_purged_and_revoked_ones_dropped_but_not_those_taken_since() {
        let sessions = Sessions::default();
        sessions.insert(StoredSession { expires_ms: 100, ..session(1, "alice", 0) }, 0);
        sessions.insert(session(2, "alice", 0), 0);
        sessions.purge(100);
        assert_eq!(sessions.tokens_of("alice"), vec![[2; 32]]);
        let mark = sessions.mark();
        sessions.insert(session(3, "bob", 0), 0);
        sessions.keep_only(&foldhash::HashSet::default(), mark);
        assert!(sessions.tokens_of("alice").is_empty(), "revoked in the store");
        assert_eq!(sessions.tokens_of("bob"), vec![[3; 32]], "saved after the store was read");
    }

    #[test]
    fn session_cookies_are_found_and_told_apart() {
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, HeaderValue::from_static("theme=dark; commons_site=abc"));
        headers.append(COOKIE, HeaderValue::from_static("commons_session=def;lang=en"));
        assert_eq!(cookie(&headers, SITE_COOKIE), Some("abc"));
        assert_eq!(cookie(&headers, PLATFORM_COOKIE), Some("def"));
        // Twice (one planted by a sibling host): none.
        headers.append(COOKIE, HeaderValue::from_static("commons_site=planted"));
        assert_eq!(cookie(&headers, SITE_COOKIE), None);
        assert_eq!(cookie(&headers, PLATFORM_COOKIE), Some("def"));
        for ours in [
            &b" commons_site=abc"[..],
            b"commons_session=",
            b"commons_site",
            b"__Host-commons_site=abc",
            b"__Host-commons_session=def",
            b"commons_state=1",
        ] {
            assert!(is_session_cookie(ours), "{ours:?}");
        }
        for theirs in [&b"theme=dark"[..], b"commons_site_x=1", b"x=commons_site"] {
            assert!(!is_session_cookie(theirs), "{theirs:?}");
        }
    }
}
