//! Stage 1, continued: practitioners whose identity comes from their agency's OpenID Connect
//! provider. [`Jwks`] is a provider's published signing keys, fetched again when a token names a
//! key not yet seen (the provider rotated its keys) but at most every [`MIN_REFETCH`], so a
//! stream of forged `kid`s cannot make the gateway hammer the provider. [`Provider`] is the
//! authorization-code flow with PKCE: discovery, the token request, and the ID token checked —
//! signature through the JWKS, issuer, audience, expiry and the `nonce` of this sign-in.
//!
//! Everything cryptographic is `jsonwebtoken`'s; this module only fetches and compares.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, KeyAlgorithm as JwkAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::foundation::config::OidcConfig;

/// Least time between two fetches of a key set.
pub const MIN_REFETCH: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("the identity provider could not be reached: {0}")]
    Fetch(String),
    #[error("the identity provider's answer could not be read: {0}")]
    Malformed(String),
    #[error("the ID token was refused: {0}")]
    Token(String),
}

/// A provider's signing keys, by `kid`.
pub struct Jwks {
    uri: String,
    client: reqwest::Client,
    keys: RwLock<HashMap<String, (Algorithm, DecodingKey)>>,
    fetched: tokio::sync::Mutex<Option<Instant>>,
}

impl Jwks {
    pub fn new(uri: String, client: reqwest::Client) -> Jwks {
        Jwks {
            uri,
            client,
            keys: RwLock::new(HashMap::new()),
            fetched: tokio::sync::Mutex::new(None),
        }
    }

    /// The key with this `kid`, if it was in the set when last fetched.
    pub fn get(&self, kid: &str) -> Option<(Algorithm, DecodingKey)> {
        self.keys.read().ok()?.get(kid).cloned()
    }

    /// Every key known, for a token without `kid`.
    pub fn all(&self) -> Vec<(Algorithm, DecodingKey)> {
        self.keys
            .read()
            .map(|k| k.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Fetches the set again unless it was fetched within [`MIN_REFETCH`]. The new set replaces
    /// the old one whole: a key the provider retired stops verifying.
    pub async fn refresh(&self) -> Result<(), OidcError> {
        let mut fetched = self.fetched.lock().await;
        if fetched.is_some_and(|at| at.elapsed() < MIN_REFETCH) {
            return Ok(());
        }
        *fetched = Some(Instant::now());
        let set: JwkSet = self
            .client
            .get(&self.uri)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| OidcError::Fetch(e.to_string()))?
            .json()
            .await
            .map_err(|e| OidcError::Malformed(e.to_string()))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            // Only the two algorithms the gateway accepts anywhere; an RSA key without `alg`
            // is RS256, an EC P-256 key ES256.
            let alg = match (&jwk.common.key_algorithm, &jwk.algorithm) {
                (Some(JwkAlgorithm::RS256), _) => Algorithm::RS256,
                (Some(JwkAlgorithm::ES256), _) => Algorithm::ES256,
                (None, AlgorithmParameters::RSA(_)) => Algorithm::RS256,
                (None, AlgorithmParameters::EllipticCurve(_)) => Algorithm::ES256,
                _ => continue,
            };
            if let Ok(key) = DecodingKey::from_jwk(jwk) {
                keys.insert(kid, (alg, key));
            }
        }
        tracing::info!(keys = keys.len(), "signing keys fetched from the JWKS");
        if let Ok(mut slot) = self.keys.write() {
            *slot = keys;
        }
        Ok(())
    }

    /// The key for `kid`, fetching the set again if it is not known (the provider rotated).
    pub async fn key(&self, kid: Option<&str>) -> Vec<(Algorithm, DecodingKey)> {
        let found = |s: &Self| match kid {
            Some(k) => s.get(k).into_iter().collect::<Vec<_>>(),
            None => s.all(),
        };
        let keys = found(self);
        if !keys.is_empty() {
            return keys;
        }
        if let Err(e) = self.refresh().await {
            tracing::warn!(error = %e, "JWKS refresh failed");
        }
        found(self)
    }
}

#[derive(Debug, Clone, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

/// What the provider's discovery document says, and its keys.
struct Discovered {
    discovery: Discovery,
    jwks: Jwks,
}

/// The agency's OpenID provider, discovered on first use.
pub struct Provider {
    pub config: OidcConfig,
    client: reqwest::Client,
    discovered: tokio::sync::OnceCell<Discovered>,
}

/// A sign-in begun: where to send the browser, and what to keep until it comes back.
pub struct Begun {
    pub redirect: String,
    pub state: String,
    pub nonce: String,
    pub verifier: String,
}

/// The claims of a verified ID token that the gateway uses.
#[derive(Debug, Clone)]
pub struct Identity {
    pub sub: String,
    pub name: Option<String>,
    pub agency: Option<String>,
    pub role: Option<String>,
}

/// An HTTP client for the provider: its CA if configured, no redirects, short deadlines.
pub fn client(ca: Option<&std::path::Path>) -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10));
    if let Some(ca) = ca {
        let pem =
            std::fs::read(ca).map_err(|e| anyhow::anyhow!("web.oidc.ca {}: {e}", ca.display()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)? {
            b = b.add_root_certificate(cert);
        }
    }
    Ok(b.build()?)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn random() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    b64(&bytes)
}

impl Provider {
    pub fn new(config: OidcConfig) -> anyhow::Result<Provider> {
        let client = client(config.ca.as_deref())?;
        Ok(Provider {
            config,
            client,
            discovered: tokio::sync::OnceCell::new(),
        })
    }

    async fn discovered(&self) -> Result<&Discovered, OidcError> {
        self.discovered
            .get_or_try_init(|| async {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    self.config.issuer.trim_end_matches('/')
                );
                let discovery: Discovery = self
                    .client
                    .get(&url)
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .map_err(|e| OidcError::Fetch(e.to_string()))?
                    .json()
                    .await
                    .map_err(|e| OidcError::Malformed(e.to_string()))?;
                if discovery.issuer.trim_end_matches('/')
                    != self.config.issuer.trim_end_matches('/')
                {
                    return Err(OidcError::Malformed(
                        "the discovery document names another issuer".into(),
                    ));
                }
                let jwks = Jwks::new(discovery.jwks_uri.clone(), self.client.clone());
                jwks.refresh().await?;
                Ok(Discovered { discovery, jwks })
            })
            .await
    }

    /// Starts a sign-in: a fresh `state`, `nonce` and PKCE verifier, and the authorization URL
    /// with the verifier's S256 challenge.
    pub async fn begin(&self) -> Result<Begun, OidcError> {
        let d = self.discovered().await?;
        let (state, nonce, verifier) = (random(), random(), random());
        let challenge = b64(&Sha256::digest(verifier.as_bytes()));
        let mut url = url::Url::parse(&d.discovery.authorization_endpoint)
            .map_err(|e| OidcError::Malformed(e.to_string()))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.config.client_id)
            .append_pair("redirect_uri", &self.config.redirect_url)
            .append_pair("scope", &self.config.scope)
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        Ok(Begun {
            redirect: url.to_string(),
            state,
            nonce,
            verifier,
        })
    }

    /// Exchanges the code for tokens (with the PKCE verifier) and checks the ID token.
    pub async fn finish(
        &self,
        code: &str,
        verifier: &str,
        nonce: &str,
    ) -> Result<Identity, OidcError> {
        let d = self.discovered().await?;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.config.redirect_url.as_str()),
            ("code_verifier", verifier),
        ];
        let mut request = self.client.post(&d.discovery.token_endpoint);
        match &self.config.client_secret {
            Some(secret) => {
                request = request.basic_auth(
                    form_encode(&self.config.client_id),
                    Some(form_encode(secret.expose_secret())),
                );
            }
            None => form.push(("client_id", self.config.client_id.as_str())),
        }
        let tokens: Value = request
            .form(&form)
            .send()
            .await
            .map_err(|e| OidcError::Fetch(e.to_string()))?
            .error_for_status()
            .map_err(|e| OidcError::Token(format!("token request refused: {e}")))?
            .json()
            .await
            .map_err(|e| OidcError::Malformed(e.to_string()))?;
        let id_token = tokens
            .get("id_token")
            .and_then(Value::as_str)
            .ok_or_else(|| OidcError::Token("no id_token in the token response".into()))?;
        self.verify_id_token(d, id_token, nonce).await
    }

    async fn verify_id_token(
        &self,
        d: &Discovered,
        token: &str,
        nonce: &str,
    ) -> Result<Identity, OidcError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| OidcError::Token(e.to_string()))?;
        let keys = d.jwks.key(header.kid.as_deref()).await;
        let mut last = OidcError::Token("no key in the JWKS for this token".into());
        for (alg, key) in keys.iter().filter(|(alg, _)| *alg == header.alg) {
            let mut v = Validation::new(*alg);
            v.set_issuer(&[&d.discovery.issuer]);
            v.set_audience(&[&self.config.client_id]);
            v.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
            v.leeway = 30;
            match jsonwebtoken::decode::<Value>(token, key, &v) {
                Ok(data) => return self.identity(data.claims, nonce),
                Err(e) => last = OidcError::Token(e.to_string()),
            }
        }
        Err(last)
    }

    fn identity(&self, claims: Value, nonce: &str) -> Result<Identity, OidcError> {
        let given = claims.get("nonce").and_then(Value::as_str).unwrap_or("");
        let same = given.len() == nonce.len()
            && given
                .bytes()
                .zip(nonce.bytes())
                .fold(0u8, |a, (x, y)| a | (x ^ y))
                == 0;
        if !same {
            return Err(OidcError::Token("nonce does not match this sign-in".into()));
        }
        let text = |k: &str| claims.get(k).and_then(Value::as_str).map(String::from);
        Ok(Identity {
            sub: text("sub").unwrap_or_default(),
            name: text("name"),
            agency: text(&self.config.agency_claim),
            role: text(&self.config.role_claim),
        })
    }
}

/// `client_secret_basic` form-encodes id and secret before base64 (RFC 6749 §2.3.1).
fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use std::sync::{Arc, Mutex};

    /// A JWKS endpoint whose keys the test changes, as a provider rotating them would.
    async fn serve(set: Arc<Mutex<Value>>, hits: Arc<Mutex<u32>>) -> String {
        let app = axum::Router::new().route(
            "/jwks",
            get(move || {
                let (set, hits) = (set.clone(), hits.clone());
                async move {
                    *hits.lock().unwrap() += 1;
                    axum::Json(set.lock().unwrap().clone())
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}/jwks")
    }

    fn ec_jwk(kid: &str) -> Value {
        // Public halves of P-256 keys generated for this test.
        let (x, y) = match kid {
            "one" => (
                "yGYO0x69swjPOhvv-8DgiLCzz6_EJwBfrEXKpypNflE",
                "fq61NDTN_iW4dvQ5p3CEp-stcOrWk7Su8wT6FnhfZrg",
            ),
            _ => (
                "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
            ),
        };
        serde_json::json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig", "x": x, "y": y})
    }

    #[tokio::test]
    async fn an_unknown_kid_fetches_the_set_again_and_a_retired_key_stops_verifying() {
        let set = Arc::new(Mutex::new(serde_json::json!({"keys": [ec_jwk("one")]})));
        let hits = Arc::new(Mutex::new(0));
        let uri = serve(set.clone(), hits.clone()).await;
        let jwks = Jwks::new(uri, reqwest::Client::new());
        assert_eq!(jwks.key(Some("one")).await.len(), 1);
        assert_eq!(*hits.lock().unwrap(), 1);
        assert_eq!(jwks.key(Some("one")).await.len(), 1, "known: no fetch");
        assert_eq!(*hits.lock().unwrap(), 1);

        // The provider rotates: "two" replaces "one". Within MIN_REFETCH an unknown kid does
        // not fetch again; after it, it does, and "one" is gone.
        *set.lock().unwrap() = serde_json::json!({"keys": [ec_jwk("two")]});
        assert!(jwks.key(Some("two")).await.is_empty());
        assert_eq!(*hits.lock().unwrap(), 1, "no refetch within MIN_REFETCH");
        *jwks.fetched.lock().await = Some(Instant::now() - MIN_REFETCH);
        assert_eq!(jwks.key(Some("two")).await.len(), 1);
        assert_eq!(*hits.lock().unwrap(), 2);
        assert!(
            jwks.get("one").is_none(),
            "the retired key no longer verifies"
        );
    }
}
