//! Every way a machine request is refused, each with its stable code.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails by panicking; helpers outside #[test] too"
)]

mod common;

use common::{code, nonce, now, Server};
use serde_json::json;

const TARGET: &str = "/v1/default/secrets/app/key";

fn setup() -> (Server, common::Machine) {
    let server = Server::start();
    server.seed_secret("app", "key", "value-1");
    let m = server.ready_machine("app", "key");
    (server, m)
}

#[test]
fn missing_or_malformed_headers_are_refused_before_anything_else() {
    let (server, m) = setup();
    let good = m.sign("GET", TARGET, b"", &now().to_string(), &nonce());
    let base = [
        ("X-Machine-Id", good.machine_id.as_str()),
        ("X-Timestamp", good.timestamp.as_str()),
        ("X-Nonce", good.nonce.as_str()),
        ("X-Signature", good.signature.as_str()),
    ];
    for skip in 0..4 {
        let headers: Vec<_> = base
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != skip)
            .map(|(_, h)| *h)
            .collect();
        let (status, body) = server.raw("GET", TARGET, &headers, None);
        assert_eq!(
            (status, code(&body)),
            (401, "missing_or_malformed_auth"),
            "without {:?}",
            base[skip].0
        );
        assert!(common::message(&body).contains(base[skip].0), "{body}");
    }
    let bad_values = [
        ("X-Machine-Id", "not-a-uuid"),
        ("X-Timestamp", "yesterday"),
        ("X-Timestamp", "-5"),
        ("X-Nonce", "short"),
        ("X-Nonce", "has spaces in it here"),
        ("X-Signature", "!!!!"),
        ("X-Signature", "AAAA"),
    ];
    for (name, value) in bad_values {
        let headers: Vec<_> = base
            .iter()
            .map(|&(k, v)| if k == name { (k, value) } else { (k, v) })
            .collect();
        let (status, body) = server.raw("GET", TARGET, &headers, None);
        assert_eq!(
            (status, code(&body)),
            (401, "missing_or_malformed_auth"),
            "{name}={value}: {body}"
        );
    }
}

#[test]
fn stale_and_future_timestamps_are_refused() {
    let (server, m) = setup();
    for ts in [now() - 61, now() + 61, now() - 100_000, 99_999_999_999] {
        let h = m.sign("GET", TARGET, b"", &ts.to_string(), &nonce());
        let (status, body) = server.send_signed("GET", TARGET, &h, None);
        assert_eq!((status, code(&body)), (401, "stale_timestamp"), "ts {ts}");
    }
}

#[test]
fn the_skew_window_is_configurable_and_inclusive_at_its_edges() {
    let server = Server::start_with(common::Options {
        extra: "[auth]\nskew_seconds = 3\n".into(),
        ..Default::default()
    });
    server.seed_secret("app", "key", "value-1");
    let m = server.ready_machine("app", "key");
    // Let the server's start second fall out of reach of the window's past edge.
    std::thread::sleep(std::time::Duration::from_secs(4));
    for (offset, expected) in [(-5, 401), (5, 401), (-2, 200), (2, 200)] {
        let h = m.sign("GET", TARGET, b"", &(now() + offset).to_string(), &nonce());
        let (status, body) = server.send_signed("GET", TARGET, &h, None);
        assert_eq!(status, expected, "offset {offset}: {body}");
    }
}

#[test]
fn a_bad_signature_and_an_unknown_machine_get_the_same_answer() {
    let (server, m) = setup();
    let other_key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let forger = common::Machine {
        id: m.id.clone(),
        key: other_key,
        vault: "default".into(),
    };
    let (s1, b1) = server.signed(&forger, "GET", TARGET);

    let stranger = common::Machine {
        id: uuid_like(),
        key: ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng),
        vault: "default".into(),
    };
    let (s2, b2) = server.signed(&stranger, "GET", TARGET);
    assert_eq!((s1, code(&b1)), (401, "authentication_failed"));
    assert_eq!(
        b1, b2,
        "bad signature and unknown machine must be indistinguishable"
    );
    assert_eq!(s1, s2);

    // The failed attempt on the real machine is in its audit trail. Failed authentications
    // are not waited for (they are attacker traffic), so give the writer a moment.
    let recorded = common::eventually(std::time::Duration::from_secs(3), || {
        server
            .audit_of(&m.id)
            .iter()
            .any(|e| e["outcome"] == "failed" && e["reason"] == "authentication_failed")
    });
    assert!(recorded, "failed authentication not audited");
}

fn uuid_like() -> String {
    let h = nonce();
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

#[test]
fn a_replayed_nonce_is_refused_and_a_fresh_one_is_not() {
    let (server, m) = setup();
    let h = m.sign("GET", TARGET, b"", &now().to_string(), &nonce());
    let (status, _) = server.send_signed("GET", TARGET, &h, None);
    assert_eq!(status, 200);
    let (status, body) = server.send_signed("GET", TARGET, &h, None);
    assert_eq!((status, code(&body)), (401, "nonce_replayed"));
    let (status, _) = server.signed(&m, "GET", TARGET);
    assert_eq!(status, 200);
}

#[test]
fn a_bad_signature_does_not_burn_the_nonce() {
    let (server, m) = setup();
    let ts = now().to_string();
    let n = nonce();
    let mut forged = m.sign("GET", TARGET, b"", &ts, &n);
    forged.signature = m.sign("GET", "/v1/default/machine", b"", &ts, &n).signature;
    let (status, _) = server.send_signed("GET", TARGET, &forged, None);
    assert_eq!(status, 401);
    let genuine = m.sign("GET", TARGET, b"", &ts, &n);
    let (status, body) = server.send_signed("GET", TARGET, &genuine, None);
    assert_eq!(status, 200, "{body}");
}

#[test]
fn tampering_with_path_query_or_body_breaks_the_signature() {
    let (server, m) = setup();
    server.seed_secret("app", "other", "value-2");
    let h = m.sign("GET", TARGET, b"", &now().to_string(), &nonce());
    for target in [
        "/v1/default/secrets/app/other",
        "/v1/default/secrets/app/key?x=1",
        "/v1/default/secrets/app/%6Bey",
    ] {
        let (status, body) = server.send_signed("GET", target, &h, None);
        assert_eq!(
            (status, code(&body)),
            (401, "authentication_failed"),
            "{target}"
        );
    }
    let (status, body) = server.send_signed("GET", TARGET, &h, Some(b"tampered"));
    assert_eq!((status, code(&body)), (401, "authentication_failed"));
    let (status, body) = server.send_signed("POST", TARGET, &h, None);
    assert!(status == 401 || status == 404, "{status} {body}");
}

#[test]
fn a_pending_machine_reads_nothing() {
    let server = Server::start();
    server.seed_secret("app", "key", "v");
    let m = server.register_machine(json!({"hours": 2}));
    let (status, body) = server.signed(&m, "GET", TARGET);
    assert_eq!((status, code(&body)), (403, "machine_pending"));
}

#[test]
fn a_disabled_machine_is_refused_on_its_next_request() {
    let (server, m) = setup();
    let (status, _) = server.admin(
        "POST",
        &format!("/v1/default/machines/{}/disable", m.id),
        Some(json!({"reason": "incident 42"})),
    );
    assert_eq!(status, 200);
    let (status, body) = server.signed(&m, "GET", TARGET);
    assert_eq!((status, code(&body)), (401, "machine_disabled"));
}

#[test]
fn membership_and_grant_are_both_required() {
    let server = Server::start();
    server.seed_secret("app", "key", "v");
    server.seed_secret("app", "ungranted", "v");
    server.seed_secret("other", "key", "v");
    let m = server.ready_machine("app", "key");

    let (status, body) = server.signed(&m, "GET", "/v1/default/secrets/app/ungranted");
    assert_eq!((status, code(&body)), (403, "secret_not_granted"));
    let (status, body) = server.signed(&m, "GET", "/v1/default/secrets/other/key");
    assert_eq!((status, code(&body)), (403, "not_project_member"));
    let (status, body) = server.signed(&m, "GET", "/v1/default/secrets/app/nonexistent");
    assert_eq!(
        (status, code(&body)),
        (403, "secret_not_granted"),
        "no probing of names"
    );

    // A grant without membership is not enough.
    let (status, _) = server.admin(
        "DELETE",
        &format!("/v1/default/machines/{}/projects/app", m.id),
        None,
    );
    assert_eq!(status, 200);
    let (status, body) = server.signed(&m, "GET", TARGET);
    assert_eq!((status, code(&body)), (403, "not_project_member"));

    // Denials are audited with their code.
    let events = server.audit_of(&m.id);
    assert!(events
        .iter()
        .any(|e| e["reason"] == "secret_not_granted" && e["outcome"] == "denied"));
    assert!(events.iter().any(|e| e["reason"] == "not_project_member"));
}

#[test]
fn a_machine_cannot_read_another_vaults_secret() {
    let (server, m) = setup();
    let (status, vault) = server.admin("POST", "/v1/vaults", Some(json!({"name": "other"})));
    assert_eq!(status, 201, "{vault}");
    let other_token = vault["admin_token"].as_str().unwrap();
    let (s, _) = server.admin_as(
        other_token,
        "POST",
        "/v1/other/projects",
        Some(json!({"name": "app"})),
    );
    assert_eq!(s, 201);
    let (s, _) = server.admin_as(
        other_token,
        "PUT",
        "/v1/other/projects/app/secrets/key",
        Some(json!({"value": "theirs"})),
    );
    assert_eq!(s, 200);

    for target in [
        "/v1/other/secrets/app/key",
        "/v1/other/machine",
        "/v1/nonexistent/secrets/app/key",
    ] {
        let (status, body) = server.signed(&m, "GET", target);
        assert_eq!(
            (status, code(&body)),
            (401, "authentication_failed"),
            "{target}"
        );
    }
}

#[test]
fn a_vault_scoped_admin_token_touches_nothing_in_another_vault() {
    let (server, m) = setup();
    let (_, other) = server.admin("POST", "/v1/vaults", Some(json!({"name": "other"})));
    let token = other["admin_token"].as_str().unwrap();
    let calls = [
        ("GET", "/v1/default/machines".to_owned(), None),
        ("GET", format!("/v1/default/machines/{}", m.id), None),
        (
            "POST",
            "/v1/default/projects".to_owned(),
            Some(json!({"name": "x"})),
        ),
        (
            "PUT",
            "/v1/default/projects/app/secrets/key".to_owned(),
            Some(json!({"value": "overwritten"})),
        ),
        (
            "POST",
            format!("/v1/default/machines/{}/disable", m.id),
            Some(json!({"reason": "x"})),
        ),
        ("GET", "/v1/default/audit".to_owned(), None),
        ("GET", "/v1/does-not-exist/machines".to_owned(), None),
        (
            "POST",
            "/v1/vaults".to_owned(),
            Some(json!({"name": "third"})),
        ),
    ];
    for (method, path, body) in calls {
        let (status, resp) = server.admin_as(token, method, &path, body);
        assert_eq!((status, code(&resp)), (403, "forbidden"), "{method} {path}");
    }
    // The machine in the default vault still reads its unchanged secret.
    let (status, body) = server.signed(&m, "GET", TARGET);
    assert_eq!((status, body["value"].as_str()), (200, Some("value-1")));
}

#[test]
fn admin_calls_without_a_valid_token_are_refused() {
    let server = Server::start();
    for token in [
        "",
        "nonsense",
        "tvt_0000000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        let (status, body) = server.admin_as(token, "GET", "/v1/default/machines", None);
        assert_eq!((status, code(&body)), (401, "unauthorized"), "{token:?}");
    }
    let (status, body) = server.raw("GET", "/v1/default/machines", &[], None);
    assert_eq!((status, code(&body)), (401, "unauthorized"));
}

#[test]
fn the_same_signed_request_sent_on_many_connections_at_once_succeeds_exactly_once() {
    let (server, m) = setup();
    let h = m.sign("GET", TARGET, b"", &now().to_string(), &nonce());
    let barrier = std::sync::Barrier::new(16);
    let statuses: Vec<(u16, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    let (status, body) = server.send_signed("GET", TARGET, &h, None);
                    (status, code(&body).to_owned())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        statuses.iter().filter(|(s, _)| *s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(statuses
        .iter()
        .filter(|(s, _)| *s != 200)
        .all(|(s, c)| *s == 401 && c == "nonce_replayed"));
}
