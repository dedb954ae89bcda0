//! The four signed headers, from arbitrary bytes: parsing never panics, and whatever parses
//! is in canonical form (so that two spellings of one request cannot both be accepted).
#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use tempvault_core::protocol::{
    AuthHeaders, HEADER_MACHINE_ID, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP,
};

fuzz_target!(|data: &[u8]| {
    // Split the input into the values of the four headers at 0xff bytes; a fifth part, if
    // any, repeats the signature header.
    let parts: Vec<&[u8]> = data.split(|b| *b == 0xff).collect();
    let part = |i: usize| parts.get(i).copied();
    let parsed = AuthHeaders::parse(|name| {
        let values: Vec<&[u8]> = match name {
            n if n == HEADER_MACHINE_ID => part(0).into_iter().collect(),
            n if n == HEADER_TIMESTAMP => part(1).into_iter().collect(),
            n if n == HEADER_NONCE => part(2).into_iter().collect(),
            n if n == HEADER_SIGNATURE => part(3).into_iter().chain(part(4)).collect(),
            _ => Vec::new(),
        };
        values.into_iter()
    });
    let Ok(headers) = parsed else { return };
    assert!(parts.len() <= 4, "a repeated header was accepted");
    assert_eq!(headers.machine_id.to_string().as_bytes(), parts[0]);
    assert_eq!(headers.timestamp_text.as_bytes(), parts[1]);
    assert_eq!(headers.timestamp.to_string(), headers.timestamp_text);
    assert_eq!(headers.nonce.as_str().as_bytes(), parts[2]);
    let encoded = base64::engine::general_purpose::STANDARD.encode(headers.signature.to_bytes());
    assert_eq!(encoded.as_bytes(), parts[3]);
});
