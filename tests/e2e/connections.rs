//! Connections that never finish a request: idle, half-open, sending headers or a body by
//! halves. None may hold the gateway's open files or keep it from answering `/healthz`.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::harness::{Env, Gateway};

/// The gateway's open-file limit in these tests: a common default, and the one under which
/// 997 idle connections once made `/healthz` time out ("Too many open files").
const GATEWAY_FILES: u64 = 1024;

fn connector(env: &Env) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(&env.pki.ca).expect("ca");
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.expect("ca pem")).expect("ca cert");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocols")
    .with_root_certificates(roots)
    .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

async fn tls(connector: &TlsConnector, gw: &Gateway) -> Option<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(gw.addr).await.ok()?;
    let name = ServerName::try_from("localhost").expect("name");
    tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
        .await
        .ok()?
        .ok()
}

/// Starts a gateway whose own open-file limit is [`GATEWAY_FILES`], while this test process
/// may open more than that.
async fn gateway(env: &Env, extra: &str) -> Gateway {
    rlimit::increase_nofile_limit(4 * GATEWAY_FILES).expect("raise this process's file limit");
    let config =
        env.config(false)
            .replacen("[database]", &format!("[limits]\n{extra}\n[database]"), 1);
    let gw = Gateway::start(env, env.write_config("weft.toml", &config)).await;
    let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).expect("limits");
    rlimit::prlimit(
        i32::try_from(gw.pid()).expect("pid"),
        rlimit::Resource::NOFILE,
        Some((GATEWAY_FILES, hard)),
        None,
    )
    .expect("limit the gateway's open files");
    gw
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_idle_and_half_open_connections_do_not_lock_out_healthz() {
    let env = Env::new(2).await;
    // The defaults: no limits configured.
    let gw = gateway(&env, "").await;
    let connector = connector(&env);
    // Completed TLS handshakes, then nothing: each once held an open file for good. More than
    // the gateway may open; stop once it stops completing them.
    let mut held_tls = Vec::new();
    let mut refused = 0;
    while held_tls.len() < 1000 && refused < 5 {
        match tls(&connector, &gw).await {
            Some(t) => held_tls.push(t),
            None => refused += 1,
        }
    }
    // TCP connections that never speak, and ones that send the first bytes of a ClientHello.
    let mut held_tcp = Vec::new();
    for n in 0..200 {
        let connect = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(gw.addr));
        if let Ok(Ok(mut tcp)) = connect.await {
            if n % 2 == 0 {
                let _ = tcp.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).await;
            }
            held_tcp.push(tcp);
        }
    }
    assert_eq!(
        held_tls.len(),
        1000,
        "the gateway stopped completing handshakes"
    );
    // Answered, within the client's own 30-second timeout, while every one of them is open.
    for _ in 0..3 {
        let r = gw
            .client()
            .get(gw.url("/healthz"))
            .send()
            .await
            .expect("/healthz answered");
        assert_eq!(r.status(), 200);
    }
    drop((held_tls, held_tcp));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn half_sent_headers_and_bodies_are_cut_off_by_their_timeouts() {
    let env = Env::new(2).await;
    // Idle connections would be kept for a minute: only the header and body timeouts can close
    // these within the test's patience.
    let gw = gateway(
        &env,
        "header_timeout_ms = 1000\nbody_timeout_ms = 1000\nidle_timeout_ms = 60000\n",
    )
    .await;
    let connector = connector(&env);
    let patience = Duration::from_secs(20);

    let mut half = tls(&connector, &gw).await.expect("handshake");
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .expect("write");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(patience, half.read_to_end(&mut rest)).await;
    assert!(
        read.is_ok(),
        "a half-sent request's connection was held open"
    );

    let sw = env.token("sw-1", &env.agency_of("social_care"), "social_worker");
    let mut stalled = tls(&connector, &gw).await.expect("handshake");
    stalled
        .write_all(
            format!(
                "POST /v1/children/search HTTP/1.1\r\nHost: localhost\r\n\
                 Authorization: Bearer {sw}\r\nContent-Type: application/json\r\n\
                 Content-Length: 100\r\n\r\n{{\"purpose\":"
            )
            .as_bytes(),
        )
        .await
        .expect("write");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(patience, stalled.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "a stalled body's connection was held open");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );

    let (status, _) = gw.get("/healthz", "").await;
    assert_eq!(status, 200);
    gw.stop().await;
}
