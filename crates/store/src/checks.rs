//! The checks every backend makes on what an agent reports about itself
//! (its state's labels, a batch's origin, ranges it dropped) before
//! anything is stored: one wording of each refusal, whichever store.

use crate::{Origin, StoreError};

/// Longest instance id, boot id or drop reason kept: they are labels, not data.
const MAX_LABEL: usize = 64;

pub(crate) fn check_label(what: &str, label: &str) -> Result<(), StoreError> {
    let fine = label.len() <= MAX_LABEL
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if fine {
        return Ok(());
    }
    let shown: String = label.chars().take(MAX_LABEL).collect();
    Err(StoreError::InvalidOrigin(format!(
        "{what} {shown:?}: at most {MAX_LABEL} letters, digits, '-' or '_'"
    )))
}

pub(crate) fn check_origin(origin: &Origin) -> Result<(), StoreError> {
    check_label("instance", &origin.instance)?;
    check_label("boot", &origin.boot)?;
    if origin.first_sequence == 0 || origin.first_sequence > i64::MAX as u64 {
        return Err(StoreError::InvalidOrigin(format!(
            "first sequence {} is not within 1 to 2^63-1",
            origin.first_sequence
        )));
    }
    Ok(())
}

/// Checks a drop report: the state's and the reason's labels, and each
/// range (numbered from 1, first not above last, within 2^63-1), naming the
/// first bad range by its index.
pub(crate) fn check_dropped(
    instance: &str,
    reason: &str,
    ranges: &[(u64, u64)],
) -> Result<(), StoreError> {
    check_label("instance", instance)?;
    check_label("reason", reason)?;
    for (index, &(first, last)) in ranges.iter().enumerate() {
        let problem = if first == 0 {
            "sequence numbers start at 1"
        } else if first > last {
            "the first number is above the last"
        } else if last > i64::MAX as u64 {
            "beyond 2^63-1"
        } else {
            continue;
        };
        return Err(StoreError::InvalidRange {
            index,
            reason: format!("{first}-{last}: {problem}"),
        });
    }
    Ok(())
}
