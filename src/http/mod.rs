//! The HTTP listener: Prometheus metrics, health checks, the JSON admin API and the live
//! dashboard, on one port that is off by default (`[http] bind`, `--http ADDR`).
//!
//! Nothing here runs on the publish path. The listener is its own accept loop with its own tasks;
//! it reads the broker only when asked (a scrape, an API call, a dashboard poll) and the dashboard
//! sampler reads the broker's counters once a second. The one cost it adds while nobody asks is
//! the topic sample behind "top topics" (see [`crate::metrics::TopicSampler`]).
//!
//! Access: with `[http] token` set, every request except `/healthz`, `/readyz` and the dashboard's
//! static files must carry `Authorization: Bearer <token>` (the dashboard's script sends it,
//! taken from the page's `#token=` fragment). The token is compared in constant time. A listener
//! bound beyond loopback without a token is refused by config validation.
//!
//! Browsers: a page from another site may send requests here from the operator's browser. A
//! `POST` or `DELETE` whose `Origin` is not this listener is refused (cross-site request
//! forgery), and without a token the `Host` must be a loopback name, so a page whose own name was
//! made to resolve to 127.0.0.1 (DNS rebinding) cannot pass as this listener.

mod api;
mod dashboard;
mod prometheus;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::broker::Broker;
use crate::config::Config;
use dashboard::Dashboard;
use prometheus::Exporter;

/// HTTP connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 64;

/// Largest request body accepted (a publish through the API).
const MAX_BODY: usize = 1024 * 1024;

/// Time a client has to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// A bound HTTP listener, not yet serving.
pub struct HttpListener {
    socket: TcpListener,
    token: Option<String>,
}

impl HttpListener {
    /// Binds `[http] bind`, if set. Refuses an address beyond loopback without a token (config
    /// validation says so first; this also holds for a `Config` built in code).
    pub async fn bind(config: &Config) -> std::io::Result<Option<HttpListener>> {
        let Some(addr) = config.http.bind else {
            return Ok(None);
        };
        if !addr.ip().is_loopback() && config.http.token.is_none() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "an HTTP listener beyond loopback needs http.token",
            ));
        }
        let socket = TcpListener::bind(addr).await?;
        Ok(Some(HttpListener {
            socket,
            token: config.http.token.clone(),
        }))
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Serves until `stop`, on tasks tracked by `tasks`. `info` describes the broker for
    /// `/api/broker`.
    pub fn spawn(
        self,
        broker: Arc<Broker>,
        info: BrokerInfo,
        tasks: &TaskTracker,
        stop: CancellationToken,
    ) {
        let exporter = Exporter::new();
        broker.enable_histograms(exporter.histograms());
        broker.metrics().topics().enable();
        let state = Arc::new(State {
            token: self.token.as_deref().map(digest),
            dashboard: Dashboard::default(),
            broker,
            exporter,
            info,
            stop: stop.clone(),
        });
        tasks.spawn(dashboard::sample(state.clone(), stop.clone()));
        let addr = self
            .socket
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        info!("Opening HTTP listener on {addr} (metrics, admin API, dashboard).");
        tasks.spawn(accept(self.socket, state, tasks.clone(), stop));
    }
}

/// What `/api/broker` reports about the running broker.
#[derive(Debug, Clone)]
pub struct BrokerInfo {
    pub started: Instant,
    pub listeners: Vec<SocketAddr>,
    pub config: Config,
}

struct State {
    broker: Arc<Broker>,
    /// SHA-256 of the token: comparing digests takes the same time whatever the length.
    token: Option<[u8; 32]>,
    exporter: Exporter,
    dashboard: Dashboard,
    info: BrokerInfo,
    stop: CancellationToken,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

async fn accept(
    socket: TcpListener,
    state: Arc<State>,
    tasks: TaskTracker,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = socket.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                error!("HTTP accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = state.clone();
        let stop = stop.clone();
        tasks.spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, request).await) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            let connection = builder.serve_connection(TokioIo::new(tcp), service);
            tokio::pin!(connection);
            let served = tokio::select! {
                served = connection.as_mut() => served,
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = served {
                debug!(%peer, "HTTP connection ended: {e}");
            }
            drop(permit);
        });
    }
}

type Reply = Response<Full<Bytes>>;

async fn handle(state: &State, request: Request<Incoming>) -> Reply {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    // Probes and the dashboard's static files carry no broker data: no token needed.
    match (&method, path.as_str()) {
        (&Method::GET, "/healthz") => return text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => return readiness(state),
        (&Method::GET, "/") => return dashboard::asset("index.html"),
        (&Method::GET, "/dashboard.js") => return dashboard::asset("dashboard.js"),
        (&Method::GET, "/dashboard.css") => return dashboard::asset("dashboard.css"),
        _ => {}
    }
    if let Err(why) = same_site(state.token.is_some(), &request) {
        return json(StatusCode::FORBIDDEN, &serde_json::json!({ "error": why }));
    }
    if !authorized(state, &request) {
        let mut reply = json(
            StatusCode::UNAUTHORIZED,
            &serde_json::json!({"error": "missing or wrong bearer token"}),
        );
        reply
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return reply;
    }
    match (&method, path.as_str()) {
        (&Method::GET, "/metrics") => {
            let body = state.exporter.render(&state.broker, state.info.started);
            let mut reply = Response::new(Full::new(Bytes::from(body)));
            reply.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            reply
        }
        (&Method::GET, "/api/dashboard") => json(StatusCode::OK, &dashboard::view(state)),
        _ if path.starts_with("/api/") => {
            let query = request.uri().query().unwrap_or_default().to_owned();
            let body = if method == Method::POST {
                match read_body(request).await {
                    Ok(body) => body,
                    Err(reply) => return *reply,
                }
            } else {
                Bytes::new()
            };
            api::handle(state, &method, &path, &query, &body).await
        }
        _ => not_found(),
    }
}

fn readiness(state: &State) -> Reply {
    if state.stop.is_cancelled() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
    }
    match state.broker.store_fault() {
        None => text(StatusCode::OK, "ready\n"),
        Some(_) => text(StatusCode::SERVICE_UNAVAILABLE, "the store is failing\n"),
    }
}

/// Refuses what a page from another site could send through the operator's browser.
fn same_site<B>(has_token: bool, request: &Request<B>) -> Result<(), &'static str> {
    let header = |name| {
        request
            .headers()
            .get(name)
            .and_then(|value: &HeaderValue| value.to_str().ok())
    };
    let host = header(header::HOST).unwrap_or_default();
    if !has_token && !is_loopback_host(host) {
        return Err("without http.token, requests must name a loopback host");
    }
    let changes_state = matches!(*request.method(), Method::POST | Method::DELETE);
    if changes_state
        && let Some(origin) = header(header::ORIGIN)
        && origin.split_once("://").map(|(_, authority)| authority) != Some(host)
    {
        return Err("cross-site request refused");
    }
    Ok(())
}

/// `localhost`, `127.x.x.x` or `[::1]`, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !name.ends_with(':') => {
            name
        }
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn authorized(state: &State, request: &Request<Incoming>) -> bool {
    let Some(expected) = &state.token else {
        return true;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match given {
        Some(token) => bool::from(digest(token.trim()).ct_eq(expected)),
        None => false,
    }
}

async fn read_body(request: Request<Incoming>) -> Result<Bytes, Box<Reply>> {
    match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => {
            warn!("HTTP request body refused: {e}");
            Err(Box::new(json(
                StatusCode::PAYLOAD_TOO_LARGE,
                &serde_json::json!({"error": format!("request body: {e}")}),
            )))
        }
    }
}

fn text(status: StatusCode, body: &'static str) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *reply.status_mut() = status;
    reply.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    reply
}

fn json(status: StatusCode, value: &serde_json::Value) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(value.to_string())));
    *reply.status_mut() = status;
    reply.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    reply
}

fn not_found() -> Reply {
    json(
        StatusCode::NOT_FOUND,
        &serde_json::json!({"error": "not found"}),
    )
}

/// Decodes `%XX` escapes (and `+` as a space in query strings); `None` if the result is not
/// UTF-8 or an escape is broken.
fn percent_decode(text: &str, plus_is_space: bool) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = text.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The decoded value of `name` in a query string.
fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(key, true)? == name)
            .then(|| percent_decode(value, true))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_handles_escapes_slashes_and_broken_input() {
        assert_eq!(percent_decode("a%2Fb%20c", false).as_deref(), Some("a/b c"));
        assert_eq!(percent_decode("a+b", false).as_deref(), Some("a+b"));
        assert_eq!(percent_decode("a+b", true).as_deref(), Some("a b"));
        assert_eq!(percent_decode("%E2%82%AC", false).as_deref(), Some("€"));
        assert_eq!(percent_decode("%2", false), None);
        assert_eq!(percent_decode("%zz", false), None);
        assert_eq!(percent_decode("%FF", false), None, "not UTF-8");
    }

    #[test]
    fn loopback_hosts_are_recognised_with_and_without_ports() {
        for host in [
            "localhost",
            "LOCALHOST:8080",
            "127.0.0.1",
            "127.0.0.2:80",
            "[::1]:8080",
            "[::1]",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "",
            "evil.example",
            "evil.example:8080",
            "10.0.0.1:80",
            "[::2]:80",
            "127.0.0.1.evil",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn cross_site_requests_are_refused() {
        let request = |method: Method, host: &str, origin: Option<&str>| {
            let mut builder = Request::builder()
                .method(method)
                .uri("/api/x")
                .header("host", host);
            if let Some(origin) = origin {
                builder = builder.header("origin", origin);
            }
            builder.body(()).expect("request")
        };
        let host = "127.0.0.1:8080";
        assert!(same_site(false, &request(Method::GET, host, None)).is_ok());
        assert!(
            same_site(
                false,
                &request(Method::POST, host, Some("http://127.0.0.1:8080"))
            )
            .is_ok()
        );
        assert!(
            same_site(
                false,
                &request(Method::POST, host, Some("http://evil.example"))
            )
            .is_err()
        );
        assert!(same_site(true, &request(Method::DELETE, host, Some("null"))).is_err());
        assert!(
            same_site(
                true,
                &request(Method::GET, host, Some("http://evil.example"))
            )
            .is_ok()
        );
        // DNS rebinding: the page's own name, resolved to loopback.
        assert!(same_site(false, &request(Method::GET, "evil.example:8080", None)).is_err());
        assert!(same_site(true, &request(Method::GET, "broker.example:8080", None)).is_ok());
    }

    #[test]
    fn query_parameters_are_found_and_decoded() {
        let query = "limit=5&filter=sensors%2F%23&empty";
        assert_eq!(query_param(query, "filter").as_deref(), Some("sensors/#"));
        assert_eq!(query_param(query, "limit").as_deref(), Some("5"));
        assert_eq!(query_param(query, "empty").as_deref(), Some(""));
        assert_eq!(query_param(query, "missing"), None);
    }
}
