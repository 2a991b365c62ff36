//! A small HTTPS client for the one thing an agent says to its collector:
//! "here is a batch". It keeps one HTTP/1.1 keep-alive connection and runs on a
//! private single-threaded tokio runtime inside the shipper thread, so the
//! agent's capture loop never shares an executor with the network.
//!
//! hyper is used directly (not a full client with pools and redirects) because
//! there is one server at a time and one request at a time.
//!
//! Several collectors may share one store (ClickHouse): the client is then
//! given their URLs, comma-separated, and stays with one until it cannot be
//! reached (or answers 5xx), then tries the next in the list, each once per
//! request. A batch a collector died on is simply sent again to the next:
//! the store recognises what of it was stored (see docs/STORE.md).

use std::io;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::tls::{client_config, CollectorTrust};
use connscope_protocol::enroll::{EnrollRequest, EnrollResponse, WhoAmI, ENROLL_PATH, WHOAMI_PATH};
use connscope_protocol::policy::{
    AssignedPolicy, FirewallReport, AGENT_FIREWALL_PATH, AGENT_POLICY_PATH,
};
use connscope_protocol::tls::TlsError;
use connscope_protocol::{
    BatchOrigin, DroppedReport, ErrorResponse, IngestResponse, BODY_ENCODING, BOOT_HEADER,
    DROPPED_PATH, FIRST_SEQUENCE_HEADER, INGEST_PATH, INSTANCE_HEADER, JSON_LINES,
};

/// Longest the collector may take to answer one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Answers are tiny JSON documents; anything bigger is not our collector.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Why a request did not get a success answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid collector URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot reach the collector at {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("the collector did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the collector answered {status}: {message}")]
    Status { status: StatusCode, message: String },
    #[error("unexpected answer from the collector: {0}")]
    BadAnswer(String),
}

impl ClientError {
    /// The collector looked at the request and refused it for good: retrying
    /// the same bytes cannot succeed.
    pub fn is_permanent(&self) -> bool {
        matches!(self, ClientError::Status { status, .. }
            if *status == StatusCode::BAD_REQUEST || *status == StatusCode::PAYLOAD_TOO_LARGE)
    }
}

/// Where the collector is, split out of its URL once.
#[derive(Debug, Clone)]
struct Endpoint {
    host: String,
    port: u16,
    /// The URL's path without a trailing slash ("" for the root).
    base_path: String,
}

impl Endpoint {
    fn parse(url: &str) -> Result<Endpoint, ClientError> {
        let bad = |reason: &str| ClientError::Url {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| bad(&e.to_string()))?;
        if uri.scheme_str() != Some("https") {
            return Err(bad("the collector is reached over https:// only"));
        }
        let host = uri.host().ok_or_else(|| bad("no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if uri.query().is_some() {
            return Err(bad("a query string is not allowed"));
        }
        Ok(Endpoint {
            host,
            port: uri.port_u16().unwrap_or(443),
            base_path: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// One or several collectors, one token, one connection at a time.
pub struct CollectorClient {
    runtime: tokio::runtime::Runtime,
    /// The collectors, in the order given; never empty.
    endpoints: Vec<Endpoint>,
    /// The one requests go to until it fails.
    current: usize,
    authorization: HeaderValue,
    tls: TlsConnector,
    connection: Option<SendRequest<Full<Bytes>>>,
}

impl CollectorClient {
    pub fn new(
        url: &str,
        token: &str,
        trust: &CollectorTrust,
    ) -> Result<CollectorClient, ClientError> {
        let endpoints = url
            .split(',')
            .map(|u| Endpoint::parse(u.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        let authorization = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            ClientError::BadAnswer("the token has characters not allowed in a header".into())
        })?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| ClientError::Connect {
                addr: endpoints[0].authority(),
                source,
            })?;
        Ok(CollectorClient {
            runtime,
            endpoints,
            current: 0,
            authorization,
            tls: TlsConnector::from(client_config(trust)?),
            connection: None,
        })
    }

    /// Sends one batch body (gzip JSON Lines, as [`connscope_protocol::batch::encode_body`]
    /// makes it) without an origin, as agents before instance ids did.
    pub fn post_batch(&mut self, gzip_body: Vec<u8>) -> Result<IngestResponse, ClientError> {
        self.post_batch_from(gzip_body, None)
    }

    /// [`Self::post_batch`] with who numbered the batch, when known.
    pub fn post_batch_from(
        &mut self,
        gzip_body: Vec<u8>,
        origin: Option<&BatchOrigin>,
    ) -> Result<IngestResponse, ClientError> {
        let headers: Vec<(&'static str, String)> = origin
            .map(|o| {
                vec![
                    (INSTANCE_HEADER, o.instance.clone()),
                    (BOOT_HEADER, o.boot.clone()),
                    (FIRST_SEQUENCE_HEADER, o.first_sequence.to_string()),
                ]
            })
            .unwrap_or_default();
        let answer = self.post(
            INGEST_PATH,
            JSON_LINES,
            Some(BODY_ENCODING),
            &headers,
            gzip_body,
        )?;
        serde_json::from_slice(&answer).map_err(|e| ClientError::BadAnswer(e.to_string()))
    }

    /// Tells the collector which events the spool had to delete.
    pub fn post_dropped(&mut self, report: &DroppedReport) -> Result<(), ClientError> {
        let body = serde_json::to_vec(report).expect("a report always serialises");
        self.post(DROPPED_PATH, "application/json", None, &[], body)?;
        Ok(())
    }

    /// Exchanges this client's token (an enrollment secret) for the agent
    /// token of `host` (`connscope_protocol::enroll`).
    pub fn enroll(&mut self, host: &str) -> Result<EnrollResponse, ClientError> {
        let body = serde_json::to_vec(&EnrollRequest {
            host: host.to_owned(),
        })
        .expect("a request always serialises");
        let answer = self.post(ENROLL_PATH, "application/json", None, &[], body)?;
        serde_json::from_slice(&answer).map_err(|e| ClientError::BadAnswer(e.to_string()))
    }

    /// Asks the collector whom this client's token speaks for: an
    /// authenticated request that sends no events.
    pub fn whoami(&mut self) -> Result<WhoAmI, ClientError> {
        let answer = self.post(WHOAMI_PATH, "application/json", None, &[], Vec::new())?;
        serde_json::from_slice(&answer).map_err(|e| ClientError::BadAnswer(e.to_string()))
    }

    /// The policy the collector assigns to this agent's host, `None` when it
    /// assigns none (204).
    pub fn policy(&mut self) -> Result<Option<AssignedPolicy>, ClientError> {
        let answer = self.request(
            Method::GET,
            AGENT_POLICY_PATH,
            "application/json",
            None,
            &[],
            Bytes::new(),
        )?;
        if answer.is_empty() {
            return Ok(None);
        }
        serde_json::from_slice(&answer)
            .map(Some)
            .map_err(|e| ClientError::BadAnswer(e.to_string()))
    }

    /// Reports the host's firewall state, notices and counters.
    pub fn post_firewall(&mut self, report: &FirewallReport) -> Result<(), ClientError> {
        let body = serde_json::to_vec(report).expect("a report always serialises");
        self.post(AGENT_FIREWALL_PATH, "application/json", None, &[], body)?;
        Ok(())
    }

    /// Posts to the current collector and, if it cannot be reached or
    /// answers 5xx, to each other one in turn (staying with the first that
    /// answers).
    fn post(
        &mut self,
        path: &str,
        content_type: &'static str,
        encoding: Option<&'static str>,
        extra_headers: &[(&'static str, String)],
        body: Vec<u8>,
    ) -> Result<Bytes, ClientError> {
        self.request(
            Method::POST,
            path,
            content_type,
            encoding,
            extra_headers,
            Bytes::from(body),
        )
    }

    /// [`Self::post`] with any method.
    fn request(
        &mut self,
        method: Method,
        path: &str,
        content_type: &'static str,
        encoding: Option<&'static str>,
        extra_headers: &[(&'static str, String)],
        body: Bytes,
    ) -> Result<Bytes, ClientError> {
        let mut tried = 0;
        loop {
            let result = self.send_once(
                method.clone(),
                path,
                content_type,
                encoding,
                extra_headers,
                body.clone(),
            );
            let unavailable = match &result {
                Err(ClientError::Status { status, .. }) => status.is_server_error(),
                Err(ClientError::BadAnswer(_)) | Ok(_) => false,
                Err(_) => true,
            };
            tried += 1;
            if !unavailable || tried >= self.endpoints.len() {
                return result;
            }
            let failed = self.endpoints[self.current].authority();
            self.current = (self.current + 1) % self.endpoints.len();
            self.connection = None;
            tracing::warn!(
                failed = %failed,
                next = %self.endpoints[self.current].authority(),
                error = %result.expect_err("failed above"),
                "collector unavailable; trying the next"
            );
        }
    }

    fn send_once(
        &mut self,
        method: Method,
        path: &str,
        content_type: &'static str,
        encoding: Option<&'static str>,
        extra_headers: &[(&'static str, String)],
        body: Bytes,
    ) -> Result<Bytes, ClientError> {
        let endpoint = &self.endpoints[self.current];
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", endpoint.base_path))
            .header(HOST, endpoint.authority())
            .header(AUTHORIZATION, self.authorization.clone())
            .header(
                USER_AGENT,
                concat!("connscope-agent/", env!("CARGO_PKG_VERSION")),
            )
            .header(CONTENT_TYPE, content_type);
        if let Some(encoding) = encoding {
            request = request.header(CONTENT_ENCODING, encoding);
        }
        for (name, value) in extra_headers {
            request = request.header(*name, value.as_str());
        }
        let request = request
            .body(Full::new(body))
            .expect("the request parts are valid");
        let result = self.runtime.block_on(async {
            let reusable = match self.connection.as_mut() {
                Some(sender) => sender.ready().await.is_ok(),
                None => false,
            };
            if !reusable {
                let endpoint = &self.endpoints[self.current];
                self.connection = Some(connect(endpoint, &self.tls).await?);
            }
            let sender = self.connection.as_mut().expect("connected above");
            let response = tokio::time::timeout(REQUEST_TIMEOUT, async {
                let response = sender.send_request(request).await?;
                let status = response.status();
                let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
                    .collect()
                    .await
                    .map_err(|e| ClientError::BadAnswer(e.to_string()))?
                    .to_bytes();
                Ok::<_, ClientError>((status, body))
            })
            .await
            .map_err(|_| ClientError::Timeout(REQUEST_TIMEOUT))??;
            Ok::<_, ClientError>(response)
        });
        let (status, body) = match result {
            Ok(answer) => answer,
            Err(e) => {
                // Whatever state the connection is in, start afresh next time.
                self.connection = None;
                return Err(e);
            }
        };
        if status.is_success() {
            return Ok(body);
        }
        let message = serde_json::from_slice::<ErrorResponse>(&body)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
        Err(ClientError::Status { status, message })
    }
}

/// The addresses of the collectors in `url` (comma-separated, as
/// [`CollectorClient::new`] takes them), resolved now: what the agent's
/// firewall must always let it reach.
pub fn collector_addresses(url: &str) -> Result<Vec<std::net::SocketAddr>, ClientError> {
    use std::net::ToSocketAddrs;
    let mut addresses = Vec::new();
    for part in url.split(',') {
        let endpoint = Endpoint::parse(part.trim())?;
        let resolved = (endpoint.host.as_str(), endpoint.port)
            .to_socket_addrs()
            .map_err(|source| ClientError::Connect {
                addr: endpoint.authority(),
                source,
            })?;
        addresses.extend(resolved);
    }
    addresses.sort();
    addresses.dedup();
    Ok(addresses)
}

async fn connect(
    endpoint: &Endpoint,
    tls: &TlsConnector,
) -> Result<SendRequest<Full<Bytes>>, ClientError> {
    let addr = endpoint.authority();
    let connect_err = |source| ClientError::Connect {
        addr: addr.clone(),
        source,
    };
    let tcp = tokio::time::timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect((endpoint.host.as_str(), endpoint.port)),
    )
    .await
    .map_err(|_| ClientError::Timeout(CONNECT_TIMEOUT))?
    .map_err(connect_err)?;
    tcp.set_nodelay(true).map_err(connect_err)?;
    let name = ServerName::try_from(endpoint.host.clone()).map_err(|e| ClientError::Url {
        url: addr.clone(),
        reason: e.to_string(),
    })?;
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, tls.connect(name, tcp))
        .await
        .map_err(|_| ClientError::Timeout(CONNECT_TIMEOUT))?
        .map_err(connect_err)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "collector connection ended");
        }
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        let e = Endpoint::parse("https://collector.example:8443/base/").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.base_path.as_str()),
            ("collector.example", 8443, "/base")
        );
        let e = Endpoint::parse("https://[::1]").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.authority()),
            ("::1", 443, "[::1]:443".to_owned())
        );
        assert_eq!(
            collector_addresses("https://10.0.0.1:8443, https://[::1]:8443").unwrap(),
            [
                "10.0.0.1:8443".parse::<std::net::SocketAddr>().unwrap(),
                "[::1]:8443".parse().unwrap()
            ]
        );
        let err = Endpoint::parse("http://10.0.0.1:80")
            .unwrap_err()
            .to_string();
        assert!(err.contains("https:// only"), "{err}");
    }
}
