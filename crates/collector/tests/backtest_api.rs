//! `/api/v1/firewall/backtest` on a real collector over the generated office:
//! GET and POST answer the same report, readers only, bad parameters named.

mod common;

use std::sync::Arc;

use common::Running;
use connscope_collector::CollectorConfig;
use connscope_firewall::office::Office;
use connscope_store::SqliteStore;

const READER: &str = "reader-token-0123456789";
const AGENT: &str = "token-of-agent-web1";

fn curl(collector: &Running, path: &str, token: &str, extra: &[&str]) -> (u16, String) {
    collector.curl(path, Some(token), extra)
}

#[test]
fn get_and_post_answer_the_same_backtest_to_readers_only() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("connscope.db");
    let store = SqliteStore::open(&db).unwrap();
    Office::generate(16, 1).write(&store).unwrap();
    let mut config = CollectorConfig::new("127.0.0.1:0".parse().unwrap(), db);
    config.tokens.insert("web1", AGENT).unwrap();
    config.read_tokens.insert("map", READER).unwrap();
    let collector = Running::start(config, Arc::new(store));

    let (learn_to, until) = (
        Office::days(13, 13).from.to_string(),
        Office::days(17, 17).from.to_string(),
    );
    let query =
        format!("/api/v1/firewall/backtest?learn_to={learn_to}&until={until}&planner=exact");
    let (status, get_body) = curl(&collector, &query, READER, &[]);
    assert_eq!(status, 200, "{get_body}");
    let got: serde_json::Value = serde_json::from_str(&get_body).unwrap();
    let exact = &got["planners"][0];
    assert_eq!(exact["planner"], "exact");
    assert!(
        exact["blocked_connections"].as_u64().unwrap() > 0,
        "{get_body}"
    );
    assert_eq!(exact["hosts"].as_array().unwrap().len(), 26);

    let body =
        serde_json::json!({ "learn_to": learn_to, "until": until, "planner": "exact" }).to_string();
    let (status, post_body) = curl(
        &collector,
        "/api/v1/firewall/backtest",
        READER,
        &[
            "--header",
            "Content-Type: application/json",
            "--data-binary",
            &body,
        ],
    );
    assert_eq!(status, 200, "{post_body}");
    let posted: serde_json::Value = serde_json::from_str(&post_body).unwrap();
    assert_eq!(posted["planners"], got["planners"]);

    let (status, body) = curl(&collector, &query, AGENT, &[]);
    assert_eq!(status, 401, "agent tokens only write: {body}");
    let (status, body) = curl(
        &collector,
        &format!("/api/v1/firewall/backtest?learn_to={learn_to}&until={until}&window=soon"),
        READER,
        &[],
    );
    assert_eq!(status, 400);
    assert!(body.contains("window"), "{body}");
    let (status, body) = curl(&collector, "/api/v1/firewall/backtest", READER, &[]);
    assert_eq!(status, 400);
    assert!(body.contains("learn_to"), "{body}");
}
