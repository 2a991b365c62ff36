//! This machine's host name. The agent stamps it on every event, the
//! collector puts it in its certificate, and `firewall diff` compares it with
//! the planned host: one reading, so they cannot disagree about what it is.

/// The host name as `hostname` prints it (the kernel's UTS node name); `None`
/// when it cannot be read or is empty.
pub fn host_name() -> Option<String> {
    nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok())
        .filter(|name| !name.is_empty())
}

/// [`host_name`], or `localhost` when there is none: what names this machine
/// in its own events.
pub fn host_name_or_localhost() -> String {
    host_name().unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_kernels_node_name() {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert_eq!(host_name().as_deref(), Some(kernel.trim_end_matches('\n')));
        assert_eq!(host_name_or_localhost(), kernel.trim_end_matches('\n'));
    }
}
