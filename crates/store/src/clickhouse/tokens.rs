//! Access tokens (docs/API.md, enrollment): a row per change of a token,
//! the newest version of an id wins when read with `FINAL`, as for groups.
//!
//! ClickHouse has no transactions, so the checks SQLite makes inside one
//! (an id or digest kept once, a one-time enrollment token used once) are
//! made just before the write. Tokens are made and revoked by an
//! administrator, one at a time; the one race left is a one-time token
//! exchanged through two collectors in the same instant, which can give the
//! host two live agent tokens (docs/STORE.md says so).

use clickhouse::{Client, Row};
use connscope_event::Timestamp;
use serde::{Deserialize, Serialize};

use super::groups::version_now;
use super::write::insert_rows;
use crate::{StoreError, TokenKind, TokenRecord, TokenRefusal};

/// One version of a token (`access_tokens`); the digest in hex.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub(super) struct Token {
    id: String,
    kind: String,
    digest: String,
    agent: String,
    created: i64,
    expires: Option<i64>,
    reusable: u8,
    uses: u64,
    last_used: Option<i64>,
    revoked: Option<i64>,
    version: u64,
}

fn hex(digest: &[u8; 32]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn row(token: &TokenRecord, version: u64) -> Token {
    Token {
        id: token.id.clone(),
        kind: token.kind.as_str().to_owned(),
        digest: hex(&token.digest),
        agent: token.agent.clone(),
        created: token.created.as_nanos(),
        expires: token.expires.map(Timestamp::as_nanos),
        reusable: u8::from(token.reusable),
        uses: token.uses,
        last_used: token.last_used.map(Timestamp::as_nanos),
        revoked: token.revoked.map(Timestamp::as_nanos),
        version,
    }
}

fn record(row: Token) -> Result<TokenRecord, StoreError> {
    let corrupt = |column: &str, value: &str| {
        StoreError::Backend(format!("column {column} holds {value:?}, which does not parse").into())
    };
    let kind =
        TokenKind::parse(&row.kind).ok_or_else(|| corrupt("access_tokens.kind", &row.kind))?;
    let mut digest = [0u8; 32];
    let bytes = row.digest.as_bytes();
    if bytes.len() != 64 {
        return Err(corrupt("access_tokens.digest", &row.digest));
    }
    for (i, pair) in bytes.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).unwrap_or("");
        digest[i] = u8::from_str_radix(text, 16)
            .map_err(|_| corrupt("access_tokens.digest", &row.digest))?;
    }
    Ok(TokenRecord {
        id: row.id,
        kind,
        digest,
        agent: row.agent,
        created: Timestamp::from_nanos(row.created),
        expires: row.expires.map(Timestamp::from_nanos),
        reusable: row.reusable != 0,
        uses: row.uses,
        last_used: row.last_used.map(Timestamp::from_nanos),
        revoked: row.revoked.map(Timestamp::from_nanos),
    })
}

async fn find(
    client: &Client,
    column: &str,
    value: &str,
) -> Result<Option<(TokenRecord, u64)>, StoreError> {
    // `column` is one of this module's two constants, never input.
    let found = client
        .query(&format!(
            "SELECT ?fields FROM access_tokens FINAL WHERE {column} = ?"
        ))
        .bind(value)
        .fetch_optional::<Token>()
        .await?;
    found
        .map(|t| {
            let version = t.version;
            record(t).map(|r| (r, version))
        })
        .transpose()
}

async fn write(client: &Client, token: &TokenRecord, after: u64) -> Result<(), StoreError> {
    let version = version_now().max(after + 1);
    insert_rows(client, "access_tokens", &[row(token, version)]).await
}

pub(super) async fn add(client: &Client, token: &TokenRecord) -> Result<(), StoreError> {
    if find(client, "id", &token.id).await?.is_some()
        || find(client, "digest", &hex(&token.digest)).await?.is_some()
    {
        return Err(StoreError::Backend(
            format!(
                "a token with id {:?} or its digest is kept already",
                token.id
            )
            .into(),
        ));
    }
    write(client, token, 0).await
}

pub(super) async fn by_digest(
    client: &Client,
    digest: &[u8; 32],
) -> Result<Option<TokenRecord>, StoreError> {
    Ok(find(client, "digest", &hex(digest)).await?.map(|(t, _)| t))
}

pub(super) async fn all(client: &Client) -> Result<Vec<TokenRecord>, StoreError> {
    client
        .query("SELECT ?fields FROM access_tokens FINAL ORDER BY created, id")
        .fetch_all::<Token>()
        .await?
        .into_iter()
        .map(record)
        .collect()
}

pub(super) async fn revoke(client: &Client, id: &str, at: Timestamp) -> Result<bool, StoreError> {
    let Some((mut token, version)) = find(client, "id", id).await? else {
        return Ok(false);
    };
    token.revoked = token.revoked.or(Some(at));
    write(client, &token, version).await?;
    Ok(true)
}

pub(super) async fn touch(
    client: &Client,
    digest: &[u8; 32],
    at: Timestamp,
) -> Result<(), StoreError> {
    if let Some((mut token, version)) = find(client, "digest", &hex(digest)).await? {
        token.last_used = Some(token.last_used.map_or(at, |t| t.max(at)));
        write(client, &token, version).await?;
    }
    Ok(())
}

pub(super) async fn redeem(
    client: &Client,
    enrollment: &[u8; 32],
    agent_token: &TokenRecord,
    at: Timestamp,
) -> Result<Result<TokenRecord, TokenRefusal>, StoreError> {
    let Some((mut enroll, version)) = find(client, "digest", &hex(enrollment)).await? else {
        return Ok(Err(TokenRefusal::Unknown));
    };
    let agent = match enroll.enrolls_agent(&agent_token.agent, at) {
        Ok(agent) => agent,
        Err(refusal) => return Ok(Err(refusal)),
    };
    enroll.uses += 1;
    enroll.last_used = Some(at);
    write(client, &enroll, version).await?;
    // A host keeps one live token: the ones it had before are revoked.
    for mut earlier in all(client)
        .await?
        .into_iter()
        .filter(|t| t.kind == TokenKind::Agent && t.agent == agent && t.revoked.is_none())
    {
        earlier.revoked = Some(at);
        write(client, &earlier, 0).await?;
    }
    let stored = TokenRecord {
        kind: TokenKind::Agent,
        agent,
        ..agent_token.clone()
    };
    write(client, &stored, 0).await?;
    Ok(Ok(stored))
}

/// A write the store must take for the collector to be ready (`/readyz`).
pub(super) async fn probe_write(client: &Client, at: Timestamp) -> Result<(), StoreError> {
    #[derive(Row, Serialize)]
    struct Probe {
        id: u8,
        at: i64,
    }
    insert_rows(
        client,
        "write_probes",
        &[Probe {
            id: 1,
            at: at.as_nanos(),
        }],
    )
    .await
}
