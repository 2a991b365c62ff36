//! The API's handlers, one file per room: agents' writes (`ingest`),
//! readers' queries (`read`, over `queries`' store reads), the firewall
//! check (`firewall`), firewall hits (`hits`), the backtest (`backtest`), host groups (`groups`) and
//! the map's web assets (`map`), enrollment (`enroll`) and what monitoring
//! asks (`ops`: metrics and health), and the policy loop (`policy`: agents'
//! policy and firewall reports, the status and drift reads). They use the kit and know nothing of the
//! router or the accept loop above them.

pub(crate) mod backtest;
pub(crate) mod enroll;
pub(crate) mod firewall;
pub(crate) mod groups;
pub(crate) mod hits;
pub(crate) mod ingest;
pub(crate) mod map;
pub(crate) mod ops;
pub(crate) mod policy;
pub(crate) mod queries;
pub(crate) mod read;
