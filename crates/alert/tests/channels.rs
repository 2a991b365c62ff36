//! The alert channels against real receivers on this host: an HTTP and an
//! HTTPS webhook receiver (hyper, a test CA made by rcgen) on loopback, and
//! a Unix datagram socket read as the syslog daemon reads /dev/log, each
//! message parsed by an independent RFC 5424 parser (syslog_loose).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use connscope_alert::{
    AlertSettings, AlertSink, Alerts, Channel, DriftAlert, SyslogChannel, SyslogTarget,
    WebhookChannel, WebhookRetry,
};
use connscope_event::{Direction, Protocol, Timestamp};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

const HOSTILE_EXE: &str =
    "/tmp/<img src=x onerror=alert(1)>\n<13>1 2026-01-01T00:00:00Z forged x - - - \"}]\r";

/// A webhook receiver: answers each request with the next scripted status
/// (200 once the script is used up) and keeps the bodies of all requests.
struct Receiver {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    _runtime: tokio::runtime::Runtime,
}

#[derive(Clone, Debug)]
struct Recorded {
    status: StatusCode,
    content_type: Option<String>,
    authorization: Option<String>,
    body: serde_json::Value,
}

impl Receiver {
    fn start(script: Vec<StatusCode>, tls: Option<Arc<rustls::ServerConfig>>) -> Receiver {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let recorded = requests.clone();
        runtime.spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let recorded = recorded.clone();
                let script = script.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let recorded = recorded.clone();
                        let script = script.clone();
                        async move {
                            let content_type = req
                                .headers()
                                .get(hyper::header::CONTENT_TYPE)
                                .map(|v| v.to_str().unwrap().to_owned());
                            let authorization = req
                                .headers()
                                .get(hyper::header::AUTHORIZATION)
                                .map(|v| v.to_str().unwrap().to_owned());
                            let body = req.into_body().collect().await?.to_bytes();
                            let status =
                                script.lock().unwrap().pop_front().unwrap_or(StatusCode::OK);
                            recorded.lock().unwrap().push(Recorded {
                                status,
                                content_type,
                                authorization,
                                body: serde_json::from_slice(&body).expect("a JSON body"),
                            });
                            let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
                            *response.status_mut() = status;
                            Ok::<_, hyper::Error>(response)
                        }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(config) => {
                            let stream = tokio_rustls::TlsAcceptor::from(config)
                                .accept(tcp)
                                .await
                                .unwrap();
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                        None => {
                            let _ = http.serve_connection(TokioIo::new(tcp), service).await;
                        }
                    }
                });
            }
        });
        Receiver {
            addr,
            requests,
            _runtime: runtime,
        }
    }

    fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// Waits until `n` requests came (or fails), then a little longer to
    /// see that no more come.
    fn wait_for(&self, n: usize) -> Vec<Recorded> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.requests().len() < n {
            assert!(Instant::now() < deadline, "only {:?}", self.requests());
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(300));
        self.requests()
    }
}

/// A syslog daemon's /dev/log: a Unix datagram socket in a temp directory.
struct SyslogSocket {
    socket: UnixDatagram,
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl SyslogSocket {
    fn bind() -> SyslogSocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        SyslogSocket {
            socket,
            _dir: dir,
            path,
        }
    }

    /// Every datagram until none came for half a second.
    fn messages(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = self.socket.recv(&mut buf) {
            out.push(String::from_utf8(buf[..n].to_vec()).unwrap());
        }
        out
    }
}

fn quick_retry() -> WebhookRetry {
    WebhookRetry {
        attempts: 4,
        backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        timeout: Duration::from_secs(5),
    }
}

fn drift(port: u16, remote: &str, executable: &str) -> DriftAlert {
    DriftAlert {
        host: "srv-01".into(),
        direction: Direction::Incoming,
        protocol: Protocol::Tcp,
        port,
        local: "10.9.0.2".parse().unwrap(),
        remote: remote.parse().unwrap(),
        remote_name: None,
        executable: Some(executable.into()),
        pid: Some(4711),
        user: Some("backup".into()),
        uid: Some(34),
        policy: "servers".into(),
        version: 2,
        mode: "audit".into(),
        at: Timestamp::now(),
    }
}

fn webhook(url: &str, ca: Option<&Path>) -> Box<dyn Channel> {
    Box::new(WebhookChannel::new(url, ca, quick_retry()).unwrap())
}

#[test]
fn an_edge_alerts_once_on_the_webhook_and_syslog() {
    let receiver = Receiver::start(vec![], None);
    let syslog = SyslogSocket::bind();
    let alerts = Alerts::new(
        AlertSettings::default(),
        vec![
            webhook(
                &format!("http://{}/hooks/drift?team=ops", receiver.addr),
                None,
            ),
            Box::new(SyslogChannel::new(SyslogTarget::Unix(syslog.path.clone())).unwrap()),
        ],
    )
    .unwrap();
    for _ in 0..5 {
        alerts.send(&drift(9000, "10.9.0.7", "/usr/bin/python3"));
    }
    alerts.send(&drift(9000, "10.9.0.8", "/usr/bin/python3"));
    let requests = receiver.wait_for(2);
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(
        requests[0].content_type.as_deref(),
        Some("application/json")
    );
    let first = &requests[0].body;
    assert_eq!(first["kind"], "drift");
    assert_eq!(first["host"], "srv-01");
    assert_eq!(first["direction"], "incoming");
    assert_eq!(first["protocol"], "tcp");
    assert_eq!(first["port"], 9000);
    assert_eq!(first["remote"], "10.9.0.7");
    assert_eq!(first["executable"], "/usr/bin/python3");
    assert_eq!(first["user"], "backup");
    assert_eq!(first["uid"], 34);
    assert_eq!(first["policy"], "servers");
    assert_eq!(first["version"], 2);
    assert_eq!(first["mode"], "audit");
    assert_ne!(first["id"], requests[1].body["id"]);
    let lines = syslog.messages();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let parsed = syslog_loose::parse_message(&lines[0], syslog_loose::Variant::RFC5424);
    assert_eq!(parsed.protocol, syslog_loose::Protocol::RFC5424(1));
    assert_eq!(parsed.appname, Some("connscope"));
    assert_eq!(parsed.msgid, Some("drift"));
    assert!(parsed.msg.contains("10.9.0.7") && parsed.msg.contains("user=\"backup\""));
}

#[test]
fn over_the_rate_the_rest_is_one_summary() {
    let receiver = Receiver::start(vec![], None);
    let alerts = Alerts::new(
        AlertSettings {
            rate: 3,
            rate_period: Duration::from_secs(1),
            ..AlertSettings::default()
        },
        vec![webhook(&format!("http://{}/", receiver.addr), None)],
    )
    .unwrap();
    for i in 0..10 {
        alerts.send(&drift(9000 + i, "10.9.0.7", "/usr/bin/nc"));
    }
    // The summary comes from the timer, with no further alert to carry it.
    let requests = receiver.wait_for(4);
    assert_eq!(requests.len(), 4, "{requests:?}");
    let kinds: Vec<&str> = requests
        .iter()
        .map(|r| r.body["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.iter().filter(|k| **k == "drift").count(), 3);
    let summary = requests
        .iter()
        .find(|r| r.body["kind"] == "more-drift")
        .unwrap();
    assert_eq!(summary.body["count"], 7);
    assert_eq!(summary.body["hosts"], serde_json::json!(["srv-01"]));
    assert!(summary.body["summary"]
        .as_str()
        .unwrap()
        .starts_with("7 more drift edges"));
}

#[test]
fn a_500_is_retried_with_the_same_body_and_a_400_is_not() {
    let receiver = Receiver::start(
        vec![
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::OK,
            StatusCode::BAD_REQUEST,
        ],
        None,
    );
    let alerts = Alerts::new(
        AlertSettings::default(),
        vec![webhook(&format!("http://{}/", receiver.addr), None)],
    )
    .unwrap();
    alerts.send(&drift(22, "10.9.0.7", "/usr/sbin/sshd"));
    let requests = receiver.wait_for(3);
    assert_eq!(requests.len(), 3);
    let statuses: Vec<u16> = requests.iter().map(|r| r.status.as_u16()).collect();
    assert_eq!(statuses, [500, 503, 200]);
    assert!(requests.iter().all(|r| r.body == requests[0].body));
    alerts.send(&drift(23, "10.9.0.7", "/usr/sbin/in.telnetd"));
    let requests = receiver.wait_for(4);
    assert_eq!(requests.len(), 4, "a 400 is not retried: {requests:?}");
    assert_eq!(requests[3].body["port"], 23);
}

#[test]
fn a_receiver_that_comes_up_late_still_gets_the_alert() {
    // Take a free port, let it go: the first tries find nobody there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let alerts = Alerts::new(
        AlertSettings::default(),
        vec![Box::new(
            WebhookChannel::new(
                &format!("http://127.0.0.1:{port}/"),
                None,
                WebhookRetry {
                    attempts: 8,
                    backoff: Duration::from_millis(200),
                    max_backoff: Duration::from_millis(400),
                    timeout: Duration::from_secs(2),
                },
            )
            .unwrap(),
        )],
    )
    .unwrap();
    let started = Instant::now();
    alerts.send(&drift(22, "10.9.0.7", "/usr/sbin/sshd"));
    // `send` only queued.
    assert!(started.elapsed() < Duration::from_millis(100));
    std::thread::sleep(Duration::from_millis(500));
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let (mut stream, _) = listener.accept().unwrap();
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    use std::io::{Read, Write};
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0);
        request.extend_from_slice(&buf[..n]);
    }
    stream
        .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert!(request.starts_with(b"POST / HTTP/1.1\r\n"));
}

#[test]
fn a_hostile_process_name_stays_in_its_field() {
    let receiver = Receiver::start(vec![], None);
    let syslog = SyslogSocket::bind();
    let alerts = Alerts::new(
        AlertSettings::default(),
        vec![
            webhook(&format!("http://{}/", receiver.addr), None),
            Box::new(SyslogChannel::new(SyslogTarget::Unix(syslog.path.clone())).unwrap()),
        ],
    )
    .unwrap();
    alerts.send(&drift(8080, "10.9.0.7", HOSTILE_EXE));
    let requests = receiver.wait_for(1);
    assert_eq!(requests[0].body["executable"], HOSTILE_EXE);
    assert_eq!(requests[0].body["user"], "backup");
    let lines = syslog.messages();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    assert!(!line.contains('\n') && !line.contains('\r'), "{line:?}");
    let parsed = syslog_loose::parse_message(line, syslog_loose::Variant::RFC5424);
    assert_eq!(parsed.msgid, Some("drift"));
    assert!(parsed.structured_data.is_empty());
    assert!(
        parsed.msg.contains(r#"executable="/tmp/<img src=x onerror=alert(1)>\u{a}<13>1 2026-01-01T00:00:00Z forged x - - - \"}]\u{d}" pid="4711" user="backup""#),
        "{}",
        parsed.msg
    );
}

#[test]
fn https_with_a_pinned_ca_is_trusted_and_without_it_is_not() {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let server =
        rustls::ServerConfig::builder_with_provider(connscope_protocol::tls::crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
            )
            .unwrap();
    let receiver = Receiver::start(vec![], Some(Arc::new(server)));
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let url = format!("https://localhost:{}/drift", receiver.addr.port());

    let pinned = Alerts::new(
        AlertSettings::default(),
        vec![webhook(&url, Some(&ca_file))],
    )
    .unwrap();
    pinned.send(&drift(443, "10.9.0.7", "/usr/sbin/nginx"));
    let requests = receiver.wait_for(1);
    assert_eq!(requests[0].body["port"], 443);

    // The system's CA store does not know the test CA: nothing arrives.
    let system = Alerts::new(
        AlertSettings::default(),
        vec![Box::new(
            WebhookChannel::new(
                &url,
                None,
                WebhookRetry {
                    attempts: 2,
                    ..quick_retry()
                },
            )
            .unwrap(),
        )],
    )
    .unwrap();
    system.send(&drift(444, "10.9.0.7", "/usr/sbin/nginx"));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(receiver.requests().len(), 1);
}

#[test]
fn bad_settings_fail_with_the_reason() {
    let err = WebhookChannel::new("ftp://example.invalid/", None, quick_retry())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("ftp://example.invalid/") && err.contains("http"),
        "{err}"
    );
    let err = WebhookChannel::new(
        "http://127.0.0.1:1/",
        Some(Path::new("/nonexistent/ca.pem")),
        quick_retry(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("not https"), "{err}");
    let err = SyslogChannel::new(SyslogTarget::Unix("/nonexistent/log".into()))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("/nonexistent/log"), "{err}");
}

#[test]
fn syslog_over_udp_and_tcp_is_one_message_each() {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let alerts = Alerts::new(
        AlertSettings::default(),
        vec![
            Box::new(SyslogChannel::new(SyslogTarget::Udp(udp.local_addr().unwrap())).unwrap()),
            Box::new(SyslogChannel::new(SyslogTarget::Tcp(tcp.local_addr().unwrap())).unwrap()),
        ],
    )
    .unwrap();
    alerts.send(&drift(8080, "10.9.0.7", HOSTILE_EXE));
    alerts.send(&drift(8081, "10.9.0.7", "/usr/bin/nc"));

    let mut buf = vec![0u8; 65536];
    let mut datagrams = Vec::new();
    for _ in 0..2 {
        let n = udp.recv(&mut buf).unwrap();
        datagrams.push(String::from_utf8(buf[..n].to_vec()).unwrap());
    }
    let (stream, _) = tcp.accept().unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stream));
    let framed: Vec<String> = (0..2).map(|_| lines.next().unwrap().unwrap()).collect();
    for messages in [&datagrams, &framed] {
        for (message, port) in messages.iter().zip(["8080", "8081"]) {
            let message = message.trim_end_matches('\r');
            assert!(!message.contains('\n') && !message.contains('\r'));
            let parsed = syslog_loose::parse_message(message, syslog_loose::Variant::RFC5424);
            assert_eq!(parsed.appname, Some("connscope"));
            assert_eq!(parsed.msgid, Some("drift"));
            assert!(
                parsed.msg.contains(&format!("port=\"{port}\"")),
                "{message}"
            );
        }
    }
}

#[test]
fn send_does_not_wait_for_a_receiver_that_never_answers() {
    // Accepts connections and never answers: every try waits for its timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let held = std::thread::spawn(move || {
        let mut open = Vec::new();
        while let Ok((stream, _)) = silent.accept() {
            open.push(stream);
            if open.len() == 2 {
                break;
            }
        }
        open
    });
    let alerts = Alerts::new(
        AlertSettings {
            rate: u32::MAX,
            ..AlertSettings::default()
        },
        vec![webhook(&format!("http://{addr}/"), None)],
    )
    .unwrap();
    let started = Instant::now();
    // More than the queue holds: the rest are dropped, never waited for.
    for i in 0..3000u32 {
        let remote = format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
        alerts.send(&drift(9000, &remote, "/usr/bin/nc"));
    }
    // Waiting would take at least the 5 s timeout per alert.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(30), "send waited: {took:?}");
    drop(alerts);
    // Unblock the accept loop if only one connection came.
    let _ = std::net::TcpStream::connect(addr);
    drop(held.join().unwrap());
}

#[test]
fn the_summary_waiting_at_shutdown_is_told() {
    let receiver = Receiver::start(vec![], None);
    let alerts = Alerts::new(
        AlertSettings {
            rate: 1,
            ..AlertSettings::default()
        },
        vec![webhook(&format!("http://{}/", receiver.addr), None)],
    )
    .unwrap();
    for port in [1, 2, 3] {
        alerts.send(&drift(port, "10.9.0.7", "/usr/bin/nc"));
    }
    drop(alerts);
    let requests = receiver.wait_for(2);
    assert_eq!(requests.len(), 2, "{requests:?}");
    let summary = requests
        .iter()
        .find(|r| r.body["kind"] == "more-drift")
        .unwrap();
    assert_eq!(summary.body["count"], 2);
}

#[test]
fn a_user_and_password_in_the_url_are_basic_authentication_and_never_shown() {
    let receiver = Receiver::start(vec![], None);
    let url = format!("http://ops:s%3Acret@{}/hook", receiver.addr);
    let alerts = Alerts::new(AlertSettings::default(), vec![webhook(&url, None)]).unwrap();
    alerts.send(&drift(22, "10.9.0.7", "/usr/sbin/sshd"));
    let requests = receiver.wait_for(1);
    // "ops:s:cret" in base64.
    assert_eq!(
        requests[0].authorization.as_deref(),
        Some("Basic b3BzOnM6Y3JldA==")
    );
    let err = WebhookChannel::new("ftp://ops:s3cret@hooks.invalid/", None, quick_retry())
        .err()
        .unwrap()
        .to_string();
    assert!(
        !err.contains("s3cret") && err.contains("ftp://***@hooks.invalid/"),
        "{err}"
    );
}
