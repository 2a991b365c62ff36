//! Enrollment: how a new host gets its own agent token in one step.
//!
//! `connscope collector enroll HOST` makes an [`EnrollmentToken`]: the
//! collector's certificate fingerprint and a random secret, in one string an
//! administrator can paste. `connscope agent enroll URL TOKEN` connects with
//! that fingerprint pinned (so the secret goes to no one else), posts an
//! [`EnrollRequest`] to [`ENROLL_PATH`] with the secret as its bearer token,
//! and gets an [`EnrollResponse`]: the agent's long-lived token, which only
//! ever travelled over the pinned connection. The secret is spent (unless
//! the token was made reusable) and expires in any case.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::tls::Fingerprint;

/// POST an [`EnrollRequest`] with `Authorization: Bearer SECRET`.
pub const ENROLL_PATH: &str = "/api/v1/enroll";
/// POST (empty body) with an agent token: answers a [`WhoAmI`].
pub const WHOAMI_PATH: &str = "/api/v1/whoami";

/// What an enrollment token starts with (its format's version).
const PREFIX: &str = "cse1";
/// Bytes of randomness in every secret the collector hands out.
pub const SECRET_BYTES: usize = 32;

/// The one string `collector enroll` prints: `cse1.FINGERPRINT.SECRET`, both
/// in lower-case hex.
#[derive(Clone, PartialEq, Eq)]
pub struct EnrollmentToken {
    pub fingerprint: Fingerprint,
    pub secret: String,
}

impl fmt::Display for EnrollmentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}.{}.{}",
            hex(self.fingerprint.as_bytes()),
            self.secret
        )
    }
}

impl fmt::Debug for EnrollmentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The secret stays out of logs.
        write!(f, "EnrollmentToken({}, secret hidden)", self.fingerprint)
    }
}

/// Why a string is not an enrollment token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an enrollment token ({PREFIX}.FINGERPRINT.SECRET, as `connscope collector enroll` prints it): {0}")]
pub struct BadEnrollmentToken(String);

impl FromStr for EnrollmentToken {
    type Err = BadEnrollmentToken;

    fn from_str(s: &str) -> Result<EnrollmentToken, BadEnrollmentToken> {
        let bad = |reason: &str| BadEnrollmentToken(reason.to_owned());
        let mut parts = s.trim().split('.');
        let (Some(prefix), Some(fingerprint), Some(secret), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("expected three parts separated by dots"));
        };
        if prefix != PREFIX {
            return Err(bad(&format!("it starts with {prefix:.8?}, not {PREFIX}")));
        }
        let fingerprint = Fingerprint::from_str(fingerprint)
            .map_err(|e| bad(&format!("the fingerprint: {e}")))?;
        if secret.len() != SECRET_BYTES * 2 || !secret.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad(&format!(
                "the secret is {} hex digits, not {}",
                SECRET_BYTES * 2,
                secret.len()
            )));
        }
        Ok(EnrollmentToken {
            fingerprint,
            secret: secret.to_ascii_lowercase(),
        })
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new random secret of [`SECRET_BYTES`], in hex.
pub fn new_secret() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; SECRET_BYTES];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random source works");
    hex(&bytes)
}

/// The body of an enrollment request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollRequest {
    /// The host's name: its agent id when the token names no host.
    pub host: String,
}

/// The collector's answer to an enrollment.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollResponse {
    /// The agent id the token sends as.
    pub agent: String,
    /// The agent's own long-lived token.
    pub token: String,
}

impl fmt::Debug for EnrollResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EnrollResponse({}, token hidden)", self.agent)
    }
}

/// Who an agent token is (the answer at [`WHOAMI_PATH`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoAmI {
    pub agent: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_reads_back_and_bad_ones_are_named() {
        let token = EnrollmentToken {
            fingerprint: Fingerprint::from_bytes([0xab; 32]),
            secret: new_secret(),
        };
        let text = token.to_string();
        assert_eq!(text.parse::<EnrollmentToken>().unwrap(), token);
        assert!(!format!("{token:?}").contains(&token.secret));
        let err = "cse2.ab.cd"
            .parse::<EnrollmentToken>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("not cse1"), "{err}");
        let short = format!("cse1.{}.abc", hex(&[0xab; 32]));
        let err = short.parse::<EnrollmentToken>().unwrap_err().to_string();
        assert!(err.contains("the secret"), "{err}");
        assert_ne!(new_secret(), new_secret());
    }
}
