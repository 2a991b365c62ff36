//! What a column holds: integers clamped into SQLite's range on the way in,
//! text parsed on the way out, and the error for a row that does not read
//! back as written.

use crate::StoreError;

/// A row that does not read back as what was written (a damaged file, or one
/// written by something else).
#[derive(Debug, thiserror::Error)]
#[error("unreadable {column} in the store: {value:?}")]
pub(super) struct Corrupt {
    pub(super) column: &'static str,
    pub(super) value: String,
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        StoreError::Backend(Box::new(err))
    }
}

impl From<Corrupt> for StoreError {
    fn from(err: Corrupt) -> Self {
        StoreError::Backend(Box::new(err))
    }
}

/// A count as SQLite's signed 64-bit integer (the largest one past it).
pub(super) fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A text column read back as the value it was written from.
pub(super) fn parse_column<T: std::str::FromStr>(
    column: &'static str,
    value: &str,
) -> Result<T, Corrupt> {
    value.parse().map_err(|_| Corrupt {
        column,
        value: value.to_owned(),
    })
}

/// Block `id`'s encoded events, column `index` of `row`.
pub(super) fn block_data<'r>(
    row: &'r rusqlite::Row<'_>,
    id: i64,
    index: usize,
) -> Result<&'r [u8], StoreError> {
    Ok(row.get_ref(index)?.as_blob().map_err(|_| Corrupt {
        column: "event_blocks.data",
        value: format!("block {id} is no blob"),
    })?)
}

/// A block's decoding error, named by the block.
pub(super) fn block_corrupt(id: i64, err: impl std::fmt::Display) -> Corrupt {
    Corrupt {
        column: "event_blocks.data",
        value: format!("block {id}: {err}"),
    }
}

/// Block `id` of `host` (its data in column `index` of `row`), decoded.
pub(super) fn block_events(
    row: &rusqlite::Row<'_>,
    id: i64,
    host: &str,
    index: usize,
) -> Result<Vec<connscope_event::ConnectionEvent>, StoreError> {
    Ok(
        crate::block::decode(block_data(row, id, index)?, host)
            .map_err(|e| block_corrupt(id, e))?,
    )
}
