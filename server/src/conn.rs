//! Connections: who may open one, how long each may sit idle or dribble,
//! and serving HTTP/1.1 on them (plain or TLS) until shutdown.
//!
//! A server that never closes a connection can be held by anyone without a
//! token: idle sockets, half-sent headers and bodies that stop halfway each
//! pin a file descriptor until the process runs out. So every connection
//! is admitted against a cap per client address and a cap in total, and a
//! watchdog closes it when the client is too slow:
//! - no request begins within `idle_timeout` of the previous answer (or
//!   of the connection opening);
//! - a request's headers are not complete within `header_timeout` of their
//!   first byte;
//! - a request body makes no progress for `body_timeout` (per chunk, so a
//!   large upload at a steady pace is never cut);
//! - an answer cannot be written for `send_timeout` while the client sends
//!   nothing either (a client that stopped reading; one that is still
//!   sending its request body is left alone, as it will read after).
//!
//! Requests in progress are not limited here: long polls and streamed
//! batches have their own rules. A request is answered even when the
//! client has shut its side for writing after sending it (a half-close).

mod lane;

/// The largest request body a connection's own loop takes (see [`lane`]).
pub const LANE_MAX_BODY: usize = lane::MAX_BODY;

use crate::tls::TlsPeer;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// The connection rules (`[connections]` in the configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnLimits {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
    pub send_timeout: Duration,
    /// Open connections one client address may hold.
    pub per_client: usize,
    /// Open connections in all.
    pub total: usize,
    /// Longest a server that is shutting down waits for answers in progress.
    pub drain: Duration,
}

impl ConnLimits {
    /// The limits of a `[connections]` section, checked.
    pub fn from_config(c: &crate::config::ConnectionsConfig) -> anyhow::Result<ConnLimits> {
        c.check()?;
        Ok(ConnLimits {
            header_timeout: Duration::from_secs_f64(c.header_timeout_seconds),
            body_timeout: Duration::from_secs_f64(c.body_timeout_seconds),
            idle_timeout: Duration::from_secs_f64(c.idle_timeout_seconds),
            send_timeout: Duration::from_secs_f64(c.send_timeout_seconds),
            per_client: c.max_per_client,
            total: c.max_total,
            drain: Duration::from_secs_f64(c.drain_seconds),
        })
    }
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits::from_config(&crate::config::ConnectionsConfig::default()).expect("the defaults pass the checks")
    }
}

/// Connection figures for `/metrics`, kept as plain counters so that
/// accepting a connection costs a few atomic increments.
#[derive(Debug, Default)]
pub struct ConnStats {
    pub open: AtomicUsize,
    pub accepted: AtomicU64,
    pub refused_per_client: AtomicU64,
    pub refused_total: AtomicU64,
    pub closed_idle: AtomicU64,
    pub closed_header: AtomicU64,
    pub closed_send: AtomicU64,
    /// Connections whose own loop met a request it does not take and
    /// passed them to hyper (see [`lane`]).
    pub handed_over: AtomicU64,
}

impl ConnStats {
    /// `(stat label, value)` pairs, for the metrics page.
    pub fn figures(&self) -> [(&'static str, u64); 8] {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            ("open", self.open.load(Ordering::Relaxed) as u64),
            ("accepted", get(&self.accepted)),
            ("refused_per_client", get(&self.refused_per_client)),
            ("refused_total", get(&self.refused_total)),
            ("closed_idle", get(&self.closed_idle)),
            ("closed_header", get(&self.closed_header)),
            ("closed_send", get(&self.closed_send)),
            ("handed_over", get(&self.handed_over)),
        ]
    }
}

/// Counts open connections per client address and in all.
#[derive(Debug)]
struct Admission {
    limits: ConnLimits,
    per_client: Mutex<HashMap<IpAddr, usize>>,
    stats: Arc<ConnStats>,
}

/// One admitted connection; gives its place back when dropped.
#[derive(Debug)]
struct Slot {
    admission: Arc<Admission>,
    ip: IpAddr,
}

/// Why a connection was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    PerClient,
    Total,
}

impl Admission {
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refusal> {
        let mut map = self.per_client.lock().unwrap_or_else(|p| p.into_inner());
        if self.stats.open.load(Ordering::Relaxed) >= self.limits.total {
            self.stats.refused_total.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::Total);
        }
        let n = map.entry(ip).or_insert(0);
        if *n >= self.limits.per_client {
            self.stats.refused_per_client.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::PerClient);
        }
        *n += 1;
        self.stats.open.fetch_add(1, Ordering::Relaxed);
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        Ok(Slot { admission: self.clone(), ip })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.admission.per_client.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
        self.admission.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the watchdog knows of one connection, in milliseconds since it
/// opened (0 = not set).
#[derive(Debug)]
struct Activity {
    opened: Instant,
    /// Requests whose answer is not yet completely sent.
    in_flight: AtomicUsize,
    /// When the last answer was sent (the connection opening counts).
    idle_since: AtomicU64,
    /// First byte read while no request was in flight: a request began.
    first_byte: AtomicU64,
    /// When a write started waiting for the client to read.
    write_blocked: AtomicU64,
    /// When bytes last arrived.
    last_read: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(1),
            first_byte: AtomicU64::new(0),
            write_blocked: AtomicU64::new(0),
            last_read: AtomicU64::new(1),
        }
    }

    /// Never 0, which means "not set".
    fn now(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64 + 1
    }

    fn request_began(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.first_byte.store(0, Ordering::Release);
    }

    /// Bytes of a next request already wait (pipelined behind the one
    /// just answered, so no read saw them arrive on an idle connection):
    /// its head is timed from now, not the connection as idle.
    fn head_waiting(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0 && self.first_byte.load(Ordering::Acquire) == 0 {
            self.first_byte.store(self.now(), Ordering::Release);
        }
    }

    /// A request the connection's own loop began but hands to hyper
    /// unanswered (hyper begins it again).
    fn request_abandoned(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    fn answer_sent(&self) {
        self.idle_since.store(self.now(), Ordering::Release);
        self.first_byte.store(0, Ordering::Release);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    /// Either why the connection is to be closed now, or how long until
    /// the watchdog should look again.
    fn check(&self, l: &ConnLimits) -> Result<Duration, Closed> {
        let now = self.now();
        let ms = |d: Duration| d.as_millis() as u64;
        let deadline = if self.in_flight.load(Ordering::Acquire) == 0 {
            match self.first_byte.load(Ordering::Acquire) {
                0 => Some((self.idle_since.load(Ordering::Acquire) + ms(l.idle_timeout), Closed::Idle)),
                t => Some((t + ms(l.header_timeout), Closed::Header)),
            }
        } else {
            // A request in progress is timed only while its answer cannot
            // be written.
            match self.write_blocked.load(Ordering::Acquire) {
                0 => None,
                t => Some((t.max(self.last_read.load(Ordering::Acquire)) + ms(l.send_timeout), Closed::Send)),
            }
        };
        // Not to the millisecond: state changes in between (a first byte,
        // a request, a blocked write) are read at the next look, which is
        // never further off than half the shortest timeout, so each is
        // enforced within one and a half times its length.
        let floor = Duration::from_millis(20);
        let look = (l.header_timeout.min(l.idle_timeout).min(l.send_timeout) / 2).max(floor);
        match deadline {
            Some((at, why)) if now >= at => Err(why),
            Some((at, _)) => Ok(Duration::from_millis(at - now).max(floor).min(look)),
            None => Ok(look),
        }
    }
}

/// Why the watchdog closed a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Closed {
    Idle,
    Header,
    Send,
}

async fn watchdog(activity: &Activity, limits: &ConnLimits) -> Closed {
    loop {
        match activity.check(limits) {
            Ok(wait) => tokio::time::sleep(wait).await,
            Err(why) => return why,
        }
    }
}

/// A connection's byte stream, reporting reads and blocked writes to its
/// [`Activity`].
struct Watched<T> {
    io: T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let a = &self.activity;
            let now = a.now();
            a.last_read.store(now, Ordering::Release);
            if a.in_flight.load(Ordering::Acquire) == 0 && a.first_byte.load(Ordering::Acquire) == 0 {
                a.first_byte.store(now, Ordering::Release);
            }
        }
        r
    }
}

impl<T> Watched<T> {
    fn wrote<R>(&self, r: Poll<R>) -> Poll<R> {
        let a = &self.activity;
        match r {
            Poll::Pending => {
                if a.write_blocked.load(Ordering::Acquire) == 0 {
                    a.write_blocked.store(a.now(), Ordering::Release);
                }
            }
            Poll::Ready(_) => a.write_blocked.store(0, Ordering::Release),
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.wrote(r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.wrote(r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_flush(cx);
        self.wrote(r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A request body. Dropped before its end (a handler answered without
/// reading it all: a refusal, a body over a limit), it is read on and
/// thrown away for a while, up to a bound: closing with the client still
/// sending would reset the connection, and most clients send their whole
/// body before they read, so they would see a broken pipe instead of the
/// answer.
struct ReadOnDrop<B = Incoming>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    body: Option<Pin<Box<tower_http::timeout::TimeoutBody<B>>>>,
    /// Whether the body has ended: it had none, or a read found its end.
    /// Kept here because the timeout wrapper does not pass the inner
    /// body's `is_end_stream` on (it would say "not yet" for every body,
    /// and every request would leave a task reading nothing behind it).
    ended: bool,
}

impl<B> ReadOnDrop<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn new(body: B, timeout: Duration) -> ReadOnDrop<B> {
        let ended = http_body::Body::is_end_stream(&body);
        ReadOnDrop { body: Some(Box::pin(tower_http::timeout::TimeoutBody::new(timeout, body))), ended }
    }
}

/// How much of an abandoned request body is read on, and for how long.
const READ_ON_BYTES: usize = 64 << 20;
const READ_ON_TIME: Duration = Duration::from_secs(5);

impl<B> http_body::Body for ReadOnDrop<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match self.body.as_mut() {
            Some(b) => {
                let frame = b.as_mut().poll_frame(cx);
                if let Poll::Ready(None) = frame {
                    self.ended = true;
                }
                frame
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.body.is_none()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match &self.body {
            Some(b) if !self.ended => b.size_hint(),
            _ => http_body::SizeHint::with_exact(0),
        }
    }
}

impl<B> Drop for ReadOnDrop<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn drop(&mut self) {
        let Some(mut body) = self.body.take().filter(|_| !self.ended) else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(async move {
            use http_body_util::BodyExt;
            let _ = tokio::time::timeout(READ_ON_TIME, async {
                let mut seen = 0usize;
                while let Some(Ok(frame)) = body.frame().await {
                    seen += frame.data_ref().map_or(0, |d| d.len());
                    if seen > READ_ON_BYTES {
                        break;
                    }
                }
            })
            .await;
        });
    }
}

/// An answer's body holding `T` until it is dropped: hyper drops it after
/// writing its last frame, or when the connection ends. The connection
/// holds its [`AnswerSent`] this way (the answer counts as sent once it is
/// dropped), the HTTP edge a streamed answer's place under its
/// department's concurrency cap.
pub struct Holding<T> {
    body: Body,
    _held: T,
}

impl<T: Send + Unpin + 'static> Holding<T> {
    /// `body`, holding `held` while it lasts.
    pub fn body(body: Body, held: T) -> Body {
        Body::new(Holding { body, _held: held })
    }
}

struct AnswerSent(Arc<Activity>);

impl Drop for AnswerSent {
    fn drop(&mut self) {
        self.0.answer_sent();
    }
}

impl<T: Unpin> http_body::Body for Holding<T> {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// What a connection hands each request to: the HTTP edge (the router,
/// and the routes served beside it). A trait, so that connections know
/// nothing of the API behind them.
pub trait Serve: Clone + Send + Sync + 'static {
    /// The answer to `req`, from a connection whose peer is `peer`.
    fn call(&self, req: axum::extract::Request, peer: &TlsPeer) -> impl Future<Output = axum::response::Response> + Send + 'static + use<Self>;

    /// Whether a request of `method` to `path` (the URI's path, without
    /// its query) is one the connection may serve in its own loop
    /// ([`lane`]) rather than through hyper.
    fn takes(&self, _method: &axum::http::Method, _path: &str) -> bool {
        false
    }
}

/// Serves `app` on `listener` (over TLS when an acceptor is given) until
/// `shutdown` completes, then lets the answers in progress finish (for at
/// most `limits.drain`: a client holding a connection open must not keep
/// the process from ending).
pub async fn serve<A: Serve>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: A,
    limits: ConnLimits,
    stats: Arc<ConnStats>,
    shutdown: impl Future<Output = ()>,
) {
    let admission = Arc::new(Admission { limits, per_client: Mutex::new(HashMap::new()), stats: stats.clone() });
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // Tells connections serving in their own loop to stop at the next
    // request (hyper's are told by `graceful`).
    let (stopping, stop) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (tcp, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors and the like: back off.
                    tracing::error!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let slot = match admission.admit(addr.ip()) {
            Ok(s) => s,
            Err(why) => {
                refuse(tcp, why);
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(connection(tcp, addr, slot, tls.clone(), app.clone(), limits, stats.clone(), graceful.watcher(), stop.clone()));
    }
    drop(listener);
    let _ = stopping.send(true);
    if tokio::time::timeout(limits.drain, graceful.shutdown()).await.is_err() {
        tracing::warn!(open = stats.open.load(Ordering::Relaxed), "answers still in progress after the drain time; closing");
    }
}

/// The answers to a connection over a cap, written by hand: nothing of the
/// HTTP machinery is spent on a connection that is not admitted.
const REFUSED_PER_CLIENT: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 95\r\n\r\n{\"error\":{\"code\":\"overloaded\",\"message\":\"too many connections from this address; retry later\"}}";
const REFUSED_TOTAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 82\r\n\r\n{\"error\":{\"code\":\"unavailable\",\"message\":\"the server holds too many connections\"}}";

/// Tells a client over a cap why, as far as the socket takes it without
/// waiting, then closes. Closing with the client's request still unread
/// would send a reset that can overtake the answer, so what the client
/// sent is read and dropped for a moment first.
fn refuse(tcp: TcpStream, why: Refusal) {
    // Lingering refusals hold file descriptors too: a flood past the caps
    // gets its connections closed at once.
    static LINGERING: AtomicUsize = AtomicUsize::new(0);
    /// One lingering refusal, counted out when its task ends or is
    /// dropped unfinished (a runtime shutting down drops its tasks).
    struct Lingering;
    impl Drop for Lingering {
        fn drop(&mut self) {
            LINGERING.fetch_sub(1, Ordering::AcqRel);
        }
    }
    let answer = if why == Refusal::PerClient { REFUSED_PER_CLIENT } else { REFUSED_TOTAL };
    let before = LINGERING.fetch_add(1, Ordering::AcqRel);
    let counted = Lingering;
    if before >= 64 {
        drop(counted);
        let _ = tcp.try_write(answer);
        return;
    }
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let _counted = counted;
        let mut tcp = tcp;
        // Written once the socket is known writable: a try_write straight
        // after accept can find the new socket's readiness not yet
        // reported, write nothing, and leave the client with a bare close.
        let _ = tokio::time::timeout(Duration::from_millis(500), tcp.write_all(answer)).await;
        let _ = tcp.shutdown().await;
        drain(&mut tcp, 64 << 10, Duration::from_millis(500)).await;
    });
}

/// Reads and drops what a client refused and answered is still sending,
/// up to `most` bytes or for `within`: closing a socket with unread data
/// resets it, and the reset can reach the client before the answer does.
pub(crate) async fn drain<R: tokio::io::AsyncRead + Unpin>(io: &mut R, most: usize, within: Duration) {
    use tokio::io::AsyncReadExt;
    let mut sink = [0u8; 8192];
    let _ = tokio::time::timeout(within, async {
        let mut read = 0usize;
        while read < most {
            match io.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
    })
    .await;
}

fn is_connection_error(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset)
}

#[allow(clippy::too_many_arguments)]
async fn connection<A: Serve>(
    tcp: TcpStream,
    addr: SocketAddr,
    slot: Slot,
    tls: Option<TlsAcceptor>,
    app: A,
    limits: ConnLimits,
    stats: Arc<ConnStats>,
    graceful: hyper_util::server::graceful::Watcher,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let _slot = slot;
    let activity = Arc::new(Activity::new());
    let io = Watched { io: tcp, activity: activity.clone() };
    match tls {
        None => run(io, TlsPeer { addr, subject: None, tls: false }, app, limits, &stats, activity, graceful, stop).await,
        Some(acceptor) => {
            // The handshake is the first thing the client must send.
            let stream = match tokio::time::timeout(limits.header_timeout, acceptor.accept(io)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return tracing::info!(target: "basedata::tls", peer = %addr, error = %e, "TLS handshake failed"),
                Err(_) => return tracing::info!(target: "basedata::tls", peer = %addr, "TLS handshake timed out"),
            };
            let subject = crate::tls::client_subject(stream.get_ref().1);
            // The handshake's bytes were not a request: the connection is
            // idle from here.
            activity.first_byte.store(0, Ordering::Release);
            activity.idle_since.store(activity.now(), Ordering::Release);
            run(stream, TlsPeer { addr, subject, tls: true }, app, limits, &stats, activity, graceful, stop).await
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run<T, A: Serve>(
    io: T,
    peer: TlsPeer,
    app: A,
    limits: ConnLimits,
    stats: &ConnStats,
    activity: Arc<Activity>,
    graceful: hyper_util::server::graceful::Watcher,
    shutdown: tokio::sync::watch::Receiver<bool>,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let addr = peer.addr;
    let mut shutdown = shutdown;
    let mut io = io;
    let mut buf = bytes::BytesMut::with_capacity(8192);
    let left = tokio::select! {
        left = lane::serve(&mut io, &mut buf, &app, &peer, &activity, &limits, &mut shutdown) => left,
        why = watchdog(&activity, &limits) => return closed(why, stats, addr),
    };
    if let lane::Left::Closed = left {
        return;
    }
    stats.handed_over.fetch_add(1, Ordering::Relaxed);
    let io = Rewind { prefix: buf.freeze(), io };
    let body_timeout = limits.body_timeout;
    let act = activity.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        act.request_began();
        let sent = AnswerSent(act.clone());
        let req = req.map(|b| Body::new(ReadOnDrop::new(b, body_timeout)));
        // A combinator, not an `async` block, so the answer's future is
        // held once (see `http::within_time_limit`).
        futures_util::FutureExt::map(app.call(req, &peer), move |resp| {
            Ok::<_, std::convert::Infallible>(resp.map(|body| Holding::body(body, sent)))
        })
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    // A backstop only: the watchdog closes slow headers sooner.
    http.timer(TokioTimer::new()).header_read_timeout(limits.idle_timeout + limits.header_timeout);
    // A client may shut its side for writing once its request is sent
    // (`nc -N`, some proxies): hyper's default takes that end of input for
    // a client gone and drops the answer in progress, so the request is
    // never answered. Half-closed, it is answered, then the connection
    // ends. A client gone altogether is found when its answer cannot be
    // written; the work before that (a long poll to its `wait`, a use and
    // its audit entry) runs to its end, as on a connection still open.
    http.half_close(true);
    let conn = graceful.watch(http.serve_connection(TokioIo::new(io), service));
    tokio::select! {
        r = conn => {
            if let Err(e) = r {
                tracing::debug!(peer = %addr, error = %e, "connection ended");
            }
        }
        why = watchdog(&activity, &limits) => closed(why, stats, addr),
    }
}

/// Counts and logs a connection the watchdog closed.
fn closed(why: Closed, stats: &ConnStats, addr: SocketAddr) {
    let counter = match why {
        Closed::Idle => &stats.closed_idle,
        Closed::Header => &stats.closed_header,
        Closed::Send => &stats.closed_send,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(peer = %addr, reason = ?why, "connection closed by the server");
}

/// A connection's stream with bytes already read from it put back in
/// front: what the lane read of a request it hands to hyper.
struct Rewind<T> {
    prefix: bytes::Bytes,
    io: T,
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            bytes::Buf::advance(&mut self.prefix, n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Request bodies read to their end, or that had none, are dropped
    /// without a task to read on; one left unread gets that task.
    #[tokio::test]
    async fn only_a_body_left_unread_is_read_on_after_the_answer() {
        use http_body::Body as _;
        use http_body_util::{BodyExt, Empty, Full};
        let tasks = || tokio::runtime::Handle::current().metrics().num_alive_tasks();
        let before = tasks();
        let t = Duration::from_secs(5);

        let read = ReadOnDrop::new(Full::new(bytes::Bytes::from_static(b"{\"dataset\":\"hukou\"}")), t);
        assert!(!read.is_end_stream());
        let got = read.collect().await.unwrap().to_bytes();
        assert_eq!(&got[..], b"{\"dataset\":\"hukou\"}");
        assert_eq!(tasks(), before, "a body read to its end left a reader behind");

        let none = ReadOnDrop::new(Empty::<bytes::Bytes>::new(), t);
        assert!(none.is_end_stream());
        assert_eq!(none.size_hint().exact(), Some(0));
        drop(none);
        assert_eq!(tasks(), before, "an empty body left a reader behind");

        // The current-thread runtime runs the reader only once this test
        // yields, so it is still counted here.
        drop(ReadOnDrop::new(Full::new(bytes::Bytes::from_static(b"unread")), t));
        assert_eq!(tasks(), before + 1, "an unread body must be read on");
    }

    fn limits() -> ConnLimits {
        ConnLimits { per_client: 2, total: 3, ..ConnLimits::default() }
    }

    #[test]
    fn admission_caps_per_address_and_in_total_and_frees_on_drop() {
        let a = Arc::new(Admission { limits: limits(), per_client: Mutex::new(HashMap::new()), stats: Arc::default() });
        let (x, y): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        let s1 = a.admit(x).unwrap();
        let _s2 = a.admit(x).unwrap();
        assert_eq!(a.admit(x).unwrap_err(), Refusal::PerClient);
        let _s3 = a.admit(y).unwrap();
        assert_eq!(a.admit(y).unwrap_err(), Refusal::Total);
        drop(s1);
        let _s4 = a.admit(x).unwrap();
        assert_eq!(a.stats.open.load(Ordering::Relaxed), 3);
        assert_eq!(a.stats.refused_per_client.load(Ordering::Relaxed), 1);
        assert_eq!(a.stats.refused_total.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn refusals_are_complete_http_answers() {
        for answer in [REFUSED_PER_CLIENT, REFUSED_TOTAL] {
            let text = std::str::from_utf8(answer).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            let length = head.lines().find_map(|l| l.strip_prefix("content-length: ")).unwrap();
            assert_eq!(length.parse::<usize>().unwrap(), body.len(), "{head}");
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            assert!(v["error"]["code"].is_string());
        }
    }

    #[test]
    fn the_watchdog_times_idle_headers_and_blocked_writes() {
        let l = ConnLimits {
            idle_timeout: Duration::from_millis(1_000),
            header_timeout: Duration::from_millis(300),
            send_timeout: Duration::from_millis(500),
            ..ConnLimits::default()
        };
        let a = Activity::new();
        // Idle: the deadline is the idle timeout from the opening.
        // (Looks come at least every half of the shortest timeout.)
        assert_eq!(a.check(&l).unwrap(), Duration::from_millis(150));
        // A first byte read switches to the header timeout.
        let a = Activity { opened: Instant::now() - Duration::from_secs(5), ..Activity::new() };
        assert_eq!(a.check(&l), Err(Closed::Idle), "idle since 1 ms, 5 s ago");
        a.first_byte.store(a.now() - 100, Ordering::Release);
        assert!(a.check(&l).unwrap() <= Duration::from_millis(200));
        a.first_byte.store(a.now() - 400, Ordering::Release);
        assert_eq!(a.check(&l), Err(Closed::Header));
        // A request in flight is not idle, unless its answer cannot be written.
        a.request_began();
        assert!(a.check(&l).is_ok());
        a.write_blocked.store(a.now() - 600, Ordering::Release);
        assert_eq!(a.check(&l), Err(Closed::Send));
        // Unless the client is still sending.
        a.last_read.store(a.now() - 100, Ordering::Release);
        assert!(a.check(&l).is_ok(), "a client still sending is not cut off");
        a.write_blocked.store(0, Ordering::Release);
        a.answer_sent();
        assert_eq!(a.check(&l).unwrap(), Duration::from_millis(150), "idle again, from now");
    }
}
