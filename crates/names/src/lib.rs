//! Names for numbers, the way tcpspy resolves them: ports to and from service
//! names (`/etc/services`), uids to and from user names (the system's user
//! database through NSS, so LDAP or sssd users resolve as they do for `ls -l`);
//! this machine's own host name; the nftables set a DNS name's addresses
//! are kept in, and the registered domain a DNS name belongs to.
//!
//! Rules resolve names once when they are read; log writers turn numbers into
//! names on every line, so both lookups are cached.

mod domain;
mod host;
mod nft_set;
mod services;
mod users;

pub use domain::registered_domain;
pub use host::{host_name, host_name_or_localhost};
pub use nft_set::{canonical_dns_name, name_set};
pub use services::Services;
pub use users::{group_id, uid_for_name, user_name, UserNames};
