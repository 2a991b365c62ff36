//! The hasher of the store's in-memory sums: seeded per map, and much
//! cheaper than std's SipHash on the millions of small keys an ingest or a
//! graph query hashes.

pub(crate) type FastHash = foldhash::fast::RandomState;
