//! Throwaway credentials for the demo, the benchmark and the tests: a certificate authority,
//! a server certificate for loopback, client certificates for calling systems, and an ES256 key
//! that signs practitioner tokens. Real deployments bring their own; nothing here is used by
//! `weft serve`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
};
use serde_json::json;

/// File locations of a generated set of credentials.
pub struct DevPki {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub token_public_key: PathBuf,
    pub issuer: TokenIssuer,
    ca_cert: rcgen::Certificate,
    ca_key: KeyPair,
}

/// A client certificate and key for one calling system.
pub struct ClientCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl DevPki {
    /// Generates everything into `dir`.
    pub fn generate(dir: &Path) -> anyhow::Result<DevPki> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "Weft development CA");
        let ca_cert = ca.self_signed(&ca_key)?;

        let server_key = KeyPair::generate()?;
        let mut server = CertificateParams::new(vec!["localhost".to_string()])?;
        server
            .subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        server.distinguished_name.push(DnType::CommonName, "weft");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server.signed_by(&server_key, &ca_cert, &ca_key)?;

        let signing = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;

        let write = |name: &str, text: &str| -> anyhow::Result<PathBuf> {
            let p = dir.join(name);
            std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
            Ok(p)
        };
        let pki = DevPki {
            dir: dir.to_path_buf(),
            ca: write("ca.pem", &ca_cert.pem())?,
            server_cert: write("server.pem", &server_cert.pem())?,
            server_key: write("server-key.pem", &server_key.serialize_pem())?,
            token_public_key: write("token-signing.pub.pem", &signing.public_key_pem())?,
            issuer: TokenIssuer {
                key: EncodingKey::from_ec_pem(signing.serialize_pem().as_bytes())?,
                kid: "dev-1".into(),
                issuer: "https://weft.invalid/dev-issuer".into(),
                audience: "weft".into(),
            },
            ca_cert,
            ca_key,
        };
        Ok(pki)
    }

    /// A client certificate for a calling system, signed by this CA.
    pub fn client(&self, system: &str) -> anyhow::Result<ClientCert> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, system);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.ca_cert, &self.ca_key)?;
        Ok(ClientCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The `[auth]` section of a configuration that trusts this issuer.
    pub fn auth_toml(&self) -> String {
        format!(
            "[auth]\nissuer = {:?}\naudience = {:?}\n\n[[auth.keys]]\nkid = {:?}\nalgorithm = \"ES256\"\npublic_key = {:?}\n",
            self.issuer.issuer,
            self.issuer.audience,
            self.issuer.kid,
            self.token_public_key.display().to_string()
        )
    }
}

/// Signs practitioner tokens the way an identity provider would.
pub struct TokenIssuer {
    key: EncodingKey,
    pub kid: String,
    pub issuer: String,
    pub audience: String,
}

impl TokenIssuer {
    /// A token for a practitioner, valid for `ttl_secs`.
    pub fn mint(&self, user: &str, agency: &str, role: &str, ttl_secs: i64) -> String {
        let now = chrono::Utc::now().timestamp();
        self.sign(json!({
            "sub": user,
            "agency": agency,
            "role": role,
            "iss": self.issuer,
            "aud": self.audience,
            "iat": now,
            "nbf": now,
            "exp": now + ttl_secs,
        }))
    }

    /// Signs arbitrary claims, for tests of what the verifier refuses. The signature is put in
    /// its low-S form, the only one the gateway accepts.
    pub fn sign(&self, claims: serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        // Signing with a freshly generated key of the right type cannot fail.
        let token = jsonwebtoken::encode(&header, &claims, &self.key).unwrap_or_default();
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let Some((signed, signature)) = token.rsplit_once('.') else {
            return token;
        };
        let Ok(mut signature) = engine.decode(signature) else {
            return token;
        };
        crate::pipeline::authenticate::to_low_s(&mut signature);
        format!("{signed}.{}", engine.encode(signature))
    }
}
