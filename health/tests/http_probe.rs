//! `HttpProbe` against a tiny HTTP server on 127.0.0.1.

use std::time::Duration;

use callguard_core::{ErrorCategory, ErrorKind};
use callguard_health::{HttpProbe, Probe};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Answers one request with `response` and hands back the request's head.
async fn serve_once(response: &'static str) -> (reqwest::Url, JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = socket.read(&mut buf).await.unwrap();
            assert!(n > 0, "client closed before sending a request");
            head.extend_from_slice(&buf[..n]);
        }
        socket.write_all(response.as_bytes()).await.unwrap();
        socket.shutdown().await.unwrap();
        String::from_utf8(head).unwrap()
    });
    (format!("http://{addr}/api").parse().unwrap(), server)
}

#[tokio::test]
async fn a_2xx_is_healthy_and_the_path_is_base_slash_health() {
    let (base, server) = serve_once("HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n").await;
    let probe = HttpProbe::new(reqwest::Client::new(), &base).unwrap();
    assert_eq!(probe.url().path(), "/api/health");
    probe.check().await.unwrap();
    let head = server.await.unwrap();
    assert!(head.starts_with("GET /api/health HTTP/1.1\r\n"), "{head}");
}

#[tokio::test]
async fn a_503_is_a_transient_failure_with_its_retry_after() {
    let (base, server) = serve_once(
        "HTTP/1.1 503 Service Unavailable\r\nretry-after: 7\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    )
    .await;
    let probe = HttpProbe::new(reqwest::Client::new(), &base).unwrap();
    let err = probe.check().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert_eq!(err.category(), ErrorCategory::Transient);
    assert_eq!(err.status(), Some(503));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    server.await.unwrap();
}

#[tokio::test]
async fn a_401_is_permanent_and_counts_toward_the_breaker() {
    let (base, server) =
        serve_once("HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await;
    let probe = HttpProbe::new(reqwest::Client::new(), &base).unwrap();
    let err = probe.check().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized);
    assert!(err.counts_toward_breaker());
    server.await.unwrap();
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_failure() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let base = format!("http://{addr}/").parse().unwrap();
    let probe = HttpProbe::new(reqwest::Client::new(), &base).unwrap();
    assert_eq!(probe.url().path(), "/health");
    let err = probe.check().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connect);
    assert!(err.is_transient());
}

#[test]
fn a_url_without_a_path_is_refused() {
    let base = "mailto:ops@example.invalid".parse().unwrap();
    assert!(HttpProbe::new(reqwest::Client::new(), &base).is_err());
}
