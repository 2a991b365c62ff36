//! What the agent keeps on disk in its state directory: the last assignment
//! it applied (so a restart without a collector loads the same policy again
//! instead of leaving the host open or closed by surprise) and the
//! break-glass marker (so an administrator's `connscope agent firewall off`
//! outlives agent restarts until `connscope agent firewall on`).
//!
//! Both are written to a temporary file and renamed, so a crash leaves the
//! old file or the new one, never half of one.

use std::path::{Path, PathBuf};

use connscope_protocol::policy::AssignedPolicy;
use serde::{Deserialize, Serialize};

use crate::error::EnforceError;

/// The files under the agent's state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir {
    dir: PathBuf,
}

/// The last applied assignment, as saved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    pub assigned: AssignedPolicy,
    /// RFC 3339 time it was loaded.
    pub applied_at: String,
}

impl StateDir {
    /// The firewall's files in `state_dir/firewall/`.
    pub fn new(state_dir: &Path) -> StateDir {
        StateDir {
            dir: state_dir.join("firewall"),
        }
    }

    pub fn assignment_path(&self) -> PathBuf {
        self.dir.join("assignment.json")
    }

    pub fn marker_path(&self) -> PathBuf {
        self.dir.join("off")
    }

    pub fn load_assignment(&self) -> Result<Option<Saved>, EnforceError> {
        let path = self.assignment_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(EnforceError::State { path, source }),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| EnforceError::StateFormat { path, source })
    }

    pub fn save_assignment(&self, saved: &Saved) -> Result<(), EnforceError> {
        let json = serde_json::to_string_pretty(saved).expect("plain data");
        self.write(&self.assignment_path(), &json)
    }

    /// The break-glass marker's text (who and when), if glass is broken.
    pub fn marker(&self) -> Result<Option<String>, EnforceError> {
        let path = self.marker_path();
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text.trim().to_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(EnforceError::State { path, source }),
        }
    }

    pub fn set_marker(&self, text: &str) -> Result<(), EnforceError> {
        self.write(&self.marker_path(), &format!("{text}\n"))
    }

    /// Removes the marker; whether there was one.
    pub fn clear_marker(&self) -> Result<bool, EnforceError> {
        let path = self.marker_path();
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(EnforceError::State { path, source }),
        }
    }

    fn write(&self, path: &Path, text: &str) -> Result<(), EnforceError> {
        let fail = |source| EnforceError::State {
            path: path.to_owned(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(fail)?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).map_err(fail)?;
        std::fs::rename(&tmp, path).map_err(fail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use connscope_protocol::policy::Staging;

    #[test]
    fn the_assignment_and_the_marker_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        assert_eq!(state.load_assignment().unwrap(), None);
        let saved = Saved {
            assigned: AssignedPolicy {
                name: "ws".into(),
                version: 2,
                document: "format = 1\n".into(),
                staging: Staging::default(),
                revision: 5,
            },
            applied_at: "2026-12-04T22:00:00Z".into(),
        };
        state.save_assignment(&saved).unwrap();
        assert_eq!(
            StateDir::new(dir.path()).load_assignment().unwrap(),
            Some(saved)
        );
        assert_eq!(state.marker().unwrap(), None);
        state.set_marker("off by root").unwrap();
        assert_eq!(state.marker().unwrap().as_deref(), Some("off by root"));
        assert!(state.clear_marker().unwrap());
        assert!(!state.clear_marker().unwrap());

        std::fs::write(state.assignment_path(), "{\"assigned\": 1}").unwrap();
        let err = state.load_assignment().unwrap_err().to_string();
        assert!(
            err.contains("assignment.json: not a saved assignment"),
            "{err}"
        );
    }
}
