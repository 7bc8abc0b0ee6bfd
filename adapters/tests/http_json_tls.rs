//! `http_json` authenticating to its source by client certificate: a loopback HTTPS server that
//! requires one, with a private CA, as a force's API on a partner network would.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
};
use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use weft_adapters::http_json::{FieldMapping, HttpJsonAdapter, HttpJsonConfig, IdentityPointers};
use weft_adapters::{Adapter, AdapterConfig, AdapterError, ClientTls};

struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Pki {
    fn new() -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Force network CA");
        let ca = params.self_signed(&ca_key).unwrap();
        Pki {
            dir: tempfile::tempdir().unwrap(),
            ca,
            ca_key,
        }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// A certificate signed by this CA: (cert PEM, key PEM).
    fn issue(&self, cn: &str, server: bool) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = if server {
            let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
            p.subject_alt_names
                .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            p
        } else {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            p
        };
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn ca_path(&self) -> PathBuf {
        self.write("ca.pem", &self.ca.pem())
    }
}

fn certs(pem: &str) -> Vec<CertificateDer<'static>> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Serves one JSON record over HTTPS to callers presenting a certificate from the CA, and
/// reports each request's head (to check the bearer token went along too). Returns the base URL.
async fn serve(pki: &Pki, record: &'static str) -> (String, mpsc::UnboundedReceiver<String>) {
    let (cert, key) = pki.issue("police-api", true);
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .unwrap();
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            certs(&cert),
            rustls_pemfile::private_key(&mut key.as_bytes())
                .unwrap()
                .unwrap(),
        )
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                // A caller without a certificate fails here, as the server intends.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{record}",
                    record.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (base, rx)
}

fn config(base: &str, tls: Option<ClientTls>) -> HttpJsonConfig {
    HttpJsonConfig {
        record_url: format!("{base}/people/{{id}}"),
        list_url: None,
        list_pointer: String::new(),
        bearer_token: Some("force-token".into()),
        tls,
        identity: IdentityPointers {
            local_id: "/personId".into(),
            identifiers: Default::default(),
            given_name: None,
            family_name: Some("/surname".into()),
            birth_date: None,
            sex: None,
            postcode: None,
            ..IdentityPointers::default()
        },
        fields: vec![FieldMapping {
            pointer: "/surname".into(),
            field: "family_name".into(),
            category: "identity.core".into(),
        }],
    }
}

const RECORD: &str = r#"{"personId": "P-1", "surname": "Bloggs"}"#;

fn client_tls(pki: &Pki, dir: &Path) -> ClientTls {
    let (cert, key) = pki.issue("weft-gateway", false);
    std::fs::write(dir.join("weft.pem"), cert).unwrap();
    std::fs::write(dir.join("weft-key.pem"), key).unwrap();
    ClientTls {
        client_cert: "weft.pem".into(),
        client_key: "weft-key.pem".into(),
        ca: Some("ca.pem".into()),
    }
}

#[tokio::test]
async fn client_certificate_and_bearer_token_reach_a_source_that_requires_them() {
    let pki = Pki::new();
    pki.ca_path();
    let (base, mut requests) = serve(&pki, RECORD).await;
    let mut tls = client_tls(&pki, pki.dir.path());
    // As the configuration loader does: paths relative to the configuration file.
    tls.resolve(pki.dir.path());
    let a = HttpJsonAdapter::new(config(&base, Some(tls))).unwrap();
    let items = a.fetch("P-1").await.unwrap().unwrap();
    assert_eq!(items[0].value, "Bloggs");
    let head = requests.recv().await.unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("authorization: bearer force-token"),
        "{head}"
    );
}

#[tokio::test]
async fn without_a_client_certificate_the_source_is_unreachable() {
    let pki = Pki::new();
    let ca = pki.ca_path();
    let (base, _requests) = serve(&pki, RECORD).await;
    // Presenting no certificate: the handshake is refused.
    let a = HttpJsonAdapter::new(config(&base, None)).unwrap();
    let err = a.fetch("P-1").await.unwrap_err();
    assert!(matches!(err, AdapterError::Connect(_)), "{err:?}");

    // A certificate from another CA is refused too.
    let other = Pki::new();
    let mut tls = client_tls(&other, other.dir.path());
    tls.resolve(other.dir.path());
    tls.ca = Some(ca);
    let a = HttpJsonAdapter::new(config(&base, Some(tls))).unwrap();
    let err = a.fetch("P-1").await.unwrap_err();
    assert_eq!(err.reason(), "connection_failed", "{err:?}");
}

#[test]
fn missing_or_mismatched_files_are_configuration_errors() {
    let pki = Pki::new();
    pki.ca_path();
    let dir = pki.dir.path();
    let missing = ClientTls {
        client_cert: dir.join("nope.pem"),
        client_key: dir.join("nope-key.pem"),
        ca: None,
    };
    let err = HttpJsonAdapter::new(config("https://127.0.0.1:1", Some(missing)))
        .err()
        .unwrap();
    assert!(matches!(err, AdapterError::Config(_)), "{err:?}");
    assert!(err.to_string().contains("tls.client_cert"), "{err}");

    // A CA file with no certificate in it.
    let (cert, key) = pki.issue("a", false);
    let bad = ClientTls {
        client_cert: pki.write("a.pem", &cert),
        client_key: pki.write("a-key.pem", &key),
        ca: Some(pki.write("empty.pem", "")),
    };
    let err = HttpJsonAdapter::new(config("https://127.0.0.1:1", Some(bad)))
        .err()
        .unwrap();
    assert!(err.to_string().contains("tls.ca"), "{err}");
    // A key file with no key in it.
    let bad = ClientTls {
        client_cert: pki.write("a.pem", &cert),
        client_key: pki.write("empty-key.pem", ""),
        ca: None,
    };
    assert!(HttpJsonAdapter::new(config("https://127.0.0.1:1", Some(bad))).is_err());
}

#[test]
fn tls_settings_read_from_the_configuration_file() {
    let text = r#"
        kind = "http_json"
        record_url = "https://police.example/api/people/{id}"
        bearer_token = "t"
        [tls]
        client_cert = "certs/weft.pem"
        client_key = "certs/weft-key.pem"
        ca = "certs/force-ca.pem"
        [identity]
        local_id = "/personId"
        [[fields]]
        pointer = "/surname"
        field = "family_name"
        category = "identity.core"
    "#;
    let config: AdapterConfig = toml::from_str(text).unwrap();
    let AdapterConfig::HttpJson(c) = config else {
        panic!("http_json")
    };
    let mut tls = c.tls.unwrap();
    tls.resolve(Path::new("/etc/weft"));
    assert_eq!(tls.client_cert, Path::new("/etc/weft/certs/weft.pem"));
    assert_eq!(
        tls.ca.as_deref(),
        Some(Path::new("/etc/weft/certs/force-ca.pem"))
    );
}
