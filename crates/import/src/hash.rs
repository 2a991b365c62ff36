//! The hasher of the importer's hot maps.

/// The hasher of the importer's hot maps: their keys come from the files
/// being imported, not from a network peer, so flooding is no concern and
/// std's SipHash only costs time.
pub(crate) type FastHash = foldhash::fast::RandomState;
