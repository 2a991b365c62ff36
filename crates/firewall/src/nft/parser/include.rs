//! Which files an `include "NAME"` names, as nft(8) resolves them: an
//! absolute NAME as it is, a relative one next to the including file and
//! then in each directory of the include path (nft's `-I`; nft itself looks
//! only there). A NAME with a wildcard (`*`, `?`, `[`) is a glob: every
//! regular file it matches in each of those places, sorted, dot files not
//! matched, and no match is fine; a NAME without one must exist somewhere.

use std::path::{Path, PathBuf};

use glob::{MatchOptions, Pattern};

/// Why an include names no file to read.
#[derive(Debug, thiserror::Error)]
pub(super) enum IncludeError {
    #[error("no such file next to the including file or in the include path")]
    NotFound,
    #[error("not a usable glob: {0}")]
    Pattern(#[from] glob::PatternError),
    #[error("{0}")]
    Glob(#[from] glob::GlobError),
}

/// The files `name` stands for, in the order nft reads them.
pub(super) fn resolve(
    name: &str,
    including_dir: &Path,
    include_path: &[PathBuf],
) -> Result<Vec<PathBuf>, IncludeError> {
    let places: Vec<&Path> = if Path::new(name).is_absolute() {
        Vec::new()
    } else {
        std::iter::once(including_dir)
            .chain(include_path.iter().map(PathBuf::as_path))
            .collect()
    };
    if !name.contains(['*', '?', '[']) {
        if places.is_empty() {
            return Ok(vec![PathBuf::from(name)]);
        }
        return places
            .iter()
            .map(|dir| dir.join(name))
            .find(|path| path.exists())
            .map(|path| vec![path])
            .ok_or(IncludeError::NotFound);
    }
    let patterns: Vec<String> = if places.is_empty() {
        vec![name.to_owned()]
    } else {
        places
            .iter()
            .map(|dir| {
                let dir = Pattern::escape(&dir.to_string_lossy());
                format!("{}/{name}", dir.trim_end_matches('/'))
            })
            .collect()
    };
    let options = MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: true,
    };
    let mut files: Vec<PathBuf> = Vec::new();
    for pattern in patterns {
        // glob yields its matches sorted, as nft's glob(3) does.
        for path in glob::glob_with(&pattern, options)? {
            let path = path?;
            if path.is_file() && !files.contains(&path) {
                files.push(path);
            }
        }
    }
    Ok(files)
}
