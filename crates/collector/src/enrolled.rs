//! Agent tokens kept in the store (enrolled agents, `collector tokens`), as
//! the collector checks them: by the SHA-256 digest of what was presented,
//! with a cache of a few seconds so a batch costs no store read, and short
//! enough that a revoked token is refused within [`CACHE_FOR`] everywhere.
//!
//! A lookup goes by digest, so its timing depends on the digest, never on
//! how much of a secret a guess got right.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use connscope_event::Timestamp;
use connscope_protocol::enroll::EnrollmentToken;
use connscope_protocol::Fingerprint;
use connscope_store::{AgentId, Store, StoreError, TokenKind, TokenRecord, TokenRefusal};

/// How long a verdict on a token is reused before the store is asked again.
pub const CACHE_FOR: Duration = Duration::from_secs(2);
/// How often a token's last use is written to the store, at most.
const TOUCH_EVERY: Duration = Duration::from_secs(60);
/// Verdicts kept at most: unknown tokens are cached too, and a client
/// trying many must not grow the cache without bound.
const MAX_CACHED: usize = 10_000;

struct Verdict {
    agent: Result<AgentId, TokenRefusal>,
    checked: Instant,
    touched: Option<Instant>,
}

/// The store's agent tokens, looked up with a short cache.
pub(crate) struct StoreTokens {
    store: Arc<dyn Store>,
    cache: Mutex<HashMap<[u8; 32], Verdict>>,
    /// When [`Self::any_live`] last asked the store, and its answer.
    live: Mutex<Option<(Instant, bool)>>,
}

impl StoreTokens {
    pub fn new(store: Arc<dyn Store>) -> StoreTokens {
        StoreTokens {
            store,
            cache: Mutex::default(),
            live: Mutex::default(),
        }
    }

    /// The agent a presented token belongs to, or why it is refused. Reads
    /// the store (blocking) when the cached verdict is older than
    /// [`CACHE_FOR`].
    pub fn agent_for(&self, token: &str) -> Result<Result<AgentId, TokenRefusal>, StoreError> {
        let digest = digest_of(token);
        let now = Instant::now();
        let touched = match self.cached_verdict(&digest, now) {
            Ok(agent) => return Ok(agent),
            Err(touched) => touched,
        };
        self.look_up(digest, now, touched)
    }

    /// The cached verdict on a token when it is fresh: no store read, so an
    /// async caller can take it without a blocking task.
    pub fn cached(&self, token: &str) -> Option<Result<AgentId, TokenRefusal>> {
        self.cached_verdict(&digest_of(token), Instant::now()).ok()
    }

    /// A fresh verdict, or when the token's last use was written (if ever).
    fn cached_verdict(
        &self,
        digest: &[u8; 32],
        now: Instant,
    ) -> Result<Result<AgentId, TokenRefusal>, Option<Instant>> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        match cache.get(digest) {
            Some(v) if now.duration_since(v.checked) < CACHE_FOR => Ok(v.agent.clone()),
            Some(v) => Err(v.touched),
            None => Err(None),
        }
    }

    fn look_up(
        &self,
        digest: [u8; 32],
        now: Instant,
        mut touched: Option<Instant>,
    ) -> Result<Result<AgentId, TokenRefusal>, StoreError> {
        let at = Timestamp::now();
        let agent = match self.store.token_by_digest(&digest)? {
            Some(record) if record.kind == TokenKind::Agent => {
                record.valid_at(at).map(|()| AgentId(record.agent.clone()))
            }
            _ => Err(TokenRefusal::Unknown),
        };
        if agent.is_ok() && touched.is_none_or(|t| now.duration_since(t) >= TOUCH_EVERY) {
            self.store.touch_token(&digest, at)?;
            touched = Some(now);
        }
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, v| now.duration_since(v.checked) < CACHE_FOR);
        }
        if cache.len() < MAX_CACHED {
            cache.insert(
                digest,
                Verdict {
                    agent: agent.clone(),
                    checked: now,
                    touched,
                },
            );
        }
        Ok(agent)
    }

    /// Whether the store holds any agent token that may be used now (the
    /// answer reused for [`CACHE_FOR`], so unknown tokens cost no scan each).
    pub fn any_live(&self) -> Result<bool, StoreError> {
        let now = Instant::now();
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((checked, any)) = *live {
            if now.duration_since(checked) < CACHE_FOR {
                return Ok(any);
            }
        }
        let at = Timestamp::now();
        let any = self
            .store
            .tokens()?
            .iter()
            .any(|t| t.kind == TokenKind::Agent && t.valid_at(at).is_ok());
        *live = Some((now, any));
        Ok(any)
    }
}

/// A new token's public id: 12 random hex digits (not derived from the secret).
fn new_token_id() -> String {
    connscope_protocol::enroll::new_secret()[..12].to_owned()
}

/// The digest a secret is kept and looked up by.
pub fn digest_of(secret: &str) -> [u8; 32] {
    *Fingerprint::of(secret.as_bytes()).as_bytes()
}

/// Makes an enrollment token for `host` (or, without one, for any host that
/// names itself: only sensible when `reusable`), valid until `expires`, and
/// keeps its digest in `store`. The caller prints it with the collector's
/// fingerprint.
pub fn new_enrollment(
    store: &dyn Store,
    host: Option<&str>,
    expires: Timestamp,
    reusable: bool,
    fingerprint: Fingerprint,
) -> Result<(TokenRecord, EnrollmentToken), EnrollError> {
    if let Some(host) = host {
        crate::auth::check_agent_id(host).map_err(EnrollError::Host)?;
    }
    let secret = connscope_protocol::enroll::new_secret();
    let record = TokenRecord {
        id: new_token_id(),
        kind: TokenKind::Enrollment,
        digest: digest_of(&secret),
        agent: host.unwrap_or_default().to_owned(),
        created: Timestamp::now(),
        expires: Some(expires),
        reusable,
        uses: 0,
        last_used: None,
        revoked: None,
    };
    store.add_token(&record)?;
    Ok((
        record,
        EnrollmentToken {
            fingerprint,
            secret,
        },
    ))
}

/// A new agent token for `agent` (its record, not yet stored, and the secret).
pub fn new_agent_token(agent: &str) -> (TokenRecord, String) {
    let secret = connscope_protocol::enroll::new_secret();
    let record = TokenRecord {
        id: new_token_id(),
        kind: TokenKind::Agent,
        digest: digest_of(&secret),
        agent: agent.to_owned(),
        created: Timestamp::now(),
        expires: None,
        reusable: false,
        uses: 0,
        last_used: None,
        revoked: None,
    };
    (record, secret)
}

/// Why an enrollment token could not be made.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("host: {0}")]
    Host(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}
