//! Stage 1, authenticate: who is asking. The calling system is known by its client certificate
//! (checked during the TLS handshake, see `server`); the practitioner by a signed token naming
//! user, agency and role. Anything missing, unknown or expired is 401 and nothing else.
//!
//! Strict beyond the signature: a token must say who it is for (`sub`), when it was issued
//! (`iat`), and live no longer than `auth.max_lifetime_secs`, so a leaked token is worth hours,
//! not decades; and an ES256 signature under a configured key must be in its low-S form, so
//! each token has exactly one valid encoding (ECDSA's `(r, s)` also verifies as `(r, n − s)`,
//! which would let a token be re-encoded past anything keyed by its bytes, such as the
//! verified-token cache). Identity providers sign with either form, so a token checked against
//! the JWKS (`auth.jwks_uri`) is verified in its low-S form whichever it arrived in; its two
//! encodings are then two cache entries for one verified token, which costs a verification.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use num_bigint::BigUint;
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
    iat: i64,
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
    #[error("claims refused: {0}")]
    Claims(&'static str),
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
            AuthError::Claims(_) => "claims",
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
    max_lifetime: i64,
    leeway: i64,
    /// The identity provider's keys (`auth.jwks_uri`), beside the configured ones.
    pub jwks: Option<std::sync::Arc<crate::pipeline::oidc::Jwks>>,
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
        let jwks = match &auth.jwks_uri {
            Some(uri) => Some(std::sync::Arc::new(crate::pipeline::oidc::Jwks::new(
                uri.clone(),
                crate::pipeline::oidc::client(None)?,
            ))),
            None => None,
        };
        if jwks.is_some() {
            for algorithm in [Algorithm::RS256, Algorithm::ES256] {
                validation.entry(algorithm).or_insert_with(|| {
                    let mut v = Validation::new(algorithm);
                    v.set_audience(&[&auth.audience]);
                    v.set_issuer(&[&auth.issuer]);
                    v.leeway = auth.leeway_secs;
                    v.validate_nbf = true;
                    v.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
                    v
                });
            }
        }
        Ok(Self {
            keys,
            jwks,
            validation,
            agencies: agencies.iter().map(|a| (a.id.clone(), a.kind)).collect(),
            max_lifetime: i64::try_from(auth.max_lifetime_secs).unwrap_or(i64::MAX),
            leeway: i64::try_from(auth.leeway_secs).unwrap_or(i64::MAX),
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// Checks signature (low-S for ES256 under a configured key), algorithm, `exp`, `nbf`, `aud`, `iss`, a non-empty
    /// `sub`, `iat` and the token's lifetime, then that the agency and role are ones this
    /// deployment knows.
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
        // An ES256 signature in its high-S form: the configured keys refuse it (each token
        // they verify has one encoding), while the identity provider's keys verify its low-S
        // twin instead — providers sign with either form, and `(r, n − s)` verifies exactly
        // when `(r, s)` does, so the twin proves the same signer and claims.
        let mut twin = None;
        if header.alg == Algorithm::ES256 {
            let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let (signed, encoded) = token
                .rsplit_once('.')
                .ok_or_else(|| AuthError::Token("signature is not base64url".into()))?;
            let mut signature = engine
                .decode(encoded)
                .map_err(|_| AuthError::Token("signature is not base64url".into()))?;
            if !is_low_s(&signature) {
                if self.jwks.is_none() {
                    return Err(AuthError::Token(
                        "ES256 signature not in its low-S form".into(),
                    ));
                }
                to_low_s(&mut signature);
                twin = Some(format!("{signed}.{}", engine.encode(&signature)));
            }
        }
        let mut candidates = self.keys.iter().filter(|k| {
            k.algorithm == header.alg && header.kid.as_deref().is_none_or(|kid| kid == k.kid)
        });
        let mut last = AuthError::UnknownKey;
        let from_jwks = self
            .jwks
            .as_ref()
            .map(|j| match header.kid.as_deref() {
                Some(kid) => j.get(kid).into_iter().collect(),
                None => j.all(),
            })
            .unwrap_or_default();
        let from_jwks = from_jwks
            .iter()
            .filter(|(alg, _)| *alg == header.alg)
            .map(|(_, key)| (twin.as_deref().unwrap_or(token), key));
        let keys: Vec<(&str, &DecodingKey)> = if twin.is_some() {
            let keys: Vec<_> = from_jwks.collect();
            // A configured key's high-S token is refused as such; a kid the JWKS does not know
            // yet stays an unknown key, so the set is fetched again.
            if keys.is_empty() && candidates.next().is_some() {
                last = AuthError::Token("ES256 signature not in its low-S form".into());
            }
            keys
        } else {
            candidates
                .map(|k| (token, &k.key))
                .chain(from_jwks)
                .collect()
        };
        for (token, key) in keys {
            match jsonwebtoken::decode::<Claims>(token, key, validation) {
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
        if c.sub.trim().is_empty() {
            return Err(AuthError::Claims("empty sub"));
        }
        let now = chrono::Utc::now().timestamp();
        if c.iat > now.saturating_add(self.leeway) {
            return Err(AuthError::Claims("iat in the future"));
        }
        if c.exp.saturating_sub(c.iat) > self.max_lifetime
            || c.exp.saturating_sub(now) > self.max_lifetime
        {
            return Err(AuthError::Claims("lifetime over auth.max_lifetime_secs"));
        }
        self.principal_of(c.sub, c.agency, &c.role)
    }

    /// The one place a practitioner's identity becomes a [`Principal`]: from a bearer token's
    /// claims, an OpenID Connect ID token's, or a web session's (which keeps the claims it was
    /// signed in with). The agency and role must be ones this deployment knows, every time.
    pub fn principal_of(
        &self,
        user: String,
        agency: String,
        role: &str,
    ) -> Result<Principal, AuthError> {
        if user.trim().is_empty() {
            return Err(AuthError::Claims("empty sub"));
        }
        let agency_kind = *self.agencies.get(&agency).ok_or(AuthError::UnknownAgency)?;
        let role = role.parse::<Role>().map_err(|_| AuthError::UnknownRole)?;
        Ok(Principal {
            user,
            agency,
            agency_kind,
            role,
            client: None,
        })
    }
}

/// The order n of P-256's base point, big-endian.
const P256_ORDER: [u8; 32] = [
    0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    0xBC, 0xE6, 0xFA, 0xAD, 0xA7, 0x17, 0x9E, 0x84, 0xF3, 0xB9, 0xCA, 0xC2, 0xFC, 0x63, 0x25, 0x51,
];

/// Whether an ES256 signature (`r ‖ s`, 32 bytes each) has `s ≤ n / 2`. Of the two values of
/// `s` that verify, only the lower is accepted; anything not 64 bytes is left for the signature
/// check to refuse.
pub fn is_low_s(signature: &[u8]) -> bool {
    match signature.len() {
        64 => BigUint::from_bytes_be(&signature[32..]) <= BigUint::from_bytes_be(&P256_ORDER) >> 1,
        _ => true,
    }
}

/// Rewrites an ES256 signature (`r ‖ s`) into its low-S form, as a signer must: ring signs with
/// either.
pub fn to_low_s(signature: &mut [u8]) {
    if !is_low_s(signature) {
        flip_s(signature);
    }
}

/// The other valid encoding of an ES256 signature: `s → n − s`.
pub fn flip_s(signature: &mut [u8]) {
    let Some(s) = signature.get_mut(32..64).filter(|s| s.len() == 32) else {
        return;
    };
    let flipped = BigUint::from_bytes_be(&P256_ORDER) - BigUint::from_bytes_be(s);
    let bytes = flipped.to_bytes_be();
    s.fill(0);
    s[32 - bytes.len()..].copy_from_slice(&bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::pki::DevPki;
    use crate::foundation::config::{KeyAlgorithm, KeyConfig};
    use serde_json::json;

    const AGENCY: &str = "la-csc";

    fn setup() -> (tempfile::TempDir, DevPki, Verifier) {
        let dir = tempfile::tempdir().unwrap();
        let pki = DevPki::generate(dir.path()).unwrap();
        let auth = AuthConfig {
            issuer: pki.issuer.issuer.clone(),
            audience: pki.issuer.audience.clone(),
            keys: vec![KeyConfig {
                kid: pki.issuer.kid.clone(),
                algorithm: KeyAlgorithm::ES256,
                public_key: pki.token_public_key.clone(),
            }],
            leeway_secs: 30,
            max_lifetime_secs: 12 * 3600,
            jwks_uri: None,
        };
        let agencies = [AgencyConfig {
            id: AGENCY.into(),
            name: "Children's social care".into(),
            kind: AgencyKind::SocialCare,
            local_authority: None,
        }];
        let verifier = Verifier::new(&auth, &agencies).unwrap();
        (dir, pki, verifier)
    }

    fn claims(sub: &str, iat: i64, exp: i64) -> serde_json::Value {
        json!({"sub": sub, "agency": AGENCY, "role": "social_worker",
               "iss": "https://weft.invalid/dev-issuer", "aud": "weft",
               "iat": iat, "exp": exp})
    }

    /// The token with its signature's `s` replaced by `n − s`: the other valid encoding.
    fn other_s(token: &str) -> String {
        let (signed, signature) = token.rsplit_once('.').unwrap();
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut sig = engine.decode(signature).unwrap();
        let flipped = BigUint::from_bytes_be(&P256_ORDER) - BigUint::from_bytes_be(&sig[32..]);
        let bytes = flipped.to_bytes_be();
        sig[32..].fill(0);
        sig[64 - bytes.len()..].copy_from_slice(&bytes);
        format!("{signed}.{}", engine.encode(sig))
    }

    #[test]
    fn minted_tokens_verify_and_their_high_s_twins_do_not() {
        let (_dir, pki, verifier) = setup();
        // ring picks either s; over a few dozen tokens both forms come up before normalising.
        for n in 0..32 {
            let token = pki
                .issuer
                .mint(&format!("sw-{n}"), AGENCY, "social_worker", 600);
            let p = verifier.verify(&token).unwrap();
            assert_eq!(p.user, format!("sw-{n}"));
            let twin = other_s(&token);
            assert!(
                matches!(verifier.verify(&twin), Err(AuthError::Token(_))),
                "the high-S encoding of token {n} was accepted"
            );
        }
    }

    /// The dev issuer's public key as a JWK: the SPKI's uncompressed point is its last 64
    /// bytes, x then y.
    fn jwk_of(pki: &DevPki) -> serde_json::Value {
        let pem = std::fs::read_to_string(&pki.token_public_key).unwrap();
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap();
        let point = &der[der.len() - 64..];
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        json!({"kty": "EC", "crv": "P-256", "kid": pki.issuer.kid, "alg": "ES256", "use": "sig",
               "x": engine.encode(&point[..32]), "y": engine.encode(&point[32..])})
    }

    /// A provider signs ES256 with either `s`: a token from a JWKS key verifies in both forms,
    /// while the same tokens under the same key configured statically verify only low-S.
    #[tokio::test]
    async fn jwks_tokens_verify_in_either_s_form_and_static_ones_only_in_low_s() {
        let (_dir, pki, static_verifier) = setup();
        let set = json!({"keys": [jwk_of(&pki)]});
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let set = set.clone();
                async move { axum::Json(set) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let auth = AuthConfig {
            issuer: pki.issuer.issuer.clone(),
            audience: pki.issuer.audience.clone(),
            keys: Vec::new(),
            leeway_secs: 30,
            max_lifetime_secs: 12 * 3600,
            jwks_uri: Some(format!("http://{addr}/jwks")),
        };
        let agencies = [AgencyConfig {
            id: AGENCY.into(),
            name: "Children's social care".into(),
            kind: AgencyKind::SocialCare,
            local_authority: None,
        }];
        let verifier = Verifier::new(&auth, &agencies).unwrap();
        verifier.jwks.as_ref().unwrap().refresh().await.unwrap();
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        for n in 0..8 {
            let low = pki
                .issuer
                .mint(&format!("sw-{n}"), AGENCY, "social_worker", 600);
            let high = other_s(&low);
            let sig = engine.decode(high.rsplit('.').next().unwrap()).unwrap();
            assert!(!is_low_s(&sig), "the twin is the high-S form");
            for token in [&low, &high] {
                assert_eq!(verifier.verify(token).unwrap().user, format!("sw-{n}"));
            }
            assert!(static_verifier.verify(&low).is_ok());
            assert!(matches!(
                static_verifier.verify(&high),
                Err(AuthError::Token(_))
            ));
            // The high-S form is a signature over the same bytes only: changed claims fail.
            let (_, payload_sig) = high.split_once('.').unwrap();
            let (_, sig) = payload_sig.split_once('.').unwrap();
            let forged = format!(
                "{}.{}.{sig}",
                low.split('.').next().unwrap(),
                engine.encode(
                    json!({"sub": "someone-else", "agency": AGENCY, "role": "social_worker",
                           "iss": pki.issuer.issuer, "aud": pki.issuer.audience,
                           "iat": chrono::Utc::now().timestamp(),
                           "exp": chrono::Utc::now().timestamp() + 600})
                    .to_string()
                )
            );
            assert!(verifier.verify(&forged).is_err());
        }
    }

    #[test]
    fn sub_iat_and_lifetime_are_required() {
        let (_dir, pki, verifier) = setup();
        let now = chrono::Utc::now().timestamp();
        let sign = |c| pki.issuer.sign(c);
        assert!(verifier
            .verify(&sign(claims("sw-1", now, now + 600)))
            .is_ok());
        for (what, c) in [
            ("empty sub", claims("", now, now + 600)),
            ("blank sub", claims("  ", now, now + 600)),
            ("expires in 2100", claims("sw-1", now, 4_102_444_800)),
            ("13 hours", claims("sw-1", now, now + 13 * 3600)),
            (
                "issued 13 hours before expiry",
                claims("sw-1", now - 12 * 3600, now + 3600),
            ),
            (
                "issued in the future",
                claims("sw-1", now + 3600, now + 7200),
            ),
        ] {
            assert!(
                matches!(verifier.verify(&sign(c)), Err(AuthError::Claims(_))),
                "{what} accepted"
            );
        }
        let mut no_iat = claims("sw-1", now, now + 600);
        no_iat.as_object_mut().unwrap().remove("iat");
        assert!(matches!(
            verifier.verify(&sign(no_iat)),
            Err(AuthError::Token(_))
        ));
    }

    #[test]
    fn low_s_normalises_and_is_idempotent() {
        let mut high = [0u8; 64];
        high[32..].copy_from_slice(&P256_ORDER);
        high[63] -= 1; // s = n − 1, the highest valid s
        assert!(!is_low_s(&high));
        to_low_s(&mut high);
        assert!(is_low_s(&high));
        assert_eq!(high[32..63], [0u8; 31]);
        assert_eq!(high[63], 1);
        let before = high;
        to_low_s(&mut high);
        assert_eq!(high, before);
    }
}
