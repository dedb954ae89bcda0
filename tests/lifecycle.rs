//! Temporary-machine lifecycle: expiry on the hot path and by the sweep, extensions and
//! reverts, manual disable, and what a restart does to all of it.
//!
//! The test server runs with `min_lifetime = "1s"` and a 200 ms sweep so that lifetimes of
//! seconds can be used.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails by panicking; helpers outside #[test] too"
)]

mod common;

use std::time::Duration;

use chrono::{DateTime, Months, TimeDelta, Utc};
use common::{code, eventually, Server};
use serde_json::{json, Value};

const TARGET: &str = "/v1/default/secrets/app/key";

fn machine_path(id: &str) -> String {
    format!("/v1/default/machines/{id}")
}

fn show(server: &Server, id: &str) -> Value {
    let (status, body) = server.admin("GET", &machine_path(id), None);
    assert_eq!(status, 200, "{body}");
    body
}

fn expires_at(m: &Value) -> DateTime<Utc> {
    m["expires_at"].as_str().unwrap().parse().unwrap()
}

fn extend(server: &Server, id: &str, body: Value) -> (u16, Value) {
    server.admin(
        "POST",
        &format!("{}/extensions", machine_path(id)),
        Some(body),
    )
}

fn revert(server: &Server, id: &str, ext: u64) -> (u16, Value) {
    server.admin(
        "POST",
        &format!("{}/extensions/{ext}/revert", machine_path(id)),
        Some(json!({"reason": "undo"})),
    )
}

fn with_sweep(interval: &str) -> common::Options {
    common::Options {
        extra: format!("[lifecycle]\nmin_lifetime = \"1s\"\nsweep_interval = \"{interval}\"\n"),
        ..Default::default()
    }
}

#[test]
fn an_expired_machine_is_refused_before_any_sweep_then_marked_and_kept() {
    // A sweep interval far longer than the lifetime: refusal cannot come from the sweep.
    let server = Server::start_with(with_sweep("60s"));
    server.seed_secret("app", "key", "v");
    let m = server.register_machine(json!({"seconds": 3}));
    server.approve_and_grant(&m, "app", "key");
    let (status, body) = server.signed(&m, "GET", TARGET);
    assert_eq!(status, 200, "{body}");

    let until = expires_at(&show(&server, &m.id));
    while Utc::now() < until + TimeDelta::milliseconds(100) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, body) = server.signed(&m, "GET", TARGET);
    assert_eq!((status, code(&body)), (401, "machine_expired"));
    let shown = show(&server, &m.id);
    assert_eq!(shown["state"], "expired", "state as of now");
    assert_eq!(shown["stored_state"], "active", "the sweep has not run yet");
    let (status, body) = server.signed(&m, "GET", "/v1/default/machine");
    assert_eq!((status, code(&body)), (401, "machine_expired"));
}

#[test]
fn the_sweep_marks_an_expired_machine_within_its_interval_and_history_stays() {
    let server = Server::start();
    server.seed_secret("app", "key", "v");
    let m = server.register_machine(json!({"seconds": 2}));
    server.approve_and_grant(&m, "app", "key");
    assert_eq!(server.signed(&m, "GET", TARGET).0, 200);

    let marked = eventually(Duration::from_secs(5), || {
        show(&server, &m.id)["stored_state"] == "expired"
    });
    assert!(marked, "sweep did not mark the machine");
    let shown = show(&server, &m.id);
    assert!(shown["expired_at"].is_string());

    let events = server.audit_of(&m.id);
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"machine.created") && actions.contains(&"secret.read"),
        "{actions:?}"
    );
    let expired = events
        .iter()
        .find(|e| e["action"] == "machine.expired")
        .expect("machine.expired event");
    assert_eq!(expired["actor"], "system");
    let marked_at: DateTime<Utc> = expired["time"].as_str().unwrap().parse().unwrap();
    assert!(
        marked_at - expires_at(&shown) < TimeDelta::seconds(2),
        "marked late: {marked_at}"
    );

    let (status, list) = server.admin("GET", "/v1/default/machines?state=expired", None);
    assert_eq!(status, 200);
    assert!(list["machines"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["id"] == m.id.as_str()));
    let metrics = server.metrics();
    assert!(metrics.contains("tempvault_expiries_total 1"), "{metrics}");
    assert!(
        metrics.contains("tempvault_machines{state=\"expired\"} 1"),
        "{metrics}"
    );
}

#[test]
fn extensions_and_reverts_in_every_order_set_the_effective_expiry() {
    let server = Server::start();
    let m = server.register_machine(json!({"hours": 2}));
    assert_eq!(
        server
            .admin("POST", &format!("{}/approve", machine_path(&m.id)), None)
            .0,
        200
    );
    let original = expires_at(&show(&server, &m.id));

    let (status, after1) = extend(
        &server,
        &m.id,
        json!({"extend_by": {"days": 1}, "reason": "work ran long"}),
    );
    assert_eq!(status, 200, "{after1}");
    let first = original + TimeDelta::days(1);
    assert_eq!(expires_at(&after1), first);
    let to = (first + TimeDelta::days(2)).to_rfc3339();
    let (status, after2) = extend(&server, &m.id, json!({"expires_at": to, "reason": "again"}));
    assert_eq!(status, 200, "{after2}");
    let second = first + TimeDelta::days(2);
    assert_eq!(expires_at(&after2), second);

    // Revert the first: the second is newest and not reverted, so it stays in force.
    let (status, r1) = revert(&server, &m.id, 1);
    assert_eq!(status, 200, "{r1}");
    assert_eq!(expires_at(&r1), second);
    // Revert the second: nothing left in force but the original.
    let (status, r2) = revert(&server, &m.id, 2);
    assert_eq!(status, 200);
    assert_eq!(expires_at(&r2), original);
    // Reverting twice, or an unknown extension, is refused.
    let (status, body) = revert(&server, &m.id, 2);
    assert_eq!((status, code(&body)), (409, "already_reverted"));
    let (status, body) = revert(&server, &m.id, 9);
    assert_eq!((status, code(&body)), (404, "not_found"));

    // The other order on a fresh pair: revert the second, then the first.
    let (_, a) = extend(
        &server,
        &m.id,
        json!({"extend_by": {"hours": 1}, "reason": "third"}),
    );
    let third = expires_at(&a);
    assert_eq!(third, original + TimeDelta::hours(1));
    let (_, b) = extend(
        &server,
        &m.id,
        json!({"extend_by": {"hours": 1}, "reason": "fourth"}),
    );
    assert_eq!(expires_at(&b), third + TimeDelta::hours(1));
    let (_, after) = revert(&server, &m.id, 4);
    assert_eq!(expires_at(&after), third);
    let (_, after) = revert(&server, &m.id, 3);
    assert_eq!(expires_at(&after), original);

    // History keeps every extension and revert, and the audit log has the reasons.
    let history = show(&server, &m.id)["extensions"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(history.len(), 4);
    assert!(history.iter().all(|e| e["reverted"].is_object()));
    assert_eq!(history[0]["reason"], "work ran long");
    assert!(history[0]["by"].as_str().unwrap().starts_with("admin:"));
    let events = server.audit_of(&m.id);
    let extended: Vec<_> = events
        .iter()
        .filter(|e| e["action"] == "machine.extended")
        .collect();
    assert_eq!(extended.len(), 4);
    assert_eq!(extended[0]["detail"]["reason"], "work ran long");
    assert_eq!(
        events
            .iter()
            .filter(|e| e["action"] == "machine.extension_reverted")
            .count(),
        4
    );
}

#[test]
fn extending_requires_a_reason_a_later_expiry_and_at_most_twelve_months_from_now() {
    let server = Server::start();
    let m = server.register_machine(json!({"hours": 2}));
    let current = expires_at(&show(&server, &m.id));
    for (body, expected) in [
        (json!({"extend_by": {"hours": 1}}), "invalid_json"),
        (
            json!({"extend_by": {"hours": 1}, "reason": ""}),
            "invalid_request",
        ),
        (
            json!({"extend_by": {"hours": 1}, "reason": "x".repeat(501)}),
            "invalid_request",
        ),
        (json!({"reason": "neither"}), "invalid_request"),
        (
            json!({"expires_at": current.to_rfc3339(), "reason": "not later"}),
            "invalid_expiry",
        ),
        (
            json!({"expires_at": (current - TimeDelta::hours(1)).to_rfc3339(), "reason": "earlier"}),
            "invalid_expiry",
        ),
        (
            json!({"extend_by": {"months": 13}, "reason": "too far"}),
            "invalid_expiry",
        ),
    ] {
        let (status, resp) = extend(&server, &m.id, body.clone());
        assert_eq!((status, code(&resp)), (400, expected), "{body}: {resp}");
    }
    let (status, _) = extend(
        &server,
        &m.id,
        json!({"extend_by": {"hours": 1}, "reason": "x".repeat(500)}),
    );
    assert_eq!(status, 200);

    // The bound is twelve calendar months from now: one second past is refused, and a
    // target a little inside it is accepted. (The server's "now" is a moment later than the
    // test's, so the exact edge is approached from below.)
    let edge = Utc::now().checked_add_months(Months::new(12)).unwrap();
    let (status, body) = extend(
        &server,
        &m.id,
        json!({"expires_at": (edge + TimeDelta::seconds(1)).to_rfc3339(), "reason": "over"}),
    );
    assert_eq!((status, code(&body)), (400, "invalid_expiry"), "{body}");
    let (status, body) = extend(
        &server,
        &m.id,
        json!({"expires_at": edge.to_rfc3339(), "reason": "at the edge"}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(expires_at(&body), edge);
}

#[test]
fn reverting_into_the_past_expires_the_machine_at_once() {
    let server = Server::start();
    server.seed_secret("app", "key", "v");
    let m = server.register_machine(json!({"seconds": 2}));
    server.approve_and_grant(&m, "app", "key");
    let (status, _) = extend(
        &server,
        &m.id,
        json!({"extend_by": {"hours": 1}, "reason": "keep going"}),
    );
    assert_eq!(status, 200);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        server.signed(&m, "GET", TARGET).0,
        200,
        "extension in force"
    );

    let (status, body) = revert(&server, &m.id, 1);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "expired");
    let (status, body) = server.signed(&m, "GET", TARGET);
    assert_eq!((status, code(&body)), (401, "machine_expired"));
    assert!(eventually(Duration::from_secs(5), || show(&server, &m.id)
        ["stored_state"]
        == "expired"));
}

#[test]
fn expired_and_disabled_machines_cannot_be_extended_or_approved() {
    let server = Server::start();
    let m = server.register_machine(json!({"seconds": 1}));
    std::thread::sleep(Duration::from_millis(1500));
    let (status, body) = extend(
        &server,
        &m.id,
        json!({"extend_by": {"hours": 1}, "reason": "too late"}),
    );
    assert_eq!((status, code(&body)), (409, "wrong_state"), "{body}");
    let (status, body) = server.admin("POST", &format!("{}/approve", machine_path(&m.id)), None);
    assert_eq!((status, code(&body)), (409, "wrong_state"));

    let d = server.register_machine(json!({"hours": 1}));
    let (status, _) = server.admin(
        "POST",
        &format!("{}/disable", machine_path(&d.id)),
        Some(json!({"reason": "incident"})),
    );
    assert_eq!(status, 200);
    let (status, body) = extend(
        &server,
        &d.id,
        json!({"extend_by": {"hours": 1}, "reason": "no"}),
    );
    assert_eq!((status, code(&body)), (409, "wrong_state"));
    let shown = show(&server, &d.id);
    assert_eq!(shown["state"], "disabled");
    assert_eq!(shown["disabled"]["reason"], "incident");
    let (status, body) = server.admin(
        "POST",
        &format!("{}/disable", machine_path(&d.id)),
        Some(json!({"reason": ""})),
    );
    assert!(status == 400 || status == 409, "{body}");
}

#[test]
fn lifetimes_out_of_bounds_are_refused_with_the_bounds() {
    let server = Server::start_with(with_sweep("30s"));
    for lifetime in [
        json!({}),
        json!({"months": 12, "hours": 1}),
        json!({"days": 400}),
    ] {
        let (status, body) = server.admin(
            "POST",
            "/v1/default/machines/temporary",
            Some(json!({"name": "x", "lifetime": lifetime})),
        );
        assert_eq!(
            (status, code(&body)),
            (400, "invalid_lifetime"),
            "{lifetime}"
        );
        assert!(common::message(&body).contains("12 months"), "{body}");
    }
    let body = server.create_temporary("x", json!({"months": 12}));
    let created: DateTime<Utc> = body["machine"]["created_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        expires_at(&body["machine"]),
        created.checked_add_months(Months::new(12)).unwrap()
    );
    // The bootstrap token lives 24 hours here, not the machine's year.
    let token_expiry: DateTime<Utc> = body["bootstrap"]["expires_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(token_expiry, created + TimeDelta::hours(24));
}

#[test]
fn a_bootstrap_token_never_outlives_its_machine() {
    let server = Server::start();
    let body = server.create_temporary("short", json!({"seconds": 2}));
    assert_eq!(
        body["bootstrap"]["expires_at"],
        body["machine"]["expires_at"]
    );
    std::thread::sleep(Duration::from_millis(2500));
    let url = body["bootstrap"]["url"].as_str().unwrap();
    let (status, script) = common::respond(ureq::get(url).call());
    assert_eq!(status, 404);
    assert!(script.as_str().unwrap().contains("exit 1"));
}

#[test]
fn the_windows_script_generates_the_key_locally_and_registers_only_the_public_key() {
    let server = Server::start();
    let body = server.create_temporary("win", json!({"hours": 2}));
    let url = body["bootstrap"]["url"].as_str().unwrap();
    let (status, script) = common::respond(ureq::get(&format!("{url}?os=windows")).call());
    assert_eq!(status, 200);
    let script = script.as_str().unwrap();
    assert!(
        script.contains("openssl genpkey -algorithm ed25519"),
        "{script}"
    );
    assert!(script.contains("Invoke-RestMethod -Method Post"));
    assert!(script.contains("public_key = $pub"));
    assert!(
        !script.contains("machine.key -Uri"),
        "the private key is never sent"
    );
    let (status, bad) = common::respond(
        ureq::get(&format!(
            "{}/v1/default/temp-bootstrap/{}?os=windows",
            server.url,
            "B".repeat(43)
        ))
        .call(),
    );
    assert_eq!(status, 404);
    assert!(bad.as_str().unwrap().contains("exit 1"));
}

#[test]
fn an_extension_survives_a_restart_and_a_machine_that_expired_while_down_is_marked_at_start() {
    let mut server = Server::start_with(with_sweep("60s"));
    server.seed_secret("app", "key", "v");
    let extended = server.register_machine(json!({"seconds": 3}));
    server.approve_and_grant(&extended, "app", "key");
    let (status, _) = extend(
        &server,
        &extended.id,
        json!({"extend_by": {"hours": 1}, "reason": "before restart"}),
    );
    assert_eq!(status, 200);
    let lapsing = server.register_machine(json!({"seconds": 3}));
    server.approve_and_grant(&lapsing, "app", "key");

    server.kill();
    std::thread::sleep(Duration::from_secs(4));
    server.restart();

    // The extension is in force; the other machine is refused at once and the first sweep
    // after start (which runs immediately, despite the 60 s interval) marked it.
    let (status, body) = server.signed(&extended, "GET", TARGET);
    assert_eq!(status, 200, "{body}");
    let (status, body) = server.signed(&lapsing, "GET", TARGET);
    assert_eq!((status, code(&body)), (401, "machine_expired"));
    assert!(eventually(Duration::from_secs(3), || show(
        &server,
        &lapsing.id
    )["stored_state"]
        == "expired"));
    assert_eq!(
        show(&server, &extended.id)["extensions"][0]["reason"],
        "before restart"
    );
}

#[test]
fn the_cli_creates_extends_reverts_and_shows_history() {
    let server = Server::start();
    let cli = |args: &[&str]| {
        let out = server.cli(args);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = cli(&[
        "--json",
        "machine",
        "create-temporary",
        "cli-box",
        "--lifetime",
        "1mo2d8h",
    ]);
    assert!(ok, "{err}");
    let created: Value = serde_json::from_str(&out).unwrap();
    let id = created["machine"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        created["machine"]["lifetime"],
        json!({"months": 1, "days": 2, "hours": 8})
    );

    let (ok, _, err) = cli(&[
        "machine",
        "extend",
        &id,
        "--by",
        "3d",
        "--reason",
        "more time",
    ]);
    assert!(ok, "{err}");
    let (ok, _, err) = cli(&[
        "machine",
        "revert-extension",
        &id,
        "1",
        "--reason",
        "not needed",
    ]);
    assert!(ok, "{err}");
    let (ok, out, _) = cli(&["machine", "show", &id]);
    assert!(ok);
    for needle in ["more time", "not needed", "time left:", "extensions:"] {
        assert!(out.contains(needle), "{needle} missing in\n{out}");
    }
    let (ok, _, err) = cli(&["machine", "extend", &id, "--by", "3d"]);
    assert!(!ok, "extend without --reason must fail");
    assert!(err.contains("--reason"), "{err}");
    let (ok, _, err) = cli(&["machine", "create-temporary", "x", "--lifetime", "2h1d"]);
    assert!(!ok);
    assert!(err.contains("1mo2d8h"), "{err}");
    let (ok, _, err) = cli(&["machine", "disable", &id, "--reason", "incident"]);
    assert!(ok, "{err}");
    let (ok, out, _) = cli(&["machine", "list", "--state", "disabled"]);
    assert!(ok && out.contains(&id), "{out}");
}
