//! The webhook channel: each alert is one HTTP POST of its JSON body
//! (docs/POLICY.md "Alerts") to a URL, over HTTPS with the system's CA
//! store or a pinned CA file, or plain HTTP (a receiver on the same host).
//!
//! A URL's user and password (`https://user:secret@host/path`) are sent as
//! HTTP basic authentication and never logged.
//!
//! A receiver that is down, slow or answers 5xx (or 429) gets the same body
//! again after a doubling pause; a 4xx other than 429 means the receiver
//! refuses the body for good, so it is logged and not retried. One
//! connection per alert: alerts are rare, and a fresh connection survives a
//! receiver's restart without any pool logic.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use percent_encoding::percent_decode_str;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use url::Url;

use crate::queue::Queue;
use crate::{Alert, AlertError, Channel};

/// How hard a webhook tries before it gives an alert up.
#[derive(Debug, Clone, Copy)]
pub struct WebhookRetry {
    /// Tries in all (the first included).
    pub attempts: u32,
    /// The pause after the first failure; it doubles after each, up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// Longest one try may take: connect, TLS, request and answer.
    pub timeout: Duration,
}

impl Default for WebhookRetry {
    /// Six tries over about a minute.
    fn default() -> Self {
        WebhookRetry {
            attempts: 6,
            backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
        }
    }
}

pub struct WebhookChannel {
    queue: Queue<Alert>,
}

/// Where the webhook is, checked once.
struct Target {
    /// The URL without its password, for logs.
    shown: String,
    host: String,
    port: u16,
    /// The Host header: host and the port when the URL names one.
    authority: HeaderValue,
    /// Path and query.
    path: String,
    /// Basic authentication from the URL's user and password.
    authorization: Option<HeaderValue>,
    tls: Option<TlsConnector>,
}

enum Failure {
    /// Worth another try (unreachable, timeout, 5xx, 429).
    Transient(String),
    /// The receiver refused this body for good.
    Refused(StatusCode),
}

impl WebhookChannel {
    /// `ca_file` pins the CA (PEM) an HTTPS receiver's certificate must
    /// chain to; without it the system's CA store is used.
    pub fn new(
        url: &str,
        ca_file: Option<&Path>,
        retry: WebhookRetry,
    ) -> Result<WebhookChannel, AlertError> {
        let target = Target::parse(url, ca_file)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(AlertError::Thread)?;
        let queue = Queue::spawn(format!("webhook {}", target.shown), move |alert: Alert| {
            runtime.block_on(deliver(&target, &retry, &alert));
        })?;
        Ok(WebhookChannel { queue })
    }
}

impl Channel for WebhookChannel {
    fn deliver(&self, alert: Alert) {
        self.queue.push(alert);
    }
}

async fn deliver(target: &Target, retry: &WebhookRetry, alert: &Alert) {
    let body = Bytes::from(alert.to_json());
    let mut pause = retry.backoff;
    for attempt in 1..=retry.attempts.max(1) {
        let outcome = tokio::time::timeout(retry.timeout, post(target, body.clone()))
            .await
            .unwrap_or_else(|_| {
                Err(Failure::Transient(format!(
                    "no answer within {:?}",
                    retry.timeout
                )))
            });
        match outcome {
            Ok(()) => {
                tracing::debug!(url = %target.shown, kind = alert.kind(), attempt, "alert delivered");
                return;
            }
            Err(Failure::Refused(status)) => {
                tracing::error!(url = %target.shown, %status, "webhook refused the alert; not retried");
                return;
            }
            Err(Failure::Transient(reason)) if attempt < retry.attempts => {
                tracing::warn!(url = %target.shown, attempt, %reason, retry_in = ?pause, "webhook failed");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(retry.max_backoff);
            }
            Err(Failure::Transient(reason)) => {
                tracing::error!(url = %target.shown, attempts = attempt, %reason, "webhook failed; alert given up");
            }
        }
    }
}

async fn post(target: &Target, body: Bytes) -> Result<(), Failure> {
    let transient =
        |what: &str, e: &dyn std::fmt::Display| Failure::Transient(format!("{what}: {e}"));
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| transient("connect", &e))?;
    match &target.tls {
        Some(tls) => {
            let name = ServerName::try_from(target.host.clone())
                .map_err(|e| transient("server name", &e))?;
            let stream = tls
                .connect(name, tcp)
                .await
                .map_err(|e| transient("TLS", &e))?;
            exchange(target, stream, body).await
        }
        None => exchange(target, tcp, body).await,
    }
}

async fn exchange<S>(target: &Target, stream: S, body: Bytes) -> Result<(), Failure>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let transient =
        |what: &str, e: &dyn std::fmt::Display| Failure::Transient(format!("{what}: {e}"));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| transient("HTTP", &e))?;
    tokio::spawn(connection);
    let mut request = Request::post(target.path.as_str())
        .header(HOST, target.authority.clone())
        .header(CONTENT_TYPE, "application/json")
        .header(USER_AGENT, concat!("connscope/", env!("CARGO_PKG_VERSION")))
        .body(Full::new(body))
        .map_err(|e| transient("request", &e))?;
    if let Some(authorization) = &target.authorization {
        request
            .headers_mut()
            .insert(AUTHORIZATION, authorization.clone());
    }
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| transient("HTTP", &e))?;
    let status = response.status();
    // Read the answer to the end so the receiver sees a clean close.
    let _ = response.into_body().collect().await;
    if status.is_success() {
        Ok(())
    } else if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        Err(Failure::Transient(format!("answered {status}")))
    } else {
        Err(Failure::Refused(status))
    }
}

impl Target {
    fn parse(text: &str, ca_file: Option<&Path>) -> Result<Target, AlertError> {
        let bad = |reason: &str| AlertError::WebhookUrl {
            url: redacted(text),
            reason: reason.to_owned(),
        };
        let url = Url::parse(text).map_err(|e| bad(&e.to_string()))?;
        let https = match url.scheme() {
            "https" => true,
            "http" => false,
            _ => return Err(bad("expected an http:// or https:// URL")),
        };
        if ca_file.is_some() && !https {
            return Err(bad("a CA file is given but the URL is not https://"));
        }
        let host = url.host_str().ok_or_else(|| bad("no host"))?;
        let port = url.port_or_known_default().ok_or_else(|| bad("no port"))?;
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        let authorization = if url.username().is_empty() && url.password().is_none() {
            None
        } else {
            let decode = |part: &str| percent_decode_str(part).decode_utf8_lossy().into_owned();
            let credentials = format!(
                "{}:{}",
                decode(url.username()),
                decode(url.password().unwrap_or(""))
            );
            let value = format!("Basic {}", BASE64.encode(credentials));
            Some(HeaderValue::from_str(&value).map_err(|e| bad(&e.to_string()))?)
        };
        let path = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        };
        let tls = if https {
            Some(TlsConnector::from(client_config(ca_file)?))
        } else {
            None
        };
        Ok(Target {
            shown: redacted(text),
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
            authority: HeaderValue::from_str(&authority).map_err(|e| bad(&e.to_string()))?,
            path,
            authorization,
            tls,
        })
    }
}

/// `url` with its user and password (if any) replaced by `***`, for logs
/// and errors.
fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, AlertError> {
    let tls = |e: &dyn std::fmt::Display| AlertError::Tls(e.to_string());
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in connscope_protocol::tls::load_certs(path).map_err(|e| tls(&e))? {
                roots
                    .add(cert)
                    .map_err(|e| AlertError::Tls(format!("{}: {e}", path.display())))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(AlertError::Tls(format!(
                    "no CA certificate in the system store ({} errors); pin one with a CA file",
                    found.errors.len()
                )));
            }
        }
    }
    let config = ClientConfig::builder_with_provider(connscope_protocol::tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
