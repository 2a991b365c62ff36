//! Names for numbers, the way tcpspy resolves them: ports to and from service
//! names (`/etc/services`), uids to and from user names (the system's user
//! database through NSS, so LDAP or sssd users resolve as they do for `ls -l`);
//! and this machine's own host name.
//!
//! Rules resolve names once when they are read; log writers turn numbers into
//! names on every line, so both lookups are cached.

mod host;
mod services;
mod users;

pub use host::{host_name, host_name_or_localhost};
pub use services::Services;
pub use users::{group_id, uid_for_name, user_name, UserNames};
