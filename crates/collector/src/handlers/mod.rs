//! The API's handlers, one file per room: ingest, read, firewall.

pub(crate) mod firewall;
pub(crate) mod queries;
