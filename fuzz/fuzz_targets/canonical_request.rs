//! The canonical string a machine signs: building it never panics, and it is unambiguous:
//! the same string cannot come from two different requests, because each part can be read
//! back from it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tempvault_core::protocol::{body_digest, canonical_request, CANONICAL_PREFIX};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(6, '\u{1}');
    let method = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("");
    let machine = parts.next().unwrap_or("");
    let timestamp = parts.next().unwrap_or("");
    let nonce = parts.next().unwrap_or("");
    let body = parts.next().unwrap_or("").as_bytes();

    let digest = body_digest(body);
    let message = canonical_request(method, target, machine, timestamp, nonce, &digest);
    assert_eq!(
        message,
        canonical_request(method, target, machine, timestamp, nonce, &body_digest(body)),
        "deterministic"
    );
    let inputs = [method, target, machine, timestamp, nonce];
    if inputs.iter().any(|p| p.contains('\n')) {
        // Newlines never occur in parsed headers, methods or request targets; the server
        // never builds such a string.
        return;
    }
    let message = String::from_utf8(message).expect("UTF-8 in, UTF-8 out");
    let lines: Vec<&str> = message.split('\n').collect();
    assert_eq!(lines.len(), 7, "prefix, five parts and the body digest");
    assert_eq!(lines[0], CANONICAL_PREFIX);
    assert_eq!(&lines[1..6], &inputs);
    assert_eq!(lines[6].len(), 64, "hex SHA-256 of the body");
});
