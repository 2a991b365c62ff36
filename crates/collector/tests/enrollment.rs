//! Enrollment against a running collector over real TLS on loopback, into a
//! real SQLite file: a one-time token gives the agent its own token (and
//! ingest works with it), a reusable one enrolls hosts under their own
//! names, enrolling again revokes the host's old token at once, and
//! `/metrics`, `/readyz` follow.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{wait_for, Running};
use connscope_collector::enrolled::{new_enrollment, CACHE_FOR};
use connscope_collector::CollectorConfig;
use connscope_event::Timestamp;
use connscope_store::{SqliteStore, Store, TokenKind};
use connscope_transport::{ClientError, CollectorClient, CollectorTrust};

fn in_a_day() -> Timestamp {
    Timestamp::from_nanos(Timestamp::now().as_nanos() + 86_400_000_000_000)
}

fn client(running: &Running, secret: &str) -> CollectorClient {
    let trust = CollectorTrust::Fingerprint(running.fingerprint);
    CollectorClient::new(&running.url(), secret, &trust).unwrap()
}

fn refusal(err: ClientError) -> (u16, String) {
    match err {
        ClientError::Status { status, message } => (status.as_u16(), message),
        other => panic!("expected a refusal, got {other}"),
    }
}

#[test]
fn enrolled_agents_send_and_reenrolling_revokes_the_old_token() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let store = Arc::new(SqliteStore::open(&db).unwrap());
    let config = CollectorConfig::new("127.0.0.1:0".parse().unwrap(), db.clone());
    let running = Running::start(config, store.clone());
    assert_eq!(running.curl("/readyz", None, &[]).0, 503);

    let (_, one_time) = new_enrollment(
        store.as_ref(),
        Some("ws1"),
        in_a_day(),
        false,
        running.fingerprint,
    )
    .unwrap();
    let first = client(&running, &one_time.secret)
        .enroll("ignored-name")
        .unwrap();
    assert_eq!(first.agent, "ws1", "a named token decides the agent id");
    let (status, message) = refusal(
        client(&running, &one_time.secret)
            .enroll("ws1")
            .unwrap_err(),
    );
    assert_eq!(status, 401);
    assert!(message.contains("already used"), "{message}");
    assert_eq!(
        client(&running, &first.token).whoami().unwrap().agent,
        "ws1"
    );

    // The new token sends events.
    let event =
        connscope_event::test_support::EventBuilder::connect("10.0.0.1:40000", "10.0.0.2:22")
            .at_nanos(Timestamp::now().as_nanos())
            .sequence(1)
            .host("ws1")
            .build();
    let body = connscope_protocol::batch::encode_body(&[event]);
    let answer = client(&running, &first.token).post_batch(body).unwrap();
    assert_eq!(answer.stored, 1);
    wait_for("/readyz", || running.curl("/readyz", None, &[]).0 == 200);

    // A reusable token without a host: each host under its own name.
    let (_, reusable) =
        new_enrollment(store.as_ref(), None, in_a_day(), true, running.fingerprint).unwrap();
    for host in ["ws2", "ws3"] {
        assert_eq!(
            client(&running, &reusable.secret)
                .enroll(host)
                .unwrap()
                .agent,
            host
        );
    }
    let (status, message) = refusal(
        client(&running, &reusable.secret)
            .enroll("bad host")
            .unwrap_err(),
    );
    assert_eq!(status, 400);
    assert!(message.contains("agent id"), "{message}");

    // Enrolling ws1 again: the old token is refused within the cache time.
    let (_, again) = new_enrollment(
        store.as_ref(),
        Some("ws1"),
        in_a_day(),
        false,
        running.fingerprint,
    )
    .unwrap();
    let second = client(&running, &again.secret).enroll("ws1").unwrap();
    std::thread::sleep(CACHE_FOR + Duration::from_millis(200));
    let (status, message) = refusal(client(&running, &first.token).whoami().unwrap_err());
    assert_eq!((status, message.as_str()), (401, "the token was revoked"));
    assert_eq!(
        client(&running, &second.token).whoami().unwrap().agent,
        "ws1"
    );
    let live: Vec<String> = store
        .tokens()
        .unwrap()
        .into_iter()
        .filter(|t| t.kind == TokenKind::Agent && t.revoked.is_none())
        .map(|t| t.agent)
        .collect();
    assert_eq!(live, ["ws2", "ws3", "ws1"]);

    // Open reads on loopback: /metrics shows the ingest and the agent.
    let (status, metrics) = running.curl("/metrics", None, &[]);
    assert_eq!(status, 200);
    assert!(
        metrics.contains("connscope_collector_ingest_events_total 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("connscope_collector_agent_stored_events{agent=\"ws1\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("connscope_collector_unauthorized_requests_total 2\n"),
        "{metrics}"
    );
    assert_eq!(
        running.curl("/healthz", None, &[]),
        (200, "ok\n".to_owned())
    );
}
