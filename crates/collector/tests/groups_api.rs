//! `/api/v1/groups` over real TLS: reader tokens read and change groups,
//! agent tokens do neither, open reads do not open changes, and bad
//! definitions are refused with what is wrong.

mod common;

use std::sync::Arc;

use common::Running;
use connscope_collector::CollectorConfig;
use connscope_event::test_support::EventBuilder;
use connscope_store::{AgentId, SqliteStore, Store};

const TOKEN: &str = "token-of-agent-web1";
const READER: &str = "reader-token-0123456789";

fn collector(dir: &std::path::Path, with_reader: bool) -> Running {
    let store = Arc::new(SqliteStore::open(dir.join("connscope.db")).unwrap());
    let client = EventBuilder::connect("10.1.0.1:40000", "10.1.0.2:5432")
        .at_nanos(1_790_000_000_000_000_000)
        .host("web1")
        .build();
    store.ingest(&AgentId("web1".into()), &[client]).unwrap();
    let mut config = CollectorConfig::new("127.0.0.1:0".parse().unwrap(), dir.join("connscope.db"));
    config.tokens.insert("web1", TOKEN).unwrap();
    if with_reader {
        config.read_tokens.insert("map", READER).unwrap();
    }
    Running::start(config, store)
}

/// (status, body) of `method path` with `token` and a JSON `body`.
fn call(
    collector: &Running,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let mut extra = vec!["--request", method];
    if let Some(body) = body {
        extra.extend([
            "--header",
            "Content-Type: application/json",
            "--data-binary",
            body,
        ]);
    }
    collector.curl(path, token, &extra)
}

#[test]
fn readers_manage_groups_and_agents_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let c = collector(dir.path(), true);
    let web = r#"{"kind":"names","patterns":["web*"],"labels":{"role":"web"}}"#;

    assert_eq!(call(&c, "GET", "/api/v1/groups", None, None).0, 401);
    assert_eq!(call(&c, "GET", "/api/v1/groups", Some(TOKEN), None).0, 401);
    assert_eq!(
        call(&c, "POST", "/api/v1/groups/web", Some(TOKEN), Some(web)).0,
        401
    );
    assert_eq!(
        call(&c, "DELETE", "/api/v1/groups/web", Some(TOKEN), None).0,
        401
    );

    let (status, body) = call(&c, "POST", "/api/v1/groups/web", Some(READER), Some(web));
    assert_eq!(status, 200, "{body}");
    let group: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(group["hosts"], serde_json::json!(["web1"]), "{body}");

    for (path, definition, wanted) in [
        (
            "/api/v1/groups/net",
            r#"{"kind":"addresses","patterns":["10.1.0.1/16"]}"#,
            "did you mean 10.1.0.0/16?",
        ),
        (
            "/api/v1/groups/%3Cb%3E",
            web,
            "group name \\\"<b>\\\" contains '<'",
        ),
        (
            "/api/v1/groups/ws",
            r#"{"kind":"names","patterns":["ws-[1"]}"#,
            "is not a valid glob",
        ),
        (
            "/api/v1/groups/x",
            r#"{"kind":"subnets","patterns":["10.0.0.0/8"]}"#,
            "expected names, addresses or hosts",
        ),
        (
            "/api/v1/groups/x",
            r#"{"kind":"hosts","patterns":[]}"#,
            "has no hosts to match",
        ),
        (
            "/api/v1/groups/x",
            r#"{"kind":"hosts"}"#,
            "missing field `patterns`",
        ),
    ] {
        let (status, body) = call(&c, "POST", path, Some(READER), Some(definition));
        assert_eq!(status, 400, "{path} {definition}: {body}");
        assert!(body.contains(wanted), "{path} {definition}: {body}");
    }

    let (status, body) = call(&c, "GET", "/api/v1/groups", Some(READER), None);
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        answer["groups"],
        serde_json::json!([{
            "name": "web", "kind": "names", "patterns": ["web*"],
            "labels": {"role": "web"}, "hosts": ["web1"], "unseen": []
        }]),
        "{body}"
    );

    assert_eq!(
        call(&c, "DELETE", "/api/v1/groups/web", Some(READER), None).0,
        204
    );
    assert_eq!(
        call(&c, "DELETE", "/api/v1/groups/web", Some(READER), None).0,
        404
    );
}

#[test]
fn open_reads_do_not_open_changes() {
    let dir = tempfile::tempdir().unwrap();
    let c = collector(dir.path(), false);
    let (status, body) = call(&c, "GET", "/api/v1/groups", None, None);
    assert_eq!(status, 200, "open reads on loopback: {body}");
    let (status, body) = call(
        &c,
        "POST",
        "/api/v1/groups/web",
        None,
        Some(r#"{"kind":"names","patterns":["web*"]}"#),
    );
    assert_eq!(status, 401, "{body}");
    assert!(
        body.contains("changing groups takes a reader token"),
        "{body}"
    );
}
