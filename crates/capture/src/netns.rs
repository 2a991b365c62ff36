//! Network namespace identity: the inode of `/proc/PID/ns/net`.

use std::io;
use std::os::unix::fs::MetadataExt;

/// Inode of the network namespace this process runs in.
pub fn current_inode() -> io::Result<u64> {
    Ok(std::fs::metadata("/proc/self/ns/net")?.ino())
}

/// Inode of the network namespace of another process.
pub fn inode_of(pid: u32) -> io::Result<u64> {
    Ok(std::fs::metadata(format!("/proc/{pid}/ns/net"))?.ino())
}

#[cfg(test)]
mod tests {
    #[test]
    fn own_namespace_matches_pid_lookup() {
        let own = super::current_inode().unwrap();
        assert_ne!(own, 0);
        assert_eq!(super::inode_of(std::process::id()).unwrap(), own);
    }
}
