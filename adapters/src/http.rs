//! What the two HTTP adapters share: one pooled client per source (authenticated by bearer
//! token, client certificate, or both), and a GET that hands back the status and body so each
//! protocol can judge them by its own rules.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION};

use crate::{http_error, AdapterError};

/// Short, so that a source that is down is reported as such well inside the caller's deadline
/// instead of using it all up waiting for a SYN-ACK.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A backstop only: the gateway applies each source's own deadline. This stops a request whose
/// caller forgot one from holding a pooled connection for ever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Mutual TLS towards a source: the certificate Weft presents (a force's API or the NHS Spine
/// identifies callers this way), and optionally the CA the source's own certificate must chain
/// to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClientTls {
    /// PEM certificate chain Weft presents, leaf first.
    pub client_cert: PathBuf,
    /// PEM private key of that certificate (PKCS#8, PKCS#1 or SEC1).
    pub client_key: PathBuf,
    /// PEM bundle of CAs to trust for the source's server certificate. When set, only these
    /// are trusted (a private CA for a partner's network); otherwise the public web roots.
    #[serde(default)]
    pub ca: Option<PathBuf>,
}

impl ClientTls {
    /// Makes relative paths relative to `base` (the configuration file's folder).
    pub fn resolve(&mut self, base: &Path) {
        for p in [&mut self.client_cert, &mut self.client_key] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if let Some(ca) = &mut self.ca {
            if ca.is_relative() {
                *ca = base.join(&*ca);
            }
        }
    }

    fn apply(
        &self,
        builder: reqwest::ClientBuilder,
    ) -> Result<reqwest::ClientBuilder, AdapterError> {
        let read = |what: &str, p: &Path| {
            std::fs::read(p)
                .map_err(|e| AdapterError::Config(format!("tls.{what}: {}: {e}", p.display())))
        };
        let mut pem = read("client_cert", &self.client_cert)?;
        pem.push(b'\n');
        pem.extend(read("client_key", &self.client_key)?);
        let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
            AdapterError::Config(format!(
                "tls.client_cert / tls.client_key: {}",
                crate::error_chain(&e)
            ))
        })?;
        let mut builder = builder.identity(identity);
        if let Some(ca) = &self.ca {
            let roots = reqwest::Certificate::from_pem_bundle(&read("ca", ca)?)
                .map_err(|e| AdapterError::Config(format!("tls.ca: {}", crate::error_chain(&e))))?;
            if roots.is_empty() {
                return Err(AdapterError::Config(format!(
                    "tls.ca: no certificate in {}",
                    ca.display()
                )));
            }
            builder = builder.tls_built_in_root_certs(false);
            for root in roots {
                builder = builder.add_root_certificate(root);
            }
        }
        Ok(builder)
    }
}

/// Builds the client a source keeps for its lifetime, so connections (and TLS sessions) are
/// reused across requests.
pub(crate) fn client(
    accept: &'static str,
    bearer_token: Option<&str>,
    tls: Option<&ClientTls>,
) -> Result<reqwest::Client, AdapterError> {
    let mut headers = HeaderMap::new();
    headers.insert(ACCEPT, HeaderValue::from_static(accept));
    if let Some(token) = bearer_token {
        let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            AdapterError::Config("bearer token is not a valid HTTP header value".into())
        })?;
        // Keeps the token out of Debug output and HTTP/2 header compression tables.
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
    }
    // A partner system answers for itself: a redirect is not followed (the 3xx is the answer,
    // and the protocol reports it as its status), so the gateway never takes records from, or
    // presents its client certificate to, a host its configuration does not name.
    let builder = reqwest::Client::builder()
        .use_rustls_tls()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .default_headers(headers);
    let builder = match tls {
        Some(tls) => tls.apply(builder)?,
        None => builder,
    };
    builder
        .build()
        .map_err(|e| AdapterError::Config(crate::error_chain(&e)))
}

/// A response read to the end. The body is kept as bytes: whether it must be JSON, and what an
/// error status means, depends on the protocol (a FHIR `OperationOutcome` may come with any
/// status).
pub(crate) struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as JSON, or a protocol error that names the parse failure (never the body,
    /// which may hold personal data).
    pub fn json(&self) -> Result<serde_json::Value, AdapterError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| AdapterError::Protocol(format!("response is not JSON: {e}")))
    }
}

pub(crate) async fn get(client: &reqwest::Client, url: url::Url) -> Result<Response, AdapterError> {
    let response = client.get(url).send().await.map_err(http_error)?;
    let status = response.status().as_u16();
    let body = response.bytes().await.map_err(http_error)?;
    Ok(Response {
        status,
        body: body.to_vec(),
    })
}
