//! Bad input gets a 4xx with a stable code and a message that says what is wrong; never a
//! 5xx, never a crash.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails by panicking; helpers outside #[test] too"
)]

mod common;

use base64::Engine as _;
use common::{code, nonce, now, Server};
use serde_json::json;

fn assert_4xx(status: u16, body: &serde_json::Value, what: &str) {
    assert!((400..500).contains(&status), "{what}: got {status} {body}");
    assert!(!code(body).is_empty(), "{what}: no error code in {body}");
    assert!(
        !body["error"]["message"].as_str().unwrap_or("").is_empty(),
        "{what}: no message"
    );
}

#[test]
fn signatures_of_the_wrong_length_or_encoding_are_malformed() {
    let server = Server::start();
    server.seed_secret("app", "key", "v");
    let m = server.ready_machine("app", "key");
    let target = "/v1/default/secrets/app/key";
    let good = m.sign("GET", target, b"", &now().to_string(), &nonce());
    let b64 = base64::engine::general_purpose::STANDARD;
    let raw = b64.decode(&good.signature).unwrap();
    let variants = [
        b64.encode(&raw[..63]),
        b64.encode([raw.clone(), vec![0]].concat()),
        good.signature.trim_end_matches('=').to_owned(),
        good.signature.replace('+', "-").replace('/', "_") + "x",
        "*".repeat(88),
    ];
    for sig in variants {
        let headers = [
            ("X-Machine-Id", good.machine_id.as_str()),
            ("X-Timestamp", good.timestamp.as_str()),
            ("X-Nonce", good.nonce.as_str()),
            ("X-Signature", sig.as_str()),
        ];
        let (status, body) = server.raw("GET", target, &headers, None);
        assert_eq!(
            (status, code(&body)),
            (401, "missing_or_malformed_auth"),
            "{sig}: {body}"
        );
    }
}

#[test]
fn unknown_routes_get_a_json_404() {
    let server = Server::start();
    for path in [
        "/",
        "/v2/anything",
        "/v1/default/nothing/here",
        "/v1/default/temp-bootstrap/x/y",
    ] {
        let (status, body) = server.raw("GET", path, &[], None);
        assert_eq!((status, code(&body)), (404, "not_found"), "{path}");
    }
}

#[test]
fn invalid_admin_json_is_refused_with_a_message_that_names_the_problem() {
    let server = Server::start();
    let auth = format!("Bearer {}", server.token);
    let send = |path: &str, body: &[u8]| {
        server.raw(
            "POST",
            path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            Some(body),
        )
    };
    let (status, body) = send("/v1/default/projects", b"{not json");
    assert_eq!((status, code(&body)), (400, "invalid_json"));
    let (status, body) = send("/v1/default/projects", br#"{"name": 5}"#);
    assert_eq!((status, code(&body)), (400, "invalid_json"));
    assert!(common::message(&body).contains("invalid type"), "{body}");
    let (status, body) = send("/v1/default/projects", br#"{"name": "ok", "extra": 1}"#);
    assert_eq!((status, code(&body)), (400, "invalid_json"));
    assert!(common::message(&body).contains("extra"), "{body}");
    let (status, body) = send("/v1/default/projects", br#"{"name": "../etc"}"#);
    assert_eq!((status, code(&body)), (400, "invalid_request"));
    let (status, body) = send("/v1/default/projects", b"\xff\xfe");
    assert_4xx(status, &body, "invalid UTF-8");

    let (status, body) = send(
        "/v1/default/machines/temporary",
        br#"{"name": "m", "lifetime": {"minutes": 0}}"#,
    );
    assert_eq!((status, code(&body)), (400, "invalid_lifetime"), "{body}");
    let (status, body) = send(
        "/v1/default/machines/temporary",
        br#"{"name": "m", "lifetime": {"months": 13}}"#,
    );
    assert_eq!((status, code(&body)), (400, "invalid_lifetime"));
    assert!(common::message(&body).contains("12 months"), "{body}");
    let (status, body) = send(
        "/v1/default/machines/temporary",
        br#"{"name": "m", "lifetime": {"hours": 99999999999}}"#,
    );
    assert_eq!((status, code(&body)), (400, "invalid_json"));
    let (status, body) = send(
        "/v1/default/machines/temporary",
        br#"{"name": "m", "lifetime": {"hours": 2}, "guardrails": {"ip_allowlist": ["10.0.0.0/33"]}}"#,
    );
    assert_eq!((status, code(&body)), (400, "invalid_guardrails"));
    assert!(common::message(&body).contains("10.0.0.0/33"), "{body}");
}

#[test]
fn oversized_bodies_and_headers_are_refused_without_a_crash() {
    let server = Server::start();
    let auth = format!("Bearer {}", server.token);
    let huge = format!(r#"{{"name": "{}"}}"#, "a".repeat(300 * 1024));
    let (status, body) = server.raw(
        "POST",
        "/v1/default/projects",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        Some(huge.as_bytes()),
    );
    assert_eq!((status, code(&body)), (413, "payload_too_large"));

    let big_value = "x".repeat(65 * 1024);
    server.seed_secret("app", "small", "v");
    let (status, body) = server.admin(
        "PUT",
        "/v1/default/projects/app/secrets/big",
        Some(json!({"value": big_value})),
    );
    assert_eq!((status, code(&body)), (413, "payload_too_large"));

    // A header far past any sane size: the connection is refused with 431, not a crash.
    let long = "a".repeat(64 * 1024);
    let result = ureq::get(&format!("{}/healthz", server.url))
        .set("X-Nonce", &long)
        .call();
    match result {
        Err(ureq::Error::Status(s, _)) => assert!((400..500).contains(&s), "{s}"),
        Err(ureq::Error::Transport(_)) => {}
        Ok(r) => panic!("oversized header accepted: {}", r.status()),
    }
    let (status, _) = server.raw("GET", "/healthz", &[], None);
    assert_eq!(status, 200, "server still up");
}

#[test]
fn bad_machine_ids_and_states_in_admin_paths_are_client_errors() {
    let server = Server::start();
    for path in [
        "/v1/default/machines/not-an-id",
        "/v1/default/machines/00000000-0000-4000-8000-000000000000",
        "/v1/default/machines?state=sleeping",
        "/v1/default/audit?limit=0",
        "/v1/default/audit?after=-1",
        "/v1/Bad%20Vault/machines",
    ] {
        let (status, body) = server.admin("GET", path, None);
        assert_4xx(status, &body, path);
    }
}
