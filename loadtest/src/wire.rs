//! A minimal HTTP/1.1 client for the measured loop: one kept-alive connection per sender
//! thread, each request written as bytes serialised before the run, each answer read just
//! far enough to know its status and error code.
//!
//! A general-purpose client builds a request, a header map and a response object every
//! time; on a two-core machine that CPU comes straight out of the server's share. This one
//! does a write and the reads a keep-alive answer needs. It speaks only what tempvault
//! answers with: plain `http://`, bodies sized by `Content-Length`.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::report::Outcome;

/// How long a connect, a write or a read may take before the request counts as failed.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Largest answer body read; tempvault's are a few hundred bytes.
const MAX_BODY: usize = 1 << 20;

/// The `host:port` of an `http://` server URL.
pub fn authority(server: &str) -> Result<String, String> {
    let rest = server
        .strip_prefix("http://")
        .ok_or_else(|| format!("--server {server:?}: only http:// URLs are supported"))?;
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') {
        return Err(format!("--server {server:?}: give the base URL only"));
    }
    Ok(authority.to_owned())
}

/// The bytes of a signed `GET`, ready to write.
pub fn get_request(authority: &str, target: &str, headers: &[(&str, String)]) -> Vec<u8> {
    let mut out = format!("GET {target} HTTP/1.1\r\nHost: {authority}\r\n");
    for (name, value) in headers {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(value);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// One kept-alive connection, opened on first use and again after any failure.
#[derive(Debug)]
pub struct Connection {
    authority: String,
    stream: Option<BufReader<TcpStream>>,
    line: String,
    body: Vec<u8>,
}

impl Connection {
    pub fn new(authority: &str) -> Self {
        Self {
            authority: authority.to_owned(),
            stream: None,
            line: String::new(),
            body: Vec::new(),
        }
    }

    /// Sends one request and reads its answer. A transport failure is an outcome with
    /// status 0, so that it shows in the report and fails the verdicts.
    pub fn send(&mut self, request: &[u8]) -> Outcome {
        let reused = self.stream.is_some();
        let mut result = self.exchange(request);
        // A kept-alive connection the server closed while idle fails before any answer;
        // the server never read the request, so sending it again on a new one is safe.
        // (A request the server did read would come back `nonce_replayed`, failing the
        // verdicts: a wrong retry cannot pass unseen.)
        let idle_closed = |e: &io::Error| {
            matches!(
                e.kind(),
                io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
            )
        };
        if reused && matches!(&result, Err(e) if idle_closed(e)) {
            self.stream = None;
            result = self.exchange(request);
        }
        result.unwrap_or_else(|e| {
            self.stream = None;
            Outcome {
                status: 0,
                code: format!("transport: {e}"),
            }
        })
    }

    fn exchange(&mut self, request: &[u8]) -> io::Result<Outcome> {
        let stream = match &mut self.stream {
            Some(s) => s,
            None => self
                .stream
                .insert(BufReader::new(connect(&self.authority)?)),
        };
        stream.get_mut().write_all(request)?;

        self.line.clear();
        if stream.read_line(&mut self.line)? == 0 {
            self.stream = None;
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let status = parse_status(&self.line)?;
        let mut length = None;
        let mut close = false;
        loop {
            self.line.clear();
            if stream.read_line(&mut self.line)? == 0 {
                return Err(bad("connection closed inside the headers"));
            }
            let header = self.line.trim_end();
            if header.is_empty() {
                break;
            }
            let Some((name, value)) = header.split_once(':') else {
                return Err(bad("malformed header line"));
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(
                    value
                        .parse::<usize>()
                        .map_err(|_| bad("bad Content-Length"))?,
                );
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(bad("chunked answers are not supported"));
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            }
        }
        let length = length.ok_or_else(|| bad("answer without Content-Length"))?;
        if length > MAX_BODY {
            return Err(bad("answer body too large"));
        }
        self.body.resize(length, 0);
        stream.read_exact(&mut self.body)?;
        if close {
            self.stream = None;
        }

        let code = if status == 200 {
            String::new()
        } else {
            error_code(&self.body)
        };
        Ok(Outcome { status, code })
    }
}

fn connect(authority: &str) -> io::Result<TcpStream> {
    let addr = authority
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| bad("server address does not resolve"))?;
    let stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    Ok(stream)
}

/// The status code of an `HTTP/1.1 200 OK` line.
fn parse_status(line: &str) -> io::Result<u16> {
    line.strip_prefix("HTTP/1.1 ")
        .or_else(|| line.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| bad("malformed status line"))
}

/// The stable code of a tempvault error body, empty when there is none.
fn error_code(body: &[u8]) -> String {
    let body: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    body["error"]["code"].as_str().unwrap_or("").to_owned()
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn the_authority_is_the_host_and_port_of_a_plain_http_url() {
        assert_eq!(
            authority("http://127.0.0.1:8750/").unwrap(),
            "127.0.0.1:8750"
        );
        assert!(authority("https://127.0.0.1:8750").is_err());
        assert!(authority("http://127.0.0.1:8750/v1").is_err());
    }

    #[test]
    fn a_request_is_written_with_its_host_and_headers() {
        let bytes = get_request("h:1", "/p?q", &[("X-Nonce", "n".to_owned())]);
        assert_eq!(
            bytes,
            b"GET /p?q HTTP/1.1\r\nHost: h:1\r\nX-Nonce: n\r\n\r\n"
        );
    }

    /// Answers each request on one connection with the next canned answer, then closes.
    fn server(answers: Vec<&'static str>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream);
            for answer in answers {
                let mut line = String::new();
                while line != "\r\n" {
                    line.clear();
                    if reader.read_line(&mut line).unwrap() == 0 {
                        return;
                    }
                }
                reader.get_mut().write_all(answer.as_bytes()).unwrap();
            }
        });
        addr
    }

    #[test]
    fn answers_are_read_in_turn_on_one_kept_alive_connection() {
        let error = r#"{"error":{"code":"nonce_replayed","message":"m"}}"#;
        let second: &'static str = Box::leak(
            format!(
                "HTTP/1.1 401 Unauthorized\r\ncontent-length: {}\r\n\r\n{error}",
                error.len()
            )
            .into_boxed_str(),
        );
        let addr = server(vec![
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
            second,
        ]);
        let mut conn = Connection::new(&addr);
        let request = get_request(&addr, "/", &[]);
        let first = conn.send(&request);
        assert_eq!((first.status, first.code.as_str()), (200, ""));
        let second = conn.send(&request);
        assert_eq!(
            (second.status, second.code.as_str()),
            (401, "nonce_replayed")
        );
    }

    #[test]
    fn a_broken_answer_is_a_transport_failure() {
        let addr = server(vec![
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        ]);
        let mut conn = Connection::new(&addr);
        let outcome = conn.send(&get_request(&addr, "/", &[]));
        assert_eq!(outcome.status, 0);
        assert!(outcome.code.contains("chunked"), "{}", outcome.code);
    }
}
