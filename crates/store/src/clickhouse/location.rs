//! Where a ClickHouse store is: `clickhouse://[user[:password]@]host:port/database`,
//! the server's HTTP interface.

use std::fmt;

use crate::StoreError;

/// A parsed `clickhouse://` address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClickHouseLocation {
    pub host: String,
    /// The HTTP interface's port (ClickHouse's default is 8123).
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<String>,
    pub database: String,
}

impl ClickHouseLocation {
    /// Parses `clickhouse://[user[:password]@]host[:port]/database`.
    pub fn parse(text: &str) -> Result<ClickHouseLocation, StoreError> {
        let bad = |reason: &str| StoreError::Open {
            path: redacted(text),
            reason: reason.to_owned(),
        };
        let url = url::Url::parse(text).map_err(|e| bad(&format!("not a URL: {e}")))?;
        if url.scheme() != "clickhouse" {
            return Err(bad(&format!(
                "scheme {:?}: expected clickhouse://[user[:password]@]host:port/database",
                url.scheme()
            )));
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("no host"))?;
        let database = url.path().trim_start_matches('/');
        if database.is_empty() || database.contains('/') {
            return Err(bad("the path must be one database name, e.g. /connscope"));
        }
        if !database
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(bad(
                "the database name may hold letters, digits and '_' only",
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("no query or fragment is understood"));
        }
        let decode = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        Ok(ClickHouseLocation {
            host: host.to_owned(),
            port: url.port().unwrap_or(8123),
            user: (!url.username().is_empty()).then(|| decode(url.username())),
            password: url.password().map(decode),
            database: database.to_owned(),
        })
    }

    /// The client for this location: plain RowBinary (the 18.16 server has
    /// no `RowBinaryWithNamesAndTypes`, which the client's validation uses).
    pub(super) fn client(&self) -> clickhouse::Client {
        let mut client = clickhouse::Client::default()
            .with_url(format!("http://{}:{}", self.url_host(), self.port))
            .with_database(&self.database)
            .with_validation(false)
            // Insert bodies in ClickHouse's own LZ4 blocks (`decompress=1`,
            // which 18.16 takes): a fraction of the bytes on the wire.
            .with_compression(clickhouse::Compression::Lz4)
            // A sharded store's inserts reach the shards before they return,
            // so the next batch sees them (no effect on plain tables).
            .with_setting("insert_distributed_sync", "1");
        if let Some(user) = &self.user {
            client = client.with_user(user);
        }
        if let Some(password) = &self.password {
            client = client.with_password(password);
        }
        client
    }

    fn url_host(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }
}

/// The address without its password, for messages.
fn redacted(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("***"));
            url.to_string()
        }
        _ => text.to_owned(),
    }
}

impl fmt::Display for ClickHouseLocation {
    /// The address as given, with the password left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "clickhouse://")?;
        if let Some(user) = &self.user {
            write!(f, "{user}")?;
            if self.password.is_some() {
                write!(f, ":***")?;
            }
            write!(f, "@")?;
        }
        write!(f, "{}:{}/{}", self.url_host(), self.port, self.database)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_names_user_password_host_port_and_database() {
        let l =
            ClickHouseLocation::parse("clickhouse://cs:p%40ss@127.0.0.1:18123/connscope").unwrap();
        assert_eq!(l.user.as_deref(), Some("cs"));
        assert_eq!(l.password.as_deref(), Some("p@ss"));
        assert_eq!((l.host.as_str(), l.port), ("127.0.0.1", 18123));
        assert_eq!(l.database, "connscope");
        assert_eq!(
            l.to_string(),
            "clickhouse://cs:***@127.0.0.1:18123/connscope"
        );
        let l = ClickHouseLocation::parse("clickhouse://[::1]/db").unwrap();
        assert_eq!((l.host.as_str(), l.port, l.user), ("[::1]", 8123, None));
    }

    #[test]
    fn a_bad_address_says_what_is_wrong_without_the_password() {
        for (text, reason) in [
            ("http://h:1/db", "scheme \"http\""),
            ("clickhouse://h:1/", "one database name"),
            ("clickhouse://h:1/a/b", "one database name"),
            ("clickhouse://h:1/d-b", "letters, digits"),
            ("clickhouse://u:secret@h:1/db?x=1", "no query"),
        ] {
            let e = ClickHouseLocation::parse(text).unwrap_err().to_string();
            assert!(e.contains(reason), "{text}: {e}");
            assert!(!e.contains("secret"), "{e}");
        }
    }
}
