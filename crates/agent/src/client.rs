//! The agent's HTTPS client: hyper over pooled TLS connections to a
//! control plane pinned by its CA ([`crate::tls`]), with a timeout on every
//! exchange and a limit on every body it reads, so a slow or greedy peer
//! can neither hang an agent nor fill its memory. Chunked and
//! length-delimited answers are both understood (hyper frames them).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::tls::{Pin, client_config};

/// How long one exchange (connect, send, read the whole answer) may take.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0:?} is not an https:// URL of a host and port (the control link is TLS only)")]
    Url(String),
    #[error(
        "{0} presented a certificate that the CA named by the join token did not sign for it: another machine, or someone in between; refusing to talk to it"
    )]
    NotPinned(String),
    #[error("cannot reach {0}: {1}")]
    Unreachable(String, String),
    #[error("{0} did not answer within {1:?}")]
    Timeout(String, Duration),
    #[error("the answer from {0} is over {1} bytes")]
    TooLarge(String, usize),
}

/// An answer: its status and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

/// A client for one peer, `https://host:port`, whose certificate chain must
/// hold the CA `pin`.
#[derive(Clone)]
pub struct Client {
    base: String,
    inner: HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// Set when the peer presented a chain without the pinned CA.
    mismatch: Arc<AtomicBool>,
}

impl Client {
    pub fn new(url: &str, pin: Pin) -> Result<Client, ClientError> {
        let authority = url.strip_prefix("https://").ok_or_else(|| ClientError::Url(url.to_owned()))?;
        let authority = authority.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') || authority.parse::<hyper::http::uri::Authority>().is_err()
        {
            return Err(ClientError::Url(url.to_owned()));
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        connector.set_nodelay(true);
        connector.enforce_http(false);
        let mismatch = Arc::new(AtomicBool::new(false));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(client_config(pin, mismatch.clone()))
            .https_only()
            .enable_http1()
            .wrap_connector(connector);
        let inner = HyperClient::builder(TokioExecutor::new()).build(https);
        Ok(Client { base: format!("https://{authority}"), inner, mismatch })
    }

    /// The peer, for messages.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends `method path` with `body` (JSON when given) and the bearer
    /// `token`; reads an answer of at most `limit` bytes.
    pub async fn send(
        &self,
        method: hyper::Method,
        path: &str,
        token: &str,
        body: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<Answer, ClientError> {
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        if body.is_some() {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Url(format!("{}{path}: {e}", self.base)))?;
        let exchange = async {
            let response = self.inner.request(request).await.map_err(|e| self.unreachable(&e))?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), limit).collect().await.map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                    ClientError::TooLarge(self.base.clone(), limit)
                } else {
                    ClientError::Unreachable(self.base.clone(), e.to_string())
                }
            })?;
            Ok(Answer { status, body: body.to_bytes() })
        };
        tokio::time::timeout(EXCHANGE_TIMEOUT, exchange)
            .await
            .map_err(|_| ClientError::Timeout(self.base.clone(), EXCHANGE_TIMEOUT))?
    }
}

impl Client {
    /// What a failed exchange was: the pin refused, or the error and its
    /// causes (hyper's own message alone says only "client error").
    fn unreachable(&self, e: &(dyn std::error::Error + 'static)) -> ClientError {
        if self.mismatch.load(Ordering::Relaxed) {
            return ClientError::NotPinned(self.base.clone());
        }
        let mut text = e.to_string();
        let mut cause = e.source();
        while let Some(c) = cause {
            text.push_str(": ");
            text.push_str(&c.to_string());
            cause = c.source();
        }
        ClientError::Unreachable(self.base.clone(), text)
    }
}
