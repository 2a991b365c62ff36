//! Access tokens in SQLite: one row per token, keyed by its public id, with
//! a unique index on the digest the collector looks tokens up by.

use std::sync::Mutex;

use connscope_event::Timestamp;
use rusqlite::{params, OptionalExtension, Row};

use super::column::Corrupt;
use super::connection::{lock, Reader, Writer};
use crate::{StoreError, TokenKind, TokenRecord, TokenRefusal};

/// Version 8's table.
pub(super) const TOKEN_TABLES: &str = "
CREATE TABLE access_tokens (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    digest BLOB NOT NULL UNIQUE,
    agent TEXT NOT NULL,
    created INTEGER NOT NULL,
    expires INTEGER,
    reusable INTEGER NOT NULL,
    uses INTEGER NOT NULL DEFAULT 0,
    last_used INTEGER,
    revoked INTEGER
);
";

const COLUMNS: &str =
    "id, kind, digest, agent, created, expires, reusable, uses, last_used, revoked";

fn record(row: &Row<'_>) -> rusqlite::Result<Result<TokenRecord, Corrupt>> {
    let kind: String = row.get(1)?;
    let digest: Vec<u8> = row.get(2)?;
    let time = |i: usize| -> rusqlite::Result<Option<Timestamp>> {
        Ok(row.get::<_, Option<i64>>(i)?.map(Timestamp::from_nanos))
    };
    let Some(kind) = TokenKind::parse(&kind) else {
        return Ok(Err(Corrupt {
            column: "access_tokens.kind",
            value: kind,
        }));
    };
    let Ok(digest) = <[u8; 32]>::try_from(digest.as_slice()) else {
        return Ok(Err(Corrupt {
            column: "access_tokens.digest",
            value: format!("{} bytes", digest.len()),
        }));
    };
    Ok(Ok(TokenRecord {
        id: row.get(0)?,
        kind,
        digest,
        agent: row.get(3)?,
        created: Timestamp::from_nanos(row.get(4)?),
        expires: time(5)?,
        reusable: row.get(6)?,
        uses: row.get::<_, i64>(7)?.max(0) as u64,
        last_used: time(8)?,
        revoked: time(9)?,
    }))
}

fn insert(tx: &rusqlite::Connection, token: &TokenRecord) -> rusqlite::Result<()> {
    tx.execute(
        &format!("INSERT INTO access_tokens ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
        params![
            token.id,
            token.kind.as_str(),
            &token.digest[..],
            token.agent,
            token.created.as_nanos(),
            token.expires.map(Timestamp::as_nanos),
            token.reusable,
            i64::try_from(token.uses).unwrap_or(i64::MAX),
            token.last_used.map(Timestamp::as_nanos),
            token.revoked.map(Timestamp::as_nanos),
        ],
    )?;
    Ok(())
}

pub(super) fn add(writer: &Mutex<Writer>, token: &TokenRecord) -> Result<(), StoreError> {
    lock(writer).transaction(|tx, _| Ok(insert(tx, token)?))
}

fn by_digest(
    conn: &rusqlite::Connection,
    digest: &[u8; 32],
) -> Result<Option<TokenRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM access_tokens WHERE digest = ?1"
    ))?;
    match stmt.query_row([&digest[..]], record).optional()? {
        Some(row) => Ok(Some(row?)),
        None => Ok(None),
    }
}

pub(super) fn find(
    reader: &Mutex<Reader>,
    digest: &[u8; 32],
) -> Result<Option<TokenRecord>, StoreError> {
    by_digest(&lock(reader).conn, digest)
}

pub(super) fn all(reader: &Mutex<Reader>) -> Result<Vec<TokenRecord>, StoreError> {
    let guard = lock(reader);
    let mut stmt = guard.conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM access_tokens ORDER BY created, id"
    ))?;
    let rows = stmt.query_map([], record)?;
    let mut tokens = Vec::new();
    for row in rows {
        tokens.push(row??);
    }
    Ok(tokens)
}

pub(super) fn revoke(writer: &Mutex<Writer>, id: &str, at: Timestamp) -> Result<bool, StoreError> {
    lock(writer).transaction(|tx, _| {
        let changed = tx.execute(
            "UPDATE access_tokens SET revoked = coalesce(revoked, ?2) WHERE id = ?1",
            params![id, at.as_nanos()],
        )?;
        Ok(changed > 0)
    })
}

pub(super) fn touch(
    writer: &Mutex<Writer>,
    digest: &[u8; 32],
    at: Timestamp,
) -> Result<(), StoreError> {
    lock(writer).transaction(|tx, _| {
        tx.execute(
            "UPDATE access_tokens SET last_used = max(coalesce(last_used, 0), ?2) WHERE digest = ?1",
            params![&digest[..], at.as_nanos()],
        )?;
        Ok(())
    })
}

pub(super) fn redeem(
    writer: &Mutex<Writer>,
    enrollment: &[u8; 32],
    agent_token: &TokenRecord,
    at: Timestamp,
) -> Result<Result<TokenRecord, TokenRefusal>, StoreError> {
    lock(writer).transaction(|tx, _| {
        let Some(enroll) = by_digest(tx, enrollment)? else {
            return Ok(Err(TokenRefusal::Unknown));
        };
        let agent = match enroll.enrolls_agent(&agent_token.agent, at) {
            Ok(agent) => agent,
            Err(refusal) => return Ok(Err(refusal)),
        };
        tx.execute(
            "UPDATE access_tokens SET uses = uses + 1, last_used = ?2 WHERE id = ?1",
            params![enroll.id, at.as_nanos()],
        )?;
        tx.execute(
            "UPDATE access_tokens SET revoked = ?2
             WHERE kind = 'agent' AND agent = ?1 AND revoked IS NULL",
            params![agent, at.as_nanos()],
        )?;
        let stored = TokenRecord {
            kind: TokenKind::Agent,
            agent,
            ..agent_token.clone()
        };
        insert(tx, &stored)?;
        Ok(Ok(stored))
    })
}

pub(super) fn probe_write(writer: &Mutex<Writer>, at: Timestamp) -> Result<(), StoreError> {
    lock(writer).transaction(|tx, _| {
        tx.execute(
            "INSERT INTO meta VALUES ('last_write_check', ?1)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            [at.as_nanos().to_string()],
        )?;
        Ok(())
    })
}
