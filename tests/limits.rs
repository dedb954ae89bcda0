//! Connection limits and timeouts, against the real server: a client that never finishes its
//! headers is cut off, a worker serves at most its configured number of connections, and an
//! idle kept-alive connection is closed.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Options, Server};

fn server(limits: &str) -> Server {
    Server::start_with(Options {
        extra: format!("[limits]\nworkers = 1\n{limits}\n"),
        ..Options::default()
    })
}

fn connect(server: &Server) -> TcpStream {
    let stream = TcpStream::connect(server.url.trim_start_matches("http://")).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream
}

/// Reads until the server closes the connection (or the read timeout passes).
fn read_all(stream: &mut TcpStream) -> String {
    let mut text = Vec::new();
    let _ = stream.read_to_end(&mut text);
    String::from_utf8_lossy(&text).into_owned()
}

const HEALTH: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

#[test]
fn a_client_that_never_finishes_its_headers_gets_408_and_is_disconnected() {
    let server = server("request_header_timeout = \"500ms\"");
    let mut slow = connect(&server);
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .expect("write");
    let started = Instant::now();
    let answer = read_all(&mut slow);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "cut off by the timeout, not by the test's own read timeout"
    );
    // The server is still fine for everyone else.
    let mut ok = connect(&server);
    ok.write_all(HEALTH).expect("write");
    assert!(read_all(&mut ok).starts_with("HTTP/1.1 200"));
}

#[test]
fn a_worker_serves_at_most_its_connection_limit_and_the_next_waits_its_turn() {
    let server = server("max_connections_per_worker = 2\nkeep_alive = \"30s\"");
    // Two kept-alive connections, each having had an answer, occupy the worker.
    let mut held: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = connect(&server);
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .expect("write");
            let mut buf = [0u8; 12];
            s.read_exact(&mut buf).expect("first answer");
            assert_eq!(&buf, b"HTTP/1.1 200");
            s
        })
        .collect();

    let mut third = connect(&server);
    third
        .set_read_timeout(Some(Duration::from_millis(700)))
        .expect("timeout");
    third.write_all(HEALTH).expect("write");
    let mut buf = [0u8; 12];
    let early = third.read(&mut buf);
    assert!(
        matches!(early, Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock
            || e.kind() == std::io::ErrorKind::TimedOut),
        "the third connection must wait while two are open: {early:?}"
    );

    // Closing one frees a slot and the waiting request is served.
    held.pop();
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let answer = read_all(&mut third);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
}

#[test]
fn an_idle_kept_alive_connection_is_closed_after_keep_alive() {
    let server = server("keep_alive = \"1s\"");
    let mut s = connect(&server);
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let started = Instant::now();
    let text = read_all(&mut s);
    assert!(text.starts_with("HTTP/1.1 200"), "{text:?}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(4),
        // The server's clock for connection timers ticks every half second.
        "closed by the server after about a second of idleness, took {waited:?}"
    );
}

#[test]
fn limits_out_of_range_are_refused_at_start_with_the_key_named() {
    for (limits, key) in [
        (
            "max_connections_per_worker = 0",
            "limits.max_connections_per_worker",
        ),
        (
            "request_header_timeout = \"0s\"",
            "limits.request_header_timeout",
        ),
        ("max_header_bytes = 10", "limits.max_header_bytes"),
        ("keep_alive = \"2h\"", "limits.keep_alive"),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("tv.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[limits]\n{limits}\n",
                dir.path().join("data").display()
            ),
        )
        .expect("config");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tempvault"))
            .args(["serve", "--config"])
            .arg(&config)
            .output()
            .expect("run");
        assert!(!out.status.success(), "{limits} must be refused");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(key), "{limits}: {stderr}");
    }
}
