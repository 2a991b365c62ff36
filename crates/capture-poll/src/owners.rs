//! Socket owners between polls: the map of [`connscope_capture::sockets`]
//! (the owner every backend names), cached. Reading it costs a readlink per
//! open file on the machine, so the whole of /proc is read again only when a
//! poll meets an inode the cache does not know — at most once per poll,
//! however many new sockets it met.

use std::convert::Infallible;

use connscope_capture::sockets::{socket_owners, SocketOwners as OwnerMap};

/// A cached socket inode -> pid map.
#[derive(Debug, Default)]
pub(crate) struct SocketOwners {
    by_inode: OwnerMap,
}

impl SocketOwners {
    /// The pid of the process holding the socket with this inode, if the last
    /// scan found one.
    pub fn get(&self, inode: u64) -> Option<u32> {
        self.by_inode.get(&inode).copied()
    }

    /// Re-reads `/proc/*/fd` when any of `inodes` is unknown.
    pub fn refresh_for(&mut self, inodes: impl IntoIterator<Item = u64>) {
        let unknown = inodes
            .into_iter()
            .any(|inode| inode != 0 && !self.by_inode.contains_key(&inode));
        if unknown {
            let Ok(owners) = socket_owners(|| Ok::<_, Infallible>(()));
            self.by_inode = owners;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn finds_own_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
        let inode = std::fs::metadata(format!("/proc/self/fd/{fd}"))
            .unwrap()
            .ino();
        let mut owners = SocketOwners::default();
        assert_eq!(owners.get(inode), None);
        owners.refresh_for([inode]);
        assert_eq!(owners.get(inode), Some(std::process::id()));
    }
}
