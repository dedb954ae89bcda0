//! The whole basic story against the real server: an admin creates a project, a secret and
//! a temporary machine; the printed bootstrap command runs on the "host" (real `sh`, `curl`
//! and `openssl`); the admin approves, adds and grants; the host reads the secret.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails by panicking; helpers outside #[test] too"
)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::{bootstrap_host, code, Server, BIN};
use serde_json::json;

#[test]
fn a_bootstrapped_and_approved_machine_reads_its_granted_secret() {
    let server = Server::start();
    server.seed_secret("payments", "db-password", "s3cr3t-value");

    let (status, created) = server.admin(
        "POST",
        "/v1/default/machines/temporary",
        Some(json!({"name": "contractor-laptop", "description": "migration", "lifetime": {"days": 2}})),
    );
    assert_eq!(status, 201, "{created}");
    let command = created["bootstrap"]["command"].as_str().unwrap().to_owned();
    assert!(
        command.starts_with("curl -sSL http://127.0.0.1:"),
        "{command}"
    );
    assert!(command.ends_with(" | sh"), "{command}");

    // The host runs exactly the printed command.
    let host = tempfile::tempdir().unwrap();
    let home = host.path().join("tv");
    let out = bootstrap_host(&home, &command);
    assert!(
        out.status.success(),
        "bootstrap failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let machine_id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(machine_id, created["machine"]["id"].as_str().unwrap());

    // The private key stays on the host, private; only the public key went to the server.
    let key_mode = std::fs::metadata(home.join("machine.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
    let config = std::fs::read_to_string(home.join("config")).unwrap();
    assert!(
        config.contains(&format!("machine_id={machine_id}")),
        "{config}"
    );
    let pem = std::fs::read_to_string(home.join("machine.key")).unwrap();
    let (_, shown) = server.admin("GET", &format!("/v1/default/machines/{machine_id}"), None);
    assert_eq!(shown["state"], "pending");
    assert!(!shown.to_string().contains(pem.lines().nth(1).unwrap()));

    // Pending: nothing can be read yet.
    let read = |home: &std::path::Path| {
        Command::new(BIN)
            .args(["read", "payments/db-password"])
            .env("TEMPVAULT_HOME", home)
            .output()
            .unwrap()
    };
    let pending = read(&home);
    assert!(!pending.status.success());
    assert!(String::from_utf8_lossy(&pending.stderr).contains("machine_pending"));

    // The admin approves, adds it to the project and grants the secret, with the CLI.
    let admin = |args: &[&str]| server.cli_ok(args);
    admin(&["machine", "approve", &machine_id]);
    admin(&["machine", "add-project", &machine_id, "payments"]);
    let shown = admin(&["machine", "grant", &machine_id, "payments/db-password"]);
    assert!(shown.contains("payments/db-password"), "{shown}");
    let listed = admin(&["machine", "list", "--state", "active"]);
    assert!(
        listed.contains(&machine_id) && listed.contains("active"),
        "{listed}"
    );

    // The host reads with `tempvault read`...
    let ok = read(&home);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(String::from_utf8(ok.stdout).unwrap(), "s3cr3t-value");

    // ...and a request signed here, from the documented protocol, with the host's key.
    let key = {
        use ed25519_dalek::pkcs8::DecodePrivateKey;
        ed25519_dalek::SigningKey::from_pkcs8_pem(&pem).unwrap()
    };
    let m = common::Machine {
        id: machine_id.clone(),
        key,
        vault: "default".into(),
    };
    let (status, body) = server.signed(&m, "GET", "/v1/default/secrets/payments/db-password");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"project": "payments", "name": "db-password", "version": 1, "value": "s3cr3t-value"})
    );

    let (status, me) = server.signed(&m, "GET", "/v1/default/machine");
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["id"], machine_id);
    assert_eq!(me["state"], "active");

    // Every step is in the machine's audit trail, and no secret value is.
    let events = server.audit_of(&machine_id);
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for expected in [
        "machine.created",
        "machine.registered",
        "machine.approved",
        "machine.project_added",
        "machine.granted",
        "secret.read",
    ] {
        assert!(
            actions.contains(&expected),
            "{expected} missing from {actions:?}"
        );
    }
    assert!(!serde_json::to_string(&events)
        .unwrap()
        .contains("s3cr3t-value"));
    let reads = events
        .iter()
        .filter(|e| e["action"] == "secret.read" && e["outcome"] == "allowed")
        .count();
    assert_eq!(reads, 2);
}

#[test]
fn a_bootstrap_token_works_once_and_a_bad_one_gets_a_failing_script() {
    let server = Server::start();
    let created = server.create_temporary("once", json!({"hours": 2}));
    let command = created["bootstrap"]["command"].as_str().unwrap().to_owned();
    let host = tempfile::tempdir().unwrap();
    let first = bootstrap_host(&host.path().join("a"), &command);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );

    // The same command again: the token is spent.
    let second = bootstrap_host(&host.path().join("b"), &command);
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("unknown, already used or expired"), "{err}");
    assert!(!host.path().join("b").join("machine.key").exists());

    // A made-up token, and a real token under another vault's URL.
    let bogus = format!(
        "curl -sSL {}/v1/default/temp-bootstrap/{} | sh",
        server.url,
        "A".repeat(43)
    );
    let out = bootstrap_host(&host.path().join("c"), &bogus);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown, already used or expired"));

    // Registering a key directly with a spent token is refused with a stable code.
    let url = created["bootstrap"]["url"].as_str().unwrap();
    let (status, body) = common::respond(ureq::post(url).send_json(json!({"public_key": "AAAA"})));
    assert_eq!(status, 404);
    assert_eq!(code(&body), "bootstrap_token_invalid");
}

#[test]
fn weak_and_malformed_public_keys_are_refused() {
    let server = Server::start();
    let created = server.create_temporary("weak", json!({"hours": 2}));
    let url = created["bootstrap"]["url"].as_str().unwrap();
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    // The identity point (small order), an all-zero key, and a real key plus a point of
    // order 8 (no key generator makes one).
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let real = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng).verifying_key();
    let mixed = real.to_edwards() + curve25519_dalek::constants::EIGHT_TORSION[1];
    for (key, expected) in [
        (b64(&identity), "weak_public_key"),
        (b64(mixed.compress().as_bytes()), "weak_public_key"),
        (b64(&[0u8; 32]), "weak_public_key"),
        (b64(&[1u8; 31]), "invalid_public_key"),
        ("not base64!".to_owned(), "invalid_public_key"),
    ] {
        let (status, body) = common::respond(ureq::post(url).send_json(json!({"public_key": key})));
        assert_eq!(status, 400, "{key}: {body}");
        assert_eq!(code(&body), expected, "{key}");
    }
    // The token survives refused attempts and still works for a good key.
    let good = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let (status, body) = common::respond(
        ureq::post(url).send_json(json!({"public_key": b64(good.verifying_key().as_bytes())})),
    );
    assert_eq!(status, 200, "{body}");
}

#[test]
fn everything_survives_a_restart_and_old_requests_cannot_be_replayed() {
    let mut server = Server::start();
    server.seed_secret("app", "token", "v1");
    let m = server.ready_machine("app", "token");
    let target = "/v1/default/secrets/app/token";

    let signed = m.sign(
        "GET",
        target,
        b"",
        &common::now().to_string(),
        &common::nonce(),
    );
    let (status, _) = server.send_signed("GET", target, &signed, None);
    assert_eq!(status, 200);
    let events_before = server.audit_of(&m.id).len();

    server.restart();

    // The exact same request after the restart: refused, not served again.
    let (status, body) = server.send_signed("GET", target, &signed, None);
    assert_eq!(status, 401, "{body}");
    assert_eq!(code(&body), "stale_timestamp");

    // Machine, membership, grant, secret and audit events are all still there.
    let (status, body) = server.signed(&m, "GET", target);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["value"], "v1");
    let events = server.audit_of(&m.id);
    assert_eq!(
        events.len(),
        events_before + 2,
        "before-restart events kept, replay and read added"
    );
    let (_, shown) = server.admin("GET", &format!("/v1/default/machines/{}", m.id), None);
    assert_eq!(shown["state"], "active");
}

#[test]
fn the_walk_through_with_a_machine_that_expires_part_way() {
    let server = Server::start();
    server.seed_secret("payments", "db-password", "s3cr3t-value");
    let admin = |args: &[&str]| server.cli_ok(args);
    let created: serde_json::Value = serde_json::from_str(&admin(&[
        "--json",
        "machine",
        "create-temporary",
        "incident-box",
        "--lifetime",
        "6s",
    ]))
    .unwrap();
    let id = created["machine"]["id"].as_str().unwrap().to_owned();
    let host = tempfile::tempdir().unwrap();
    let home = host.path().join("tv");
    let out = bootstrap_host(&home, created["bootstrap"]["command"].as_str().unwrap());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    admin(&["machine", "approve", &id]);
    admin(&["machine", "add-project", &id, "payments"]);
    admin(&["machine", "grant", &id, "payments/db-password"]);

    let read = || {
        Command::new(BIN)
            .args(["read", "payments/db-password"])
            .env("TEMPVAULT_HOME", &home)
            .output()
            .unwrap()
    };
    let ok = read();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(String::from_utf8(ok.stdout).unwrap(), "s3cr3t-value");

    // The machine's time runs out during the walk-through; nobody revokes anything.
    let expires: chrono::DateTime<chrono::Utc> = created["machine"]["expires_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    while chrono::Utc::now() < expires {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let refused = read();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("machine_expired"));

    // The sweep marks it (stored state, and a machine.expired event), and the history and
    // audit trail stay.
    let marked = common::eventually(std::time::Duration::from_secs(5), || {
        let shown: serde_json::Value =
            serde_json::from_str(&admin(&["--json", "machine", "show", &id])).unwrap();
        shown["stored_state"] == "expired"
    });
    assert!(marked, "the sweep did not mark the machine");
    assert!(admin(&["machine", "list", "--state", "expired"]).contains(&id));
    let shown = admin(&["machine", "show", &id]);
    assert!(
        shown.contains("expired") && shown.contains("time left:") && shown.contains("none"),
        "{shown}"
    );
    let audit_has_expiry = common::eventually(std::time::Duration::from_secs(3), || {
        admin(&["machine", "audit", &id]).contains("machine.expired")
    });
    assert!(audit_has_expiry);
    let audit = admin(&["machine", "audit", &id]);
    for action in [
        "machine.created",
        "machine.registered",
        "secret.read",
        "machine.expired",
    ] {
        assert!(audit.contains(action), "{action} missing in\n{audit}");
    }
    let report = admin(&["machine", "access-report", &id]);
    assert!(report.contains("payments/db-password"), "{report}");
}

/// The shell client printed in the README's wire-protocol section, run as written: proof
/// that the documented protocol is enough to write a client.
#[test]
fn the_readme_shell_client_reads_a_secret() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let after = readme
        .split("A minimal client in shell")
        .nth(1)
        .expect("README section");
    let snippet = after
        .split("```sh\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("sh block");

    let server = Server::start();
    server.seed_secret("payments", "db-password", "from-the-readme");
    let created = server.create_temporary("readme", json!({"hours": 1}));
    let host = tempfile::tempdir().unwrap();
    let out = Command::new("sh")
        .args(["-c", created["bootstrap"]["command"].as_str().unwrap()])
        .env("HOME", host.path())
        .env_remove("TEMPVAULT_HOME")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let m = common::Machine {
        id: id.clone(),
        key: ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng),
        vault: "default".into(),
    };
    server.approve_and_grant(&m, "payments", "db-password");

    let out = Command::new("sh")
        .args(["-c", snippet])
        .env("HOME", host.path())
        .current_dir(host.path())
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        body.contains(r#""value":"from-the-readme""#),
        "{body}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
