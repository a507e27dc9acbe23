//! One proxied connection: connect upstream once data may flow, then copy
//! each way until both ways end, either side breaks, or a cut resets both.
//!
//! Each way is a reader and a writer joined by a short queue: the reader
//! stamps each chunk with the time it may leave (its arrival plus the latency
//! in force then) and the writer sleeps until that time, so latency delays
//! data without cutting throughput, as a long link does. A blackhole stops
//! reading and writing alike: the kernel buffers fill and the peers' writes
//! block, as on a link that drops every packet, and once healed what was held
//! flows on, as TCP's retransmissions would deliver it. An end of stream on
//! one side is passed on as a half-close of the other; an error on either
//! side, or a cut, resets both (`SO_LINGER = 0`), so each peer reads
//! `connection reset`. A cut is counted before the sockets close, so a peer
//! that sees the reset finds it counted.

use std::io;

use bytes::Bytes;
use futures_util::future::try_join;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until};

use super::ProxyShared;
use super::conditions::Controls;

/// Largest chunk read at once.
const CHUNK: usize = 16 * 1024;
/// Chunks held in flight each way (read, waiting out their latency).
const IN_FLIGHT: usize = 64;

/// Relays `client` to the proxy's upstream until the connection ends or
/// `cuts` moves.
pub(crate) async fn relay(
    mut client: TcpStream,
    shared: &ProxyShared,
    mut cuts: watch::Receiver<u64>,
) {
    let (upstream, controls) = (shared.upstream.as_str(), &shared.controls);
    let connect = async {
        // A blackholed link does not reach upstream either.
        controls.until_flowing().await;
        TcpStream::connect(upstream).await
    };
    let mut server = tokio::select! {
        connected = connect => match connected {
            Ok(server) => server,
            Err(e) => {
                tracing::debug!(%upstream, error = %e, "proxy could not reach upstream; resetting the client");
                reset(&client);
                return;
            }
        },
        _ = cuts.changed() => {
            shared.count_cut();
            reset(&client);
            return;
        }
    };
    for stream in [&client, &server] {
        // Latency comes from the proxy's settings, not from Nagle.
        let _ = stream.set_nodelay(true);
    }
    let (client_read, client_write) = client.split();
    let (server_read, server_write) = server.split();
    // Both ways reaching their end of stream is the one clean close.
    let closed = tokio::select! {
        copied = try_join(
            pipe(client_read, server_write, controls),
            pipe(server_read, client_write, controls),
        ) => copied.is_ok(),
        _ = cuts.changed() => {
            shared.count_cut();
            false
        }
    };
    if !closed {
        reset(&client);
        reset(&server);
    }
}

/// Copies `from` to `to` through the latency queue until `from` ends (then
/// half-closes `to`) or either side fails.
async fn pipe(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    controls: &Controls,
) -> io::Result<()> {
    let (queue, mut queued) = mpsc::channel::<(Instant, Bytes)>(IN_FLIGHT);
    let reading = async move {
        let mut buffer = vec![0; CHUNK];
        loop {
            controls.until_flowing().await;
            let read = from.read(&mut buffer).await?;
            if read == 0 {
                // Dropping the queue tells the writer to half-close.
                return Ok(());
            }
            let due = Instant::now() + controls.latency();
            let chunk = Bytes::copy_from_slice(&buffer[..read]);
            if queue.send((due, chunk)).await.is_err() {
                return Ok(());
            }
        }
    };
    let writing = async move {
        while let Some((due, chunk)) = queued.recv().await {
            sleep_until(due).await;
            controls.until_flowing().await;
            to.write_all(&chunk).await?;
        }
        to.shutdown().await
    };
    try_join(reading, writing).await.map(drop)
}

/// Makes the coming close of `stream` a TCP reset.
fn reset(stream: &TcpStream) {
    if let Err(e) = stream.set_zero_linger() {
        tracing::debug!(error = %e, "could not set SO_LINGER on a proxied connection");
    }
}
