//! The `names` dictionary: the rollups' text key columns (host, direction,
//! addresses, protocol, executable, user) hold ids into it instead of the
//! text, so a rollup upsert compares small integers and the graph query sums
//! ~100,000 hourly rows per day in a hash map keyed by eight integers,
//! looking up names only for the few thousand edges that result. Ids never
//! change once given, so both connections cache them. Names are never
//! deleted (they are few: hosts, addresses, programs and users, not
//! connections).

use std::collections::HashMap;
use std::net::IpAddr;

use rusqlite::Connection;

use super::column::Corrupt;
use crate::hash::FastHash;
use crate::StoreError;

/// The writer's name -> id cache (see [`super::connection::Ids`]).
#[derive(Default)]
pub(super) struct NameIds {
    by_name: HashMap<String, i64, FastHash>,
    by_ip: HashMap<IpAddr, i64, FastHash>,
}

impl NameIds {
    /// The id of `name`, given on first sight.
    pub(super) fn id(&mut self, conn: &Connection, name: &str) -> rusqlite::Result<i64> {
        if let Some(&id) = self.by_name.get(name) {
            return Ok(id);
        }
        conn.prepare_cached("INSERT INTO names (name) VALUES (?1) ON CONFLICT (name) DO NOTHING")?
            .execute([name])?;
        let id = conn
            .prepare_cached("SELECT name_id FROM names WHERE name = ?1")?
            .query_row([name], |r| r.get(0))?;
        self.by_name.insert(name.to_owned(), id);
        Ok(id)
    }

    /// The id of `ip`'s text.
    pub(super) fn ip_id(&mut self, conn: &Connection, ip: IpAddr) -> rusqlite::Result<i64> {
        if let Some(&id) = self.by_ip.get(&ip) {
            return Ok(id);
        }
        let id = self.id(conn, &ip.to_string())?;
        self.by_ip.insert(ip, id);
        Ok(id)
    }

    pub(super) fn clear(&mut self) {
        self.by_name.clear();
        self.by_ip.clear();
    }
}

/// The reader's id -> name cache, loaded as rollups name ids not seen yet.
pub(super) struct IdNames {
    names: HashMap<i64, String>,
    /// The highest id in `names`: ids are handed out in increasing order, so
    /// `name_id > newest` is what is new.
    newest: i64,
}

impl Default for IdNames {
    fn default() -> Self {
        IdNames {
            names: HashMap::new(),
            newest: i64::MIN,
        }
    }
}

impl IdNames {
    /// The name of `id`, loading the names added since the last load if needed.
    pub(super) fn name(&mut self, conn: &Connection, id: i64) -> Result<&str, StoreError> {
        if !self.names.contains_key(&id) {
            let mut stmt =
                conn.prepare_cached("SELECT name_id, name FROM names WHERE name_id > ?1")?;
            let rows = stmt.query_map([self.newest], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })?;
            for row in rows {
                let (new_id, name) = row?;
                self.newest = self.newest.max(new_id);
                self.names.insert(new_id, name);
            }
        }
        self.names.get(&id).map(String::as_str).ok_or_else(|| {
            StoreError::from(Corrupt {
                column: "name id",
                value: id.to_string(),
            })
        })
    }

    /// The name of an `id` that [`IdNames::name`] has loaded.
    pub(super) fn known(&self, id: i64) -> &str {
        &self.names[&id]
    }
}
