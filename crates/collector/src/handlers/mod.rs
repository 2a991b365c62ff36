//! The API's handlers, one file per room: ingest, read, firewall.

pub(crate) mod firewall;
pub(crate) mod ingest;
pub(crate) mod map;
pub(crate) mod queries;
pub(crate) mod read;
