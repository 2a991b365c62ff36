use std::collections::HashMap;

use nix::unistd::{Gid, Group, Uid, User};

/// The user name of a uid from the system's user database, if it has one.
pub fn user_name(uid: u32) -> Option<String> {
    User::from_uid(Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
}

/// The uid of a user name, or of a numeric string, as tcpspy's `-U` takes it.
pub fn uid_for_name(name: &str) -> Option<u32> {
    if let Ok(uid) = name.parse::<u32>() {
        return Some(uid);
    }
    User::from_name(name).ok().flatten().map(|u| u.uid.as_raw())
}

/// The gid of a group name, or of a numeric string, as tcpspy's `-G` takes it.
pub fn group_id(name: &str) -> Option<u32> {
    if let Ok(gid) = name.parse::<u32>() {
        return Some(gid);
    }
    Group::from_name(name)
        .ok()
        .flatten()
        .map(|g| Gid::as_raw(g.gid))
}

/// A per-process cache of uid -> user name; a connection burst from one user
/// then costs one NSS lookup, not thousands.
#[derive(Debug, Default)]
pub struct UserNames {
    cache: HashMap<u32, Option<String>>,
}

impl UserNames {
    /// The user's name, or `None` for a uid without an entry (tcpspy then prints
    /// the number).
    pub fn get(&mut self, uid: u32) -> Option<&str> {
        self.cache
            .entry(uid)
            .or_insert_with(|| user_name(uid))
            .as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_resolves_both_ways() {
        assert_eq!(user_name(0).as_deref(), Some("root"));
        assert_eq!(uid_for_name("root"), Some(0));
        assert_eq!(uid_for_name("1234"), Some(1234));
        assert_eq!(uid_for_name("no-such-user-here"), None);
        assert_eq!(group_id("root"), Some(0));
        let mut names = UserNames::default();
        assert_eq!(names.get(0), Some("root"));
        assert_eq!(names.get(4_000_000), None);
    }
}
