//! Access tokens kept in the store, so that every collector sharing it
//! accepts the same agents and a revocation reaches all of them.
//!
//! Only a token's SHA-256 digest is kept: tokens are 256-bit random values,
//! so a fast hash is as good as a slow one, and a copy of the store gives no
//! one a token that works. Two kinds share the table: an agent's long-lived
//! token (what an agent sends with every batch) and an enrollment token,
//! which a host exchanges once (or, when reusable, any number of times until
//! it expires) for an agent token of its own.

use connscope_event::Timestamp;

/// What a stored token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// Sends events as [`TokenRecord::agent`].
    Agent,
    /// Exchanged for an agent token (see [`crate::Store::redeem_enrollment`]).
    Enrollment,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Agent => "agent",
            TokenKind::Enrollment => "enrollment",
        }
    }

    pub fn parse(text: &str) -> Option<TokenKind> {
        match text {
            "agent" => Some(TokenKind::Agent),
            "enrollment" => Some(TokenKind::Enrollment),
            _ => None,
        }
    }
}

/// One token as the store keeps it: never the secret, only its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// A short public name of the token (`tokens list`, `tokens revoke`).
    pub id: String,
    pub kind: TokenKind,
    /// SHA-256 of the secret.
    pub digest: [u8; 32],
    /// An agent token's agent id; an enrollment token's host (the agent id it
    /// gives), or empty for a reusable token that takes the host's own name.
    pub agent: String,
    pub created: Timestamp,
    pub expires: Option<Timestamp>,
    /// An enrollment token that may be used more than once.
    pub reusable: bool,
    /// How often an enrollment token was exchanged.
    pub uses: u64,
    /// When the token was last presented (at most once a minute is recorded).
    pub last_used: Option<Timestamp>,
    pub revoked: Option<Timestamp>,
}

impl TokenRecord {
    /// Whether the token may be used at `now`: not revoked, not expired.
    pub fn valid_at(&self, now: Timestamp) -> Result<(), TokenRefusal> {
        if self.revoked.is_some() {
            return Err(TokenRefusal::Revoked);
        }
        if self.expires.is_some_and(|expires| expires <= now) {
            return Err(TokenRefusal::Expired);
        }
        Ok(())
    }
}

impl TokenRecord {
    /// The agent this enrollment token may give an agent token to at `at`
    /// (its host, or for a reusable token without one the name `asked`):
    /// every backend's rule for [`crate::Store::redeem_enrollment`].
    pub fn enrolls_agent(&self, asked: &str, at: Timestamp) -> Result<String, TokenRefusal> {
        if self.kind != TokenKind::Enrollment {
            return Err(TokenRefusal::Unknown);
        }
        self.valid_at(at)?;
        if !self.reusable && self.uses > 0 {
            return Err(TokenRefusal::Used);
        }
        let agent = if self.agent.is_empty() {
            asked
        } else {
            &self.agent
        };
        if agent.is_empty() {
            return Err(TokenRefusal::NoHost);
        }
        Ok(agent.to_owned())
    }
}

/// Why a token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefusal {
    #[error("the token is not known to this collector")]
    Unknown,
    #[error("the token has expired")]
    Expired,
    #[error("the token was revoked")]
    Revoked,
    #[error("the one-time enrollment token was already used")]
    Used,
    #[error("the enrollment token needs the host's name")]
    NoHost,
}
