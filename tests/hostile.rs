//! Hostile input against every HTTP endpoint of the real server.
//!
//! Each case is a request a careless or malicious client could send. Every one must get the
//! exact 4xx status and stable error code it is listed with, and a message that names the
//! problem; none may get a 5xx, and the server must keep answering and never panic. Requests
//! whose bytes matter (repeated headers, invalid UTF-8, request targets that an HTTP library
//! would normalise) go over a plain TCP socket, exactly as written here.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails by panicking; helpers outside #[test] too"
)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use common::{code, message, nonce, now, Machine, Options, Server};
use serde_json::{json, Value};

// === Harness ===

/// A server whose standard error goes to a file, so that a panic or an internal error
/// anywhere during a test is caught even when the answer looked fine.
struct Env {
    server: Server,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Env {
    fn start() -> Self {
        Self::start_with("")
    }

    fn start_with(extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("stderr.log");
        let server = Server::start_with(Options {
            extra: extra.to_owned(),
            log: Some(("warn".into(), log.clone())),
            ..Options::default()
        });
        Self {
            server,
            log,
            _dir: dir,
        }
    }

    /// The server still answers, its own request counter shows no 5xx answer on any route,
    /// and nothing in its log says it panicked or hit an internal error.
    #[track_caller]
    fn assert_alive(&self, after: &str) {
        let (status, body) = self.server.raw("GET", "/healthz", &[], None);
        assert_eq!(status, 200, "after {after}: /healthz answered {body}");
        let server_errors: Vec<String> = self
            .server
            .metrics()
            .lines()
            .filter(|l| l.starts_with("tempvault_http_requests_total{") && l.contains("status=\"5"))
            .map(str::to_owned)
            .collect();
        assert!(
            server_errors.is_empty(),
            "after {after}: server errors were answered: {server_errors:?}"
        );
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert!(
            !log.contains("panicked"),
            "after {after}: the server panicked:\n{log}"
        );
        assert!(
            !log.contains("internal error"),
            "after {after}: the server logged an internal error:\n{log}"
        );
    }

    fn admin_raw(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> (u16, Value) {
        let auth = format!("Bearer {}", self.server.token);
        let mut headers = vec![("Authorization", auth.as_str())];
        if let Some(ct) = content_type {
            headers.push(("Content-Type", ct));
        }
        self.server.raw(method, path, &headers, Some(body))
    }

    /// An admin request sent byte for byte over TCP, so that no client library resolves
    /// dot segments or re-encodes the path first.
    fn exact(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let auth = format!("Bearer {}", self.server.token);
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut headers: Vec<(&str, &[u8])> = vec![("Authorization", auth.as_bytes())];
        if !body.is_empty() {
            headers.push(("Content-Type", b"application/json"));
        }
        tcp(
            &self.server,
            &request(method, path, &headers, body.as_bytes()),
        )
    }

    fn admin_json(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        self.admin_raw(method, path, Some("application/json"), body.as_bytes())
    }

    fn admin_ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, answer) = self.server.admin(method, path, body);
        assert!(
            status == 200 || status == 201,
            "{method} {path}: {status} {answer}"
        );
        answer
    }
}

/// Collects every mismatch of a table, so that one run shows all of them.
#[derive(Default)]
struct Cases {
    count: usize,
    failures: Vec<String>,
}

impl Cases {
    /// The answer must be exactly `status` with error `want_code`, and a message that
    /// contains `hint` (any non-empty message when `hint` is empty).
    fn refused(&mut self, what: &str, got: (u16, Value), status: u16, want_code: &str, hint: &str) {
        self.count += 1;
        let (s, body) = got;
        let msg = message(&body);
        if s != status || code(&body) != want_code {
            self.failures
                .push(format!("{what}: want {status} {want_code}, got {s} {body}"));
        } else if msg.trim().is_empty() || !msg.contains(hint) {
            self.failures
                .push(format!("{what}: message {msg:?} does not name {hint:?}"));
        }
    }

    /// The answer must be exactly `status` (for answers that carry no error).
    fn status(&mut self, what: &str, got: (u16, Value), status: u16) {
        self.count += 1;
        if got.0 != status {
            self.failures
                .push(format!("{what}: want {status}, got {} {}", got.0, got.1));
        }
    }

    #[track_caller]
    fn finish(self, group: &str) {
        assert!(
            self.failures.is_empty(),
            "{group}: {} of {} cases failed:\n{}",
            self.failures.len(),
            self.count,
            self.failures.join("\n")
        );
        eprintln!("{group}: {} cases", self.count);
    }
}

/// Sends `request` as is over a new connection and reads the answer until the server
/// closes it. Returns the status and the body as JSON (or as a string when it is not).
///
/// A server that refuses a request early may close the connection before it has all been
/// written; the answer it sent first is still read.
fn tcp(server: &Server, request: &[u8]) -> (u16, Value) {
    let addr = server.url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = stream.write_all(request);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> (u16, Value) {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 || tail.len() < n {
                break;
            }
            out.push_str(&tail[..n]);
            rest = tail[n..].trim_start_matches("\r\n");
        }
        out
    } else {
        body.to_owned()
    };
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

/// One HTTP/1.1 request, byte for byte: the target and header values are not touched.
fn request(method: &str, target: &str, headers: &[(&str, &[u8])], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n")
        .into_bytes();
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// Like [`request`], with the body sent in 16 KiB chunks and no declared length.
fn chunked(method: &str, target: &str, headers: &[(&str, &[u8])], body: &[u8]) -> Vec<u8> {
    let mut with_te = headers.to_vec();
    with_te.push(("Transfer-Encoding", b"chunked"));
    let mut out = request(method, target, &with_te, b"");
    for chunk in body.chunks(16 * 1024) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// The four authentication headers of a request, as owned bytes a test can bend.
fn auth_headers(
    m: &Machine,
    method: &str,
    target: &str,
    ts: &str,
    n: &str,
) -> Vec<(String, Vec<u8>)> {
    let h = m.sign(method, target, b"", ts, n);
    vec![
        ("X-Machine-Id".into(), h.machine_id.into_bytes()),
        ("X-Timestamp".into(), h.timestamp.into_bytes()),
        ("X-Nonce".into(), h.nonce.into_bytes()),
        ("X-Signature".into(), h.signature.into_bytes()),
    ]
}

fn send(
    server: &Server,
    method: &str,
    target: &str,
    headers: &[(String, Vec<u8>)],
) -> (u16, Value) {
    let borrowed: Vec<(&str, &[u8])> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    tcp(server, &request(method, target, &borrowed, b""))
}

/// Signs `signed_target` now with a fresh nonce and sends it to `sent_target`.
fn signed_to(server: &Server, m: &Machine, signed_target: &str, sent_target: &str) -> (u16, Value) {
    let h = auth_headers(m, "GET", signed_target, &now().to_string(), &nonce());
    send(server, "GET", sent_target, &h)
}

/// `headers` with the value of `name` replaced.
fn with(headers: &[(String, Vec<u8>)], name: &str, value: &[u8]) -> Vec<(String, Vec<u8>)> {
    headers
        .iter()
        .map(|(k, v)| {
            if k == name {
                (k.clone(), value.to_vec())
            } else {
                (k.clone(), v.clone())
            }
        })
        .collect()
}

/// Sleeps, if needed, so that the next few hundred milliseconds stay within one second of
/// the clock: a request signed at `now() + offset` then reaches the server in the same
/// second, and the skew it sees is exactly `offset`.
fn early_in_a_second() {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_millis();
    if ms > 500 {
        std::thread::sleep(Duration::from_millis(u64::from(1020 - ms)));
    }
}

const DB: &str = "/v1/default/secrets/app/db";
const WHOAMI: &str = "/v1/default/machine";

/// A server with `app/db` and `app/other`, and a machine granted only `app/db`.
fn reader() -> (Env, Machine) {
    let env = Env::start();
    env.server.seed_secret("app", "db", "value-db");
    env.server.seed_secret("app", "other", "value-other");
    let m = env.server.ready_machine("app", "db");
    (env, m)
}

// === Signed machine requests: the four headers ===

/// Each authentication header must come exactly once: a proxy and the server could
/// otherwise disagree on which copy counts. Repeats are refused whether the copies agree or
/// not, and whatever the case of the header name, on both machine endpoints.
#[test]
fn repeated_authentication_headers_are_malformed() {
    let (env, m) = reader();
    let mut cases = Cases::default();
    for target in [DB, WHOAMI] {
        let good = auth_headers(&m, "GET", target, &now().to_string(), &nonce());
        // The same request sent once, over the same raw socket, is accepted: the refusals
        // below are about the repeat, nothing else.
        cases.status(
            &format!("{target} once"),
            send(&env.server, "GET", target, &good),
            200,
        );
        for (i, (name, value)) in good.iter().enumerate() {
            let fresh = auth_headers(&m, "GET", target, &now().to_string(), &nonce());
            let mut same = fresh.clone();
            same.push((name.clone(), fresh[i].1.clone()));
            cases.refused(
                &format!("{target} {name} twice, same value"),
                send(&env.server, "GET", target, &same),
                401,
                "missing_or_malformed_auth",
                &format!("{name} is given more than once"),
            );
            let mut other = fresh.clone();
            other.push((name.to_ascii_lowercase(), value.clone()));
            cases.refused(
                &format!("{target} {name} twice, other value, lower-case name"),
                send(&env.server, "GET", target, &other),
                401,
                "missing_or_malformed_auth",
                &format!("{name} is given more than once"),
            );
        }
    }
    cases.finish("repeated headers");
    env.assert_alive("repeated headers");
}

/// Header values must be ASCII. Bytes that are not UTF-8 at all, and UTF-8 that is not
/// ASCII, are refused by name rather than decoded lossily, for each of the four headers.
#[test]
fn authentication_headers_with_non_ascii_bytes_are_malformed() {
    let (env, m) = reader();
    let mut cases = Cases::default();
    let bad_values: [(&str, &[u8]); 4] = [
        ("0xff 0xfe", b"\xff\xfeabcdefghijklmnopq"),
        ("a broken two-byte sequence", b"abcdefgh\xc3\x28ijklmnop"),
        ("Latin-1 e-acute", b"abcdefgh\xe9ijklmnop"),
        ("UTF-8 e-acute", "abcdefghéijklmnop".as_bytes()),
    ];
    for target in [DB, WHOAMI] {
        for name in ["X-Machine-Id", "X-Timestamp", "X-Nonce", "X-Signature"] {
            for (what, value) in bad_values {
                let good = auth_headers(&m, "GET", target, &now().to_string(), &nonce());
                cases.refused(
                    &format!("{target} {name} with {what}"),
                    send(&env.server, "GET", target, &with(&good, name, value)),
                    401,
                    "missing_or_malformed_auth",
                    &format!("{name} is not valid ASCII"),
                );
            }
        }
    }
    cases.finish("non-ASCII headers");
    env.assert_alive("non-ASCII headers");
}

/// Machine ids, timestamps and nonces have exactly one accepted spelling each; anything
/// near it is malformed, and the message names the header. The length edges of the nonce
/// are accepted.
#[test]
fn machine_ids_timestamps_and_nonces_outside_their_syntax_are_malformed() {
    let (env, m) = reader();
    let mut cases = Cases::default();
    let upper = m.id.to_uppercase();
    let braced = format!("{{{}}}", m.id);
    let simple = m.id.replace('-', "");
    let urn = format!("urn:uuid:{}", m.id);
    let leading_zero = format!("0{}", now());
    let plus = format!("+{}", now());
    let minus_zero = "-0".to_owned();
    let fractional = format!("{}.0", now());
    let full_width: String = now()
        .to_string()
        .chars()
        .map(|c| char::from_u32(c as u32 - '0' as u32 + 0xFF10).unwrap())
        .collect();
    let cases_by_header: Vec<(&str, Vec<u8>, &str)> = vec![
        ("X-Machine-Id", upper.into_bytes(), "UUID"),
        ("X-Machine-Id", braced.into_bytes(), "UUID"),
        ("X-Machine-Id", simple.into_bytes(), "UUID"),
        ("X-Machine-Id", urn.into_bytes(), "UUID"),
        ("X-Machine-Id", b"".to_vec(), "UUID"),
        ("X-Machine-Id", b"../../etc/passwd".to_vec(), "UUID"),
        ("X-Timestamp", leading_zero.into_bytes(), "X-Timestamp"),
        ("X-Timestamp", plus.into_bytes(), "X-Timestamp"),
        ("X-Timestamp", minus_zero.into_bytes(), "X-Timestamp"),
        ("X-Timestamp", fractional.into_bytes(), "X-Timestamp"),
        ("X-Timestamp", b"1.7e9".to_vec(), "X-Timestamp"),
        ("X-Timestamp", b"0x66000000".to_vec(), "X-Timestamp"),
        ("X-Timestamp", b"".to_vec(), "X-Timestamp"),
        // 13 digits: past the 12-digit bound, refused before parsing.
        ("X-Timestamp", b"1000000000000".to_vec(), "X-Timestamp"),
        // i64::MAX, and 20 digits past what i64 (and u64) can hold.
        (
            "X-Timestamp",
            i64::MAX.to_string().into_bytes(),
            "X-Timestamp",
        ),
        (
            "X-Timestamp",
            b"99999999999999999999".to_vec(),
            "X-Timestamp",
        ),
        (
            "X-Timestamp",
            b"18446744073709551616".to_vec(),
            "X-Timestamp",
        ),
        ("X-Timestamp", full_width.into_bytes(), "X-Timestamp"),
        ("X-Nonce", "a".repeat(15).into_bytes(), "X-Nonce"),
        ("X-Nonce", "a".repeat(65).into_bytes(), "X-Nonce"),
        ("X-Nonce", "a".repeat(1000).into_bytes(), "X-Nonce"),
        ("X-Nonce", b"abcdefgh.ijklmnop".to_vec(), "X-Nonce"),
        ("X-Nonce", b"abcdefgh ijklmnop".to_vec(), "X-Nonce"),
        ("X-Nonce", b"abcdefgh/ijklmnop".to_vec(), "X-Nonce"),
        ("X-Nonce", b"abcdefgh+ijklmnop".to_vec(), "X-Nonce"),
        ("X-Nonce", b"abcdefgh=ijklmnop".to_vec(), "X-Nonce"),
        ("X-Nonce", b"abcdefgh%2Fijklmnop".to_vec(), "X-Nonce"),
        ("X-Nonce", b"abcdefgh\tijklmnop".to_vec(), "X-Nonce"),
        ("X-Nonce", b"".to_vec(), "X-Nonce"),
    ];
    for target in [DB, WHOAMI] {
        for (name, value, hint) in &cases_by_header {
            let good = auth_headers(&m, "GET", target, &now().to_string(), &nonce());
            cases.refused(
                &format!("{target} {name}={:?}", String::from_utf8_lossy(value)),
                send(&env.server, "GET", target, &with(&good, name, value)),
                401,
                "missing_or_malformed_auth",
                hint,
            );
        }
    }
    // A well-formed id nobody has: the same answer as a bad signature.
    let good = auth_headers(&m, "GET", DB, &now().to_string(), &nonce());
    cases.refused(
        "the nil UUID",
        send(
            &env.server,
            "GET",
            DB,
            &with(
                &good,
                "X-Machine-Id",
                b"00000000-0000-0000-0000-000000000000",
            ),
        ),
        401,
        "authentication_failed",
        "authentication failed",
    );
    // The nonce length edges, 16 and 64, are accepted when properly signed.
    for len in [16, 64] {
        let n = "n".repeat(len - 4) + &nonce()[..4];
        let h = auth_headers(&m, "GET", DB, &now().to_string(), &n);
        cases.status(
            &format!("nonce of {len}"),
            send(&env.server, "GET", DB, &h),
            200,
        );
    }
    cases.finish("header syntax");
    env.assert_alive("header syntax");
}

/// The signature has one accepted encoding: standard, padded base64 of exactly 64 bytes.
/// Wrong padding, the URL-safe alphabet, set trailing bits and 63 or 65 bytes are malformed.
/// Well-encoded signatures that are not valid Ed25519 (all zeros, a small-order `R`, a
/// non-canonical `S`) are authentication failures, exactly like a wrong key.
#[test]
fn signatures_in_any_other_encoding_are_malformed_and_invalid_ones_fail() {
    let (env, m) = reader();
    let mut cases = Cases::default();
    for target in [DB, WHOAMI] {
        // A signature whose base64 holds a '+' or '/', so the URL-safe spelling differs.
        let (ts, n, sig) = loop {
            let (ts, n) = (now().to_string(), nonce());
            let h = m.sign("GET", target, b"", &ts, &n);
            if h.signature.contains('+') || h.signature.contains('/') {
                break (ts, n, h.signature);
            }
        };
        let raw = STANDARD.decode(&sig).unwrap();
        let mut trailing = sig.clone().into_bytes();
        // 64 bytes end in one byte spread over two characters plus "=="; the second of
        // those carries four unused bits. Setting one keeps the same bytes but another text.
        let c = trailing[85];
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let idx = alphabet.iter().position(|a| *a == c).unwrap();
        trailing[85] = alphabet[idx | 1];
        let trailing = String::from_utf8(trailing).unwrap();
        let mut inner_pad = sig.clone();
        inner_pad.replace_range(40..41, "=");
        let mut inner_space = sig.clone();
        inner_space.replace_range(40..41, " ");
        let malformed: Vec<(&str, String)> = vec![
            ("URL-safe alphabet", sig.replace('+', "-").replace('/', "_")),
            ("set trailing bits", trailing),
            ("one '=' short", sig[..87].to_owned()),
            (
                "no padding, padded to 88 with data",
                format!("{}AA", &sig[..86]),
            ),
            ("'=' inside the data", inner_pad),
            ("a space inside the data", inner_space),
            ("63 bytes", STANDARD.encode(&raw[..63])),
            (
                "63 bytes padded out to 88",
                format!("{}====", STANDARD.encode(&raw[..63])),
            ),
            (
                "65 bytes, also 88 characters",
                STANDARD.encode([raw.clone(), vec![7]].concat()),
            ),
            (
                "128 bytes",
                STANDARD.encode([raw.clone(), raw.clone()].concat()),
            ),
            ("hex instead of base64", hex::encode(&raw)),
        ];
        for (what, value) in malformed {
            let h = auth_headers(&m, "GET", target, &ts, &n);
            cases.refused(
                &format!("{target} signature: {what}"),
                send(
                    &env.server,
                    "GET",
                    target,
                    &with(&h, "X-Signature", value.as_bytes()),
                ),
                401,
                "missing_or_malformed_auth",
                "X-Signature",
            );
        }

        // Well encoded, not valid.
        let mut zero_r = [0u8; 64];
        zero_r[0] = 1; // R = the identity, S = 0
        let mut s_plus_l = raw.clone();
        let l: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut carry = 0u16;
        for i in 0..32 {
            let sum = u16::from(raw[32 + i]) + u16::from(l[i]) + carry;
            s_plus_l[32 + i] = sum as u8;
            carry = sum >> 8;
        }
        let mut flipped = raw.clone();
        flipped[10] ^= 0x01;
        let invalid: Vec<(&str, Vec<u8>)> = vec![
            ("all zeros", vec![0; 64]),
            ("small-order R and zero S", zero_r.to_vec()),
            ("S + L (non-canonical S)", s_plus_l),
            ("one bit flipped", flipped),
        ];
        for (what, bytes) in invalid {
            let h = auth_headers(&m, "GET", target, &now().to_string(), &nonce());
            let value = STANDARD.encode(bytes);
            cases.refused(
                &format!("{target} signature: {what}"),
                send(
                    &env.server,
                    "GET",
                    target,
                    &with(&h, "X-Signature", value.as_bytes()),
                ),
                401,
                "authentication_failed",
                "authentication failed",
            );
        }
        // The untouched signature still works: none of the refusals above burned its nonce.
        let h = auth_headers(&m, "GET", target, &ts, &n);
        cases.status(
            &format!("{target} the genuine signature"),
            send(&env.server, "GET", target, &h),
            200,
        );
    }
    cases.finish("signature encodings");
    env.assert_alive("signature encodings");
}

// === Signed machine requests: the clock ===

/// With the default 60-second window: 60 seconds ahead is accepted and 61 is not; a
/// timestamp 60 seconds back on a server that started less than a minute ago is refused
/// because it predates the start, with its own message; the epoch and the largest 12-digit
/// value are stale, not malformed.
#[test]
fn timestamps_at_the_edges_of_the_default_window() {
    let (env, m) = reader();
    let mut cases = Cases::default();
    let edge: [(i64, Option<&str>); 4] = [
        (60, None),
        (61, Some("more than 60 seconds")),
        (-60, Some("before the server started")),
        (-61, Some("more than 60 seconds")),
    ];
    for target in [DB, WHOAMI] {
        for (offset, refusal) in edge {
            early_in_a_second();
            let ts = (now() + offset).to_string();
            let got = send(
                &env.server,
                "GET",
                target,
                &auth_headers(&m, "GET", target, &ts, &nonce()),
            );
            let what = format!("{target} now{offset:+}");
            match refusal {
                None => cases.status(&what, got, 200),
                Some(hint) => cases.refused(&what, got, 401, "stale_timestamp", hint),
            }
        }
        for ts in ["0", "1", "999999999999"] {
            cases.refused(
                &format!("{target} timestamp {ts}"),
                send(
                    &env.server,
                    "GET",
                    target,
                    &auth_headers(&m, "GET", target, ts, &nonce()),
                ),
                401,
                "stale_timestamp",
                "X-Timestamp",
            );
        }
    }
    cases.finish("default window");
    env.assert_alive("default window");
}

/// The past edge of the window, once the server has been up longer than the window: with a
/// 5-second window, 5 seconds back is accepted and 6 is refused, on both sides.
#[test]
fn the_past_edge_of_the_window_is_inclusive() {
    let env = Env::start_with("[auth]\nskew_seconds = 5\n");
    env.server.seed_secret("app", "db", "value-db");
    let m = env.server.ready_machine("app", "db");
    // Let the start second fall more than a window behind.
    std::thread::sleep(Duration::from_millis(6_500));
    let mut cases = Cases::default();
    for (offset, ok) in [(-5, true), (-6, false), (5, true), (6, false)] {
        early_in_a_second();
        let ts = (now() + offset).to_string();
        let got = send(
            &env.server,
            "GET",
            DB,
            &auth_headers(&m, "GET", DB, &ts, &nonce()),
        );
        let what = format!("now{offset:+}");
        if ok {
            cases.status(&what, got, 200);
        } else {
            cases.refused(&what, got, 401, "stale_timestamp", "more than 5 seconds");
        }
    }
    cases.finish("short window");
    env.assert_alive("short window");
}

// === Signed machine requests: the request target ===

/// The signature covers the request target byte for byte, and the secret read is the one
/// that target names. A request signed for `app/db` and sent to any other spelling of it
/// (dot segments, encoded slashes, double encoding, a trailing slash, an added or empty
/// query, other case in an escape) is refused, or, when the route does not exist, gets a
/// 404. A machine granted only `app/db` that signs a tricked path itself aimed at `app/other`
/// or at another vault is refused too. The only 200s are for targets that name `app/db`,
/// and they return its value. Nothing reaches `app/other` or the other vault.
#[test]
fn path_tricks_never_change_which_secret_is_read() {
    let (env, m) = reader();
    let (status, vault) = env
        .server
        .admin("POST", "/v1/vaults", Some(json!({"name": "other"})));
    assert_eq!(status, 201, "{vault}");
    let token = vault["admin_token"].as_str().unwrap();
    for (method, path, body) in [
        ("POST", "/v1/other/projects", json!({"name": "app"})),
        (
            "PUT",
            "/v1/other/projects/app/secrets/db",
            json!({"value": "value-theirs"}),
        ),
    ] {
        let (s, b) = env.server.admin_as(token, method, path, Some(body));
        assert!(s == 200 || s == 201, "{b}");
    }
    let mut cases = Cases::default();

    // Signed for DB, sent elsewhere.
    let elsewhere: [(&str, u16, &str); 16] = [
        ("/v1/default/secrets/app/db/", 404, "not_found"),
        ("/v1/default/secrets/app/db?", 401, "authentication_failed"),
        (
            "/v1/default/secrets/app/db?x=1",
            401,
            "authentication_failed",
        ),
        (
            "/v1/default/secrets/app/db?name=other",
            401,
            "authentication_failed",
        ),
        ("/v1/default/secrets/app/./db", 404, "not_found"),
        ("/v1/default/secrets/app/../app/db", 404, "not_found"),
        ("/v1/default/secrets/app/%2E/db", 404, "not_found"),
        ("/v1/default/secrets/app%2Fdb", 404, "not_found"),
        (
            "/v1/default/secrets/app/db%2F",
            401,
            "authentication_failed",
        ),
        (
            "/v1/default/secrets/app/%64%62",
            401,
            "authentication_failed",
        ),
        (
            "/v1/default/secrets/app/%2564b",
            401,
            "authentication_failed",
        ),
        ("/v1/default/secrets/%61pp/db", 401, "authentication_failed"),
        ("/v1/%64efault/secrets/app/db", 401, "authentication_failed"),
        ("/v1/default/secrets/APP/db", 401, "authentication_failed"),
        ("//v1/default/secrets/app/db", 404, "not_found"),
        ("/v1/default//secrets/app/db", 404, "not_found"),
    ];
    for (sent, status, want) in elsewhere {
        cases.refused(
            &format!("signed for {DB}, sent to {sent}"),
            signed_to(&env.server, &m, DB, sent),
            status,
            want,
            "",
        );
    }
    // An escape signed in one case and sent in the other is another target.
    for (signed, sent) in [
        (
            "/v1/default/secrets/app/db%2Fx",
            "/v1/default/secrets/app/db%2fx",
        ),
        (
            "/v1/default/secrets/app/db%2ex",
            "/v1/default/secrets/app/db%2Ex",
        ),
        (
            "/v1/default/secrets/app/%6Fther",
            "/v1/default/secrets/app/%6fther",
        ),
        ("/v1/default/secrets/%6A/db", "/v1/default/secrets/%6a/db"),
    ] {
        cases.refused(
            &format!("escape signed as {signed}, sent as {sent}"),
            signed_to(&env.server, &m, signed, sent),
            401,
            "authentication_failed",
            "",
        );
    }

    // Tricked paths the machine signs itself, aimed at a secret it was not granted or at
    // another vault.
    let aimed: [(&str, u16, &str); 18] = [
        ("/v1/default/secrets/app/other", 403, "secret_not_granted"),
        ("/v1/default/secrets/app/%6Fther", 403, "secret_not_granted"),
        (
            "/v1/default/secrets/ap%70/%6f%74%68%65%72",
            403,
            "secret_not_granted",
        ),
        (
            "/v1/default/secrets/app/db%2F..%2Fother",
            403,
            "secret_not_granted",
        ),
        (
            "/v1/default/secrets/app/db%2f%2e%2e%2fother",
            403,
            "secret_not_granted",
        ),
        (
            "/v1/default/secrets/app/db%252F..%252Fother",
            403,
            "secret_not_granted",
        ),
        (
            "/v1/default/secrets/app/other%00",
            403,
            "secret_not_granted",
        ),
        (
            "/v1/default/secrets/app/db%00other",
            403,
            "secret_not_granted",
        ),
        ("/v1/default/secrets/app/DB", 403, "secret_not_granted"),
        ("/v1/default/secrets/App/db", 403, "not_project_member"),
        ("/v1/default/secrets/app/db/../other", 404, "not_found"),
        ("/v1/default/secrets/app/db;/../other", 404, "not_found"),
        ("/v1/default/machine/../secrets/app/other", 404, "not_found"),
        (
            "/v1/default/secrets/..%2F..%2Fother%2Fsecrets%2Fapp/db",
            403,
            "not_project_member",
        ),
        ("/v1/other/secrets/app/db", 401, "authentication_failed"),
        ("/v1/oth%65r/secrets/app/db", 401, "authentication_failed"),
        (
            "/v1/default%2F..%2Fother/secrets/app/db",
            401,
            "authentication_failed",
        ),
        ("/v1/other/machine", 401, "authentication_failed"),
    ];
    for (target, status, want) in aimed {
        let got = signed_to(&env.server, &m, target, target);
        let leaked = got.0 == 200
            || got.1.to_string().contains("value-other")
            || got.1.to_string().contains("value-theirs");
        assert!(
            !leaked,
            "{target} reached another secret: {} {}",
            got.0, got.1
        );
        cases.refused(&format!("signed and sent {target}"), got, status, want, "");
    }

    // Spellings that name app/db itself: they read app/db and nothing else. The server
    // takes the target as the path and query of the request line, so the absolute form
    // and a fragment (which is not part of the target) leave it unchanged.
    let absolute = format!("{}{DB}", env.server.url);
    let same: [(&str, &str); 7] = [
        (
            "/v1/default/secrets/app/%64%62",
            "/v1/default/secrets/app/%64%62",
        ),
        (
            "/v1/%64efault/secrets/%61pp/db",
            "/v1/%64efault/secrets/%61pp/db",
        ),
        (
            "/v1/default/secrets/app/db?secret=other&vault=other",
            "/v1/default/secrets/app/db?secret=other&vault=other",
        ),
        ("/v1/default/secrets/app/db?", "/v1/default/secrets/app/db?"),
        (DB, &absolute),
        (DB, "/v1/default/secrets/app/db#other"),
        (DB, "/v1/default/secrets/app/db#/../other"),
    ];
    for (signed, sent) in same {
        let (status, body) = signed_to(&env.server, &m, signed, sent);
        cases.count += 1;
        if status != 200 || body["value"] != "value-db" || body["name"] != "db" {
            cases.failures.push(format!(
                "signed {signed}, sent {sent}: want app/db, got {status} {body}"
            ));
        }
    }
    // A client that signs the fragment signed something the server never sees.
    cases.refused(
        "signed and sent with a fragment",
        signed_to(
            &env.server,
            &m,
            "/v1/default/secrets/app/db#x",
            "/v1/default/secrets/app/db#x",
        ),
        401,
        "authentication_failed",
        "",
    );

    // The audit trail agrees: no read of app/other was ever allowed.
    let report = env.admin_ok(
        "GET",
        &format!("/v1/default/machines/{}/access-report", m.id),
        None,
    );
    assert_eq!(
        report["secrets"]["app/other"]["count"]
            .as_u64()
            .unwrap_or(0),
        0,
        "{report}"
    );
    cases.finish("path tricks");
    env.assert_alive("path tricks");
}

// === Sizes ===

/// Bodies over `max_body_bytes` (256 KiB) get 413 payload_too_large on every endpoint that
/// takes one, whether the length is declared up front or not; secret values over
/// `max_secret_bytes` (64 KiB) too, while one of exactly 64 KiB is stored. Headers over
/// `max_header_bytes` (16 KiB) in total get 431 headers_too_large on any route.
#[test]
fn oversized_bodies_and_headers_get_413_and_431() {
    let (env, m) = reader();
    let created = env.server.create_temporary("spare", json!({"hours": 2}));
    let spare = created["machine"]["id"].as_str().unwrap().to_owned();
    let boot = created["bootstrap"]["url"].as_str().unwrap();
    let boot_path = boot[boot.find("/v1/").unwrap()..].to_owned();
    let mut cases = Cases::default();

    let filler = "a".repeat(300 * 1024);
    let bodies: Vec<(&str, String, String)> = vec![
        (
            "POST",
            "/v1/vaults".into(),
            format!(r#"{{"name":"{filler}"}}"#),
        ),
        (
            "POST",
            "/v1/default/projects".into(),
            format!(r#"{{"name":"{filler}"}}"#),
        ),
        (
            "PUT",
            "/v1/default/projects/app/secrets/big".into(),
            format!(r#"{{"value":"{filler}"}}"#),
        ),
        (
            "POST",
            "/v1/default/machines/temporary".into(),
            format!(r#"{{"name":"{filler}","lifetime":{{"hours":2}}}}"#),
        ),
        (
            "POST",
            format!("/v1/default/machines/{spare}/disable"),
            format!(r#"{{"reason":"{filler}"}}"#),
        ),
        (
            "PUT",
            format!("/v1/default/machines/{spare}/guardrails"),
            format!(r#"{{"countries":["{filler}"]}}"#),
        ),
        (
            "POST",
            format!("/v1/default/machines/{spare}/extensions"),
            format!(r#"{{"reason":"{filler}","extend_by":{{"hours":1}}}}"#),
        ),
        (
            "POST",
            format!("/v1/default/machines/{spare}/extensions/1/revert"),
            format!(r#"{{"reason":"{filler}"}}"#),
        ),
        (
            "PUT",
            "/v1/default/settings/ip-allowlist".into(),
            format!(r#"{{"cidrs":["{filler}"]}}"#),
        ),
        (
            "POST",
            boot_path.clone(),
            format!(r#"{{"public_key":"{filler}"}}"#),
        ),
    ];
    for (method, path, body) in &bodies {
        cases.refused(
            &format!("{method} {path} with 300 KiB"),
            env.admin_json(method, path, body),
            413,
            "payload_too_large",
            "larger than the limit",
        );
        // A declared length far past the limit is refused before anything is read.
        let auth = format!("Bearer {}", env.server.token);
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\nContent-Length: 9999999999\r\n\r\n{{}}"
        );
        cases.refused(
            &format!("{method} {path} declaring 9999999999 bytes"),
            tcp(&env.server, head.as_bytes()),
            413,
            "payload_too_large",
            "larger than the limit",
        );
        // No declared length: the limit holds while the chunks arrive.
        let req = chunked(
            method,
            path,
            &[
                ("Authorization", auth.as_bytes()),
                ("Content-Type", b"application/json"),
            ],
            body.as_bytes(),
        );
        cases.refused(
            &format!("{method} {path} with 300 KiB in chunks"),
            tcp(&env.server, &req),
            413,
            "payload_too_large",
            "larger than the limit",
        );
    }
    // Signed machine requests carry no body; a large one, declared or not, is still refused
    // with a code, and a broken chunked one is the client's error.
    for target in [DB, WHOAMI] {
        let h = auth_headers(&m, "GET", target, &now().to_string(), &nonce());
        let mut borrowed: Vec<(&str, &[u8])> =
            h.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
        cases.refused(
            &format!("GET {target} with a 300 KiB body"),
            tcp(
                &env.server,
                &request("GET", target, &borrowed, filler.as_bytes()),
            ),
            413,
            "payload_too_large",
            "larger than the limit",
        );
        cases.refused(
            &format!("GET {target} with 300 KiB in chunks"),
            tcp(
                &env.server,
                &chunked("GET", target, &borrowed, filler.as_bytes()),
            ),
            413,
            "payload_too_large",
            "larger than the limit",
        );
        borrowed.push(("Content-Length", b"9999999999"));
        cases.refused(
            &format!("GET {target} declaring 9999999999 bytes"),
            tcp(&env.server, &request("GET", target, &borrowed, b"")),
            413,
            "payload_too_large",
            "larger than the limit",
        );
        borrowed.pop();
        borrowed.push(("Transfer-Encoding", b"chunked"));
        let mut req = request("GET", target, &borrowed, b"");
        req.extend_from_slice(b"zz\r\n");
        cases.refused(
            &format!("GET {target} with a broken chunked body"),
            tcp(&env.server, &req),
            400,
            "invalid_request",
            "cannot read the request body",
        );
    }

    // Secret values: 64 KiB is the largest accepted.
    let exact = json!({"value": "v".repeat(64 * 1024)});
    cases.status(
        "a secret of exactly 64 KiB",
        env.server
            .admin("PUT", "/v1/default/projects/app/secrets/edge", Some(exact)),
        200,
    );
    let over = json!({"value": "v".repeat(64 * 1024 + 1)});
    cases.refused(
        "a secret of 64 KiB + 1",
        env.server
            .admin("PUT", "/v1/default/projects/app/secrets/edge", Some(over)),
        413,
        "payload_too_large",
        "65536 bytes",
    );

    // Headers: one large header, or many that add up, over 16 KiB, on every kind of route.
    let big = "h".repeat(17 * 1024);
    let kb = "k".repeat(1024);
    for target in [
        "/healthz",
        DB,
        "/v1/default/machines",
        "/no/such/route",
        boot_path.as_str(),
    ] {
        cases.refused(
            &format!("{target} with one 17 KiB header"),
            env.server.raw("GET", target, &[("X-Padding", &big)], None),
            431,
            "headers_too_large",
            "16384 bytes",
        );
        let names: Vec<String> = (0..20).map(|i| format!("X-Pad-{i}")).collect();
        let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), kb.as_str())).collect();
        cases.refused(
            &format!("{target} with twenty 1 KiB headers"),
            env.server.raw("GET", target, &many, None),
            431,
            "headers_too_large",
            "16384 bytes",
        );
    }
    // Just under the limit is served.
    let under = "u".repeat(15 * 1024);
    cases.status(
        "15 KiB of headers",
        env.server
            .raw("GET", "/healthz", &[("X-Padding", &under)], None),
        200,
    );
    cases.finish("sizes");
    env.assert_alive("sizes");
}

// === Admin bodies ===

/// Every admin endpoint that takes a body refuses one that is not JSON of the right shape
/// with 400 invalid_json (or 415 when it is not declared as JSON), before acting on it.
#[test]
fn admin_bodies_that_are_not_json_are_refused_on_every_endpoint() {
    let env = Env::start();
    env.server.seed_secret("app", "db", "value-db");
    let created = env.server.create_temporary("target", json!({"hours": 2}));
    let id = created["machine"]["id"].as_str().unwrap().to_owned();
    let boot = created["bootstrap"]["url"].as_str().unwrap();
    let boot_path = boot[boot.find("/v1/").unwrap()..].to_owned();
    let endpoints: Vec<(&str, String)> = vec![
        ("POST", "/v1/vaults".into()),
        ("POST", "/v1/default/projects".into()),
        ("PUT", "/v1/default/projects/app/secrets/db".into()),
        ("POST", "/v1/default/machines/temporary".into()),
        ("POST", format!("/v1/default/machines/{id}/disable")),
        ("PUT", format!("/v1/default/machines/{id}/guardrails")),
        ("POST", format!("/v1/default/machines/{id}/extensions")),
        (
            "POST",
            format!("/v1/default/machines/{id}/extensions/1/revert"),
        ),
        ("PUT", "/v1/default/settings/ip-allowlist".into()),
        ("POST", boot_path),
    ];
    let deep = "[".repeat(100_000);
    let bodies: Vec<(&str, &[u8], &str)> = vec![
        (
            "invalid UTF-8",
            b"{\"name\": \"\xff\xfe\"}",
            "invalid JSON body",
        ),
        ("a lone 0xff", b"\xff", "invalid JSON body"),
        ("a UTF-16 body", b"\xff\xfe{\x00}\x00", "invalid JSON body"),
        ("truncated JSON", b"{\"name\": ", "invalid JSON body"),
        ("an empty body", b"", "invalid JSON body"),
        ("null", b"null", "invalid JSON body"),
        ("an array", b"[]", "invalid JSON body"),
        ("a string", b"\"text\"", "invalid JSON body"),
        ("trailing garbage", b"{} {}", "invalid JSON body"),
        ("100000 nested arrays", deep.as_bytes(), "invalid JSON body"),
        ("single quotes", b"{'name': 'x'}", "invalid JSON body"),
        ("a comment", b"{/* */}", "invalid JSON body"),
    ];
    let mut cases = Cases::default();
    for (method, path) in &endpoints {
        for (what, body, hint) in &bodies {
            cases.refused(
                &format!("{method} {path}: {what}"),
                env.admin_raw(method, path, Some("application/json"), body),
                400,
                "invalid_json",
                hint,
            );
        }
        for ct in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
        ] {
            cases.refused(
                &format!("{method} {path}: content type {ct:?}"),
                env.admin_raw(method, path, ct, b"{}"),
                415,
                "unsupported_media_type",
                "application/json",
            );
        }
    }
    cases.finish("non-JSON bodies");
    // Nothing above changed the machine or spent its bootstrap token.
    let machine = env.admin_ok("GET", &format!("/v1/default/machines/{id}"), None);
    assert_eq!(machine["state"], "created", "{machine}");
    env.assert_alive("non-JSON bodies");
}

/// JSON of the wrong shape: wrong types, numbers too large for any integer (1e400, 2^64),
/// negative or fractional lifetimes, unknown fields, missing fields, and values out of
/// their documented ranges, each with its documented code.
#[test]
fn admin_json_with_wrong_types_numbers_or_fields_is_refused() {
    let env = Env::start();
    env.server.seed_secret("app", "db", "value-db");
    let created = env.server.create_temporary("target", json!({"hours": 2}));
    let id = created["machine"]["id"].as_str().unwrap().to_owned();
    let create = "/v1/default/machines/temporary";
    let extend = format!("/v1/default/machines/{id}/extensions");
    let revert = format!("/v1/default/machines/{id}/extensions/1/revert");
    let disable = format!("/v1/default/machines/{id}/disable");
    let guardrails = format!("/v1/default/machines/{id}/guardrails");
    let secret = "/v1/default/projects/app/secrets/db";
    let allowlist = "/v1/default/settings/ip-allowlist";
    let long_name = "m".repeat(101);
    let long_description = "d".repeat(1001);
    let long_reason = "r".repeat(501);
    let lifetime = |l: &str| format!(r#"{{"name":"m","lifetime":{l}}}"#);
    let extend_body = |e: &str| format!(r#"{{"reason":"more time",{e}}}"#);
    let table: Vec<(&str, &str, String, u16, &str, &str)> = vec![
        // Lifetimes.
        ("POST", create, lifetime(r#"{"hours":1e400}"#), 400, "invalid_json", "invalid JSON body"),
        ("POST", create, lifetime(r#"{"hours":18446744073709551616}"#), 400, "invalid_json", "invalid JSON body"),
        ("POST", create, lifetime(r#"{"hours":4294967296}"#), 400, "invalid_json", "invalid JSON body"),
        ("POST", create, lifetime(r#"{"hours":-1}"#), 400, "invalid_json", "invalid JSON body"),
        ("POST", create, lifetime(r#"{"days":-30}"#), 400, "invalid_json", "invalid JSON body"),
        ("POST", create, lifetime(r#"{"hours":1.5}"#), 400, "invalid_json", "invalid JSON body"),
        ("POST", create, lifetime(r#"{"hours":"2"}"#), 400, "invalid_json", "invalid JSON body"),
        ("POST", create, lifetime(r#"{"hours":null}"#), 400, "invalid_json", "invalid JSON body"),
        ("POST", create, lifetime(r#"{"weeks":1}"#), 400, "invalid_json", "weeks"),
        ("POST", create, lifetime(r#""8h""#), 400, "invalid_json", "invalid JSON body"),
        ("POST", create, lifetime("null"), 400, "invalid_json", "invalid JSON body"),
        ("POST", create, lifetime("{}"), 400, "invalid_lifetime", "12 months"),
        ("POST", create, lifetime(r#"{"seconds":0,"hours":0}"#), 400, "invalid_lifetime", "zero"),
        ("POST", create, lifetime(r#"{"months":12,"seconds":1}"#), 400, "invalid_lifetime", "12 months"),
        ("POST", create, lifetime(r#"{"months":4294967295}"#), 400, "invalid_lifetime", "12 months"),
        ("POST", create, lifetime(r#"{"hours":4294967295}"#), 400, "invalid_lifetime", "12 months"),
        ("POST", create, lifetime(r#"{"days":4294967295,"hours":4294967295,"minutes":4294967295,"seconds":4294967295}"#), 400, "invalid_lifetime", "12 months"),
        // The rest of the creation body.
        ("POST", create, r#"{"lifetime":{"hours":2}}"#.into(), 400, "invalid_json", "name"),
        ("POST", create, r#"{"name":5,"lifetime":{"hours":2}}"#.into(), 400, "invalid_json", "invalid type"),
        ("POST", create, r#"{"name":"m","lifetime":{"hours":2},"owner":"x"}"#.into(), 400, "invalid_json", "owner"),
        ("POST", create, r#"{"name":"m","name":"n","lifetime":{"hours":2}}"#.into(), 400, "invalid_json", "duplicate"),
        ("POST", create, r#"{"name":"","lifetime":{"hours":2}}"#.into(), 400, "invalid_request", "name must be 1 to 100"),
        ("POST", create, r#"{"name":"   ","lifetime":{"hours":2}}"#.into(), 400, "invalid_request", "name must be 1 to 100"),
        ("POST", create, format!(r#"{{"name":"{long_name}","lifetime":{{"hours":2}}}}"#), 400, "invalid_request", "name must be 1 to 100"),
        ("POST", create, r#"{"name":"a\u0007b","lifetime":{"hours":2}}"#.into(), 400, "invalid_request", "control characters"),
        ("POST", create, format!(r#"{{"name":"m","description":"{long_description}","lifetime":{{"hours":2}}}}"#), 400, "invalid_request", "description must be 1 to 1000"),
        ("POST", create, r#"{"name":"m","description":"a\nb","lifetime":{"hours":2}}"#.into(), 400, "invalid_request", "control characters"),
        ("POST", create, r#"{"name":"m","lifetime":{"hours":2},"guardrails":"none"}"#.into(), 400, "invalid_json", "invalid type"),
        ("POST", create, r#"{"name":"m","lifetime":{"hours":2},"guardrails":{"ip_allow":[]}}"#.into(), 400, "invalid_json", "ip_allow"),
        ("POST", create, r#"{"name":"m","lifetime":{"hours":2},"guardrails":{"countries":"DK"}}"#.into(), 400, "invalid_json", "invalid type"),
        ("POST", create, r#"{"name":"m","lifetime":{"hours":2},"guardrails":{"time_windows":[{"timezone":"UTC","start":"08:00"}]}}"#.into(), 400, "invalid_json", "end"),
        // Extensions.
        ("POST", extend.as_str(), extend_body(r#""extend_by":{"hours":-1}"#), 400, "invalid_json", "invalid JSON body"),
        ("POST", extend.as_str(), extend_body(r#""extend_by":{"hours":1e400}"#), 400, "invalid_json", "invalid JSON body"),
        ("POST", extend.as_str(), extend_body(r#""extend_by":{}"#), 400, "invalid_request", "must not be zero"),
        ("POST", extend.as_str(), extend_body(r#""extend_by":{"months":13}"#), 400, "invalid_expiry", "12"),
        ("POST", extend.as_str(), extend_body(r#""extend_by":{"months":4294967295}"#), 400, "invalid_expiry", "too large"),
        ("POST", extend.as_str(), extend_body(r#""extend_by":{"hours":1},"expires_at":"2099-01-01T00:00:00Z""#), 400, "invalid_request", "exactly one"),
        ("POST", extend.as_str(), r#"{"reason":"more time"}"#.into(), 400, "invalid_request", "exactly one"),
        ("POST", extend.as_str(), extend_body(r#""expires_at":"tomorrow""#), 400, "invalid_json", "invalid JSON body"),
        ("POST", extend.as_str(), extend_body(r#""expires_at":1893456000"#), 400, "invalid_json", "invalid JSON body"),
        ("POST", extend.as_str(), extend_body(r#""expires_at":"2001-01-01T00:00:00Z""#), 400, "invalid_expiry", "later"),
        ("POST", extend.as_str(), extend_body(r#""expires_at":"9999-12-31T23:59:59Z""#), 400, "invalid_expiry", "12"),
        ("POST", extend.as_str(), r#"{"extend_by":{"hours":1}}"#.into(), 400, "invalid_json", "reason"),
        ("POST", extend.as_str(), r#"{"reason":"","extend_by":{"hours":1}}"#.into(), 400, "invalid_request", "reason must be 1 to 500"),
        ("POST", extend.as_str(), format!(r#"{{"reason":"{long_reason}","extend_by":{{"hours":1}}}}"#), 400, "invalid_request", "reason must be 1 to 500"),
        ("POST", extend.as_str(), r#"{"reason":"x","extend_by":{"hours":1},"by":"me"}"#.into(), 400, "invalid_json", "by"),
        // Reverts and disabling.
        ("POST", revert.as_str(), r#"{"reason":"x"}"#.into(), 404, "not_found", "1"),
        ("POST", revert.as_str(), r#"{"reason":""}"#.into(), 400, "invalid_request", "reason must be 1 to 500"),
        ("POST", revert.as_str(), r#"{"reason":null}"#.into(), 400, "invalid_json", "invalid type"),
        ("POST", disable.as_str(), r#"{"reason":"\t"}"#.into(), 400, "invalid_request", "reason must be 1 to 500"),
        ("POST", disable.as_str(), r#"{"reason":"a\u0000b"}"#.into(), 400, "invalid_request", "control characters"),
        ("POST", disable.as_str(), r#"{"reason":["x"]}"#.into(), 400, "invalid_json", "invalid type"),
        ("POST", disable.as_str(), r#"{"reason":"x","force":true}"#.into(), 400, "invalid_json", "force"),
        // Secrets.
        ("PUT", secret, r#"{"value":5}"#.into(), 400, "invalid_json", "invalid type"),
        ("PUT", secret, r#"{"value":null}"#.into(), 400, "invalid_json", "invalid type"),
        ("PUT", secret, r#"{}"#.into(), 400, "invalid_json", "value"),
        ("PUT", secret, r#"{"value":"v","version":7}"#.into(), 400, "invalid_json", "version"),
        ("PUT", secret, r#"{"value":"v","policy":[]}"#.into(), 400, "invalid_json", "a JSON object"),
        ("PUT", secret, r#"{"value":"v","policy":{"country":["DK"]}}"#.into(), 400, "invalid_json", "country"),
        ("PUT", secret, r#"{"value":"\ud800"}"#.into(), 400, "invalid_json", "invalid JSON body"),
        // Projects and vaults.
        ("POST", "/v1/default/projects", r#"{"name":null}"#.into(), 400, "invalid_json", "invalid type"),
        ("POST", "/v1/default/projects", r#"{"name":["app"]}"#.into(), 400, "invalid_json", "invalid type"),
        ("POST", "/v1/vaults", r#"{"name":1e400}"#.into(), 400, "invalid_json", "invalid JSON body"),
        ("POST", "/v1/vaults", r#"{"name":"v","region":"eu"}"#.into(), 400, "invalid_json", "region"),
        // The vault-wide allowlist.
        ("PUT", allowlist, r#"{"cidrs":"10.0.0.0/8"}"#.into(), 400, "invalid_json", "invalid type"),
        ("PUT", allowlist, r#"{"cidrs":[167772160]}"#.into(), 400, "invalid_json", "invalid type"),
        ("PUT", allowlist, r#"{}"#.into(), 400, "invalid_json", "cidrs"),
        ("PUT", allowlist, r#"{"cidrs":[],"ip_allowlist":["10.0.0.0/8"]}"#.into(), 400, "invalid_json", "ip_allowlist"),
        ("PUT", allowlist, r#"[["10.0.0.0/8"]]"#.into(), 400, "invalid_json", "a JSON object"),
        // Arrays where objects belong. serde reads a struct from an array of its fields in
        // order unless told not to: `[]` would be guardrails without a rule, `[0,0,8]` a
        // lifetime of eight hours, `["x"]` a name.
        ("POST", "/v1/default/projects", r#"["x"]"#.into(), 400, "invalid_json", "a JSON object"),
        ("POST", "/v1/vaults", r#"["v"]"#.into(), 400, "invalid_json", "a JSON object"),
        ("POST", create, r#"["m",null,{"hours":2}]"#.into(), 400, "invalid_json", "a JSON object"),
        ("POST", create, lifetime("[0,0,8]"), 400, "invalid_json", "a JSON object"),
        ("POST", create, r#"{"name":"m","lifetime":{"hours":2},"guardrails":[]}"#.into(), 400, "invalid_json", "a JSON object"),
        ("POST", create, r#"{"name":"m","lifetime":{"hours":2},"guardrails":[[],[],[]]}"#.into(), 400, "invalid_json", "a JSON object"),
        ("PUT", secret, r#"["v"]"#.into(), 400, "invalid_json", "a JSON object"),
        ("PUT", secret, r#"{"value":"v","policy":[[],["10.0.0.0/8"]]}"#.into(), 400, "invalid_json", "a JSON object"),
        ("POST", extend.as_str(), extend_body(r#""extend_by":[0,0,1]"#), 400, "invalid_json", "a JSON object"),
        ("POST", disable.as_str(), r#"["x"]"#.into(), 400, "invalid_json", "a JSON object"),
        ("POST", revert.as_str(), r#"["x"]"#.into(), 400, "invalid_json", "a JSON object"),
        ("PUT", guardrails.as_str(), "[]".into(), 400, "invalid_json", "a JSON object"),
        ("PUT", guardrails.as_str(), r#"[[],[],["DK"]]"#.into(), 400, "invalid_json", "a JSON object"),
    ];
    let mut cases = Cases::default();
    for (method, path, body, status, want, hint) in &table {
        cases.refused(
            &format!("{method} {path} {body:.120}"),
            env.admin_json(method, path, body),
            *status,
            want,
            hint,
        );
    }
    cases.finish("JSON shapes");
    // Nothing above created a machine or changed the target.
    let list = env.admin_ok("GET", "/v1/default/machines", None);
    assert_eq!(list["machines"].as_array().unwrap().len(), 1, "{list}");
    let machine = env.admin_ok("GET", &format!("/v1/default/machines/{id}"), None);
    assert_eq!(machine["state"], "created", "{machine}");
    assert_eq!(machine["extensions"], json!([]), "{machine}");
    env.assert_alive("JSON shapes");
}

// === Guardrails ===

/// Rules that do not compile are refused with 400 invalid_guardrails and a message naming
/// the rule and the value, wherever guardrails are accepted: at machine creation, on
/// `PUT .../guardrails`, as a secret's policy, and (for addresses) as the vault-wide
/// allowlist. The nearly-valid spellings that are documented to work are accepted.
#[test]
fn guardrails_that_do_not_compile_are_refused_wherever_they_are_accepted() {
    let env = Env::start();
    env.server.seed_secret("app", "db", "value-db");
    let created = env.server.create_temporary("target", json!({"hours": 2}));
    let id = created["machine"]["id"].as_str().unwrap().to_owned();
    let window = |tz: &str, days: &str, start: &str, end: &str| {
        let days: Value = serde_json::from_str(days).unwrap();
        json!({"time_windows": [{"timezone": tz, "days": days, "start": start, "end": end}]})
    };
    let cidrs = [
        "10.0.0.0/33",
        "300.1.1.1/8",
        "10.0.0/8",
        "10.0.0.0/",
        "10.0.0.0/-1",
        "10.0.0.0/8/8",
        "10.0.0.0 /8",
        "::/129",
        "fe80::1%eth0",
        "0x0a.0.0.0/8",
        "host.example",
        "",
        " ",
    ];
    let mut bad: Vec<(String, Value, String)> = cidrs
        .iter()
        .map(|c| {
            (
                format!("ip {c:?}"),
                json!({"ip_allowlist": ["10.0.0.0/8", c]}),
                format!("ip_allowlist[1]: {c:?} is not an IP address or CIDR"),
            )
        })
        .collect();
    for c in ["DNK", "XX", "ZZ", "D", "", "D1", "ÆØ", "E\u{301}U"] {
        bad.push((
            format!("country {c:?}"),
            json!({"countries": ["DK", c]}),
            format!("countries[1]: {c:?} is not an ISO 3166-1 alpha-2 country code"),
        ));
    }
    for (what, rule, hint) in [
        (
            "zone Europe/Copenhagn",
            window("Europe/Copenhagn", "[]", "08:00", "18:00"),
            "timezone \"Europe/Copenhagn\"",
        ),
        (
            "zone utc+1",
            window("utc+1", "[]", "08:00", "18:00"),
            "timezone \"utc+1\"",
        ),
        (
            "empty zone",
            window("", "[]", "08:00", "18:00"),
            "timezone \"\"",
        ),
        (
            "zone with a space",
            window("Europe/Copenhagen ", "[]", "08:00", "18:00"),
            "timezone",
        ),
        (
            "end 24:01",
            window("UTC", "[]", "08:00", "24:01"),
            "end \"24:01\"",
        ),
        (
            "start 24:00",
            window("UTC", "[]", "24:00", "08:00"),
            "start \"24:00\"",
        ),
        (
            "start 9:00",
            window("UTC", "[]", "9:00", "18:00"),
            "start \"9:00\"",
        ),
        (
            "end 12:60",
            window("UTC", "[]", "08:00", "12:60"),
            "end \"12:60\"",
        ),
        (
            "start 08:00:00",
            window("UTC", "[]", "08:00:00", "18:00"),
            "start",
        ),
        ("start 0800", window("UTC", "[]", "0800", "18:00"), "start"),
        (
            "start -1:00",
            window("UTC", "[]", "-1:00", "18:00"),
            "start",
        ),
        (
            "start in Arabic digits",
            window("UTC", "[]", "٠٨:٠٠", "18:00"),
            "start",
        ),
        (
            "start == end",
            window("UTC", "[]", "09:00", "09:00"),
            "start and end are equal",
        ),
        (
            "00:00 to 00:00",
            window("UTC", "[]", "00:00", "00:00"),
            "start and end are equal",
        ),
        (
            "day funday",
            window("UTC", r#"["mon","funday"]"#, "08:00", "18:00"),
            "day \"funday\"",
        ),
        (
            "day Monday",
            window("UTC", r#"["Monday"]"#, "08:00", "18:00"),
            "day \"Monday\"",
        ),
        (
            "empty day",
            window("UTC", r#"[""]"#, "08:00", "18:00"),
            "day \"\"",
        ),
    ] {
        bad.push((what.to_owned(), rule, format!("time_windows[0]: {hint}")));
    }

    let mut cases = Cases::default();
    for (what, rule, hint) in &bad {
        let create = json!({"name": "m", "lifetime": {"hours": 2}, "guardrails": rule});
        cases.refused(
            &format!("create with {what}"),
            env.server
                .admin("POST", "/v1/default/machines/temporary", Some(create)),
            400,
            "invalid_guardrails",
            hint,
        );
        cases.refused(
            &format!("PUT guardrails {what}"),
            env.server.admin(
                "PUT",
                &format!("/v1/default/machines/{id}/guardrails"),
                Some(rule.clone()),
            ),
            400,
            "invalid_guardrails",
            hint,
        );
        cases.refused(
            &format!("secret policy {what}"),
            env.server.admin(
                "PUT",
                "/v1/default/projects/app/secrets/db",
                Some(json!({"value": "changed", "policy": rule})),
            ),
            400,
            "invalid_guardrails",
            hint,
        );
    }
    for c in cidrs {
        cases.refused(
            &format!("vault allowlist {c:?}"),
            env.server.admin(
                "PUT",
                "/v1/default/settings/ip-allowlist",
                Some(json!({"cidrs": ["10.0.0.0/8", c]})),
            ),
            400,
            "invalid_guardrails",
            &format!("{c:?} is not an IP address or CIDR"),
        );
    }
    cases.finish("bad guardrails");

    // Nothing refused above was stored: the machine, the secret and the vault are as they
    // were.
    let machine = env.admin_ok("GET", &format!("/v1/default/machines/{id}"), None);
    assert_eq!(machine["guardrails"], json!({}), "{machine}");
    let list = env.admin_ok("GET", "/v1/default/settings/ip-allowlist", None);
    assert_eq!(list["cidrs"], json!([]), "{list}");
    let reader = env.server.ready_machine("app", "db");
    let (status, body) = env.server.signed(&reader, "GET", DB);
    assert_eq!(
        (status, body["value"].as_str()),
        (200, Some("value-db")),
        "{body}"
    );

    // The documented leniencies: any case for countries, surrounding spaces, host bits in a
    // CIDR (the network is what counts), a whole day as 00:00-24:00, a window across
    // midnight, and mapped IPv6 networks.
    let mut accepted = Cases::default();
    for (what, rule) in [
        ("country dk", json!({"countries": ["dk"]})),
        ("country \" SE \"", json!({"countries": [" SE "]})),
        ("country XK", json!({"countries": ["XK"]})),
        ("10.0.0.1/8", json!({"ip_allowlist": ["10.0.0.1/8"]})),
        ("\"10.0.0.0/8 \"", json!({"ip_allowlist": ["10.0.0.0/8 "]})),
        (
            "::ffff:10.0.0.0/104",
            json!({"ip_allowlist": ["::ffff:10.0.0.0/104"]}),
        ),
        ("00:00-24:00", window("UTC", "[]", "00:00", "24:00")),
        (
            "22:00-02:00",
            window("Europe/Copenhagen", r#"["FRI"]"#, "22:00", "02:00"),
        ),
        ("empty object", json!({})),
    ] {
        accepted.status(
            &format!("PUT guardrails {what}"),
            env.server.admin(
                "PUT",
                &format!("/v1/default/machines/{id}/guardrails"),
                Some(rule),
            ),
            200,
        );
    }
    accepted.finish("accepted guardrails");
    env.assert_alive("guardrails");
}

// === Admin authentication, ids, names and routes ===

/// Anything but `Bearer` and one valid token is 401 unauthorized, whatever the route: other
/// schemes, other case, a missing or altered token, two Authorization headers, and bytes
/// that are not ASCII.
#[test]
fn admin_bearer_tokens_in_any_other_form_are_unauthorized() {
    let env = Env::start();
    let token = env.server.token.clone();
    let mut altered = token.clone().into_bytes();
    let last = altered.len() - 1;
    altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap();
    let headers: Vec<(&str, Vec<u8>)> = vec![
        ("no scheme", token.clone().into_bytes()),
        ("Bearer without a token", b"Bearer".to_vec()),
        ("Bearer and a space", b"Bearer ".to_vec()),
        ("lower-case scheme", format!("bearer {token}").into_bytes()),
        ("upper-case scheme", format!("BEARER {token}").into_bytes()),
        (
            "Basic",
            format!("Basic {}", STANDARD.encode(format!("admin:{token}"))).into_bytes(),
        ),
        ("Token scheme", format!("Token {token}").into_bytes()),
        (
            "one character changed",
            format!("Bearer {altered}").into_bytes(),
        ),
        (
            "one character more",
            format!("Bearer {token}A").into_bytes(),
        ),
        (
            "one character less",
            format!("Bearer {}", &token[..token.len() - 1]).into_bytes(),
        ),
        ("two tokens", format!("Bearer {token} {token}").into_bytes()),
        (
            "token, comma, token",
            format!("Bearer {token},{token}").into_bytes(),
        ),
        ("no prefix", format!("Bearer {}", &token[4..]).into_bytes()),
        (
            "upper-case id",
            format!("Bearer {}", token.to_uppercase()).into_bytes(),
        ),
        (
            "non-hex id",
            format!("Bearer tvt_zzzzzzzzzzzzzzzz{}", &token[20..]).into_bytes(),
        ),
        (
            "0xff bytes",
            [b"Bearer ".as_slice(), &token.as_bytes()[..20], b"\xff\xfe"].concat(),
        ),
        (
            "UTF-8 token",
            format!("Bearer {}é", &token[..token.len() - 1]).into_bytes(),
        ),
    ];
    let routes = [
        ("GET", "/v1/default/machines"),
        ("POST", "/v1/default/projects"),
        ("POST", "/v1/vaults"),
        ("GET", "/v1/default/audit"),
    ];
    let mut cases = Cases::default();
    for (method, path) in routes {
        for (what, value) in &headers {
            let body = br#"{"name":"x"}"#;
            let req = request(
                method,
                path,
                &[
                    ("Authorization", value),
                    ("Content-Type", b"application/json"),
                ],
                if method == "GET" { b"" } else { body },
            );
            cases.refused(
                &format!("{method} {path}: {what}"),
                tcp(&env.server, &req),
                401,
                "unauthorized",
                "bearer token",
            );
        }
        let bearer = format!("Bearer {token}");
        let twice = request(
            method,
            path,
            &[
                ("Authorization", bearer.as_bytes()),
                ("Authorization", bearer.as_bytes()),
                ("Content-Type", b"application/json"),
            ],
            if method == "GET" {
                b""
            } else {
                br#"{"name":"x"}"#
            },
        );
        cases.refused(
            &format!("{method} {path}: the valid token twice"),
            tcp(&env.server, &twice),
            401,
            "unauthorized",
            "bearer token",
        );
    }
    cases.finish("bearer tokens");
    // None of the calls above created anything.
    let (_, projects) = env.server.admin("GET", "/v1/default/projects", None);
    assert_eq!(projects["projects"], json!([]), "{projects}");
    env.assert_alive("bearer tokens");
}

/// Machine ids in admin paths have one spelling, as for machine requests; any other is 400
/// with a message about the id, on every route that takes one, and a well-formed id that
/// does not exist is 404. Non-numeric extension numbers and bad names in paths and bodies
/// are 400 invalid_request; unknown vaults and projects are 404.
#[test]
fn admin_paths_with_bad_ids_or_names_are_refused() {
    let env = Env::start();
    env.server.seed_secret("app", "db", "value-db");
    let created = env.server.create_temporary("target", json!({"hours": 2}));
    let id = created["machine"]["id"].as_str().unwrap().to_owned();
    let routes: Vec<(&str, &str, Option<Value>)> = vec![
        ("GET", "", None),
        ("POST", "/approve", None),
        ("POST", "/disable", Some(json!({"reason": "x"}))),
        ("PUT", "/projects/app", None),
        ("DELETE", "/projects/app", None),
        ("PUT", "/grants/app/db", None),
        ("DELETE", "/grants/app/db", None),
        ("PUT", "/guardrails", Some(json!({}))),
        (
            "POST",
            "/extensions",
            Some(json!({"reason": "x", "extend_by": {"hours": 1}})),
        ),
        ("POST", "/extensions/1/revert", Some(json!({"reason": "x"}))),
        ("GET", "/audit", None),
        ("GET", "/access-report", None),
    ];
    let bad_ids = [
        "not-a-uuid".to_owned(),
        id.to_uppercase(),
        format!("%7B{id}%7D"),
        id.replace('-', ""),
        format!("urn:uuid:{id}"),
        format!("{id}%20"),
        format!("%20{id}"),
        format!("{id}0"),
        id[..35].to_owned(),
        "%2E%2E".to_owned(),
        "%FF%FE".to_owned(),
        "00000000-0000-0000-0000-00000000000g".to_owned(),
    ];
    let mut cases = Cases::default();
    for (method, suffix, body) in &routes {
        for bad in &bad_ids {
            let path = format!("/v1/default/machines/{bad}{suffix}");
            let got = env.exact(method, &path, body.clone());
            let hint = "machine id";
            cases.refused(
                &format!("{method} {path}"),
                got,
                400,
                "invalid_request",
                hint,
            );
        }
        let path = format!("/v1/default/machines/8f14e45f-ceea-4672-9b4a-1c2d3e4f5a6b{suffix}");
        cases.refused(
            &format!("{method} {path} (no such machine)"),
            env.exact(method, &path, body.clone()),
            404,
            "not_found",
            "does not exist",
        );
    }
    // Extension numbers must be numbers that fit.
    for ext in ["abc", "-1", "1.5", "4294967296", "%31"] {
        let path = format!("/v1/default/machines/{id}/extensions/{ext}/revert");
        let (status, body) = env.exact("POST", &path, Some(json!({"reason": "x"})));
        // "%31" decodes to "1": a real extension number, which this machine has not.
        if ext == "%31" {
            cases.refused(
                &format!("revert {ext}"),
                (status, body),
                404,
                "not_found",
                "1",
            );
        } else {
            cases.refused(
                &format!("revert {ext}"),
                (status, body),
                400,
                "invalid_request",
                "bad path",
            );
        }
    }

    // Names: 1 to 128 of [A-Za-z0-9._-], starting with a letter or digit.
    let long = "n".repeat(129);
    let bad_names: [(&str, &str); 9] = [
        ("", "empty"),
        (".hidden", "start with a letter or digit"),
        ("-dash", "start with a letter or digit"),
        ("_under", "start with a letter or digit"),
        ("a b", "only hold letters"),
        ("a/b", "only hold letters"),
        ("ä", "start with a letter or digit"),
        ("..", "start with a letter or digit"),
        (long.as_str(), "longer than 128"),
    ];
    for (name, hint) in bad_names {
        cases.refused(
            &format!("project {name:.20?}"),
            env.exact("POST", "/v1/default/projects", Some(json!({"name": name}))),
            400,
            "invalid_request",
            hint,
        );
        cases.refused(
            &format!("vault {name:.20?}"),
            env.exact("POST", "/v1/vaults", Some(json!({"name": name}))),
            400,
            "invalid_request",
            hint,
        );
    }
    let enc_long = "s".repeat(129);
    let bad_path_names: [(&str, &str); 7] = [
        ("%2Ehidden", "start with a letter or digit"),
        ("a%20b", "only hold letters"),
        ("a%2Fb", "only hold letters"),
        ("%C3%A4", "start with a letter or digit"),
        ("%2E%2E", "start with a letter or digit"),
        ("a%00b", "only hold letters"),
        (enc_long.as_str(), "longer than 128"),
    ];
    for (name, hint) in bad_path_names {
        let secret = format!("/v1/default/projects/app/secrets/{name}");
        cases.refused(
            &format!("PUT {secret:.60}"),
            env.exact("PUT", &secret, Some(json!({"value": "v"}))),
            400,
            "invalid_request",
            hint,
        );
        let project = format!("/v1/default/projects/{name}/secrets/db");
        cases.refused(
            &format!("PUT {project:.60}"),
            env.exact("PUT", &project, Some(json!({"value": "v"}))),
            400,
            "invalid_request",
            hint,
        );
        let member = format!("/v1/default/machines/{id}/projects/{name}");
        cases.refused(
            &format!("PUT {member:.80}"),
            env.exact("PUT", &member, None),
            400,
            "invalid_request",
            hint,
        );
        let grant = format!("/v1/default/machines/{id}/grants/app/{name}");
        cases.refused(
            &format!("PUT {grant:.80}"),
            env.exact("PUT", &grant, None),
            400,
            "invalid_request",
            hint,
        );
        let vault = format!("/v1/{name}/machines");
        cases.refused(
            &format!("GET {vault:.60}"),
            env.exact("GET", &vault, None),
            400,
            "invalid_request",
            hint,
        );
    }
    // Well-formed names of things that do not exist.
    for (method, path, body) in [
        ("GET", "/v1/nowhere/machines".to_owned(), None),
        (
            "PUT",
            "/v1/default/projects/nothing/secrets/db".to_owned(),
            Some(json!({"value": "v"})),
        ),
        (
            "PUT",
            format!("/v1/default/machines/{id}/projects/nothing"),
            None,
        ),
        (
            "PUT",
            format!("/v1/default/machines/{id}/grants/nothing/db"),
            None,
        ),
    ] {
        cases.refused(
            &format!("{method} {path}"),
            env.exact(method, &path, body),
            404,
            "not_found",
            "does not exist",
        );
    }
    // A name of exactly 128 characters is fine.
    cases.status(
        "project of 128 characters",
        env.exact(
            "POST",
            "/v1/default/projects",
            Some(json!({"name": "p".repeat(128)})),
        ),
        201,
    );
    cases.finish("ids and names");
    env.assert_alive("ids and names");
}

/// Query strings of the audit and listing endpoints: values out of range, of the wrong
/// type, unknown parameters, all 400 invalid_request naming the problem.
#[test]
fn bad_audit_and_listing_queries_are_refused() {
    let env = Env::start();
    let created = env.server.create_temporary("target", json!({"hours": 2}));
    let id = created["machine"]["id"].as_str().unwrap().to_owned();
    let queries: [(&str, &str); 14] = [
        ("limit=1001", "limit must be 1 to 1000"),
        ("limit=0", "limit must be 1 to 1000"),
        ("limit=-1", "bad query string"),
        ("limit=99999999999999999999", "bad query string"),
        ("limit=ten", "bad query string"),
        ("after=abc", "bad query string"),
        ("after=1e3", "bad query string"),
        ("outcome=maybe", "bad query string"),
        ("since=yesterday", "bad query string"),
        ("until=2027-13-01T00:00:00Z", "bad query string"),
        ("format=xml", "format \"xml\""),
        ("page=2", "bad query string"),
        ("limit=1&limit=2", "bad query string"),
        ("limit=%FF", "bad query string"),
    ];
    let mut cases = Cases::default();
    for base in [
        "/v1/default/audit".to_owned(),
        format!("/v1/default/machines/{id}/audit"),
    ] {
        for (query, hint) in queries {
            let path = format!("{base}?{query}");
            cases.refused(
                &path.clone(),
                env.exact("GET", &path, None),
                400,
                "invalid_request",
                hint,
            );
        }
    }
    for state in ["sleeping", "ACTIVE%00", "active,expired"] {
        let path = format!("/v1/default/machines?state={state}");
        cases.refused(
            &path.clone(),
            env.exact("GET", &path, None),
            400,
            "invalid_request",
            "state",
        );
    }
    cases.finish("queries");
    env.assert_alive("queries");
}

/// Unknown routes and methods a route does not serve get a JSON 404 not_found that does not
/// echo the path (it may hold a bootstrap token). This covers near misses of real routes:
/// missing or extra segments, trailing slashes, and the wrong method on each kind of route.
#[test]
fn unknown_routes_and_wrong_methods_get_a_json_error() {
    let env = Env::start();
    let created = env.server.create_temporary("target", json!({"hours": 2}));
    let id = created["machine"]["id"].as_str().unwrap().to_owned();
    let boot = created["bootstrap"]["url"].as_str().unwrap();
    let boot_path = boot[boot.find("/v1/").unwrap()..].to_owned();
    let token = boot_path.rsplit('/').next().unwrap().to_owned();
    let unknown: Vec<(&str, String)> = vec![
        ("GET", "/v1".into()),
        ("GET", "/v1/".into()),
        ("GET", "/v1/default".into()),
        ("GET", "/v1/default/".into()),
        ("GET", "/v1/default/secrets".into()),
        ("GET", "/v1/default/secrets/app".into()),
        ("GET", "/v1/default/secrets/app/db/v2".into()),
        ("GET", "/v1/default/machine/".into()),
        ("GET", "/v1/default/machines/".into()),
        ("GET", format!("/v1/default/machines/{id}/")),
        ("GET", format!("/v1/default/machines/{id}/extensions")),
        ("GET", "/healthz/".into()),
        ("GET", "/metrics/x".into()),
        ("GET", "/V1/default/machines".into()),
        ("GET", format!("{boot_path}/")),
        ("GET", "/%2e%2e/%2e%2e/etc/passwd".into()),
    ];
    // Real paths, wrong methods.
    let wrong_method: Vec<(&str, String)> = vec![
        ("GET", "/v1/vaults".into()),
        ("DELETE", "/v1/default/projects".into()),
        ("PATCH", format!("/v1/default/machines/{id}")),
        ("DELETE", format!("/v1/default/machines/{id}")),
        ("GET", format!("/v1/default/machines/{id}/approve")),
        ("PUT", format!("/v1/default/machines/{id}/disable")),
        ("GET", format!("/v1/default/machines/{id}/guardrails")),
        ("POST", format!("/v1/default/machines/{id}/projects/app")),
        ("POST", "/v1/default/secrets/app/db".into()),
        ("PUT", "/v1/default/secrets/app/db".into()),
        ("DELETE", "/v1/default/machine".into()),
        ("POST", "/healthz".into()),
        ("DELETE", "/metrics".into()),
        ("PUT", boot_path.clone()),
        ("DELETE", "/v1/default/settings/ip-allowlist".into()),
        ("OPTIONS", "/v1/default/machines".into()),
    ];
    let mut cases = Cases::default();
    for (method, path) in unknown.iter().chain(&wrong_method) {
        let (status, body) = env.exact(method, path, None);
        let echoed = body.to_string().contains(&token) || body.to_string().contains(path.as_str());
        cases.refused(
            &format!("{method} {path}"),
            (status, body),
            404,
            "not_found",
            "no route for this",
        );
        assert!(!echoed, "{method} {path}: the error echoes the path");
    }
    // The bootstrap endpoint answers a bad token with a failing script rather than JSON, by
    // design: `curl | sh` must fail visibly.
    for bad in ["short", "%2E%2E", &"A".repeat(43), &"%C3%A9".repeat(43)] {
        let target = format!("/v1/default/temp-bootstrap/{bad}");
        let (status, body) = tcp(&env.server, &request("GET", &target, &[], b""));
        cases.count += 1;
        if status != 404 || !body.as_str().unwrap_or("").contains("exit 1") {
            cases
                .failures
                .push(format!("GET bootstrap {bad}: {status} {body}"));
        }
    }
    cases.finish("routes");
    env.assert_alive("routes");
}

/// Registration at the bootstrap endpoint: an unknown or malformed token is 404
/// bootstrap_token_invalid; a key that is not base64, not 32 bytes or a small-order point
/// is 400 with its own code, and none of them spends the token, which then works once.
#[test]
fn bootstrap_registration_refuses_bad_tokens_and_keys_without_spending_the_token() {
    let env = Env::start();
    let created = env.server.create_temporary("target", json!({"hours": 2}));
    let boot = created["bootstrap"]["url"].as_str().unwrap();
    let path = boot[boot.find("/v1/").unwrap()..].to_owned();
    let token = path.rsplit('/').next().unwrap().to_owned();
    let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let good_key = STANDARD.encode(key.verifying_key().to_bytes());
    let mut cases = Cases::default();

    let mut altered = token.clone().into_bytes();
    altered[0] = if altered[0] == b'a' { b'b' } else { b'a' };
    let altered = String::from_utf8(altered).unwrap();
    for bad in [
        "short".to_owned(),
        altered,
        format!("{token}A"),
        token[..42].to_owned(),
        token.to_uppercase(),
        format!("{}%2F", &token[..42]),
    ] {
        let other = format!("/v1/default/temp-bootstrap/{bad}");
        cases.refused(
            &format!("POST bootstrap {bad}"),
            env.server.raw(
                "POST",
                &other,
                &[("Content-Type", "application/json")],
                Some(json!({"public_key": good_key}).to_string().as_bytes()),
            ),
            404,
            "bootstrap_token_invalid",
            "unknown, already used or expired",
        );
    }
    // The token of this vault, presented under another vault's name.
    let (status, _) = env
        .server
        .admin("POST", "/v1/vaults", Some(json!({"name": "other"})));
    assert_eq!(status, 201);
    cases.refused(
        "the token under another vault",
        env.server.raw(
            "POST",
            &format!("/v1/other/temp-bootstrap/{token}"),
            &[("Content-Type", "application/json")],
            Some(json!({"public_key": good_key}).to_string().as_bytes()),
        ),
        404,
        "bootstrap_token_invalid",
        "unknown",
    );

    let mut identity = [0u8; 32];
    identity[0] = 1;
    let raw_key = key.verifying_key().to_bytes();
    let keys: Vec<(&str, Value, u16, &str, &str)> = vec![
        (
            "not base64",
            json!({"public_key": "not base64!"}),
            400,
            "invalid_public_key",
            "base64",
        ),
        (
            "URL-safe base64",
            json!({"public_key": "-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-="}),
            400,
            "invalid_public_key",
            "base64",
        ),
        (
            "empty",
            json!({"public_key": ""}),
            400,
            "invalid_public_key",
            "32 raw bytes",
        ),
        (
            "31 bytes",
            json!({"public_key": STANDARD.encode(&raw_key[..31])}),
            400,
            "invalid_public_key",
            "32 raw bytes",
        ),
        (
            "33 bytes",
            json!({"public_key": STANDARD.encode([raw_key.as_slice(), &[0]].concat())}),
            400,
            "invalid_public_key",
            "32 raw bytes",
        ),
        (
            "hex",
            json!({"public_key": hex::encode(raw_key)}),
            400,
            "invalid_public_key",
            "32 raw bytes",
        ),
        (
            "PEM",
            json!({"public_key": format!("-----BEGIN PUBLIC KEY-----\n{good_key}\n-----END PUBLIC KEY-----")}),
            400,
            "invalid_public_key",
            "base64",
        ),
        (
            "the identity point",
            json!({"public_key": STANDARD.encode(identity)}),
            400,
            "weak_public_key",
            "",
        ),
        (
            "a number",
            json!({"public_key": 5}),
            400,
            "invalid_json",
            "invalid type",
        ),
        ("no key", json!({}), 400, "invalid_json", "public_key"),
        (
            "an unknown field",
            json!({"public_key": good_key, "machine_id": "x"}),
            400,
            "invalid_json",
            "machine_id",
        ),
    ];
    for (what, body, status, want, hint) in keys {
        cases.refused(
            &format!("key: {what}"),
            env.server.raw(
                "POST",
                &path,
                &[("Content-Type", "application/json")],
                Some(body.to_string().as_bytes()),
            ),
            status,
            want,
            hint,
        );
    }
    cases.finish("bootstrap");
    // The token is still good for exactly one registration.
    let body = json!({"public_key": good_key}).to_string();
    let (status, answer) = env.server.raw(
        "POST",
        &path,
        &[("Content-Type", "application/json")],
        Some(body.as_bytes()),
    );
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = env.server.raw(
        "POST",
        &path,
        &[("Content-Type", "application/json")],
        Some(body.as_bytes()),
    );
    assert_eq!(
        (status, code(&answer)),
        (404, "bootstrap_token_invalid"),
        "{answer}"
    );
    env.assert_alive("bootstrap");
}

// === Below the application ===

/// Requests the HTTP layer cannot parse never reach the application, so they get a bare
/// status without a JSON body: more than 96 headers or a head over 128 KiB is 431, and a
/// control character in a header, a bad request line, a space or a raw non-ASCII byte in
/// the target, or a body with both Content-Length and chunked encoding is 400. What this
/// proves is that they are refused with exactly those statuses and nothing breaks.
#[test]
fn requests_the_http_layer_cannot_parse_are_refused_without_a_crash() {
    let env = Env::start();
    let mut cases = Cases::default();
    let many: Vec<(String, Vec<u8>)> = (0..100)
        .map(|i| (format!("X-H{i}"), b"v".to_vec()))
        .collect();
    cases.status(
        "100 headers",
        send(&env.server, "GET", "/healthz", &many),
        431,
    );
    cases.status(
        "90 headers are fine",
        send(&env.server, "GET", "/healthz", &many[..90]),
        200,
    );
    let raw: [(&str, &[u8], u16); 7] = [
        (
            "a control character in a header",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Nonce: abc\x01def\r\nConnection: close\r\n\r\n",
            400,
        ),
        ("HTTP/9.9", b"GET /healthz HTTP/9.9\r\n\r\n", 400),
        (
            "a space in the target",
            b"GET /v1/default/secrets/app/d b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            400,
        ),
        (
            "a raw 0xff in the target",
            b"GET /v1/default/secrets/app/d\xffb HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            400,
        ),
        (
            "Content-Length and chunked together",
            b"POST /v1/default/projects HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (
            "a negative Content-Length",
            b"POST /v1/default/projects HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: -1\r\n\r\n",
            400,
        ),
        (
            "two different Content-Lengths",
            b"POST /v1/default/projects HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
            400,
        ),
    ];
    for (what, bytes, status) in raw {
        cases.status(what, tcp(&env.server, bytes), status);
    }
    // A head past 128 KiB: the server answers 431 and drops the connection, possibly while
    // the client is still writing, so the answer is read from whatever arrived.
    let addr = env.server.url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let big = vec![b'a'; 200 * 1024];
    let _ = stream.write_all(&request("GET", "/healthz", &[("X-Big", &big)], b""));
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    cases.count += 1;
    if !answer.starts_with(b"HTTP/1.1 431 ") {
        cases.failures.push(format!(
            "a 200 KiB header: got {:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(200)])
        ));
    }
    cases.finish("HTTP layer");
    env.assert_alive("HTTP layer");
}
