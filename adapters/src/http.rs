//! What the two HTTP adapters share: one pooled client per source, and a GET that hands back the
//! status and body so each protocol can judge them by its own rules.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION};

use crate::{http_error, AdapterError};

/// Short, so that a source that is down is reported as such well inside the caller's deadline
/// instead of using it all up waiting for a SYN-ACK.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A backstop only: the gateway applies each source's own deadline. This stops a request whose
/// caller forgot one from holding a pooled connection for ever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Builds the client a source keeps for its lifetime, so connections (and TLS sessions) are
/// reused across requests.
pub(crate) fn client(
    accept: &'static str,
    bearer_token: Option<&str>,
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
    reqwest::Client::builder()
        .use_rustls_tls()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .default_headers(headers)
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
