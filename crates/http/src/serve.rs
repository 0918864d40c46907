//! The server loop every GoZon server runs, and what it bounds: how long a client may take to
//! send a request head and a whole body, how large a head may be, how many connections one
//! client and all clients together may hold, and how long in-flight requests may take to finish
//! once the server is told to stop. HTTP/1.1 only.
//!
//! What the HTTP library answers by itself — a head it cannot parse (400), one too large (431)
//! — is answered as every other refusal is: an RFC 9457 problem ([`ProblemsOnly`]).

use crate::{Problem, client::TrustedProxies};
use axum::{Router, body::Body, extract::Request, http::StatusCode};
use bytes::Bytes;
use http_body::Frame;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use std::{
    collections::HashMap,
    net::IpAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll, ready},
    time::Duration,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpListener,
    time::{Instant, Sleep},
};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// How long in-flight requests may take to finish once a server is told to stop.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Longest a client may take to send a request's line and headers — and longest an idle
/// keep-alive connection stays open. A stalled or silent client cannot pin a connection longer.
/// (The gateway's pooled connections to the services idle out sooner, see `gozon_gateway`.)
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(15);

/// Longest a client may take to send a request's whole body, however it trickles in; then the
/// request gets a 408.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(15);

/// Largest request head (request line and headers) a server buffers; beyond it, a 431.
pub const HEAD_LIMIT_BYTES: usize = 16 * 1024;

/// How many connections a server holds open at once: in all, and from one client (by its TCP
/// peer, unless that is a trusted proxy, whose clients cannot be told apart at this level). A
/// connection beyond either is closed as soon as it is accepted.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectionLimits {
    /// Most connections this server holds open at once.
    #[arg(long, env = "HTTP_MAX_CONNECTIONS", default_value_t = 4096)]
    pub http_max_connections: usize,
    /// Most connections one client address holds open at once (0: no limit per client).
    #[arg(long, env = "HTTP_MAX_CONNECTIONS_PER_CLIENT", default_value_t = 256)]
    pub http_max_connections_per_client: usize,
}

/// Serves `router` on `listener` until `stop` is cancelled, then lets in-flight requests finish
/// for up to [`SHUTDOWN_GRACE`]: a stream that never ends (a proxied event stream, a stalled
/// client) cannot hold the process forever. The connections of a proxy in `trusted` are not
/// counted per client.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: &ConnectionLimits,
    trusted: &TrustedProxies,
    stop: CancellationToken,
) -> std::io::Result<()> {
    for reason in ["total", "per_client"] {
        metrics::counter!("http_connections_refused_total", "reason" => reason).increment(0);
    }
    let router = router.layer(axum::middleware::map_request(whole_body_deadline));
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(HEAD_LIMIT_BYTES);
    let connections = GracefulShutdown::new();
    let open = Open::default();
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, say: wait a little rather than spin.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let per_client = (limits.http_max_connections_per_client > 0
            && !trusted.contains(peer.ip()))
        .then_some(limits.http_max_connections_per_client);
        let Some(held) = open.admit(peer.ip(), limits.http_max_connections, per_client) else {
            continue; // dropped: closed at once
        };
        let _ = stream.set_nodelay(true);
        // The peer's address, for `X-Forwarded-For` and the limits per client.
        let service = TowerToHyperService::new(router.clone().map_request(
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                request
            },
        ));
        let io = TokioIo::new(ProblemsOnly::new(stream));
        let connection = connections.watch(http1.serve_connection(io, service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection closed with an error");
            }
            drop(held);
        });
    }
    drop(listener);
    tokio::select! {
        _ = connections.shutdown() => {}
        _ = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "requests still open after the grace period; closing them");
        }
    }
    Ok(())
}

/// The connections open now: in all, and per client address.
#[derive(Debug, Clone, Default)]
struct Open(Arc<Mutex<(usize, HashMap<IpAddr, usize>)>>);

impl Open {
    /// A place for one more connection of `client`, held until the returned guard drops; `None`
    /// (and counted) if that would exceed `most` in all or `per_client` for it.
    fn admit(&self, client: IpAddr, most: usize, per_client: Option<usize>) -> Option<Held> {
        let mut open = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if open.0 >= most {
            metrics::counter!("http_connections_refused_total", "reason" => "total").increment(1);
            return None;
        }
        let mine = open.1.get(&client).copied().unwrap_or(0);
        if per_client.is_some_and(|limit| mine >= limit) {
            metrics::counter!("http_connections_refused_total", "reason" => "per_client")
                .increment(1);
            return None;
        }
        open.0 += 1;
        *open.1.entry(client).or_default() += 1;
        Some(Held {
            open: self.clone(),
            client,
        })
    }
}

/// One connection's place, given back when it closes.
struct Held {
    open: Open,
    client: IpAddr,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut open = self
            .open
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        open.0 = open.0.saturating_sub(1);
        if let Some(count) = open.1.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                open.1.remove(&self.client);
            }
        }
    }
}

/// A request body not received whole within [`BODY_READ_TIMEOUT`] of the request's head.
#[derive(Debug, thiserror::Error)]
#[error("the request body was not received within {BODY_READ_TIMEOUT:?}")]
pub struct BodyTooSlow;

async fn whole_body_deadline(request: Request) -> Request {
    request.map(|body| Body::new(Deadline::new(body, BODY_READ_TIMEOUT)))
}

/// A body that fails with [`BodyTooSlow`] once its deadline passes — one deadline for all of
/// it, however many frames trickle in before.
struct Deadline {
    body: Body,
    deadline: Pin<Box<Sleep>>,
}

impl Deadline {
    fn new(body: Body, within: Duration) -> Self {
        Self {
            body,
            deadline: Box::pin(tokio::time::sleep_until(Instant::now() + within)),
        }
    }
}

impl http_body::Body for Deadline {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        ready!(self.deadline.as_mut().poll(cx));
        Poll::Ready(Some(Err(BodyTooSlow.into())))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A connection whose refusals are problems. When the HTTP library cannot read a request head
/// it answers by itself — 400, or 431 for one too large — with an empty body, and closes the
/// connection: such an answer is the last thing written, a head alone with
/// `content-length: 0`, which no response of GoZon's ever is (each refusal carries a problem).
/// This writes a problem of that status in its place.
struct ProblemsOnly<S> {
    stream: S,
    /// The problem still to write, and how much of it is written.
    replacing: Option<(Vec<u8>, usize)>,
}

impl<S> ProblemsOnly<S> {
    fn new(stream: S) -> Self {
        Self {
            stream,
            replacing: None,
        }
    }
}

/// The problem to send instead of `head`, if `head` is one of the library's own empty refusals.
fn problem_instead_of(head: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(head).ok()?;
    let rest = text.strip_prefix("HTTP/1.1 ")?;
    if !text.ends_with("\r\n\r\n") || !text.contains("\r\ncontent-length: 0\r\n") {
        return None;
    }
    let code: u16 = rest.get(..3)?.parse().ok()?;
    let (status, detail) = match code {
        400 => (
            StatusCode::BAD_REQUEST,
            "the request could not be read as HTTP/1.1",
        ),
        414 => (StatusCode::URI_TOO_LONG, "the request target is too long"),
        431 => (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "the request head is larger than 16384 bytes",
        ),
        _ => return None,
    };
    let body = serde_json::to_vec(&Problem::new(status, detail)).ok()?;
    let reason = status.canonical_reason().unwrap_or("Error");
    let mut answer = format!(
        "HTTP/1.1 {code} {reason}\r\ncontent-type: application/problem+json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    Some(answer)
}

impl<S: AsyncWrite + Unpin> ProblemsOnly<S> {
    /// Writes what is left of a replacement; ready once it is all written.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while let Some((answer, written)) = &mut self.replacing {
            if *written == answer.len() {
                self.replacing = None;
                break;
            }
            let more = ready!(Pin::new(&mut self.stream).poll_write(cx, &answer[*written..]))?;
            if more == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            *written += more;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ProblemsOnly<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ProblemsOnly<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        ready!(self.poll_replacement(cx))?;
        if let Some(answer) = problem_instead_of(buf) {
            self.replacing = Some((answer, 0));
            ready!(self.poll_replacement(cx))?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.poll_replacement(cx))?;
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.poll_replacement(cx))?;
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    // One buffer per write: the library's own answer then comes whole, in one call.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_librarys_empty_refusals_become_problems_and_nothing_else_is_touched() {
        let empty = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Thu, 03 Dec 2026 10:00:00 GMT\r\n\r\n";
        let answer = String::from_utf8(problem_instead_of(empty).expect("replaced")).unwrap();
        assert!(answer.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(answer.contains("content-type: application/problem+json"));
        assert!(
            answer.ends_with(
                r#""status":431,"detail":"the request head is larger than 16384 bytes"}"#
            )
        );
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\ncontent-length: 80\r\n\r\n";
        assert_eq!(problem_instead_of(ours), None);
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(problem_instead_of(ok), None);
    }

    #[test]
    fn a_client_at_its_limit_gets_no_more_connections_until_one_closes() {
        let open = Open::default();
        let client: IpAddr = [10, 0, 0, 1].into();
        let first = open.admit(client, 10, Some(2)).expect("first");
        let _second = open.admit(client, 10, Some(2)).expect("second");
        assert!(open.admit(client, 10, Some(2)).is_none());
        let _other = open
            .admit([10, 0, 0, 2].into(), 10, Some(2))
            .expect("another client's");
        drop(first);
        let _third = open.admit(client, 10, Some(2)).expect("a place again");
        assert!(
            open.admit([10, 0, 0, 3].into(), 3, None).is_none(),
            "three in all"
        );
    }
}
