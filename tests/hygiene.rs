//! Secrets hygiene: a whole story with logging at trace level, and no secret value, private
//! key, bootstrap token or admin token in the log, the metrics or any error body.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails by panicking; helpers outside #[test] too"
)]

mod common;

use common::{Options, Server};
use serde_json::json;

#[test]
fn no_secret_or_token_reaches_the_log_the_metrics_or_an_error_body() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let server = Server::start_with(Options {
        log: Some(("trace".into(), log.clone())),
        ..Default::default()
    });
    let value = "hygiene-s3cr3t-9f8e7d6c5b4a";
    server.seed_secret("app", "key", value);
    let created = server.create_temporary("hygiene", json!({"hours": 1}));
    let token = created["bootstrap"]["token"].as_str().unwrap().to_owned();
    let home = dir.path().join("host");
    let id = common::bootstrap_ok(&home, created["bootstrap"]["command"].as_str().unwrap());
    let pem = std::fs::read_to_string(home.join("machine.key")).unwrap();
    let key_body = pem.lines().nth(1).unwrap().to_owned();
    let key = {
        use ed25519_dalek::pkcs8::DecodePrivateKey;
        ed25519_dalek::SigningKey::from_pkcs8_pem(&pem).unwrap()
    };
    let m = common::Machine {
        id,
        key,
        vault: "default".into(),
    };
    server.approve_and_grant(&m, "app", "key");

    // Collect every error body on the way: reads, denials, a spent token, bad admin calls.
    let mut bodies = Vec::new();
    let (status, body) = server.signed(&m, "GET", "/v1/default/secrets/app/key");
    assert_eq!(status, 200);
    assert_eq!(body["value"], value);
    bodies.push(
        server
            .signed(&m.forger(), "GET", "/v1/default/secrets/app/key")
            .1,
    );
    bodies.push(server.signed(&m, "GET", "/v1/default/secrets/app/other").1);
    let url = created["bootstrap"]["url"].as_str().unwrap();
    bodies.push(common::respond(ureq::post(url).send_json(json!({"public_key": "AAAA"}))).1);
    bodies.push(common::respond(ureq::get(&format!("{url}/extra")).call()).1);
    bodies.push(
        server
            .admin_as(
                &format!("{}x", server.token),
                "GET",
                "/v1/default/machines",
                None,
            )
            .1,
    );
    bodies.push(
        server
            .admin(
                "PUT",
                "/v1/default/projects/app/secrets/key",
                Some(json!({"value": value, "policy": {"countries": ["XX"]}})),
            )
            .1,
    );
    let metrics = server.metrics();
    let admin_token = server.token.clone();
    drop(server);

    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        log_text.lines().count() > 20,
        "trace logging produced almost nothing:\n{log_text}"
    );
    let needles = [
        ("secret value", value.to_owned()),
        ("private key", key_body),
        ("bootstrap token", token),
        ("admin token", admin_token),
    ];
    let bodies_text = serde_json::to_string(&bodies).unwrap();
    for (what, needle) in &needles {
        assert!(needle.len() > 20, "{what} is not a meaningful needle");
        assert!(!log_text.contains(needle.as_str()), "{what} in the log");
        assert!(!metrics.contains(needle.as_str()), "{what} in the metrics");
        assert!(
            !bodies_text.contains(needle.as_str()),
            "{what} in an error body: {bodies_text}"
        );
    }
}
