//! The fault proxy over real sockets on 127.0.0.1, between a raw TCP client
//! and an upstream server of the test's own, under a paused clock (one test,
//! about when a cut is counted, on two threads instead): it
//! forwards both ways (half-close included), a cut resets both sides, a
//! refusal is a real `connection refused` until it ends, a blackhole stalls
//! reads until healed, latency delays each way; and its HTTP control API.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

use callguard_mocks::{FaultProxy, MockServer};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

use crate::common::{client, start};

/// An upstream that echoes every connection until its client half-closes.
async fn echo_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
                let _ = write.shutdown().await;
            });
        }
    });
    addr
}

/// An upstream that hands each connection it accepts to the test.
async fn holding_upstream() -> (SocketAddr, mpsc::UnboundedReceiver<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (accepted, streams) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            if accepted.send(stream).is_err() {
                return;
            }
        }
    });
    (addr, streams)
}

async fn proxy_to(upstream: SocketAddr) -> FaultProxy {
    FaultProxy::start(upstream.to_string()).await.unwrap()
}

/// Sends `message` and reads the echo back.
async fn round_trip(stream: &mut TcpStream, message: &[u8]) -> Vec<u8> {
    stream.write_all(message).await.unwrap();
    let mut echoed = vec![0; message.len()];
    stream.read_exact(&mut echoed).await.unwrap();
    echoed
}

/// Connects through the proxy, retrying every 10 ms while refused; returns
/// the stream and when the first attempt that got through was made.
async fn connect_when_accepted(addr: SocketAddr) -> (TcpStream, Instant) {
    loop {
        let attempt = Instant::now();
        match TcpStream::connect(addr).await {
            Ok(stream) => return (stream, attempt),
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("connect: {e}"),
        }
    }
}

fn refused(result: std::io::Result<TcpStream>) -> bool {
    matches!(result, Err(e) if e.kind() == ErrorKind::ConnectionRefused)
}

#[tokio::test(start_paused = true)]
async fn forwards_both_ways_and_passes_a_half_close_on() {
    let proxy = proxy_to(echo_upstream().await).await;
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut stream, b"hello").await, b"hello");
    let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
    assert_eq!(round_trip(&mut stream, &big).await, big);
    stream.shutdown().await.unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    drop(stream);
    let state = proxy.state();
    assert_eq!((state.accepted, state.cut), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn a_cut_resets_both_sides_and_new_connections_are_taken_at_once() {
    let (upstream, mut accepted) = holding_upstream().await;
    let proxy = proxy_to(upstream).await;
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    client.write_all(b"hi").await.unwrap();
    let mut server = accepted.recv().await.unwrap();
    let mut greeting = [0; 2];
    server.read_exact(&mut greeting).await.unwrap();

    proxy.cut();
    let mut buffer = [0; 8];
    let client_end = client.read(&mut buffer).await.unwrap_err();
    assert_eq!(client_end.kind(), ErrorKind::ConnectionReset);
    let server_end = server.read(&mut buffer).await.unwrap_err();
    assert_eq!(server_end.kind(), ErrorKind::ConnectionReset);
    let state = proxy.state();
    assert_eq!((state.cut, state.open), (1, 0));

    let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
    again.write_all(b"back").await.unwrap();
    let mut server = accepted.recv().await.unwrap();
    let mut back = [0; 4];
    server.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"back");
}

/// On two worker threads the client may read its reset while the proxy's
/// task is still ending the connection: the cut must be counted by then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_is_counted_before_the_client_reads_its_reset() {
    let proxy = proxy_to(echo_upstream().await).await;
    for cuts in 1..=200 {
        let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut client, b"x").await, b"x");
        proxy.cut();
        let mut buffer = [0; 1];
        assert_eq!(
            client.read(&mut buffer).await.unwrap_err().kind(),
            ErrorKind::ConnectionReset
        );
        assert_eq!(
            proxy.state().cut,
            cuts,
            "the reset was read before the cut was counted"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_refusal_is_a_real_refusal_until_it_ends_and_open_connections_go_on() {
    let proxy = proxy_to(echo_upstream().await).await;
    let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut open, b"1").await, b"1");

    let start = Instant::now();
    proxy.refuse(Some(Duration::from_secs(5)));
    tokio::task::yield_now().await;
    assert!(refused(TcpStream::connect(proxy.addr()).await));
    assert_eq!(round_trip(&mut open, b"2").await, b"2");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(refused(TcpStream::connect(proxy.addr()).await));
    let refuse = proxy.state().conditions.refuse.unwrap();
    assert_eq!(refuse.ends_in, Some(Duration::from_secs(1).into()));

    let (mut stream, taken) = connect_when_accepted(proxy.addr()).await;
    let waited = taken - start;
    assert!(
        waited >= Duration::from_secs(5) && waited <= Duration::from_millis(5_020),
        "accepted again after {waited:?}"
    );
    assert_eq!(round_trip(&mut stream, b"3").await, b"3");
    assert_eq!(proxy.state().conditions.refuse, None);
}

#[tokio::test(start_paused = true)]
async fn a_lasting_cut_resets_and_refuses_until_it_ends() {
    let (upstream, mut accepted) = holding_upstream().await;
    let proxy = proxy_to(upstream).await;
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    client.write_all(b"x").await.unwrap();
    let _server = accepted.recv().await.unwrap();

    let start = Instant::now();
    proxy.cut_for(Duration::from_secs(5));
    let mut buffer = [0; 1];
    assert_eq!(
        client.read(&mut buffer).await.unwrap_err().kind(),
        ErrorKind::ConnectionReset
    );
    let (_stream, taken) = connect_when_accepted(proxy.addr()).await;
    let waited = taken - start;
    assert!(
        waited >= Duration::from_secs(5) && waited <= Duration::from_millis(5_020),
        "accepted again after {waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_blackhole_stalls_reads_until_healed_then_what_was_held_arrives() {
    let (upstream, mut accepted) = holding_upstream().await;
    let proxy = proxy_to(upstream).await;
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    client.write_all(b"a").await.unwrap();
    let mut server = accepted.recv().await.unwrap();
    let mut one = [0; 1];
    server.read_exact(&mut one).await.unwrap();

    proxy.blackhole(None);
    tokio::task::yield_now().await;
    server.write_all(b"b").await.unwrap();
    client.write_all(b"c").await.unwrap();
    // Each side's read times out: nothing passes either way.
    assert!(
        timeout(Duration::from_secs(30), client.read(&mut one))
            .await
            .is_err()
    );
    assert!(
        timeout(Duration::from_secs(1), server.read(&mut one))
            .await
            .is_err()
    );
    // A new connection is accepted, but never reaches upstream.
    let mut late = TcpStream::connect(proxy.addr()).await.unwrap();
    late.write_all(b"d").await.unwrap();
    assert!(
        timeout(Duration::from_secs(1), accepted.recv())
            .await
            .is_err()
    );
    assert!(
        timeout(Duration::from_secs(1), late.read(&mut one))
            .await
            .is_err()
    );
    assert_eq!(proxy.state().open, 2);

    proxy.heal();
    client.read_exact(&mut one).await.unwrap();
    assert_eq!(&one, b"b");
    server.read_exact(&mut one).await.unwrap();
    assert_eq!(&one, b"c");
    let mut reached = accepted.recv().await.unwrap();
    reached.read_exact(&mut one).await.unwrap();
    assert_eq!(&one, b"d");
}

#[tokio::test(start_paused = true)]
async fn a_blackhole_with_an_end_passes_by_itself() {
    let proxy = proxy_to(echo_upstream().await).await;
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    let start = Instant::now();
    proxy.blackhole(Some(Duration::from_secs(3)));
    assert_eq!(round_trip(&mut stream, b"held").await, b"held");
    assert_eq!(start.elapsed(), Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn latency_delays_each_way() {
    let proxy = proxy_to(echo_upstream().await).await;
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut stream, b"warm").await, b"warm");

    proxy.set_latency(Duration::from_millis(200), Some(Duration::from_secs(10)));
    let start = Instant::now();
    assert_eq!(round_trip(&mut stream, b"slow").await, b"slow");
    assert_eq!(start.elapsed(), Duration::from_millis(400));

    tokio::time::sleep(Duration::from_secs(10)).await;
    let start = Instant::now();
    assert_eq!(round_trip(&mut stream, b"fast").await, b"fast");
    assert_eq!(start.elapsed(), Duration::ZERO);
}

async fn post(server: &MockServer, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut request = client().post(format!("{}/_control/proxies/{path}", server.url()));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

#[tokio::test(start_paused = true)]
async fn the_control_api_drives_an_attached_proxy_and_names_bad_fields() {
    let server = start().await;
    let upstream = echo_upstream().await;
    let proxy = proxy_to(upstream).await;
    server.attach_proxy("echo", &proxy).unwrap();
    assert!(server.attach_proxy("echo", &proxy).is_err());

    let (status, state) = post(&server, "echo/refuse", Some(json!({"for": "1h"}))).await;
    assert_eq!(status, StatusCode::OK, "{state}");
    assert_eq!(state["refuse"], json!({"ends_in": "1h"}));
    assert_eq!(state["upstream"], upstream.to_string());
    // The proxy's own task closes the socket; wait for it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !refused(TcpStream::connect(proxy.addr()).await) {
        assert!(Instant::now() < deadline, "never refused");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let (status, state) = post(&server, "echo/heal", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(state["refuse"], Value::Null);
    let (mut stream, _) = connect_when_accepted(proxy.addr()).await;
    assert_eq!(round_trip(&mut stream, b"ok").await, b"ok");

    let (_, state) = post(&server, "echo/latency", Some(json!({"latency": "50ms"}))).await;
    assert_eq!(state["latency"], json!({"latency": "50ms"}));
    let (_, state) = post(&server, "echo/blackhole", None).await;
    assert_eq!(state["blackhole"], json!({}));
    let (status, _) = post(&server, "echo/cut", Some(json!({}))).await;
    assert_eq!(status, StatusCode::OK);
    let mut buffer = [0; 1];
    assert_eq!(
        stream.read(&mut buffer).await.unwrap_err().kind(),
        ErrorKind::ConnectionReset
    );

    let listed: Value = client()
        .get(format!("{}/_control/proxies", server.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let echo = &listed["proxies"]["echo"];
    assert_eq!(
        (&echo["cut"], &echo["open"]),
        (&json!(1), &json!(0)),
        "{listed}"
    );

    for (path, body, error) in [
        (
            "echo/refuse",
            json!({"for": "0s"}),
            "invalid proxy request: for must be",
        ),
        (
            "echo/blackhole",
            json!({"for": "soon"}),
            "invalid proxy request: for: invalid duration",
        ),
        (
            "echo/latency",
            json!({}),
            "invalid proxy request: missing field `latency`",
        ),
        (
            "echo/cut",
            json!({"after": "1s"}),
            "invalid proxy request: after: unknown field `after`",
        ),
        (
            "echo/heal",
            json!({"for": "1s"}),
            "invalid proxy request: for: unknown field `for`",
        ),
    ] {
        let (status, answer) = post(&server, path, Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {answer}");
        let message = answer["error"].as_str().unwrap();
        assert!(message.starts_with(error), "{path}: {message}");
    }
    let (status, answer) = post(&server, "postgres/cut", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        answer["error"],
        r#"no proxy named "postgres"; proxies: ["echo"]"#
    );
}
