//! `loadgen`: an HTTP/1.1 load generator for loopback benchmarks of the
//! server. N persistent keep-alive connections each send one request at a
//! time (no pipelining) — closed loop by default, or open loop at a fixed
//! rate, where latency counts from the moment a request was due so that a
//! stalled server cannot hide its queueing (no coordinated omission).
//!
//! At a fixed rate the requests are released by a pacer thread, not by
//! each connection's own timer: tokio's timer has millisecond resolution,
//! so connections sleeping on it wake in bursts of a millisecond's worth of
//! requests, and a server answering a burst of 25 at once shows the burst's
//! queue in its tail, not its own latency. The pacer sleeps on the kernel's
//! high-resolution timer and releases every request that has fallen due
//! each time it wakes (at most every `--pace-us`), so requests arrive about
//! as evenly as the rate asks. Latency still counts from when a request was
//! due, so the pacer's own lateness is charged to the server; the result
//! reports it (`pacer_late_us`), and splits each latency into the wait
//! from due to sent (the pacer's lateness, or every connection busy with
//! an earlier request: `wait_us`) and the time from sent to answered
//! (`service_us`).
//!
//! It speaks HTTP over raw TCP: requests are rendered from precompiled
//! templates into one reused buffer and responses are framed with
//! `httparse` (Content-Length or chunked), so a request costs the client a
//! few microseconds. On a 2-core machine the client shares the CPU with the
//! server under test, and a heavier client would be measured instead of it.
//!
//! Requests come from URL and body templates with placeholders filled from
//! a tab-separated row file (`{0}`, `{1}`, …, `{key}` = `{0}`) and a request
//! counter (`{n}`), or from a file of NDJSON lines cut into bodies of K
//! lines each, every body sent once. The result is one JSON line on stdout:
//! requests per second and latency percentiles from an HDR histogram.

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Longest run accepted: load stays bounded in time whatever is asked.
const MAX_SECONDS: f64 = 600.0;

#[derive(Parser, Debug)]
#[command(name = "loadgen", about = "Closed-loop or fixed-rate HTTP/1.1 keep-alive load generator (JSON result on stdout)")]
struct Args {
    /// Target URL `http://HOST:PORT/PATH` (repeatable: used in turn; one host for all).
    /// Placeholders: {0}, {1}, … (columns of a --keys row), {key} (= {0}), {n} (request number + --seq-base).
    #[arg(long = "url", required = true)]
    urls: Vec<String>,
    /// Method (default: POST with a body, GET without).
    #[arg(long, short = 'X')]
    method: Option<String>,
    /// Extra request header `Name: value` (repeatable).
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// Body template (same placeholders as the URL).
    #[arg(long)]
    body: Option<String>,
    /// Body template read from a file.
    #[arg(long, conflicts_with = "body")]
    body_file: Option<PathBuf>,
    /// Tab-separated rows filling the placeholders, one row per request.
    #[arg(long)]
    keys: Option<PathBuf>,
    /// How rows are picked from --keys.
    #[arg(long, value_enum, default_value_t = Order::Random)]
    order: Order,
    /// NDJSON file cut into request bodies of --lines-per-request lines; each
    /// body is sent once and the run ends when they are used up.
    #[arg(long, conflicts_with_all = ["body", "body_file"])]
    lines: Option<PathBuf>,
    #[arg(long, default_value_t = 1000)]
    lines_per_request: usize,
    /// Bodies of --lines to skip (already sent by an earlier run).
    #[arg(long, default_value_t = 0)]
    skip_requests: u64,
    /// Persistent connections.
    #[arg(long, short = 'c', default_value_t = 64)]
    connections: usize,
    /// Measured seconds (after the warm-up).
    #[arg(long, short = 'd', default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many requests (warm-up included).
    #[arg(long, short = 'n')]
    requests: Option<u64>,
    /// Open loop: start requests at this many per second, whatever the answers' pace.
    #[arg(long)]
    rate: Option<f64>,
    /// At a fixed rate: the pacer wakes at most this often (microseconds),
    /// releasing every request that fell due since its last wake. Each wake
    /// costs the client a few microseconds of CPU that the server under test
    /// then lacks; 100 µs keeps a burst to a few requests at 30,000 per s.
    #[arg(long, default_value_t = 100)]
    pace_us: u64,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// Client worker threads (1: a single-threaded runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Seconds one request may take before it counts as an error and its connection is dropped.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Added to the request number in {n} (e.g. versions above the stored ones).
    #[arg(long, default_value_t = 0)]
    seq_base: u64,
    /// Seed of the random row choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Name echoed in the result.
    #[arg(long, default_value = "")]
    label: String,
    /// Also report, for every window of this many milliseconds of the
    /// measured time (by when requests fell due), how many answered, how
    /// many took over a millisecond, and the slowest: a stall shows as the
    /// windows it spans, which the overall percentiles cannot place.
    #[arg(long)]
    timeline_ms: Option<u64>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Order {
    Random,
    Sequential,
}

/// One piece of a template.
#[derive(Clone, Debug)]
enum Seg {
    Lit(Vec<u8>),
    Col(usize),
    Seq,
}

/// A template compiled once: literal bytes and placeholders.
#[derive(Clone, Debug)]
struct Template(Vec<Seg>);

impl Template {
    fn compile(s: &str) -> Template {
        let mut segs = Vec::new();
        let mut lit = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            lit.extend_from_slice(&rest.as_bytes()[..open]);
            let after = &rest[open + 1..];
            let name = after.find('}').map(|close| &after[..close]);
            let seg = match name {
                Some("key") => Some(Seg::Col(0)),
                Some("n") => Some(Seg::Seq),
                Some(d) if !d.is_empty() && d.len() < 4 && d.bytes().all(|c| c.is_ascii_digit()) => {
                    Some(Seg::Col(d.parse().expect("digits")))
                }
                _ => None,
            };
            match (seg, name) {
                (Some(seg), Some(name)) => {
                    if !lit.is_empty() {
                        segs.push(Seg::Lit(std::mem::take(&mut lit)));
                    }
                    segs.push(seg);
                    rest = &after[name.len() + 1..];
                }
                // A brace that opens no placeholder (JSON) is literal.
                _ => {
                    lit.push(b'{');
                    rest = after;
                }
            }
        }
        lit.extend_from_slice(rest.as_bytes());
        if !lit.is_empty() {
            segs.push(Seg::Lit(lit));
        }
        Template(segs)
    }

    fn max_col(&self) -> Option<usize> {
        self.0.iter().filter_map(|s| if let Seg::Col(c) = s { Some(*c) } else { None }).max()
    }

    fn needs_row(&self) -> bool {
        self.max_col().is_some()
    }

    fn render(&self, out: &mut Vec<u8>, row: &str, seq: u64) {
        for seg in &self.0 {
            match seg {
                Seg::Lit(b) => out.extend_from_slice(b),
                Seg::Col(c) => out.extend_from_slice(row.split('\t').nth(*c).unwrap_or("").as_bytes()),
                Seg::Seq => out.extend_from_slice(seq.to_string().as_bytes()),
            }
        }
    }
}

/// Where request bodies come from.
enum Bodies {
    None,
    Template(Template),
    /// The whole file and the start offset of every line (plus its end).
    Lines { data: Vec<u8>, starts: Vec<usize>, per: usize },
}

impl Bodies {
    /// Number of distinct bodies when each may be sent once.
    fn count(&self) -> Option<u64> {
        match self {
            Bodies::Lines { starts, per, .. } => Some((starts.len() - 1).div_ceil(*per) as u64),
            _ => None,
        }
    }
}

/// Everything the connections share, read-only.
struct Plan {
    addr: SocketAddr,
    method: String,
    /// `Host` and the fixed headers, rendered once.
    fixed_headers: Vec<u8>,
    urls: Vec<Template>,
    bodies: Bodies,
    rows: Vec<String>,
    order: Order,
    skip: u64,
    seq_base: u64,
    /// Request numbers below this are issued.
    limit: u64,
    rate: Option<f64>,
    /// At a fixed rate: one permit per request that has fallen due, added by
    /// the pacer; closed when the run ends.
    released: Arc<tokio::sync::Semaphore>,
    start: Instant,
    measure_from: Instant,
    end: Instant,
    timeout: Duration,
    seed: u64,
    timeline: Option<Duration>,
}

impl Plan {
    /// Renders request `i` into `out`; returns the number of body lines it carries.
    fn render(&self, i: u64, rng: &mut fastrand::Rng, out: &mut Vec<u8>) -> u64 {
        out.clear();
        let row: &str = if self.rows.is_empty() {
            ""
        } else {
            match self.order {
                Order::Random => &self.rows[rng.usize(..self.rows.len())],
                Order::Sequential => &self.rows[(i % self.rows.len() as u64) as usize],
            }
        };
        let seq = self.seq_base + i;
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        self.urls[(i % self.urls.len() as u64) as usize].render(out, row, seq);
        out.extend_from_slice(b" HTTP/1.1\r\n");
        out.extend_from_slice(&self.fixed_headers);
        let (body_at, lines) = match &self.bodies {
            Bodies::None => {
                if self.method != "GET" && self.method != "HEAD" {
                    out.extend_from_slice(b"Content-Length: 0\r\n");
                }
                out.extend_from_slice(b"\r\n");
                return 0;
            }
            Bodies::Template(t) => {
                // Content-Length is patched in after the body is rendered.
                out.extend_from_slice(b"Content-Length:           \r\n\r\n");
                let at = out.len();
                t.render(out, row, seq);
                (at, 1)
            }
            Bodies::Lines { data, starts, per } => {
                let first = (self.skip + i) as usize * per;
                let last = (first + per).min(starts.len() - 1);
                let body = &data[starts[first]..starts[last]];
                out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
                out.extend_from_slice(body);
                return (last - first) as u64;
            }
        };
        // Right-aligned: the spaces before it are the optional white space after the colon.
        let len = (out.len() - body_at).to_string();
        let slot_end = body_at - 4;
        out[slot_end - len.len()..slot_end].copy_from_slice(len.as_bytes());
        lines
    }
}

/// Windows of `--timeline-ms` at most in one run.
const MAX_TIMELINE_WINDOWS: usize = 100_000;

/// What one connection saw.
struct ConnStats {
    hist: Histogram<u64>,
    /// At a fixed rate: from when a request fell due to when it was sent
    /// (the pacer's lateness, and waiting for a free connection), and from
    /// then to its answer. Their sum is the latency, counted from due.
    wait: Histogram<u64>,
    service: Histogram<u64>,
    issued: u64,
    ok: u64,
    lines_ok: u64,
    status: BTreeMap<u16, u64>,
    io_errors: u64,
    bytes_out: u64,
    bytes_in: u64,
    sample: Option<String>,
    /// By window of `--timeline-ms`: answered, over a millisecond, slowest (µs).
    timeline: Vec<[u64; 3]>,
}

impl ConnStats {
    fn new() -> ConnStats {
        ConnStats {
            hist: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("histogram bounds"),
            wait: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("histogram bounds"),
            service: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("histogram bounds"),
            issued: 0,
            ok: 0,
            lines_ok: 0,
            status: BTreeMap::new(),
            io_errors: 0,
            bytes_out: 0,
            bytes_in: 0,
            sample: None,
            timeline: Vec::new(),
        }
    }

    /// Counts an answer that took `us` microseconds in timeline window `w`.
    fn mark(&mut self, w: usize, us: u64) {
        if self.timeline.len() <= w {
            self.timeline.resize(w + 1, [0; 3]);
        }
        let t = &mut self.timeline[w];
        *t = [t[0] + 1, t[1] + (us > 1000) as u64, t[2].max(us)];
    }

    fn merge(&mut self, o: ConnStats) {
        self.hist.add(&o.hist).expect("same bounds");
        self.wait.add(&o.wait).expect("same bounds");
        self.service.add(&o.service).expect("same bounds");
        self.issued += o.issued;
        self.ok += o.ok;
        self.lines_ok += o.lines_ok;
        for (s, n) in o.status {
            *self.status.entry(s).or_default() += n;
        }
        self.io_errors += o.io_errors;
        self.bytes_out += o.bytes_out;
        self.bytes_in += o.bytes_in;
        self.sample = self.sample.take().or(o.sample);
        if self.timeline.len() < o.timeline.len() {
            self.timeline.resize(o.timeline.len(), [0; 3]);
        }
        for (w, o) in self.timeline.iter_mut().zip(o.timeline) {
            *w = [w[0] + o[0], w[1] + o[1], w[2].max(o[2])];
        }
    }
}

/// A keep-alive connection with its read buffer.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    filled: usize,
}

/// One parsed response.
struct Answer {
    status: u16,
    close: bool,
    /// The start of the body, kept for error reports only.
    sample: Option<String>,
    bytes: usize,
}

fn bad(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_owned())
}

impl Conn {
    async fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn { stream, buf: vec![0; 64 << 10], filled: 0 })
    }

    /// Reads more bytes; an end of stream is an error unless `eof_ok`.
    async fn fill(&mut self, eof_ok: bool) -> std::io::Result<usize> {
        if self.filled == self.buf.len() {
            let n = self.buf.len() * 2;
            self.buf.resize(n, 0);
        }
        let n = self.stream.read(&mut self.buf[self.filled..]).await?;
        if n == 0 && !eof_ok {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed by the server"));
        }
        self.filled += n;
        Ok(n)
    }

    async fn ensure(&mut self, n: usize) -> std::io::Result<()> {
        while self.filled < n {
            self.fill(false).await?;
        }
        Ok(())
    }

    /// Position of the next CRLF at or after `from`, reading as needed.
    async fn crlf(&mut self, from: usize) -> std::io::Result<usize> {
        let mut scanned = from;
        loop {
            if let Some(p) = self.buf[scanned..self.filled].windows(2).position(|w| w == b"\r\n") {
                return Ok(scanned + p);
            }
            scanned = self.filled.saturating_sub(1).max(from);
            self.fill(false).await?;
        }
    }

    async fn roundtrip(&mut self, req: &[u8], want_sample: bool) -> std::io::Result<Answer> {
        self.stream.write_all(req).await?;
        // Head.
        let (head_len, status, content_length, chunked, close) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&self.buf[..self.filled]).map_err(|_| bad("malformed response head"))? {
                httparse::Status::Complete(n) => {
                    let status = resp.code.unwrap_or(0);
                    let mut cl = None;
                    let mut chunked = false;
                    let mut close = resp.version == Some(0);
                    for h in resp.headers.iter() {
                        if h.name.eq_ignore_ascii_case("content-length") {
                            cl = std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse::<usize>().ok());
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            chunked = h.value.windows(7).any(|w| w.eq_ignore_ascii_case(b"chunked"));
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            close = h.value.eq_ignore_ascii_case(b"close");
                        }
                    }
                    break (n, status, cl, chunked, close);
                }
                httparse::Status::Partial => {
                    self.fill(false).await?;
                }
            }
        };
        // Body.
        let mut to_eof = false;
        let (body_start, end) = if status == 204 || status == 304 || (100..200).contains(&status) {
            (head_len, head_len)
        } else if chunked {
            let mut p = head_len;
            loop {
                let eol = self.crlf(p).await?;
                let size_txt = std::str::from_utf8(&self.buf[p..eol]).map_err(|_| bad("chunk size"))?;
                let size_txt = size_txt.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size_txt, 16).map_err(|_| bad("chunk size"))?;
                if size == 0 {
                    // Trailers, if any, end with an empty line.
                    let mut q = eol + 2;
                    loop {
                        let e = self.crlf(q).await?;
                        if e == q {
                            break;
                        }
                        q = e + 2;
                    }
                    p = q + 2;
                    break;
                }
                p = eol + 2 + size + 2;
                self.ensure(p).await?;
            }
            (head_len, p)
        } else if let Some(cl) = content_length {
            self.ensure(head_len + cl).await?;
            (head_len, head_len + cl)
        } else {
            to_eof = true;
            while self.fill(true).await? > 0 {}
            (head_len, self.filled)
        };
        let sample = want_sample.then(|| {
            let b = &self.buf[body_start..end.min(body_start + 300)];
            String::from_utf8_lossy(b).into_owned()
        });
        // Keep anything past this response (there should be nothing: no pipelining).
        self.buf.copy_within(end..self.filled, 0);
        self.filled -= end;
        Ok(Answer { status, close: close || to_eof, sample, bytes: end })
    }
}

async fn run_connection(plan: Arc<Plan>, next: Arc<AtomicU64>, id: usize) -> ConnStats {
    let mut st = ConnStats::new();
    let mut rng = fastrand::Rng::with_seed(plan.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ id as u64);
    let mut wbuf = Vec::with_capacity(4096);
    let mut conn: Option<Conn> = None;
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= plan.limit {
            break;
        }
        let due = match plan.rate {
            Some(r) => {
                let due = plan.start + Duration::from_secs_f64(i as f64 / r);
                if due >= plan.end {
                    break;
                }
                // Permits are handed out first come, first served and added
                // in due order, so the permit this connection gets is the one
                // for request `i` (on the single-threaded runtime exactly;
                // with more threads give or take a neighbour). When every
                // connection was busy the permit is already there and `due`
                // has passed: that wait is the server's doing and counts.
                match plan.released.acquire().await {
                    Ok(p) => p.forget(),
                    Err(_) => break,
                }
                due
            }
            None => {
                let now = Instant::now();
                if now >= plan.end {
                    break;
                }
                now
            }
        };
        let lines = plan.render(i, &mut rng, &mut wbuf);
        st.issued += 1;
        let measured = due >= plan.measure_from;
        if conn.is_none() {
            match tokio::time::timeout(plan.timeout, Conn::open(plan.addr)).await {
                Ok(Ok(c)) => conn = Some(c),
                _ => {
                    st.io_errors += 1;
                    // Back off a little instead of spinning on a refused port.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let c = conn.as_mut().expect("connected");
        let want_sample = st.sample.is_none();
        let sent = Instant::now();
        match tokio::time::timeout(plan.timeout, c.roundtrip(&wbuf, want_sample)).await {
            Ok(Ok(a)) => {
                let took = due.elapsed();
                st.bytes_out += wbuf.len() as u64;
                st.bytes_in += a.bytes as u64;
                let ok = (200..300).contains(&a.status);
                if measured {
                    *st.status.entry(a.status).or_default() += 1;
                    if ok {
                        st.ok += 1;
                        st.lines_ok += lines;
                        let us = took.as_micros().max(1) as u64;
                        st.hist.saturating_record(us);
                        if let Some(width) = plan.timeline {
                            st.mark((due.saturating_duration_since(plan.measure_from).as_nanos() / width.as_nanos()) as usize, us);
                        }
                        if plan.rate.is_some() {
                            st.wait.saturating_record(sent.saturating_duration_since(due).as_micros().max(1) as u64);
                            st.service.saturating_record(sent.elapsed().as_micros().max(1) as u64);
                        }
                    }
                }
                if !ok && st.sample.is_none() {
                    st.sample = a.sample.map(|s| format!("{}: {s}", a.status));
                }
                if a.close {
                    conn = None;
                }
            }
            Ok(Err(e)) => {
                st.io_errors += 1;
                if st.sample.is_none() {
                    st.sample = Some(format!("io: {e}"));
                }
                conn = None;
            }
            Err(_) => {
                st.io_errors += 1;
                if st.sample.is_none() {
                    st.sample = Some("timeout".into());
                }
                conn = None;
            }
        }
    }
    st
}

/// The pacer of a fixed-rate run: releases request `k` (one permit) once
/// `start + k / rate` has passed, waking at most every `gap`, until `limit`
/// requests or `end`; then closes `released` so idle connections stop.
/// Returns how late each wake was past the earliest request it released.
fn pace(released: &tokio::sync::Semaphore, rate: f64, limit: u64, start: std::time::Instant, end: std::time::Instant, gap: Duration) -> Histogram<u64> {
    let mut late = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
    // A sleeping thread may be woken up to its timer slack late (50 µs by
    // default), on top of the gap: ask for the tightest, for this thread only.
    // SAFETY: PR_SET_TIMERSLACK takes a plain integer and touches no memory.
    #[allow(unsafe_code)]
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
    }
    let mut given = 0u64;
    while given < limit {
        let now = std::time::Instant::now();
        if now >= end {
            break;
        }
        // Requests 0..due have fallen due by now.
        let due = ((now - start).as_secs_f64() * rate).floor() as u64 + 1;
        let due = due.min(limit);
        if due > given {
            let first_due = start + Duration::from_secs_f64(given as f64 / rate);
            late.saturating_record(now.saturating_duration_since(first_due).as_micros().max(1) as u64);
            released.add_permits((due - given) as usize);
            given = due;
        }
        let next = start + Duration::from_secs_f64(given as f64 / rate);
        // std's sleep is the kernel's hrtimer (tens of microseconds late at
        // worst here), unlike tokio's millisecond wheel.
        std::thread::sleep(next.max(now + gap).min(end).saturating_duration_since(std::time::Instant::now()));
    }
    released.close();
    late
}

/// CPU seconds (user + system) this process has used so far.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
    // Fields after the parenthesized command name; utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Linux reports in USER_HZ, 100 per second on every mainstream platform.
    (ticks(11) + ticks(12)) / 100.0
}

fn parse_url(url: &str) -> anyhow::Result<(String, String)> {
    let rest = url.strip_prefix("http://").with_context(|| format!("{url}: only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(p) => (&rest[..p], &rest[p..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        bail!("{url}: no host");
    }
    Ok((authority.to_owned(), path.to_owned()))
}

fn load_lines(path: &PathBuf) -> anyhow::Result<(Vec<u8>, Vec<usize>)> {
    let mut data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !data.is_empty() && !data.ends_with(b"\n") {
        data.push(b'\n');
    }
    let mut starts = vec![0];
    for (i, &c) in data.iter().enumerate() {
        if c == b'\n' {
            starts.push(i + 1);
        }
    }
    if starts.len() < 2 {
        bail!("{} holds no lines", path.display());
    }
    Ok((data, starts))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.connections == 0 || args.connections > 10_000 {
        bail!("--connections must be between 1 and 10000");
    }
    if !(args.duration > 0.0 && args.warmup >= 0.0 && args.duration + args.warmup <= MAX_SECONDS) {
        bail!("--duration must be positive and --warmup + --duration at most {MAX_SECONDS} seconds");
    }
    if args.rate.is_some_and(|r| !r.is_finite() || r <= 0.0) {
        bail!("--rate must be positive");
    }
    if args.lines_per_request == 0 {
        bail!("--lines-per-request must be positive");
    }
    // Every connection keeps the whole timeline: bounded, so a long run
    // with fine windows cannot take the client's memory.
    if args.timeline_ms.is_some_and(|ms| ms == 0 || args.duration * 1000.0 / ms as f64 > MAX_TIMELINE_WINDOWS as f64) {
        bail!("--timeline-ms must be at least 1, and the measured time (--duration) hold at most {MAX_TIMELINE_WINDOWS} of its windows");
    }
    let mut authority = None;
    let mut urls = Vec::new();
    for u in &args.urls {
        let (a, path) = parse_url(u)?;
        if authority.as_ref().is_some_and(|x| *x != a) {
            bail!("all URLs must name the same host and port");
        }
        authority = Some(a);
        urls.push(Template::compile(&path));
    }
    let authority = authority.expect("at least one URL");
    let addr = {
        use std::net::ToSocketAddrs;
        let with_port = if authority.contains(':') { authority.clone() } else { format!("{authority}:80") };
        with_port.to_socket_addrs()?.next().with_context(|| format!("{authority}: no address"))?
    };
    if !addr.ip().is_loopback() {
        bail!("{addr}: this tool only loads servers on the loopback interface");
    }
    let bodies = if let Some(p) = &args.lines {
        let (data, starts) = load_lines(p)?;
        Bodies::Lines { data, starts, per: args.lines_per_request }
    } else if let Some(b) = &args.body {
        Bodies::Template(Template::compile(b))
    } else if let Some(p) = &args.body_file {
        let t = std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
        Bodies::Template(Template::compile(t.trim_end_matches('\n')))
    } else {
        Bodies::None
    };
    let rows: Vec<String> = match &args.keys {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("cannot read {}", p.display()))?
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
        None => Vec::new(),
    };
    let needs_row = urls.iter().any(Template::needs_row) || matches!(&bodies, Bodies::Template(t) if t.needs_row());
    if needs_row && rows.is_empty() {
        bail!("the templates use {{0}}/{{key}} placeholders: give --keys FILE with at least one row");
    }
    let method = args.method.clone().map(|m| m.to_ascii_uppercase()).unwrap_or_else(|| {
        if matches!(bodies, Bodies::None) { "GET".into() } else { "POST".into() }
    });
    let mut fixed = format!("Host: {authority}\r\n").into_bytes();
    for h in &args.headers {
        let Some((name, value)) = h.split_once(':') else { bail!("header {h:?}: expected `Name: value`") };
        if name.trim().eq_ignore_ascii_case("content-length") || name.trim().eq_ignore_ascii_case("host") {
            bail!("header {}: set by loadgen", name.trim());
        }
        fixed.extend_from_slice(format!("{}: {}\r\n", name.trim(), value.trim()).as_bytes());
    }
    let available = bodies.count().map(|n| n.saturating_sub(args.skip_requests));
    let limit = [args.requests, available].into_iter().flatten().min().unwrap_or(u64::MAX);
    let threads = args.threads.max(1);
    let rt = if threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?
    };
    let lines_per_request = args.lines_per_request;
    let label = args.label.clone();
    let cpu_before = cpu_seconds();
    let (total, measure_from, finished, pacer_late) = rt.block_on(async move {
        let start = Instant::now();
        let measure_from = start + Duration::from_secs_f64(args.warmup);
        let plan = Arc::new(Plan {
            addr,
            method,
            fixed_headers: fixed,
            urls,
            bodies,
            rows,
            order: args.order,
            skip: args.skip_requests,
            seq_base: args.seq_base,
            limit,
            rate: args.rate,
            released: Arc::new(tokio::sync::Semaphore::new(0)),
            start,
            measure_from,
            end: measure_from + Duration::from_secs_f64(args.duration),
            timeout: Duration::from_secs_f64(args.timeout),
            seed: args.seed,
            timeline: args.timeline_ms.map(Duration::from_millis),
        });
        let pacer = plan.rate.map(|r| {
            let (released, start, end) = (plan.released.clone(), plan.start.into_std(), plan.end.into_std());
            let gap = Duration::from_micros(args.pace_us);
            std::thread::spawn(move || pace(&released, r, limit, start, end, gap))
        });
        let next = Arc::new(AtomicU64::new(0));
        let tasks: Vec<_> = (0..args.connections)
            .map(|id| tokio::spawn(run_connection(plan.clone(), next.clone(), id)))
            .collect();
        let mut total = ConnStats::new();
        for t in tasks {
            total.merge(t.await.expect("connection task"));
        }
        let late = pacer.map(|p| p.join().expect("pacer thread"));
        (total, measure_from, Instant::now(), late)
    });
    let cpu = cpu_seconds() - cpu_before;
    let window = finished.saturating_duration_since(measure_from).as_secs_f64().max(1e-9);
    let h = &total.hist;
    let q = |p: f64| if h.is_empty() { 0 } else { h.value_at_quantile(p) };
    let answered: u64 = total.status.values().sum();
    let result = serde_json::json!({
        "label": label,
        "url": args.urls[0],
        "method": args.method.as_deref().unwrap_or(""),
        "connections": args.connections,
        "threads": threads,
        "rate_target": args.rate,
        "lines_per_request": args.lines.as_ref().map(|_| lines_per_request),
        "window_s": (window * 1000.0).round() / 1000.0,
        "issued": total.issued,
        "answered": answered,
        "ok": total.ok,
        "non_2xx": answered - total.ok,
        "io_errors": total.io_errors,
        "status": total.status.iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
        "rps": (total.ok as f64 / window * 10.0).round() / 10.0,
        "lines_per_s": (total.lines_ok as f64 / window).round(),
        "latency_us": {
            "min": if h.is_empty() { 0 } else { h.min() },
            "p50": q(0.50), "p90": q(0.90), "p99": q(0.99), "p999": q(0.999),
            "max": if h.is_empty() { 0 } else { h.max() },
            "mean": (h.mean() * 10.0).round() / 10.0,
        },
        "wait_us": args.rate.map(|_| spread(&total.wait)),
        "service_us": args.rate.map(|_| spread(&total.service)),
        "pacer_late_us": pacer_late.map(|h| serde_json::json!({
            "p50": h.value_at_quantile(0.5), "p99": h.value_at_quantile(0.99), "max": h.max(), "wakes": h.len(),
        })),
        "mb_out": (total.bytes_out as f64 / 1e6 * 10.0).round() / 10.0,
        "mb_in": (total.bytes_in as f64 / 1e6 * 10.0).round() / 10.0,
        "client_cpu_s": (cpu * 100.0).round() / 100.0,
        "client_cpu_us_per_req": if total.issued > 0 { (cpu * 1e6 / total.issued as f64).round() } else { 0.0 },
        "error_sample": total.sample,
        "timeline": args.timeline_ms.map(|ms| serde_json::json!({
            "window_ms": ms,
            "answered_over_1ms_max_us": total.timeline,
        })),
    });
    println!("{result}");
    Ok(())
}

/// Percentiles of a histogram of microseconds, for the result.
fn spread(h: &Histogram<u64>) -> serde_json::Value {
    if h.is_empty() {
        return serde_json::json!(null);
    }
    serde_json::json!({"p50": h.value_at_quantile(0.5), "p90": h.value_at_quantile(0.9), "p99": h.value_at_quantile(0.99), "max": h.max()})
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Connections' timelines add up window by window, whatever their lengths.
    #[test]
    fn timelines_merge_by_window() {
        let (mut a, mut b) = (ConnStats::new(), ConnStats::new());
        a.mark(0, 200);
        a.mark(0, 1500);
        b.mark(0, 900);
        b.mark(2, 30_000);
        a.merge(b);
        assert_eq!(a.timeline, vec![[3, 1, 1500], [0, 0, 0], [1, 1, 30_000]]);
    }

    #[test]
    fn templates_fill_columns_and_counter_and_keep_json_braces() {
        let t = Template::compile(r#"{"key":"{key}","v":{n},"name":"{1}","x":{"y":1}}"#);
        let mut out = Vec::new();
        t.render(&mut out, "110105194912310025\t张三", 42);
        assert_eq!(String::from_utf8(out).unwrap(), r#"{"key":"110105194912310025","v":42,"name":"张三","x":{"y":1}}"#);
        assert_eq!(t.max_col(), Some(1));
        assert!(!Template::compile("/healthz").needs_row());
    }

    #[test]
    fn chunked_and_sized_responses_are_framed_on_one_connection() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).unwrap();
            // Split across writes so the client must read more than once.
            s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel").unwrap();
            s.flush().unwrap();
            std::thread::sleep(Duration::from_millis(20));
            s.write_all(b"lo\r\n6\r\n world\r\n0\r\n\r\n").unwrap();
            let _ = s.read(&mut buf).unwrap();
            s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found").unwrap();
            let _ = s.read(&mut buf).unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok").unwrap();
        });
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let mut c = Conn::open(addr).await.unwrap();
            let a = c.roundtrip(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", true).await.unwrap();
            assert_eq!((a.status, a.close), (200, false));
            assert!(a.sample.unwrap().contains("hel"));
            let b = c.roundtrip(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", true).await.unwrap();
            assert_eq!((b.status, b.close, b.sample.as_deref()), (404, false, Some("not found")));
            let d = c.roundtrip(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", false).await.unwrap();
            assert_eq!((d.status, d.close), (200, true));
            assert_eq!(c.filled, 0);
        });
        server.join().unwrap();
    }

    #[test]
    fn line_bodies_cover_the_file_once_with_exact_lengths() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("u.ndjson");
        std::fs::write(&p, "a\nbb\nccc\ndddd\neeeee").unwrap();
        let (data, starts) = load_lines(&p).unwrap();
        let bodies = Bodies::Lines { data, starts, per: 2 };
        assert_eq!(bodies.count(), Some(3));
        let now = Instant::now();
        let plan = Plan {
            addr: "127.0.0.1:1".parse().unwrap(),
            method: "POST".into(),
            fixed_headers: b"Host: h\r\n".to_vec(),
            urls: vec![Template::compile("/u/{n}")],
            bodies,
            rows: Vec::new(),
            order: Order::Sequential,
            skip: 1,
            seq_base: 0,
            limit: 2,
            rate: None,
            released: Arc::new(tokio::sync::Semaphore::new(0)),
            start: now,
            measure_from: now,
            end: now,
            timeout: Duration::from_secs(1),
            seed: 1,
            timeline: None,
        };
        let mut rng = fastrand::Rng::with_seed(1);
        let mut out = Vec::new();
        assert_eq!(plan.render(0, &mut rng, &mut out), 2);
        assert_eq!(String::from_utf8_lossy(&out), "POST /u/0 HTTP/1.1\r\nHost: h\r\nContent-Length: 9\r\n\r\nccc\ndddd\n");
        assert_eq!(plan.render(1, &mut rng, &mut out), 1);
        assert!(String::from_utf8_lossy(&out).ends_with("Content-Length: 6\r\n\r\neeeee\n"));
    }

    #[test]
    fn templated_bodies_get_their_length() {
        let now = Instant::now();
        let plan = Plan {
            addr: "127.0.0.1:1".parse().unwrap(),
            method: "POST".into(),
            fixed_headers: Vec::new(),
            urls: vec![Template::compile("/p/{0}")],
            bodies: Bodies::Template(Template::compile(r#"{"name":"{1}"}"#)),
            rows: vec!["k1\t张三".into()],
            order: Order::Random,
            skip: 0,
            seq_base: 0,
            limit: 1,
            rate: None,
            released: Arc::new(tokio::sync::Semaphore::new(0)),
            start: now,
            measure_from: now,
            end: now,
            timeout: Duration::from_secs(1),
            seed: 1,
            timeline: None,
        };
        let mut out = Vec::new();
        plan.render(0, &mut fastrand::Rng::with_seed(3), &mut out);
        let text = String::from_utf8(out).unwrap();
        let body = r#"{"name":"张三"}"#;
        assert!(text.starts_with("POST /p/k1 HTTP/1.1\r\n"), "{text}");
        let mut headers = [httparse::EMPTY_HEADER; 4];
        let mut req = httparse::Request::new(&mut headers);
        let httparse::Status::Complete(n) = req.parse(text.as_bytes()).unwrap() else { panic!("partial") };
        let cl = req.headers.iter().find(|h| h.name == "Content-Length").unwrap();
        assert_eq!(std::str::from_utf8(cl.value).unwrap().trim(), body.len().to_string());
        assert_eq!(&text[n..], body);
    }
}
