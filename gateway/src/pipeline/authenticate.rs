//! Stage 1, authenticate: who is asking. The calling system is known by its client certificate
//! (checked during the TLS handshake, see `server`); the practitioner by a signed token naming
//! user, agency and role. Anything missing, unknown or expired is 401 and nothing else.

use std::collections::HashMap;
use std::sync::Mutex;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::foundation::config::{AgencyConfig, AgencyKind, AuthConfig, KeyAlgorithm};
use crate::foundation::domain::Role;

/// The practitioner behind a request, as far as a valid token and the configuration say.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: String,
    pub agency: String,
    pub agency_kind: AgencyKind,
    pub role: Role,
    /// The calling system, from its client certificate's subject, when mutual TLS is on.
    pub client: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    agency: String,
    role: String,
    exp: i64,
}

/// Why a token was refused. Kept for metrics and debugging; callers only ever see 401.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token")]
    Missing,
    #[error("token rejected: {0}")]
    Token(String),
    #[error("algorithm not accepted")]
    Algorithm,
    #[error("unknown signing key")]
    UnknownKey,
    #[error("unknown agency")]
    UnknownAgency,
    #[error("unknown role")]
    UnknownRole,
}

impl AuthError {
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Token(_) => "invalid",
            AuthError::Algorithm => "algorithm",
            AuthError::UnknownKey => "unknown_key",
            AuthError::UnknownAgency => "unknown_agency",
            AuthError::UnknownRole => "unknown_role",
        }
    }
}

struct Key {
    kid: String,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// Verifies practitioner tokens against the configured public keys.
pub struct Verifier {
    keys: Vec<Key>,
    validation: HashMap<Algorithm, Validation>,
    agencies: HashMap<String, AgencyKind>,
    /// Tokens already verified, by SHA-256 of the token, with their expiry. A practitioner's
    /// token arrives on every request and an ECDSA/RSA check is the dearest step of the
    /// pipeline; a verified token cannot change, so the answer is reused until it expires.
    verified: Mutex<HashMap<[u8; 32], (Principal, i64)>>,
}

/// Most tokens remembered; the cache is emptied when full, which only costs re-verification.
const VERIFIED_CAPACITY: usize = 10_000;

impl Verifier {
    pub fn new(auth: &AuthConfig, agencies: &[AgencyConfig]) -> anyhow::Result<Self> {
        let mut keys = Vec::new();
        let mut validation = HashMap::new();
        for k in &auth.keys {
            let pem = std::fs::read(&k.public_key)
                .map_err(|e| anyhow::anyhow!("auth key {}: {e}", k.public_key.display()))?;
            let (algorithm, key) = match k.algorithm {
                KeyAlgorithm::RS256 => (Algorithm::RS256, DecodingKey::from_rsa_pem(&pem)),
                KeyAlgorithm::ES256 => (Algorithm::ES256, DecodingKey::from_ec_pem(&pem)),
            };
            let key = key.map_err(|e| anyhow::anyhow!("auth key {}: {e}", k.kid))?;
            let mut v = Validation::new(algorithm);
            v.set_audience(&[&auth.audience]);
            v.set_issuer(&[&auth.issuer]);
            v.leeway = auth.leeway_secs;
            v.validate_nbf = true;
            v.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
            validation.insert(algorithm, v);
            keys.push(Key {
                kid: k.kid.clone(),
                algorithm,
                key,
            });
        }
        Ok(Self {
            keys,
            validation,
            agencies: agencies.iter().map(|a| (a.id.clone(), a.kind)).collect(),
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// Checks signature, algorithm, `exp`, `nbf`, `aud` and `iss`, then that the agency and role
    /// are ones this deployment knows.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = chrono::Utc::now().timestamp();
        if let Ok(cache) = self.verified.lock() {
            if let Some((p, exp)) = cache.get(&digest) {
                // `exp` is checked here without leeway: a cached answer never outlives the token.
                if now < *exp {
                    return Ok(p.clone());
                }
            }
        }
        let (principal, exp) = self.verify_signed(token)?;
        if let Ok(mut cache) = self.verified.lock() {
            if cache.len() >= VERIFIED_CAPACITY {
                cache.clear();
            }
            cache.insert(digest, (principal.clone(), exp));
        }
        Ok(principal)
    }

    fn verify_signed(&self, token: &str) -> Result<(Principal, i64), AuthError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Token(e.to_string()))?;
        let validation = self
            .validation
            .get(&header.alg)
            .ok_or(AuthError::Algorithm)?;
        let candidates = self.keys.iter().filter(|k| {
            k.algorithm == header.alg && header.kid.as_deref().is_none_or(|kid| kid == k.kid)
        });
        let mut last = AuthError::UnknownKey;
        for key in candidates {
            match jsonwebtoken::decode::<Claims>(token, &key.key, validation) {
                Ok(data) => {
                    let exp = data.claims.exp;
                    return self.principal(data.claims).map(|p| (p, exp));
                }
                Err(e) => last = AuthError::Token(e.to_string()),
            }
        }
        Err(last)
    }

    fn principal(&self, c: Claims) -> Result<Principal, AuthError> {
        let agency_kind = *self
            .agencies
            .get(&c.agency)
            .ok_or(AuthError::UnknownAgency)?;
        let role = c.role.parse::<Role>().map_err(|_| AuthError::UnknownRole)?;
        Ok(Principal {
            user: c.sub,
            agency: c.agency,
            agency_kind,
            role,
            client: None,
        })
    }
}
