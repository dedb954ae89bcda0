//! Batch verification across concurrent requests, against the real server: a burst of
//! signed requests, valid and forged mixed, lands on one worker at once; the signatures are
//! checked together, and every request still gets the answer it would get alone.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{code, nonce, now, Machine, Options, Server};

const TARGET: &str = "/v1/default/secrets/app/db";

fn server(max_batch: usize) -> (Server, Machine) {
    let server = Server::start_with(Options {
        extra: format!("[auth]\nmax_verify_batch = {max_batch}\n[limits]\nworkers = 1\n"),
        ..Options::default()
    });
    server.seed_secret("app", "db", "s3cret");
    let m = server.ready_machine("app", "db");
    // Requests signed in the server's first second are refused; start clear of it.
    std::thread::sleep(Duration::from_millis(1100));
    (server, m)
}

/// One raw HTTP/1.1 request with the four signed headers, closing the connection after.
fn raw_request(signer: &Machine, claimed_id: &str, target: &str) -> Vec<u8> {
    let h = signer.sign("GET", target, b"", &now().to_string(), &nonce());
    format!(
        "GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         X-Machine-Id: {claimed_id}\r\nX-Timestamp: {}\r\nX-Nonce: {}\r\nX-Signature: {}\r\n\r\n",
        h.timestamp, h.nonce, h.signature
    )
    .into_bytes()
}

/// Status and error code of a raw response.
fn parse_response(text: &str) -> (u16, String) {
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    let value: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    (status, code(&value).to_owned())
}

/// Opens one connection per request, then writes every request back to back before reading
/// any answer, so that the worker finds many of them ready at once.
fn burst(server: &Server, requests: &[Vec<u8>]) -> Vec<(u16, String)> {
    let addr = server.url.trim_start_matches("http://");
    let mut streams: Vec<TcpStream> = requests
        .iter()
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    // Let the acceptor hand every connection to the worker first.
    std::thread::sleep(Duration::from_millis(200));
    for (stream, request) in streams.iter_mut().zip(requests) {
        stream.write_all(request).expect("write");
    }
    streams
        .iter_mut()
        .map(|stream| {
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            let mut text = String::new();
            stream.read_to_string(&mut text).expect("read");
            parse_response(&text)
        })
        .collect()
}

/// (batches, signatures, batches that fell back to one-by-one checks) from the metrics.
fn batch_counts(server: &Server) -> (f64, f64, f64) {
    let metrics = server.metrics();
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (
        value("tempvault_signature_batch_size_count "),
        value("tempvault_signature_batch_size_sum "),
        value("tempvault_signature_batch_fallbacks_total "),
    )
}

/// Sends bursts of 24 requests, a third of them forged in different ways, and checks every
/// answer. Returns whether any burst was verified in batches of more than one.
fn run_bursts(server: &Server, m: &Machine) -> bool {
    let forger = m.forger();
    for _ in 0..5 {
        let mut requests = Vec::new();
        let mut expected = Vec::new();
        for i in 0..24 {
            match i % 3 {
                0 | 1 => {
                    requests.push(raw_request(m, &m.id, TARGET));
                    expected.push((200, String::new()));
                }
                _ if i % 2 == 0 => {
                    // Signed by a key that is not the machine's.
                    requests.push(raw_request(&forger, &m.id, TARGET));
                    expected.push((401, "authentication_failed".to_owned()));
                }
                _ => {
                    // The machine's own signature, over a different target.
                    let mut r = raw_request(m, &m.id, "/v1/default/secrets/app/other");
                    let line_end = r.iter().position(|b| *b == b'\r').expect("a request line");
                    let mut fixed = format!("GET {TARGET} HTTP/1.1").into_bytes();
                    fixed.extend_from_slice(&r[line_end..]);
                    r = fixed;
                    requests.push(r);
                    expected.push((401, "authentication_failed".to_owned()));
                }
            }
        }
        let before = batch_counts(server);
        let answers = burst(server, &requests);
        for (i, (got, want)) in answers.iter().zip(&expected).enumerate() {
            let got = (
                got.0,
                if got.0 == 200 {
                    String::new()
                } else {
                    got.1.clone()
                },
            );
            assert_eq!(&got, want, "request {i}");
        }
        let after = batch_counts(server);
        let (batches, signatures) = (after.0 - before.0, after.1 - before.1);
        assert_eq!(signatures, 24.0, "every signature was checked once");
        if batches < signatures {
            return true;
        }
    }
    false
}

#[test]
fn a_burst_of_mixed_requests_is_verified_in_batches_with_unchanged_answers() {
    let (server, m) = server(64);
    assert!(
        run_bursts(&server, &m),
        "in five bursts of 24 the worker never found two signatures to check together"
    );
}

#[test]
fn bursts_of_valid_requests_are_settled_by_batch_equations_alone() {
    let (server, m) = server(64);
    let mut batched = false;
    for _ in 0..5 {
        let requests: Vec<Vec<u8>> = (0..24).map(|_| raw_request(&m, &m.id, TARGET)).collect();
        let before = batch_counts(&server);
        let answers = burst(&server, &requests);
        for (i, answer) in answers.iter().enumerate() {
            assert_eq!(answer.0, 200, "request {i}: {answer:?}");
        }
        let after = batch_counts(&server);
        assert_eq!(after.1 - before.1, 24.0, "every signature was checked once");
        assert_eq!(
            after.2 - before.2,
            0.0,
            "a batch of valid signatures failed its equation"
        );
        batched |= after.0 - before.0 < 24.0;
    }
    assert!(
        batched,
        "in five bursts of 24 nothing was verified in a batch"
    );
}

#[test]
fn with_batching_off_the_same_bursts_get_the_same_answers_one_at_a_time() {
    let (server, m) = server(1);
    assert!(
        !run_bursts(&server, &m),
        "max_verify_batch = 1 never batches"
    );
}
