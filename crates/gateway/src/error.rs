//! Failures as HTTP answers that say whose fault they are.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};

use crate::provenance::ProvenanceError;

/// Why the gateway answered instead of the site.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No site has this Host. The request's fault; retrying will not help.
    #[error("there is no site at {0:?}")]
    UnknownHost(String),
    /// The request has no Host header.
    #[error("the request names no host")]
    NoHost,
    /// The request has more than one Host line: the gateway would route
    /// by one while the site might read another.
    #[error("the request names more than one host")]
    HostRepeated,
    /// The request's path could be read by a site otherwise than by the
    /// gateway (see `path`).
    #[error("the request's path {path:?} has {problem}, which sites could read in more than one way")]
    AmbiguousPath { path: String, problem: &'static str },
    /// The site needs a logged-in user.
    #[error("this site needs you to log in")]
    LoginRequired,
    /// A free user went over the site's requests per minute.
    #[error("the free tier allows fewer requests per minute on this site; a subscription lifts the limit")]
    RateLimited { retry_after_s: u64 },
    /// A free user has too many requests in flight on this site.
    #[error("the free tier allows fewer requests at once on this site; a subscription lifts the limit")]
    TooManyInFlight,
    /// A route only subscribers may use.
    #[error("this part of the site is for subscribers: one subscription unlocks every site ({subscribe_url})")]
    PremiumOnly { subscribe_url: String },
    /// A call on the internal listener without valid provenance.
    #[error("{0}")]
    Provenance(ProvenanceError),
    /// A site calling itself on the internal listener: a call pays another
    /// service for its part of a request, and a site's own work is paid by
    /// the request itself, so the gateway neither serves nor meters it.
    #[error("site {0:?} cannot call itself through the internal listener; it can do the work itself")]
    SelfCall(String),
    /// The body is larger than the gateway accepts.
    #[error("the request body is larger than {0} bytes")]
    BodyTooLarge(u64),
    /// No instance of the site accepted a connection. The site's fault; a
    /// retry may help once it is back.
    #[error("site {site:?} is not answering: {reason}")]
    UpstreamDown { site: String, reason: String },
    /// The site took too long. The site's fault; a retry may help.
    #[error("site {site:?} did not answer within {timeout_ms} ms")]
    UpstreamTimeout { site: String, timeout_ms: u64 },
    /// Usage could not be recorded, so the request is not served. Ours.
    #[error("the gateway cannot record usage right now: {0}")]
    Metering(String),
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::UnknownHost(_) => StatusCode::NOT_FOUND,
            GatewayError::NoHost
            | GatewayError::HostRepeated
            | GatewayError::AmbiguousPath { .. }
            | GatewayError::SelfCall(_) => StatusCode::BAD_REQUEST,
            GatewayError::LoginRequired | GatewayError::Provenance(_) => StatusCode::UNAUTHORIZED,
            GatewayError::RateLimited { .. } | GatewayError::TooManyInFlight => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::PremiumOnly { .. } => StatusCode::PAYMENT_REQUIRED,
            GatewayError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::UpstreamDown { .. } => StatusCode::BAD_GATEWAY,
            GatewayError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::Metering(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Whose fault, and whether trying again can help.
    pub fn fault(&self) -> (&'static str, bool) {
        match self {
            GatewayError::UnknownHost(_)
            | GatewayError::NoHost
            | GatewayError::HostRepeated
            | GatewayError::AmbiguousPath { .. }
            | GatewayError::BodyTooLarge(_) => ("your request", false),
            GatewayError::LoginRequired => ("your request (log in first)", true),
            GatewayError::Provenance(_) | GatewayError::SelfCall(_) => ("the calling site", false),
            GatewayError::RateLimited { .. } | GatewayError::TooManyInFlight => {
                ("your request (free-tier limit)", true)
            }
            GatewayError::PremiumOnly { .. } => ("your request (subscribers only)", false),
            GatewayError::UpstreamDown { .. } | GatewayError::UpstreamTimeout { .. } => ("the site", true),
            GatewayError::Metering(_) => ("the gateway", true),
        }
    }

    /// `X-Commons-Fault`: `downstream` (the client, or the calling site),
    /// `upstream` (the site) or `gateway`.
    pub fn fault_tag(&self) -> &'static str {
        match self {
            GatewayError::UpstreamDown { .. } | GatewayError::UpstreamTimeout { .. } => "upstream",
            GatewayError::Metering(_) => "gateway",
            GatewayError::UnknownHost(_)
            | GatewayError::NoHost
            | GatewayError::HostRepeated
            | GatewayError::AmbiguousPath { .. }
            | GatewayError::LoginRequired
            | GatewayError::RateLimited { .. }
            | GatewayError::TooManyInFlight
            | GatewayError::PremiumOnly { .. }
            | GatewayError::Provenance(_)
            | GatewayError::SelfCall(_)
            | GatewayError::BodyTooLarge(_) => "downstream",
        }
    }

    /// A small HTML page with the status, the reason and whose fault it is.
    pub fn response(&self) -> Response<Full<Bytes>> {
        self.page().map(Full::new)
    }

    /// [`GatewayError::response`] with its body at hand.
    pub(crate) fn page(&self) -> Response<Bytes> {
        let status = self.status();
        let (fault, retry) = self.fault();
        let reason = html_escape(&self.to_string());
        let advice = if retry { "Trying again later may help." } else { "Trying again will not help." };
        let body = format!(
            "<!doctype html><title>{code} {text}</title><h1>{code} {text}</h1><p>{reason}.</p><p>Fault: {fault}. {advice}</p><p>OneCommons gateway</p>\n",
            code = status.as_u16(),
            text = status.canonical_reason().unwrap_or(""),
        );
        let mut response = Response::new(Bytes::from(body));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers
            .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("text/html; charset=utf-8"));
        headers.insert("x-commons-fault", hyper::header::HeaderValue::from_static(self.fault_tag()));
        match self {
            GatewayError::RateLimited { retry_after_s } => {
                headers.insert(hyper::header::RETRY_AFTER, (*retry_after_s).into());
            }
            GatewayError::TooManyInFlight => {
                headers.insert(hyper::header::RETRY_AFTER, 1u64.into());
            }
            GatewayError::PremiumOnly { subscribe_url } => {
                if let Ok(value) = hyper::header::HeaderValue::from_str(subscribe_url) {
                    headers.insert(hyper::header::LINK, value);
                }
            }
            _ => {}
        }
        response
    }
}

pub(crate) fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
