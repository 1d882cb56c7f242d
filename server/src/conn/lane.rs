//! A connection's own HTTP/1.1 loop for the requests the edge answers
//! beside the router (a counter's lookups and verifications, a provider's
//! small submissions): read, parse the head with `httparse`, answer,
//! write — without hyper's dispatcher, body channel and per-request
//! timers. The first request it does not take
//! exactly as hyper would hands the connection, with the bytes already
//! read, to hyper for the rest of its life.
//!
//! Taken: an `HTTP/1.1` `GET` or `POST` whose path the edge serves
//! itself ([`Serve::takes`]), with at most [`MAX_HEADERS`] headers, no
//! `Transfer-Encoding`, `Expect` or `Upgrade` header, no `Connection`
//! header but `keep-alive` (the connection stays open, HTTP/1.1's
//! default), and a `Content-Length` body of at most [`MAX_BODY`] bytes. Everything else — chunked bodies,
//! `100-continue`, `Connection: close`, HTTP/1.0, and a
//! body that stalls or ends short (with its head) — is hyper's, which
//! answers it as it always has. A head that cannot be read at all is
//! answered here (`400 invalid_value` in JSON) and the connection closed.
//!
//! hyper refuses some heads itself, with an answer of no body: too many
//! headers or too long a head (`431`), too long a target (`414`), a
//! `Content-Length` that is not one plain number, a `Transfer-Encoding`
//! whose last coding is not `chunked`, a space in the target (`400`). A
//! client of the API must get its JSON errors, so a head the lane hands
//! over is first judged by hyper's rules ([`hyper_refusal`]), and those
//! refusals are answered here, with hyper's status, in JSON. (A request
//! on a connection hyper already serves is judged by hyper alone.)

use super::{Activity, ConnLimits, Serve};
use crate::tls::TlsPeer;
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version};
use bytes::BytesMut;
use http_body_util::BodyExt;
use std::cell::RefCell;
use std::io::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Headers a request the lane takes may have (more: hyper's, which
/// allows 100).
pub const MAX_HEADERS: usize = 32;
/// The largest body the lane takes; a verification's is a few hundred bytes.
pub const MAX_BODY: usize = 64 << 10;
/// A head not complete within this many bytes is hyper's to judge.
const MAX_HEAD: usize = 16 << 10;

/// hyper's own limits (its defaults, which the server keeps): headers a
/// request may have, bytes of a head not yet complete (its largest read
/// buffer), bytes of a request target.
const HYPER_MAX_HEADERS: usize = 100;
const HYPER_MAX_HEAD: usize = 8192 + 4096 * 100;
const HYPER_MAX_URI: usize = u16::MAX as usize - 1;
/// The largest body length hyper takes (`u64::MAX` and one below mean
/// "chunked" and "until closed" to it).
const HYPER_MAX_LENGTH: u64 = u64::MAX - 2;

/// How the lane left a connection.
pub enum Left {
    /// The client closed it, or it broke, or the server is shutting down.
    Closed,
    /// A request the lane does not take: hyper serves the rest, starting
    /// with the bytes in the buffer.
    HandedOver,
}

/// A request head the lane takes, without its body.
struct Taken {
    req: Request<()>,
    body_len: usize,
    /// The head as read, put back in front of the buffer for hyper if the
    /// body does not come.
    head: bytes::Bytes,
}

/// What the buffer's start holds. (Returned by value once a request:
/// boxing the large variant would cost an allocation each time.)
#[allow(clippy::large_enum_variant)]
enum Head {
    /// A request the lane takes; its head is gone from the buffer.
    Taken(Taken),
    Partial,
    NotTaken,
    /// A head no server could read (a bad token, header name or value,
    /// or line ending): answered here, in the API's error format.
    Malformed(httparse::Error),
}

/// Reads the head at the start of `buf`. A head the lane takes is split
/// off the buffer, and its header values are slices of it, not copies
/// (as hyper makes them).
fn parse<A: Serve>(buf: &mut BytesMut, app: &A) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let head_len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Head::Partial,
        // More headers than the lane takes, or another protocol version:
        // hyper's to judge.
        Err(e @ (httparse::Error::Token | httparse::Error::HeaderName | httparse::Error::HeaderValue | httparse::Error::NewLine)) => {
            return Head::Malformed(e)
        }
        _ => return Head::NotTaken,
    };
    if parsed.version != Some(1) {
        return Head::NotTaken;
    }
    let method = match parsed.method {
        Some("GET") => Method::GET,
        Some("POST") => Method::POST,
        _ => return Head::NotTaken,
    };
    let Some(path) = parsed.path.filter(|p| p.starts_with('/')) else { return Head::NotTaken };
    // The path as the request will carry it (without its query), so that
    // the edge judges exactly what it will later be handed.
    let Ok(uri) = Uri::try_from(path) else { return Head::NotTaken };
    if !app.takes(&method, uri.path()) {
        return Head::NotTaken;
    }
    let mut names = Vec::with_capacity(parsed.headers.len());
    let mut body_len = None;
    let at = |part: &[u8]| part.as_ptr() as usize - buf.as_ptr() as usize;
    for h in parsed.headers.iter() {
        let Ok(name) = HeaderName::from_bytes(h.name.as_bytes()) else { return Head::NotTaken };
        if name == header::TRANSFER_ENCODING || name == header::EXPECT || name == header::UPGRADE {
            return Head::NotTaken;
        }
        // `keep-alive` is HTTP/1.1's default said aloud; anything else
        // (`close`, an upgrade) changes what happens to the connection.
        if name == header::CONNECTION && !h.value.eq_ignore_ascii_case(b"keep-alive") {
            return Head::NotTaken;
        }
        if name == header::CONTENT_LENGTH {
            // One plain decimal length; a second one, even equal, is
            // hyper's to judge.
            let len = match std::str::from_utf8(h.value).ok().filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit())) {
                Some(v) if body_len.is_none() => v.parse::<usize>().ok(),
                _ => None,
            };
            match len {
                Some(n) if n <= MAX_BODY => body_len = Some(n),
                _ => return Head::NotTaken,
            }
        }
        let from = at(h.value);
        names.push((name, from..from + h.value.len()));
    }
    let head = buf.split_to(head_len).freeze();
    let mut map = HeaderMap::with_capacity(names.len());
    for (name, value) in names {
        match HeaderValue::from_maybe_shared(head.slice(value)) {
            Ok(v) => map.append(name, v),
            Err(_) => {
                // Not a value hyper would take either; it answers the
                // request, so the head goes back in front of the buffer.
                put_back(buf, &head);
                return Head::NotTaken;
            }
        };
    }
    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = map;
    Head::Taken(Taken { req, body_len: body_len.unwrap_or(0), head })
}

/// Puts a head split off `buf` back in front of what followed it, for
/// hyper to read the request from its start.
fn put_back(buf: &mut BytesMut, head: &[u8]) {
    let rest = buf.split();
    buf.extend_from_slice(head);
    buf.unsplit(rest);
}

/// Serves the requests the lane takes on `io` until one it does not take
/// (left in `buf` for hyper), the client closes, or `shutdown` turns true.
pub async fn serve<T, A>(
    io: &mut T,
    buf: &mut BytesMut,
    app: &A,
    peer: &TlsPeer,
    activity: &Activity,
    limits: &ConnLimits,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> Left
where
    T: AsyncRead + AsyncWrite + Unpin,
    A: Serve,
{
    let mut out: Vec<u8> = Vec::with_capacity(1024);
    loop {
        let taken = loop {
            if !buf.is_empty() {
                match parse(buf, app) {
                    Head::Taken(t) => break t,
                    Head::NotTaken => match hyper_refusal(buf) {
                        Judged::Hyper => return Left::HandedOver,
                        // hyper would read on too: the lane does, so as to
                        // answer what hyper would refuse.
                        Judged::Partial => {
                            if buf.capacity() - buf.len() < 4096 {
                                buf.reserve(buf.len().max(8192));
                            }
                        }
                        Judged::Refused(refusal) => {
                            refuse(io, &mut out, refusal, limits).await;
                            return Left::Closed;
                        }
                    },
                    Head::Malformed(why) => {
                        let refusal = Refusal {
                            status: axum::http::StatusCode::BAD_REQUEST,
                            code: "invalid_value",
                            message: format!("the request head cannot be read: {why}"),
                        };
                        refuse(io, &mut out, refusal, limits).await;
                        return Left::Closed;
                    }
                    Head::Partial => {}
                }
            }
            // Waiting for a request: a server shutting down closes an
            // idle connection (one with half a head is let finish).
            let read = if buf.is_empty() {
                tokio::select! {
                    r = io.read_buf(buf) => r,
                    _ = shutdown.wait_for(|s| *s) => return Left::Closed,
                }
            } else {
                io.read_buf(buf).await
            };
            match read {
                Ok(0) | Err(_) => return Left::Closed,
                Ok(_) => {}
            }
        };
        activity.request_began();
        while buf.len() < taken.body_len {
            buf.reserve(taken.body_len - buf.len());
            // The body's pace, as hyper's body timeout has it: each read
            // within `body_timeout`.
            match tokio::time::timeout(limits.body_timeout, io.read_buf(buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                Ok(Err(_)) => return Left::Closed,
                // A body that stalls or ends short is hyper's to answer
                // (its body timeout, its error for an incomplete message:
                // admitted, logged and counted as on any connection), from
                // the head on. A stalled client so gets one more
                // `body_timeout` from hyper before that answer.
                Ok(Ok(_)) | Err(_) => {
                    activity.request_abandoned();
                    put_back(buf, &taken.head);
                    return Left::HandedOver;
                }
            }
        }
        let body = buf.split_to(taken.body_len).freeze();
        let req = taken.req.map(|()| if body.is_empty() { Body::empty() } else { Body::from(body) });
        let resp = app.call(req, peer).await;
        let (parts, body) = resp.into_parts();
        let Ok(body) = body.collect().await.map(|c| c.to_bytes()) else { return Left::Closed };
        // A server shutting down closes the connection after this answer
        // and says so in it, as hyper does; so does an answer that asks to.
        let asked = closes(&parts.headers);
        let closing = asked || *shutdown.borrow();
        out.clear();
        encode(&mut out, parts.status, &parts.headers, &body, closing && !asked);
        // Flushed: a TLS stream holds what it could not send yet until
        // asked to flush, and the next read would not send it.
        let written = match io.write_all(&out).await {
            Ok(()) => io.flush().await,
            Err(e) => Err(e),
        };
        activity.answer_sent();
        if written.is_err() {
            return Left::Closed;
        }
        if closing || *shutdown.borrow() {
            // TLS's close_notify, then the FIN, as hyper ends a connection.
            let _ = tokio::time::timeout(limits.send_timeout, io.shutdown()).await;
            return Left::Closed;
        }
        if !buf.is_empty() {
            activity.head_waiting();
        } else if buf.capacity() < 4096 {
            buf.reserve(8192);
        }
    }
}

/// A head refused here: the status, the API's error code and message.
struct Refusal {
    status: axum::http::StatusCode,
    code: &'static str,
    message: String,
}

/// What hyper would do with a head the lane does not take.
enum Judged {
    /// Serve it (or answer it as the lane could not, e.g. with nothing
    /// to a client speaking HTTP/2): hyper's.
    Hyper,
    /// Not complete yet, and hyper would wait for more.
    Partial,
    /// Refuse it, with this status.
    Refused(Refusal),
}

/// The head at the start of `buf` judged by the rules hyper applies
/// before it calls the server (`proto::h1::role::Server::parse` and its
/// read buffer's limit): what hyper refuses with a bare status, the lane
/// refuses with the same status in JSON. Anything else is hyper's.
fn hyper_refusal(buf: &[u8]) -> Judged {
    use axum::http::StatusCode;
    let refused = |status, code, message: String| Judged::Refused(Refusal { status, code, message });
    let too_large = |message: String| refused(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "payload_too_large", message);
    let bad_body = |message: String| refused(StatusCode::BAD_REQUEST, "invalid_body", message);
    let mut headers = [httparse::EMPTY_HEADER; HYPER_MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let head_len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < HYPER_MAX_HEAD => return Judged::Partial,
        Ok(httparse::Status::Partial) => {
            return too_large(format!("the request head (request line and headers) is over {HYPER_MAX_HEAD} bytes"))
        }
        Err(httparse::Error::TooManyHeaders) => {
            return too_large(format!("the request has more than {HYPER_MAX_HEADERS} headers"))
        }
        // A client speaking HTTP/2 without asking is told nothing by
        // hyper; that stays so.
        Err(httparse::Error::Version) if !buf.starts_with(b"PRI * HTTP/2.0") => {
            return refused(
                StatusCode::BAD_REQUEST,
                "invalid_value",
                "the request line cannot be read: it must be METHOD TARGET HTTP/1.x, with no space in the target \
                 (percent-encode one as %20)"
                    .into(),
            )
        }
        // The errors the lane answers itself, or hyper's to judge.
        Err(_) => return Judged::Hyper,
    };
    // A head complete only past hyper's buffer would not have been read
    // whole by it either.
    if head_len >= HYPER_MAX_HEAD {
        return too_large(format!("the request head (request line and headers) is over {HYPER_MAX_HEAD} bytes"));
    }
    let target = parsed.path.unwrap_or("");
    if target.len() > HYPER_MAX_URI {
        return refused(
            StatusCode::URI_TOO_LONG,
            "payload_too_large",
            format!("the request target is over {HYPER_MAX_URI} bytes; send long data in a body"),
        );
    }
    if Uri::try_from(target).is_err() {
        return refused(StatusCode::BAD_REQUEST, "invalid_value", "the request target is not a valid URI".into());
    }
    let http_11 = parsed.version == Some(1);
    // Transfer-Encoding and Content-Length as hyper reads them: its last
    // Transfer-Encoding decides; a Content-Length after one is ignored.
    let (mut chunked, mut encoded, mut length) = (false, false, None::<u64>);
    for h in parsed.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if !http_11 {
                return bad_body("Transfer-Encoding is not allowed in an HTTP/1.0 request".into());
            }
            encoded = true;
            length = None;
            chunked = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.rsplit(',').next())
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        } else if h.name.eq_ignore_ascii_case("content-length") && !encoded {
            let digits = !h.value.is_empty() && h.value.iter().all(u8::is_ascii_digit);
            let Some(n) = std::str::from_utf8(h.value).ok().filter(|_| digits).and_then(|v| v.parse::<u64>().ok()) else {
                return bad_body(format!(
                    "Content-Length {:?} is not a length: send the body's length in bytes, as digits only",
                    String::from_utf8_lossy(&h.value[..h.value.len().min(40)])
                ));
            };
            match length {
                Some(before) if before != n => {
                    return bad_body("the request has two Content-Length headers that differ: send one".into())
                }
                _ if n > HYPER_MAX_LENGTH => return too_large("Content-Length is beyond any body".into()),
                _ => length = Some(n),
            }
        }
    }
    if encoded && !chunked {
        return bad_body(
            "Transfer-Encoding must end with chunked (the only transfer coding the server reads); \
             send the body as it is, with Content-Length or chunked"
                .into(),
        );
    }
    Judged::Hyper
}

/// Answers a head refused here in the API's JSON error format (where
/// hyper would send a status without a body), and closes the connection:
/// where that head ends, and so where the next request would begin, is
/// unknown or not to be trusted. What the client still sends is read and
/// dropped for a moment after the answer: closing with it unread would
/// reset the connection, which can overtake the answer.
async fn refuse<T: AsyncRead + AsyncWrite + Unpin>(io: &mut T, out: &mut Vec<u8>, refusal: Refusal, limits: &ConnLimits) {
    let body = serde_json::json!({"error": {"code": refusal.code, "message": refusal.message}}).to_string();
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    out.clear();
    encode(out, refusal.status, &headers, body.as_bytes(), true);
    if io.write_all(out).await.is_ok() && io.flush().await.is_ok() {
        let _ = tokio::time::timeout(limits.send_timeout, io.shutdown()).await;
        super::drain(io, 1 << 20, Duration::from_secs(1)).await;
    }
}

/// Whether an answer's `Connection` header asks to close (a `close`
/// among its comma-separated tokens).
fn closes(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| v.as_bytes().split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close")))
}

/// An answer as hyper writes it: status line, the headers in their order,
/// `connection: close` if `close` (and the answer does not say so
/// itself), `content-length` and `date` unless the answer has its own.
/// The body is framed by its length whatever the answer's headers claim:
/// a `transfer-encoding` or a `content-length` that does not match it is
/// left out (hyper would chunk, or fail the write). No body follows a
/// 1xx, 204 or 304 status.
fn encode(out: &mut Vec<u8>, status: axum::http::StatusCode, headers: &HeaderMap, body: &[u8], close: bool) {
    let bodiless = status.is_informational() || status == axum::http::StatusCode::NO_CONTENT || status == axum::http::StatusCode::NOT_MODIFIED;
    let body = if bodiless { &[][..] } else { body };
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut has_length = false;
    for (name, value) in headers {
        if name == header::TRANSFER_ENCODING {
            continue;
        }
        if name == header::CONTENT_LENGTH {
            if bodiless || has_length || value.as_bytes() != itoa::Buffer::new().format(body.len()).as_bytes() {
                continue;
            }
            has_length = true;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    if !has_length && !bodiless {
        let _ = write!(out, "content-length: {}\r\n", body.len());
    }
    if !headers.contains_key(header::DATE) {
        out.extend_from_slice(b"date: ");
        with_date(|d| out.extend_from_slice(d));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

thread_local! {
    /// The `date` header's text, made once a second per thread (as hyper
    /// caches it).
    static DATE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
}

fn with_date(f: impl FnOnce(&[u8])) {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs();
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != secs || d.1.is_empty() {
            *d = (secs, httpdate::fmt_http_date(now));
        }
        f(d.1.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::{IntoResponse, Response};
    use std::future::Future;
    use std::sync::atomic::Ordering;

    /// Takes paths under `/fast`; answers with the method, path, body and
    /// the `x-purpose` header it was given.
    #[derive(Clone)]
    struct Echo;

    impl Serve for Echo {
        fn call(&self, req: axum::extract::Request, _peer: &TlsPeer) -> impl Future<Output = Response> + Send + 'static + use<> {
            async move {
                let purpose = req.headers().get("x-purpose").map(|v| v.as_bytes().to_vec()).unwrap_or_default();
                let head = format!("{} {} ", req.method(), req.uri());
                let body = req.into_body().collect().await.unwrap().to_bytes();
                let mut text = head.into_bytes();
                text.extend_from_slice(&body);
                text.push(b' ');
                text.extend_from_slice(&purpose);
                ([("x-echo", "1")], text).into_response()
            }
        }

        fn takes(&self, method: &Method, path: &str) -> bool {
            (method == Method::GET || method == Method::POST) && path.starts_with("/fast")
        }
    }

    fn taken(head: &[u8]) -> (Taken, BytesMut) {
        let mut buf = BytesMut::from(head);
        match parse(&mut buf, &Echo) {
            Head::Taken(t) => (t, buf),
            Head::Partial => panic!("partial: {}", String::from_utf8_lossy(head)),
            Head::NotTaken => panic!("not taken: {}", String::from_utf8_lossy(head)),
            Head::Malformed(e) => panic!("malformed ({e}): {}", String::from_utf8_lossy(head)),
        }
    }

    #[test]
    fn a_plain_request_is_taken_with_its_headers_and_its_body_left_in_the_buffer() {
        let head = "POST /fast/1?id_type=citizen_id HTTP/1.1\r\nHost: a\r\nX-Purpose: 社保; 复核\r\nConnection: Keep-Alive\r\nContent-Length: 5\r\nX-Purpose: second\r\n\r\nhello";
        let (t, rest) = taken(head.as_bytes());
        assert_eq!(t.req.method(), Method::POST);
        assert_eq!(t.req.uri().path(), "/fast/1");
        assert_eq!(t.req.uri().query(), Some("id_type=citizen_id"));
        assert_eq!(t.req.version(), Version::HTTP_11);
        let purposes: Vec<&[u8]> = t.req.headers().get_all("x-purpose").iter().map(|v| v.as_bytes()).collect();
        assert_eq!(purposes, vec!["社保; 复核".as_bytes(), b"second"], "values as sent, in order, repeats kept");
        assert_eq!(t.req.headers().len(), 5);
        assert_eq!(t.body_len, 5);
        assert_eq!(&rest[..], b"hello");

        let (t, rest) = taken(b"GET /fast HTTP/1.1\r\nHost: a\r\n\r\nGET /fast");
        assert_eq!((t.req.method(), t.body_len), (&Method::GET, 0));
        assert_eq!(&rest[..], b"GET /fast", "a pipelined request's start stays");
    }

    #[test]
    fn a_head_not_yet_complete_waits_and_leaves_the_buffer_alone() {
        for head in ["POST /fast HTTP/1.1\r\nHost: a\r\nContent-Le", "POST /fa", "P"] {
            let mut buf = BytesMut::from(head.as_bytes());
            assert!(matches!(parse(&mut buf, &Echo), Head::Partial), "{head}");
            assert_eq!(&buf[..], head.as_bytes());
        }
        // One that never ends is not waited for without bound.
        let long = format!("GET /fast HTTP/1.1\r\nX-Long: {}", "a".repeat(MAX_HEAD));
        assert!(matches!(parse(&mut BytesMut::from(long.as_bytes()), &Echo), Head::NotTaken));
    }

    #[test]
    fn what_the_lane_leaves_to_hyper_stays_in_the_buffer_untouched() {
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-H{i}: v\r\n")).collect();
        let big = format!("POST /fast HTTP/1.1\r\nContent-Length: {}\r\n\r\n", MAX_BODY + 1);
        let cases = [
            "GET /fast HTTP/1.0\r\n\r\n".to_owned(),
            "HEAD /fast HTTP/1.1\r\n\r\n".into(),
            "PUT /fast HTTP/1.1\r\nContent-Length: 0\r\n\r\n".into(),
            "GET /slow HTTP/1.1\r\n\r\n".into(),
            "GET http://a/fast HTTP/1.1\r\n\r\n".into(),
            "GET * HTTP/1.1\r\n\r\n".into(),
            "POST /fast HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".into(),
            "POST /fast HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n".into(),
            "GET /fast HTTP/1.1\r\nConnection: close\r\n\r\n".into(),
            "GET /fast HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n".into(),
            "POST /fast HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello".into(),
            "POST /fast HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello".into(),
            "POST /fast HTTP/1.1\r\nContent-Length: \r\n\r\n".into(),
            "POST /fast HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n".into(),
            big,
            format!("GET /fast HTTP/1.1\r\n{many}\r\n"),
        ];
        for head in cases {
            let mut buf = BytesMut::from(head.as_bytes());
            assert!(matches!(parse(&mut buf, &Echo), Head::NotTaken), "{head:?}");
            assert_eq!(&buf[..], head.as_bytes(), "{head:?}");
        }
        // Unreadable: answered by the lane, the buffer left as it was.
        for head in ["GET /fast HTTP/1.1\r\nBad Name: v\r\n\r\n", "garbage\r\n\r\n", "GET /slow HTTP/1.1\r\nX-P: a\x01b\r\n\r\n",
            "GET /fast HTTP/1.1\r\nX-Bad: a\x7fb\r\n\r\n"] {
            let mut buf = BytesMut::from(head.as_bytes());
            assert!(matches!(parse(&mut buf, &Echo), Head::Malformed(_)), "{head:?}");
            assert_eq!(&buf[..], head.as_bytes(), "{head:?}");
        }
    }

    /// Mangled requests (bytes changed, dropped, added, cut short): the
    /// parser never panics, leaves the buffer as it was unless it takes
    /// the head, and when it takes one, takes exactly what `httparse`
    /// reads from the same bytes.
    #[test]
    fn mangled_heads_are_taken_whole_or_left_alone() {
        let bases: [&[u8]; 4] = [
            b"POST /fast/110105194912310021/verify?id_type=citizen_id HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer t\r\nX-Purpose: p\r\nContent-Length: 5\r\n\r\nhello",
            b"GET /fast/1 HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
            b"GET /fast/2 HTTP/1.1\r\nX-Purpose: \xe7\xa4\xbe\xe4\xbf\x9d\r\n\r\nGET /fast/3 HTTP/1.1\r\n\r\n",
            b"POST /fast HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ];
        let bytes: &[u8] = b"\r\n :/?%0123456789aZ\t\x00\x7f\x80\xff";
        let mut rng = fastrand::Rng::with_seed(20261205);
        let mut taken_count = 0;
        for _ in 0..40_000 {
            let mut input = bases[rng.usize(..bases.len())].to_vec();
            for _ in 0..rng.usize(1..4) {
                if input.is_empty() {
                    break;
                }
                let at = rng.usize(..input.len());
                match rng.u8(..4) {
                    0 => input[at] = bytes[rng.usize(..bytes.len())],
                    1 => {
                        input.remove(at);
                    }
                    2 => input.insert(at, bytes[rng.usize(..bytes.len())]),
                    _ => input.truncate(at),
                }
            }
            let mut buf = BytesMut::from(&input[..]);
            match parse(&mut buf, &Echo) {
                Head::Partial | Head::NotTaken => assert_eq!(&buf[..], &input[..], "{:?}", String::from_utf8_lossy(&input)),
                Head::Malformed(e) => {
                    assert_eq!(&buf[..], &input[..], "{:?}", String::from_utf8_lossy(&input));
                    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    assert_eq!(httparse::Request::new(&mut headers).parse(&input).err(), Some(e), "httparse agrees");
                }
                Head::Taken(t) => {
                    taken_count += 1;
                    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    let mut reference = httparse::Request::new(&mut headers);
                    let Ok(httparse::Status::Complete(n)) = reference.parse(&input) else { panic!("taken, but httparse disagrees") };
                    assert_eq!(&buf[..], &input[n..], "the rest of the buffer");
                    assert_eq!(Some(t.req.method().as_str()), reference.method);
                    assert_eq!(t.req.uri().to_string(), reference.path.unwrap());
                    let got: Vec<(String, Vec<u8>)> =
                        t.req.headers().iter().map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec())).collect();
                    let want: Vec<(String, Vec<u8>)> =
                        reference.headers.iter().map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec())).collect();
                    let (mut got, mut want) = (got, want);
                    got.sort();
                    want.sort();
                    assert_eq!(got, want);
                }
            }
        }
        assert!(taken_count > 1_000, "only {taken_count} mangled heads were still taken");
    }

    fn peer() -> TlsPeer {
        TlsPeer { addr: "127.0.0.1:40000".parse().unwrap(), subject: None, tls: false }
    }

    /// What [`serve`] is given besides the stream and the app, fresh.
    fn fixtures() -> (Activity, ConnLimits, TlsPeer, BytesMut, (tokio::sync::watch::Sender<bool>, tokio::sync::watch::Receiver<bool>)) {
        (Activity::new(), ConnLimits::default(), peer(), BytesMut::new(), tokio::sync::watch::channel(false))
    }

    /// Reads answers off `client` until `n` have come (each ends its body,
    /// whose length it states).
    async fn answers(client: &mut tokio::io::DuplexStream, n: usize) -> Vec<String> {
        let mut got = Vec::new();
        let mut buf = Vec::new();
        while got.len() < n {
            let mut chunk = [0u8; 4096];
            let k = client.read(&mut chunk).await.unwrap();
            assert!(k > 0, "closed after {got:?}");
            buf.extend_from_slice(&chunk[..k]);
            while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8(buf[..end].to_vec()).unwrap();
                let len: usize = head.lines().find_map(|l| l.strip_prefix("content-length: ")).unwrap().parse().unwrap();
                if buf.len() < end + 4 + len {
                    break;
                }
                let whole: Vec<u8> = buf.drain(..end + 4 + len).collect();
                got.push(String::from_utf8(whole).unwrap());
            }
        }
        got
    }

    #[tokio::test]
    async fn pipelined_and_dribbled_requests_are_answered_in_order_until_one_is_not_taken() {
        let (mut client, mut server) = tokio::io::duplex(1 << 16);
        let (activity, limits, p, mut buf, (_stopping, mut stop)) = fixtures();
        let serving = async {
            let left = serve(&mut server, &mut buf, &Echo, &p, &activity, &limits, &mut stop).await;
            (left, buf)
        };
        let talking = async {
            // Two at once, then one whose body comes later, then one for hyper.
            client
                .write_all(b"POST /fast/a HTTP/1.1\r\nContent-Length: 2\r\nX-Purpose: p1\r\n\r\nhiGET /fast/b HTTP/1.1\r\nX-Purpose: p2\r\n\r\n")
                .await
                .unwrap();
            let first = answers(&mut client, 2).await;
            client.write_all(b"POST /fast/c HTTP/1.1\r\nContent-Length: 6\r\n\r\nhal").await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            client.write_all(b"f!!GET /slow HTTP/1.1\r\n\r\n").await.unwrap();
            let second = answers(&mut client, 1).await;
            (first, second)
        };
        let ((left, buf), (first, second)) = tokio::join!(serving, talking);
        assert!(matches!(left, Left::HandedOver));
        assert_eq!(&buf[..], b"GET /slow HTTP/1.1\r\n\r\n", "hyper gets the request whole");
        let bodies: Vec<&str> = first.iter().chain(&second).map(|a| a.split_once("\r\n\r\n").unwrap().1).collect();
        assert_eq!(bodies, ["POST /fast/a hi p1", "GET /fast/b  p2", "POST /fast/c half!! "]);
        for a in first.iter().chain(&second) {
            assert!(a.starts_with("HTTP/1.1 200 OK\r\n"), "{a}");
            assert!(a.contains("\r\nx-echo: 1\r\n") && a.contains("\r\ndate: ") && a.contains(" GMT\r\n"), "{a}");
        }
        assert_eq!(activity.in_flight.load(Ordering::Acquire), 0, "every answer counted as sent");
    }

    /// A head that cannot be read is answered in the API's JSON error
    /// format, after the answers before it, and the connection closed.
    #[tokio::test]
    async fn an_unreadable_head_is_answered_in_json_and_the_connection_closed() {
        let (mut client, mut server) = tokio::io::duplex(1 << 16);
        let (activity, limits, p, mut buf, (_stopping, mut stop)) = fixtures();
        let serving = serve(&mut server, &mut buf, &Echo, &p, &activity, &limits, &mut stop);
        let talking = async {
            client.write_all(b"GET /fast/a HTTP/1.1\r\n\r\nGET /fast/b HTTP/1.1\r\nx-purpose: a\x01b\r\n\r\n").await.unwrap();
            let mut all = Vec::new();
            client.read_to_end(&mut all).await.unwrap();
            String::from_utf8(all).unwrap()
        };
        let (left, text) = tokio::time::timeout(Duration::from_secs(5), async { tokio::join!(serving, talking) }).await.expect("closed");
        assert!(matches!(left, Left::Closed));
        let (first, second) = text.split_at(text.find("HTTP/1.1 400").expect("a 400"));
        assert!(first.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(second.contains("\r\nconnection: close\r\n") && second.contains("\r\ncontent-type: application/json\r\n"), "{second}");
        let body: serde_json::Value = serde_json::from_str(second.split_once("\r\n\r\n").unwrap().1).unwrap();
        assert_eq!(body["error"]["code"], "invalid_value", "{body}");
    }

    /// The heads hyper refuses with a bare status are refused here with
    /// that status in JSON, however they come (long ones read on to their
    /// end or hyper's limit), on the connection's first request and after
    /// answers of the lane's own.
    #[tokio::test]
    async fn heads_hyper_would_refuse_are_refused_in_json_with_its_status() {
        let many: String = (0..1000).map(|i| format!("X-H{i}: v\r\n")).collect();
        let cases: Vec<(String, u16, &str)> = vec![
            (format!("GET /fast HTTP/1.1\r\nHost: x\r\n{many}\r\n"), 431, "payload_too_large"),
            (format!("GET /slow?q={} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(1 << 20)), 431, "payload_too_large"),
            (format!("GET /fast?q={} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(100 << 10)), 414, "payload_too_large"),
            ("GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\nConnection: close\r\n\r\n".into(), 400, "invalid_body"),
            ("POST /fast HTTP/1.1\r\nContent-Length: abc\r\n\r\n".into(), 400, "invalid_body"),
            ("POST /fast HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello".into(), 400, "invalid_body"),
            ("POST /fast HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n".into(), 400, "invalid_body"),
            ("POST /fast HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!".into(), 400, "invalid_body"),
            ("POST /slow HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nxx".into(), 400, "invalid_body"),
            ("POST /slow HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\nxx".into(), 400, "invalid_body"),
            ("POST /slow HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".into(), 400, "invalid_body"),
            ("GET /fast/a b HTTP/1.1\r\nHost: x\r\n\r\n".into(), 400, "invalid_value"),
        ];
        for (i, (request, status, code)) in cases.into_iter().enumerate() {
            for after_an_answer in [false, true] {
                let (mut client, mut server) = tokio::io::duplex(1 << 16);
                let (activity, limits, p, mut buf, (_stopping, mut stop)) = fixtures();
                let serving = serve(&mut server, &mut buf, &Echo, &p, &activity, &limits, &mut stop);
                let request = request.clone();
                let talking = async {
                    let (mut rd, mut wr) = tokio::io::split(&mut client);
                    let first = if after_an_answer { "GET /fast/first HTTP/1.1\r\n\r\n" } else { "" };
                    // Written beside the reading: a long head is refused
                    // before it is all sent.
                    let writing = async move {
                        let _ = wr.write_all(first.as_bytes()).await;
                        let _ = wr.write_all(request.as_bytes()).await;
                        let _ = wr.shutdown().await;
                    };
                    let reading = async move {
                        let mut all = Vec::new();
                        let _ = rd.read_to_end(&mut all).await;
                        String::from_utf8_lossy(&all).into_owned()
                    };
                    tokio::join!(writing, reading).1
                };
                let (left, text) =
                    tokio::time::timeout(Duration::from_secs(10), async { tokio::join!(serving, talking) }).await.expect("answered");
                assert!(matches!(left, Left::Closed), "case {i}");
                let text = if after_an_answer {
                    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "case {i}: {text}");
                    text[1..].find("HTTP/1.1 ").map_or(String::new(), |k| text[k + 1..].to_owned())
                } else {
                    text
                };
                assert!(text.starts_with(&format!("HTTP/1.1 {status} ")), "case {i} ({after_an_answer}): {text}");
                assert!(text.contains("\r\ncontent-type: application/json\r\n") && text.contains("\r\nconnection: close\r\n"), "case {i}: {text}");
                let body: serde_json::Value = serde_json::from_str(text.split_once("\r\n\r\n").unwrap().1).expect("a JSON body");
                assert_eq!(body["error"]["code"], code, "case {i}: {body}");
                assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "case {i}: {body}");
            }
        }
    }

    /// What hyper serves is still handed to it, whole.
    #[test]
    fn heads_hyper_serves_are_not_judged_refused() {
        let many: String = (0..99).map(|i| format!("X-H{i}: v\r\n")).collect();
        for head in [
            "GET /slow HTTP/1.0\r\n\r\n".to_owned(),
            "GET /slow HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n".into(),
            "POST /slow HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: zz\r\n\r\n".into(),
            "GET http://a/fast HTTP/1.1\r\n\r\n".into(),
            "OPTIONS * HTTP/1.1\r\n\r\n".into(),
            format!("GET /slow HTTP/1.1\r\n{many}\r\n"),
            format!("GET /slow?q={} HTTP/1.1\r\n\r\n", "a".repeat(60_000)),
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".into(),
        ] {
            assert!(matches!(hyper_refusal(head.as_bytes()), Judged::Hyper), "{head:.80}");
        }
        assert!(matches!(hyper_refusal(b"GET /slow?q=aaaa"), Judged::Partial));
    }

    #[tokio::test]
    async fn an_idle_connection_closes_at_shutdown_and_a_closed_one_ends_the_loop() {
        let (activity, limits, p, mut buf, (stopping, mut stop)) = fixtures();
        let (mut client, mut server) = tokio::io::duplex(1 << 16);
        let serving = serve(&mut server, &mut buf, &Echo, &p, &activity, &limits, &mut stop);
        let talking = async {
            client.write_all(b"GET /fast HTTP/1.1\r\n\r\n").await.unwrap();
            answers(&mut client, 1).await;
            stopping.send(true).unwrap();
        };
        let (left, ()) = tokio::time::timeout(Duration::from_secs(5), async { tokio::join!(serving, talking) }).await.expect("closed at shutdown");
        assert!(matches!(left, Left::Closed));

        let (_stopping, mut stop) = tokio::sync::watch::channel(false);
        let (client, mut server) = tokio::io::duplex(1 << 16);
        drop(client);
        let mut buf = BytesMut::new();
        assert!(matches!(serve(&mut server, &mut buf, &Echo, &peer(), &activity, &limits, &mut stop).await, Left::Closed));
    }
    fn encoded(status: u16, headers: &[(&str, &str)], body: &str, close: bool) -> String {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        let mut out = Vec::new();
        encode(&mut out, axum::http::StatusCode::from_u16(status).unwrap(), &map, body.as_bytes(), close);
        let text = String::from_utf8(out).unwrap();
        // The date changes; the rest is checked exactly.
        let (before, after) = text.split_once("date: ").unwrap();
        format!("{before}date: _{}", &after[after.find("\r\n").unwrap()..])
    }

    /// The body is framed by its length whatever the answer's headers say,
    /// and no body follows a status that has none.
    #[test]
    fn answers_are_framed_by_their_body_and_say_when_the_connection_closes() {
        assert_eq!(
            encoded(200, &[("content-type", "application/json")], "{}", false),
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\ndate: _\r\n\r\n{}"
        );
        assert_eq!(
            encoded(200, &[("x-a", "1")], "hello", true),
            "HTTP/1.1 200 OK\r\nx-a: 1\r\nconnection: close\r\ncontent-length: 5\r\ndate: _\r\n\r\nhello",
            "a server shutting down says so, before the length as hyper writes it"
        );
        assert_eq!(
            encoded(200, &[("content-length", "5"), ("x-a", "1")], "hello", false),
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: 1\r\ndate: _\r\n\r\nhello",
            "the answer's own length, where it put it"
        );
        assert_eq!(
            encoded(200, &[("transfer-encoding", "chunked"), ("content-length", "99"), ("content-length", "5")], "hello", false),
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ndate: _\r\n\r\nhello",
            "no claim the body does not bear out"
        );
        assert_eq!(encoded(204, &[("content-length", "5")], "hello", false), "HTTP/1.1 204 No Content\r\ndate: _\r\n\r\n");
        assert_eq!(encoded(304, &[], "hello", false), "HTTP/1.1 304 Not Modified\r\ndate: _\r\n\r\n");
        assert_eq!(encoded(599, &[], "", false), "HTTP/1.1 599 <none>\r\ncontent-length: 0\r\ndate: _\r\n\r\n");
        let mut map = HeaderMap::new();
        map.append(header::CONNECTION, HeaderValue::from_static("keep-alive, Close"));
        assert!(closes(&map));
        map.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        assert!(!closes(&map));
    }

    /// A stream that sends what is written only when flushed, as a TLS
    /// stream does with what the socket could not take at once.
    struct HoldsUntilFlushed<T> {
        io: T,
        held: Vec<u8>,
    }

    impl<T: AsyncRead + Unpin> AsyncRead for HoldsUntilFlushed<T> {
        fn poll_read(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>, buf: &mut tokio::io::ReadBuf<'_>) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
        }
    }

    impl<T: AsyncWrite + Unpin> AsyncWrite for HoldsUntilFlushed<T> {
        fn poll_write(mut self: std::pin::Pin<&mut Self>, _cx: &mut std::task::Context<'_>, buf: &[u8]) -> std::task::Poll<std::io::Result<usize>> {
            self.held.extend_from_slice(buf);
            std::task::Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
            let this = &mut *self;
            while !this.held.is_empty() {
                match std::pin::Pin::new(&mut this.io).poll_write(cx, &this.held) {
                    std::task::Poll::Ready(Ok(n)) => {
                        this.held.drain(..n);
                    }
                    other => return other.map(|r| r.map(|_| ())),
                }
            }
            std::pin::Pin::new(&mut this.io).poll_flush(cx)
        }

        fn poll_shutdown(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
            std::task::ready!(self.as_mut().poll_flush(cx))?;
            std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
        }
    }

    #[tokio::test]
    async fn answers_reach_a_client_over_a_stream_that_holds_writes_until_flushed() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut server = HoldsUntilFlushed { io: server, held: Vec::new() };
        let (activity, limits, p, mut buf, (_stopping, mut stop)) = fixtures();
        let serving = serve(&mut server, &mut buf, &Echo, &p, &activity, &limits, &mut stop);
        let talking = async {
            client.write_all(b"GET /fast/1 HTTP/1.1\r\n\r\nGET /fast/2 HTTP/1.1\r\n\r\n").await.unwrap();
            let got = tokio::time::timeout(Duration::from_secs(5), answers(&mut client, 2)).await.expect("both answers sent");
            drop(client);
            got
        };
        let (left, got) = tokio::join!(serving, talking);
        assert!(matches!(left, Left::Closed));
        assert!(got[1].ends_with("GET /fast/2  "), "{got:?}");
    }

    /// Answers when it is let.
    #[derive(Clone)]
    struct Gated(std::sync::Arc<tokio::sync::Notify>);

    impl Serve for Gated {
        fn call(&self, _req: axum::extract::Request, _peer: &TlsPeer) -> impl Future<Output = Response> + Send + 'static + use<> {
            let gate = self.0.clone();
            async move {
                gate.notified().await;
                "done".into_response()
            }
        }

        fn takes(&self, _method: &Method, path: &str) -> bool {
            path.starts_with("/fast")
        }
    }

    #[tokio::test]
    async fn an_answer_in_progress_at_shutdown_says_the_connection_closes_and_it_does() {
        let gate = std::sync::Arc::new(tokio::sync::Notify::new());
        let (mut client, mut server) = tokio::io::duplex(1 << 16);
        let (activity, limits, p, mut buf, (stopping, mut stop)) = fixtures();
        let app = Gated(gate.clone());
        let serving = serve(&mut server, &mut buf, &app, &p, &activity, &limits, &mut stop);
        let talking = async {
            client.write_all(b"POST /fast HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi").await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            stopping.send(true).unwrap();
            gate.notify_one();
            let got = answers(&mut client, 1).await;
            let mut rest = Vec::new();
            client.read_to_end(&mut rest).await.unwrap();
            (got, rest)
        };
        let (left, (got, rest)) =
            tokio::time::timeout(Duration::from_secs(5), async { tokio::join!(serving, talking) }).await.expect("answered and closed");
        assert!(matches!(left, Left::Closed));
        assert!(got[0].starts_with("HTTP/1.1 200 OK\r\n") && got[0].contains("\r\nconnection: close\r\n"), "{}", got[0]);
        assert!(got[0].ends_with("\r\n\r\ndone"), "{}", got[0]);
        assert!(rest.is_empty(), "then the end of the stream");
        assert_eq!(activity.in_flight.load(Ordering::Acquire), 0);
    }

    /// A body that stalls, or ends short, goes to hyper with the head, so
    /// that its answer is hyper's on any connection.
    #[tokio::test]
    async fn a_body_that_stalls_or_ends_short_is_handed_to_hyper_from_its_head() {
        let sent: &[u8] = b"POST /fast HTTP/1.1\r\nX-Purpose: p\r\nContent-Length: 10\r\n\r\nabc";
        for ends in [false, true] {
            let (mut client, mut server) = tokio::io::duplex(1 << 16);
            let (activity, limits, p, mut buf, (_stopping, mut stop)) = fixtures();
            let limits = ConnLimits { body_timeout: Duration::from_millis(100), ..limits };
            let serving = async {
                let left = serve(&mut server, &mut buf, &Echo, &p, &activity, &limits, &mut stop).await;
                (left, buf)
            };
            let talking = async {
                client.write_all(sent).await.unwrap();
                if ends {
                    client.shutdown().await.unwrap();
                }
                client
            };
            let ((left, buf), _client) =
                tokio::time::timeout(Duration::from_secs(5), async { tokio::join!(serving, talking) }).await.expect("handed over");
            assert!(matches!(left, Left::HandedOver), "ends: {ends}");
            assert_eq!(&buf[..], sent, "ends: {ends}");
            assert_eq!(activity.in_flight.load(Ordering::Acquire), 0, "hyper begins it again");
        }
    }

    /// A next request's first bytes that came in behind an answered one
    /// are timed as a head from the answer on, not as an idle connection.
    #[tokio::test]
    async fn a_pipelined_partial_head_is_timed_as_a_head() {
        let (mut client, mut server) = tokio::io::duplex(1 << 16);
        let (activity, limits, p, mut buf, (_stopping, mut stop)) = fixtures();
        let serving = serve(&mut server, &mut buf, &Echo, &p, &activity, &limits, &mut stop);
        let talking = async {
            client.write_all(b"GET /fast/1 HTTP/1.1\r\n\r\nGET /fa").await.unwrap();
            answers(&mut client, 1).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            let first_byte = activity.first_byte.load(Ordering::Acquire);
            let in_flight = activity.in_flight.load(Ordering::Acquire);
            drop(client);
            (first_byte, in_flight)
        };
        let (left, (first_byte, in_flight)) = tokio::join!(serving, talking);
        assert!(matches!(left, Left::Closed));
        assert_eq!(in_flight, 0);
        assert_ne!(first_byte, 0, "the waiting head's clock runs");
        let slow = ConnLimits { header_timeout: Duration::from_millis(1), ..ConnLimits::default() };
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(matches!(activity.check(&slow), Err(super::super::Closed::Header)));
    }
}
