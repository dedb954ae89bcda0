//! The audit trail: durable before the response, hash-chained, paged stably, and
//! tamper-evident under `tempvault audit verify`.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails by panicking; helpers outside #[test] too"
)]

mod common;

use std::collections::HashSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{code, Server, BIN};
use serde_json::{json, Value};
use tempvault::audit::AuditEvent;
use tempvault::storage::{Cf, Store};

const TARGET: &str = "/v1/default/secrets/app/key";

fn verify(data: &std::path::Path) -> (bool, String) {
    let out = Command::new(BIN)
        .args(["audit", "verify", "--data-dir"])
        .arg(data)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn vault_events(server: &Server, query: &str) -> Vec<Value> {
    let (status, page) = server.admin("GET", &format!("/v1/default/audit?limit=1000{query}"), None);
    assert_eq!(status, 200, "{page}");
    page["events"].as_array().unwrap().clone()
}

#[test]
fn events_carry_every_field_and_no_secret_value() {
    let server = Server::start();
    server.seed_secret("app", "key", "very-secret-value");
    let m = server.ready_machine("app", "key");
    assert_eq!(server.signed(&m, "GET", TARGET).0, 200);
    let events = server.audit_of(&m.id);
    let read = events
        .iter()
        .find(|e| e["action"] == "secret.read")
        .unwrap();
    for field in [
        "seq",
        "time",
        "vault",
        "machine",
        "actor",
        "action",
        "secret",
        "outcome",
        "source_ip",
        "request_id",
        "prev_hash",
        "hash",
    ] {
        assert!(!read[field].is_null(), "{field} missing in {read}");
    }
    assert_eq!(read["actor"], format!("machine:{}", m.id));
    assert_eq!(read["secret"], "app/key");
    assert_eq!(read["outcome"], "allowed");
    let all = vault_events(&server, "");
    let text = serde_json::to_string(&all).unwrap();
    assert!(!text.contains("very-secret-value"));
    assert!(!text.contains(&server.token), "no admin token in the log");
    // Admin changes name the token id, not the token.
    let created = all
        .iter()
        .find(|e| e["action"] == "machine.created")
        .unwrap();
    let actor = created["actor"].as_str().unwrap();
    assert!(
        actor.starts_with("admin:") && server.token.contains(&actor[6..]),
        "{actor}"
    );
}

#[test]
fn pages_have_no_gaps_or_repeats_while_events_are_appended() {
    let server = Server::start();
    server.seed_secret("app", "key", "v");
    let m = server.ready_machine("app", "key");
    for _ in 0..25 {
        assert_eq!(server.signed(&m, "GET", TARGET).0, 200);
    }
    let mut seen = Vec::new();
    let mut after = 0u64;
    let mut appended = 0;
    loop {
        let (status, page) = server.admin(
            "GET",
            &format!("/v1/default/machines/{}/audit?after={after}&limit=7", m.id),
            None,
        );
        assert_eq!(status, 200);
        for e in page["events"].as_array().unwrap() {
            seen.push(e["seq"].as_u64().unwrap());
        }
        // Append between pages.
        if appended < 10 {
            assert_eq!(server.signed(&m, "GET", TARGET).0, 200);
            appended += 1;
        }
        match page["next_after"].as_u64() {
            Some(n) => after = n,
            None => break,
        }
    }
    let unique: HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no repeats");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "oldest first");
    let everything: Vec<u64> = server
        .audit_of(&m.id)
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seen, everything[..seen.len()], "no gaps");
    assert!(seen.len() >= 25 + 5);
}

#[test]
fn queries_filter_by_action_outcome_and_time_and_export_json_lines() {
    let server = Server::start();
    server.seed_secret("app", "key", "v");
    server.seed_secret("app", "other", "v");
    let m = server.ready_machine("app", "key");
    let start = chrono::Utc::now();
    assert_eq!(server.signed(&m, "GET", TARGET).0, 200);
    assert_eq!(
        server.signed(&m, "GET", "/v1/default/secrets/app/other").0,
        403
    );

    let denied = vault_events(&server, "&outcome=denied");
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0]["reason"], "secret_not_granted");
    let reads = vault_events(&server, "&action=secret.read");
    assert_eq!(reads.len(), 2);
    let since = start
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        .replace('+', "%2B");
    let recent = vault_events(&server, &format!("&since={since}"));
    assert_eq!(recent.len(), 2, "{recent:?}");
    let until = vault_events(&server, &format!("&until={since}"));
    assert!(until.iter().all(|e| e["action"] != "secret.read"));

    let resp = ureq::get(&format!(
        "{}/v1/default/audit?format=jsonl&limit=3",
        server.url
    ))
    .set("Authorization", &format!("Bearer {}", server.token))
    .call()
    .unwrap();
    assert_eq!(resp.header("content-type"), Some("application/jsonl"));
    let next = resp.header("x-next-after").map(str::to_owned);
    let body = resp.into_string().unwrap();
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(next, Some(lines[2]["seq"].to_string()));
    let (status, body) = server.admin("GET", "/v1/default/audit?format=xml", None);
    assert_eq!((status, code(&body)), (400, "invalid_request"));
}

#[test]
fn the_access_report_lists_each_secret_with_first_last_count_and_denials() {
    let server = Server::start();
    server.seed_secret("app", "key", "v");
    server.seed_secret("app", "other", "v");
    let m = server.ready_machine("app", "key");
    for _ in 0..3 {
        assert_eq!(server.signed(&m, "GET", TARGET).0, 200);
    }
    assert_eq!(
        server.signed(&m, "GET", "/v1/default/secrets/app/other").0,
        403
    );
    let (status, report) = server.admin(
        "GET",
        &format!("/v1/default/machines/{}/access-report", m.id),
        None,
    );
    assert_eq!(status, 200, "{report}");
    let key = &report["secrets"]["app/key"];
    assert_eq!(key["count"], 3);
    assert_eq!(key["denials"], 0);
    assert!(key["first"].as_str().unwrap() <= key["last"].as_str().unwrap());
    assert_eq!(report["secrets"]["app/other"]["count"], 0);
    assert_eq!(report["secrets"]["app/other"]["denials"], 1);
}

#[test]
fn failed_authentications_are_rate_limited_per_machine_and_counted() {
    let server = Server::start();
    server.seed_secret("app", "key", "v");
    let m = server.ready_machine("app", "key");
    let forger = m.forger();
    for _ in 0..50 {
        assert_eq!(server.signed(&forger, "GET", TARGET).0, 401);
    }
    assert_eq!(
        server.signed(&m, "GET", TARGET).0,
        200,
        "a durable read flushes the queue"
    );
    let failed = server
        .audit_of(&m.id)
        .iter()
        .filter(|e| e["outcome"] == "failed")
        .count();
    assert_eq!(failed, 20, "the limit is 20 a minute");
    let metrics = server.metrics();
    assert!(
        metrics.contains("tempvault_audit_rate_limited_total 30"),
        "{metrics}"
    );
}

#[test]
fn dropped_failures_are_summarised_in_one_event_when_the_window_ends() {
    let server = Server::start_with(common::Options {
        extra: "[audit]\nfailed_auth_window = \"2s\"\n".into(),
        ..Default::default()
    });
    server.seed_secret("app", "key", "v");
    let m = server.ready_machine("app", "key");
    let forger = m.forger();
    for _ in 0..25 {
        assert_eq!(server.signed(&forger, "GET", TARGET).0, 401);
    }
    let summarised = common::eventually(Duration::from_secs(6), || {
        server
            .audit_of(&m.id)
            .iter()
            .any(|e| e["action"] == "auth.failures_dropped")
    });
    assert!(summarised, "no summary event");
    let events = server.audit_of(&m.id);
    let summary = events
        .iter()
        .find(|e| e["action"] == "auth.failures_dropped")
        .unwrap();
    // 25 failures inside one window (if the loop spilled into a second window, the first
    // summary covers fewer): at least one dropped, never more than 5.
    let dropped = summary["detail"]["dropped"].as_u64().unwrap();
    assert!((1..=5).contains(&dropped), "{summary}");
    assert_eq!(summary["actor"], "system");
}

#[test]
fn a_graceful_stop_writes_open_failure_summaries_and_queued_events() {
    // Async audit, and a window far longer than the test: without the shutdown drain the
    // summary would never be written, and async reads could still be queued.
    let mut server = Server::start_with(common::Options {
        extra: "[audit]\ndurability = \"async\"\nfailed_auth_window = \"1h\"\n".into(),
        ..Default::default()
    });
    server.seed_secret("app", "key", "v");
    let m = server.ready_machine("app", "key");
    let forger = m.forger();
    for _ in 0..23 {
        assert_eq!(server.signed(&forger, "GET", TARGET).0, 401);
    }
    for _ in 0..40 {
        assert_eq!(server.signed(&m, "GET", TARGET).0, 200);
    }
    let status = server.restart_gracefully();
    assert!(status.success(), "{status:?}");

    let events = server.audit_of(&m.id);
    let summary = "auth.failures_dropped";
    let count = |outcome: &str| {
        events
            .iter()
            .filter(|e| e["outcome"] == outcome && e["action"] != summary)
            .count()
    };
    assert_eq!(count("allowed"), 40, "{events:?}");
    assert_eq!(count("failed"), 20, "{events:?}");
    let summary = events
        .iter()
        .find(|e| e["action"] == summary)
        .expect("the open window's summary");
    assert_eq!(summary["detail"]["dropped"], 3, "{summary}");
    server.kill();
    let (ok, out) = verify(&server.data);
    assert!(ok, "{out}");
}

#[test]
fn audit_verify_confirms_an_intact_chain_and_names_each_kind_of_tampering() {
    let mut server = Server::start();
    server.seed_secret("app", "key", "v");
    let m = server.ready_machine("app", "key");
    for _ in 0..5 {
        assert_eq!(server.signed(&m, "GET", TARGET).0, 200);
    }
    server.kill();
    let data = server.data.clone();
    let (ok, out) = verify(&data);
    assert!(ok, "{out}");
    assert!(out.starts_with("audit chain intact: "), "{out}");

    let db = data.join("db");
    let edit = |f: &dyn Fn(&Store)| {
        let store = Store::open(&db).unwrap();
        f(&store);
    };
    let get = |store: &Store, seq: u64| -> AuditEvent {
        store.get(Cf::Audit, &seq.to_be_bytes()).unwrap().unwrap()
    };
    let put = |store: &Store, seq: u64, e: &AuditEvent| {
        let mut b = store.batch();
        b.put(Cf::Audit, &seq.to_be_bytes(), e).unwrap();
        b.commit(true).unwrap();
    };

    // Edited: an allowed read turned into a denial.
    let backup: Vec<AuditEvent> = {
        let store = Store::open(&db).unwrap();
        (1..=8).map(|s| get(&store, s)).collect()
    };
    edit(&|s| {
        let mut e = get(s, 4);
        e.outcome = tempvault::audit::Outcome::Denied;
        put(s, 4, &e);
    });
    let (ok, out) = verify(&data);
    assert!(!ok);
    assert!(out.contains("event 4 was edited"), "{out}");
    edit(&|s| put(s, 4, &backup[3]));
    assert!(verify(&data).0, "restored");

    // Missing: one event deleted.
    edit(&|s| {
        let mut b = s.batch();
        b.delete(Cf::Audit, &5u64.to_be_bytes()).unwrap();
        b.commit(true).unwrap();
    });
    let (ok, out) = verify(&data);
    assert!(!ok);
    assert!(out.contains("events 5 to 5 are missing"), "{out}");
    edit(&|s| put(s, 5, &backup[4]));

    // Reordered: two events swapped.
    edit(&|s| {
        put(s, 6, &backup[6]);
        put(s, 7, &backup[5]);
    });
    let (ok, out) = verify(&data);
    assert!(!ok);
    assert!(out.contains("event 6 is out of order"), "{out}");
    edit(&|s| {
        put(s, 6, &backup[5]);
        put(s, 7, &backup[6]);
    });
    let (ok, out) = verify(&data);
    assert!(ok, "{out}");
}

#[test]
fn after_kill_9_under_load_every_served_read_is_audited_and_the_chain_verifies() {
    let mut server = Server::start();
    server.seed_secret("app", "key", "v");
    let machines: Vec<_> = (0..4).map(|_| server.ready_machine("app", "key")).collect();
    let mut served_total = 0;

    for round in 0..3 {
        let url = server.url.clone();
        let served: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = machines
            .iter()
            .map(|m| {
                let (url, served, stop) = (url.clone(), served.clone(), stop.clone());
                let m = common::Machine {
                    id: m.id.clone(),
                    key: m.key.clone(),
                    vault: "default".into(),
                };
                std::thread::spawn(move || {
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) && n < 2000 {
                        n += 1;
                        let nonce = common::nonce();
                        let h = m.sign("GET", TARGET, b"", &common::now().to_string(), &nonce);
                        let r = ureq::get(&format!("{url}{TARGET}"))
                            .set("X-Machine-Id", &h.machine_id)
                            .set("X-Timestamp", &h.timestamp)
                            .set("X-Nonce", &h.nonce)
                            .set("X-Signature", &h.signature)
                            .timeout(Duration::from_secs(2))
                            .call();
                        match r {
                            Ok(resp) if resp.status() == 200 => {
                                served.lock().unwrap().push((m.id.clone(), nonce))
                            }
                            Ok(_) | Err(ureq::Error::Status(..)) => {}
                            Err(_) => break, // the server is gone
                        }
                    }
                })
            })
            .collect();
        // An admin change acknowledged just before the crash must survive it.
        let (status, _) = server.admin(
            "POST",
            "/v1/default/projects",
            Some(json!({"name": format!("round-{round}")})),
        );
        assert_eq!(status, 201);
        std::thread::sleep(Duration::from_millis(700));
        server.kill();
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.join().unwrap();
        }
        let served = served.lock().unwrap().clone();
        assert!(!served.is_empty(), "round {round}: no read was served");
        served_total += served.len();

        let (ok, out) = verify(&server.data);
        assert!(ok, "round {round}: {out}");
        server.restart();
        let (_, projects) = server.admin("GET", "/v1/default/projects", None);
        assert!(
            projects.to_string().contains(&format!("round-{round}")),
            "acknowledged change lost"
        );
        let allowed: usize = machines
            .iter()
            .map(|m| {
                server
                    .audit_of(&m.id)
                    .iter()
                    .filter(|e| e["action"] == "secret.read" && e["outcome"] == "allowed")
                    .count()
            })
            .sum();
        assert!(
            allowed >= served_total,
            "round {round}: {allowed} audited < {served_total} served"
        );
    }
}
