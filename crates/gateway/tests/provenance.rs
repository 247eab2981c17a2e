//! Indirect usage: a site calls another service through the internal
//! listener with the provenance token of the request it is serving.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use gateway::{Gateway, GatewayConfig, Identities, ManualClock, Routes, SiteRoute};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use metering::Meter;
use metering::wal::Checkpoint;
use tokio::net::TcpListener;

async fn get(addr: SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> (StatusCode, String) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut request = Request::builder().uri(format!("http://{addr}{path}")).header("host", host);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client.request(request.body(Full::new(Bytes::new())).unwrap()).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A site: `/` answers with the provenance token it received; `/call`
/// calls the `search` service through the internal listener with it.
async fn site(name: &'static str, internal: Arc<OnceLock<SocketAddr>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let internal = internal.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let internal = internal.clone();
                    async move {
                        let token =
                            request.headers().get("x-commons-provenance").map(|v| v.to_str().unwrap().to_owned());
                        let user = request.headers().get("x-commons-user").map(|v| v.to_str().unwrap().to_owned());
                        let text = if request.uri().path() == "/call" {
                            let headers: Vec<(&str, &str)> =
                                token.iter().map(|t| ("x-commons-provenance", t.as_str())).collect();
                            let (status, body) =
                                get(*internal.get().unwrap(), "search.commons.localhost", "/", &headers).await;
                            format!("{name} called search: {} {}", status.as_u16(), body)
                        } else {
                            format!("{name} token={} user={}", token.unwrap_or_default(), user.unwrap_or_default())
                        };
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
                    }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_call_with_live_provenance_is_attributed_and_any_other_is_refused() {
    let internal = Arc::new(OnceLock::new());
    let chat = site("chat", internal.clone()).await;
    let search = site("search", internal.clone()).await;
    let mut routes = Routes::new("commons.localhost");
    routes.add_site(SiteRoute::new("chat", &[chat], false), &[]);
    routes.add_site(SiteRoute::new("search", &[search], false), &[]);
    let wal = tempfile::tempdir().unwrap();
    let (meter, _) = Meter::open(wal.path(), 2, &Checkpoint::default()).unwrap();
    let meter = Arc::new(meter);
    let clock = ManualClock::new(1_795_000_000_000);
    let config = GatewayConfig { provenance_secret: [9; 32], ..GatewayConfig::default() };
    let gateway = Gateway::new(config, routes, Some(meter.clone()), Arc::new(clock));
    let mut identities = Identities::default();
    identities.add_token("alice-token", "alice");
    gateway.set_identities(identities);
    let public = gateway.serve("127.0.0.1:0".parse().unwrap(), 2).unwrap();
    let inner = gateway.serve_internal("127.0.0.1:0".parse().unwrap(), 1).unwrap();
    internal.set(inner.addr).unwrap();
    let alice = [("authorization", "Bearer alice-token")];

    // chat calls search for alice: search sees alice under its own pseudonym.
    let (status, body) = get(public.addr, "chat.commons.localhost", "/call", &alice).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.starts_with("chat called search: 200 search token= user="), "{body}");
    let (_, direct) = get(public.addr, "chat.commons.localhost", "/", &alice).await;
    let token = direct.split("token=").nth(1).unwrap().split(' ').next().unwrap().to_owned();
    assert!(!token.is_empty());

    // No token, a forged one, and the token of a request already answered.
    assert_eq!(get(inner.addr, "search.commons.localhost", "/", &[]).await.0, StatusCode::UNAUTHORIZED);
    let forged = format!("{}00", &token[..token.len() - 2]);
    assert_eq!(
        get(inner.addr, "search.commons.localhost", "/", &[("x-commons-provenance", &forged)]).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, body) = get(inner.addr, "search.commons.localhost", "/", &[("x-commons-provenance", &token)]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("cannot be replayed"), "{body}");
    // The public listener never accepts provenance in place of a login.
    let (status, _) = get(public.addr, "search.commons.localhost", "/", &[("x-commons-provenance", &token)]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let metrics = gateway.metrics();
    for reason in ["missing", "forged", "replayed"] {
        assert!(metrics.contains(&format!("commons_provenance_refused_total{{reason=\"{reason}\"}} 1")), "{metrics}");
    }
    let usage = meter.take().unwrap().usage;
    let calls: Vec<_> = usage.calls.keys().map(|k| (k.user.as_str(), k.site.as_str(), k.service.as_str())).collect();
    assert_eq!(calls, vec![("alice", "chat", "search")], "only the live call is attributed");
    let direct: Vec<_> = usage.direct.keys().map(|k| (k.user.as_str(), k.site.as_str())).collect();
    assert_eq!(direct, vec![("alice", "chat")], "an internal call is not direct use of search");
}
