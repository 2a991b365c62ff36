//! Comments built from monitored hosts' data. Executable and user names are
//! attacker-controlled (a process can be called `x"; flush ruleset;\n`), and a
//! ruleset that one of them breaks, or worse extends, is a security hole. So a
//! comment keeps only a conservative ASCII alphabet and fits nftables' limit.

/// nftables refuses comments longer than this many bytes (NFT_USERDATA_MAXLEN).
pub const NFT_COMMENT_MAX: usize = 128;

/// The characters a comment may keep; everything else becomes `_`. No quote,
/// backslash, `;`, `#`, `$`, braces or control character can survive.
fn is_safe(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            ' ' | '.' | '_' | '-' | '+' | '/' | ':' | '=' | ',' | '@' | '(' | ')'
        )
}

/// Replaces unsafe characters (each one, so lengths stay meaningful).
pub fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if is_safe(c) { c } else { '_' })
        .collect()
}

/// A cleaned comment no longer than `max` bytes; a cut is marked with `...`.
pub fn comment(text: &str, max: usize) -> String {
    let mut out = clean(text);
    if out.len() > max {
        // Only ASCII is left, so any byte index is a char boundary.
        out.truncate(max.saturating_sub(3));
        out.push_str("...");
    }
    out
}

/// The last path component: `/usr/sbin/sshd` -> `sshd`, as short evidence.
pub fn basename(path: &str) -> &str {
    path.rsplit('/').find(|s| !s.is_empty()).unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_text_cannot_escape_the_string() {
        let got = comment("evil\"; flush ruleset;\n# \\ $x {}\u{e9}\u{0}", 128);
        assert_eq!(got, "evil__ flush ruleset___ _ _x ____");
        assert!(got.chars().all(|c| c.is_ascii() && !c.is_ascii_control()));
    }

    #[test]
    fn long_text_is_cut_to_the_limit() {
        let got = comment(&"a".repeat(500), NFT_COMMENT_MAX);
        assert_eq!(got.len(), NFT_COMMENT_MAX);
        assert!(got.ends_with("..."));
        assert_eq!(comment("short", 128), "short");
    }

    #[test]
    fn basename_of_paths() {
        assert_eq!(basename("/usr/sbin/sshd"), "sshd");
        assert_eq!(basename("curl"), "curl");
        assert_eq!(basename("/weird/"), "weird");
    }
}
