//! Guardrails through the real server: IP allowlists (IPv4, IPv6, mapped, proxies),
//! countries from real `.mmdb` files, time windows, the three stacked layers, and
//! fail-closed behaviour for rules that stop compiling.
//!
//! The country tests read databases that `.ci/fetch-geo` downloads into `target/test-geo`.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails by panicking; helpers outside #[test] too"
)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use chrono::{Datelike, Utc};
use common::{code, nonce, now, Machine, Options, Server};
use serde_json::{json, Value};

const TARGET: &str = "/v1/default/secrets/app/key";

fn geo_file(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-geo")
        .join(name);
    assert!(
        path.exists(),
        "{} missing: run .ci/fetch-geo first",
        path.display()
    );
    path
}

fn proxied(extra: &str) -> Options {
    Options {
        extra: format!(
            "trusted_proxies = [\"127.0.0.1/32\", \"::1/128\", \"10.0.0.0/8\"]\n{extra}"
        ),
        ..Default::default()
    }
}

fn set_guardrails(server: &Server, m: &Machine, g: Value) {
    let (status, body) = server.admin(
        "PUT",
        &format!("/v1/default/machines/{}/guardrails", m.id),
        Some(g),
    );
    assert_eq!(status, 200, "{body}");
}

/// A signed read whose request passes through a proxy that adds `X-Forwarded-For`.
fn read_from(server: &Server, m: &Machine, forwarded_for: Option<&str>) -> (u16, Value) {
    let h = m.sign("GET", TARGET, b"", &now().to_string(), &nonce());
    let mut headers = vec![
        ("X-Machine-Id", h.machine_id.as_str()),
        ("X-Timestamp", h.timestamp.as_str()),
        ("X-Nonce", h.nonce.as_str()),
        ("X-Signature", h.signature.as_str()),
    ];
    if let Some(xff) = forwarded_for {
        headers.push(("X-Forwarded-For", xff));
    }
    server.raw("GET", TARGET, &headers, None)
}

fn setup(opts: Options) -> (Server, Machine) {
    let server = Server::start_with(opts);
    server.seed_secret("app", "key", "v");
    let m = server.ready_machine("app", "key");
    (server, m)
}

fn country_rules_follow_the_database(db: &str) {
    let (server, m) = setup(proxied(&format!(
        "[geo]\ndatabase = \"{}\"\n",
        geo_file(db).display()
    )));
    set_guardrails(&server, &m, json!({"countries": ["dk", "SE"]}));
    for (ip, expected) in [
        ("130.225.0.1", 200),
        ("192.36.148.17", 200),
        ("2001:6b0::1", 200),
        ("8.8.8.8", 403),
        ("2001:4860:4860::8888", 403),
    ] {
        let (status, body) = read_from(&server, &m, Some(ip));
        assert_eq!(status, expected, "{db} {ip}: {body}");
        if status == 403 {
            assert_eq!(code(&body), "country_not_allowed");
        }
    }
    for unresolvable in [None, Some("10.1.2.3"), Some("192.168.1.1"), Some("::1")] {
        let (status, body) = read_from(&server, &m, unresolvable);
        assert_eq!(
            (status, code(&body)),
            (403, "location_unresolved"),
            "{unresolvable:?}"
        );
    }
    let events = server.audit_of(&m.id);
    let denied = events
        .iter()
        .find(|e| e["reason"] == "country_not_allowed")
        .expect("denial audited");
    assert_eq!(denied["source_ip"], "8.8.8.8");
    assert_eq!(denied["country"], "US");
    assert!(events
        .iter()
        .any(|e| e["outcome"] == "allowed" && e["country"] == "DK"));
    let metrics = server.metrics();
    assert!(
        metrics
            .contains("tempvault_reads_total{outcome=\"denied\",reason=\"country_not_allowed\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("tempvault_reads_total{outcome=\"denied\",reason=\"location_unresolved\"} 4"),
        "{metrics}"
    );
}

#[test]
fn countries_are_read_from_a_flat_layout_database() {
    country_rules_follow_the_database("flat.mmdb");
}

#[test]
fn countries_are_read_from_a_geolite2_layout_database() {
    country_rules_follow_the_database("geolite2.mmdb");
}

#[test]
fn without_a_geo_database_a_country_rule_denies() {
    let (server, m) = setup(proxied(""));
    set_guardrails(&server, &m, json!({"countries": ["US"]}));
    let (status, body) = read_from(&server, &m, Some("8.8.8.8"));
    assert_eq!((status, code(&body)), (403, "location_unresolved"));
}

#[test]
fn a_replaced_database_takes_effect_and_garbage_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.mmdb");
    std::fs::copy(geo_file("flat.mmdb"), &live).unwrap();
    let (server, m) = setup(proxied(&format!(
        "[geo]\ndatabase = \"{}\"\n",
        live.display()
    )));
    set_guardrails(&server, &m, json!({"countries": ["US"]}));
    assert_eq!(read_from(&server, &m, Some("8.8.8.8")).0, 200);

    // Garbage in its place: country rules deny, nothing crashes.
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(&live, b"this is not a maxmind database").unwrap();
    let ok = common::eventually(Duration::from_secs(4), || {
        code(&read_from(&server, &m, Some("8.8.8.8")).1) == "location_unresolved"
    });
    assert!(ok, "garbage database was not refused");

    // A good file again, in the other layout: served again without a restart.
    std::fs::copy(geo_file("geolite2.mmdb"), dir.path().join("next.mmdb")).unwrap();
    std::fs::rename(dir.path().join("next.mmdb"), &live).unwrap();
    let ok = common::eventually(Duration::from_secs(4), || {
        read_from(&server, &m, Some("8.8.8.8")).0 == 200
    });
    assert!(ok, "replacement database not picked up");
}

#[test]
fn ip_allowlists_match_cidrs_and_single_addresses() {
    let (server, m) = setup(Options::default());
    set_guardrails(
        &server,
        &m,
        json!({"ip_allowlist": ["203.0.113.0/24", "2001:db8::/32"]}),
    );
    let (status, body) = read_from(&server, &m, None);
    assert_eq!((status, code(&body)), (403, "ip_not_allowed"));
    set_guardrails(
        &server,
        &m,
        json!({"ip_allowlist": ["203.0.113.0/24", "127.0.0.1"]}),
    );
    assert_eq!(read_from(&server, &m, None).0, 200);
}

#[test]
fn an_untrusted_peer_cannot_spoof_its_address_with_x_forwarded_for() {
    let (server, m) = setup(Options::default());
    set_guardrails(&server, &m, json!({"ip_allowlist": ["203.0.113.0/24"]}));
    let (status, body) = read_from(&server, &m, Some("203.0.113.5"));
    assert_eq!((status, code(&body)), (403, "ip_not_allowed"));
    let events = server.audit_of(&m.id);
    assert_eq!(events.last().unwrap()["source_ip"], "127.0.0.1");
}

#[test]
fn a_chain_of_trusted_proxies_yields_the_right_most_untrusted_address() {
    let (server, m) = setup(proxied(""));
    set_guardrails(&server, &m, json!({"ip_allowlist": ["203.0.113.0/24"]}));
    // client 203.0.113.5 -> proxy 10.1.1.1 -> proxy 127.0.0.1 (the TCP peer)
    assert_eq!(
        read_from(&server, &m, Some("198.51.100.9, 203.0.113.5, 10.1.1.1")).0,
        200
    );
    // The left-most entry is whatever the client claimed; only the right-most untrusted one counts.
    let (status, _) = read_from(&server, &m, Some("203.0.113.5, 198.51.100.9, 10.1.1.1"));
    assert_eq!(status, 403);
}

#[test]
fn ipv6_peers_are_matched_as_ipv6() {
    let (server, m) = setup(Options {
        listen: Some("[::1]:0".into()),
        ..Options::default()
    });
    assert!(server.url.starts_with("http://[::1]:"), "{}", server.url);
    set_guardrails(&server, &m, json!({"ip_allowlist": ["127.0.0.1"]}));
    assert_eq!(read_from(&server, &m, None).0, 403);
    set_guardrails(&server, &m, json!({"ip_allowlist": ["::1/128"]}));
    assert_eq!(read_from(&server, &m, None).0, 200);
}

#[test]
fn ipv4_mapped_peers_are_matched_as_ipv4() {
    let (mut v4, m) = setup(Options {
        listen: Some("[::]:0".into()),
        ..Options::default()
    });
    // Listening on the IPv6 wildcard, an IPv4 client shows up as ::ffff:127.0.0.1.
    let port = v4.url.rsplit(':').next().unwrap().to_owned();
    v4.url = format!("http://127.0.0.1:{port}");
    set_guardrails(&v4, &m, json!({"ip_allowlist": ["127.0.0.1/32"]}));
    let (status, body) = read_from(&v4, &m, None);
    assert_eq!(status, 200, "{body}");
    let last = v4.audit_of(&m.id).last().cloned().unwrap();
    assert_eq!(
        last["source_ip"], "127.0.0.1",
        "mapped address folded to IPv4"
    );
}

#[test]
fn time_windows_allow_inside_and_deny_outside() {
    let (server, m) = setup(Options::default());
    let day = |offset: i64| {
        let d = (Utc::now() + chrono::TimeDelta::days(offset)).weekday();
        d.to_string().to_lowercase()[..3].to_owned()
    };
    let elsewhere = json!({"time_windows": [{"timezone": "UTC", "days": [day(2)], "start": "00:00", "end": "24:00"}]});
    set_guardrails(&server, &m, elsewhere);
    let (status, body) = read_from(&server, &m, None);
    assert_eq!((status, code(&body)), (403, "outside_time_window"));
    let both = json!({"time_windows": [
        {"timezone": "UTC", "days": [day(2)], "start": "00:00", "end": "24:00"},
        {"timezone": "Pacific/Kiritimati", "start": "00:00", "end": "24:00"}
    ]});
    set_guardrails(&server, &m, both);
    assert_eq!(read_from(&server, &m, None).0, 200, "any window may allow");
}

#[test]
fn each_layer_alone_denies_and_all_passing_allows() {
    let (server, m) = setup(Options::default());
    let vault_list = |cidrs: Value| {
        let (s, b) = server.admin(
            "PUT",
            "/v1/default/settings/ip-allowlist",
            Some(json!({"cidrs": cidrs})),
        );
        assert_eq!(s, 200, "{b}");
    };
    let policy = |p: Value| {
        let (s, b) = server.admin(
            "PUT",
            "/v1/default/projects/app/secrets/key",
            Some(json!({"value": "v", "policy": p})),
        );
        assert_eq!(s, 200, "{b}");
    };
    let deny = json!(["203.0.113.0/24"]);
    let allow = json!(["127.0.0.0/8"]);

    vault_list(deny.clone());
    assert_eq!(
        code(&read_from(&server, &m, None).1),
        "ip_not_allowed",
        "vault layer"
    );
    vault_list(allow.clone());

    set_guardrails(&server, &m, json!({"ip_allowlist": deny}));
    assert_eq!(
        code(&read_from(&server, &m, None).1),
        "ip_not_allowed",
        "machine layer"
    );
    set_guardrails(&server, &m, json!({"ip_allowlist": allow}));

    policy(
        json!({"time_windows": [{"timezone": "UTC", "days": [], "start": "00:00", "end": "00:01"}], "ip_allowlist": ["127.0.0.1"]}),
    );
    let outside = Utc::now().format("%H:%M").to_string() != "00:00";
    if outside {
        assert_eq!(
            code(&read_from(&server, &m, None).1),
            "outside_time_window",
            "secret layer"
        );
    }
    policy(json!({"ip_allowlist": ["198.51.100.0/24"]}));
    assert_eq!(
        code(&read_from(&server, &m, None).1),
        "ip_not_allowed",
        "secret layer"
    );

    policy(json!({"ip_allowlist": ["127.0.0.1"]}));
    let (status, body) = read_from(&server, &m, None);
    assert_eq!(status, 200, "all layers pass: {body}");
    // An empty list removes the vault rule.
    vault_list(json!([]));
    assert_eq!(read_from(&server, &m, None).0, 200);
}

#[test]
fn bad_rules_are_refused_up_front_naming_the_bad_part() {
    let (server, m) = setup(Options::default());
    let path = format!("/v1/default/machines/{}/guardrails", m.id);
    for (rules, needle) in [
        (
            json!({"ip_allowlist": ["10.0.0.0/8", "10.0.0.300"]}),
            "ip_allowlist[1]",
        ),
        (json!({"countries": ["DK", "XX"]}), "countries[1]"),
        (json!({"countries": ["DNK"]}), "countries[0]"),
        (
            json!({"time_windows": [{"timezone": "Europe/Copenhagn", "start": "08:00", "end": "18:00"}]}),
            "timezone",
        ),
        (
            json!({"time_windows": [{"timezone": "UTC", "start": "09:00", "end": "09:00"}]}),
            "equal",
        ),
        (
            json!({"time_windows": [{"timezone": "UTC", "days": ["funday"], "start": "09:00", "end": "10:00"}]}),
            "funday",
        ),
        (
            json!({"time_windows": [{"timezone": "UTC", "start": "9", "end": "10:00"}]}),
            "start",
        ),
    ] {
        let (status, body) = server.admin("PUT", &path, Some(rules.clone()));
        assert_eq!(
            (status, code(&body)),
            (400, "invalid_guardrails"),
            "{rules}"
        );
        assert!(
            common::message(&body).contains(needle),
            "{needle} not in {body}"
        );
    }
    let (status, body) = server.admin(
        "PUT",
        "/v1/default/settings/ip-allowlist",
        Some(json!({"cidrs": ["1.2.3.4/40"]})),
    );
    assert_eq!((status, code(&body)), (400, "invalid_guardrails"));
    let (status, body) = server.admin("PUT", &path, Some(json!({"ip_allowlist": "10.0.0.0/8"})));
    assert_eq!((status, code(&body)), (400, "invalid_json"), "{body}");
}

#[test]
fn a_stored_rule_that_no_longer_compiles_denies_every_read() {
    use tempvault::domain::{MachineId, VaultName};
    use tempvault::machines::{machine_key, MachineRecord};
    use tempvault::storage::{Cf, Store};

    let (mut server, m) = setup(Options::default());
    set_guardrails(
        &server,
        &m,
        json!({"time_windows": [{"timezone": "Europe/Copenhagen", "start": "00:00", "end": "24:00"}]}),
    );
    assert_eq!(read_from(&server, &m, None).0, 200);
    server.kill();
    {
        // Rewrite the rule straight into the store, as a newer tz database dropping a zone
        // would leave it.
        let store = Store::open(&server.data.join("db")).unwrap();
        let vault = VaultName::parse("default").unwrap();
        let key = machine_key(&vault, MachineId::parse(&m.id).unwrap());
        let mut record: MachineRecord = store.get(Cf::Machines, &key).unwrap().unwrap();
        record.guardrails.time_windows[0].timezone = "Europe/Atlantis".into();
        let mut batch = store.batch();
        batch.put(Cf::Machines, &key, &record).unwrap();
        batch.commit(true).unwrap();
    }
    server.restart();
    let (status, body) = read_from(&server, &m, None);
    assert_eq!((status, code(&body)), (403, "guardrail_invalid"));
    let events = server.audit_of(&m.id);
    assert_eq!(events.last().unwrap()["reason"], "guardrail_invalid");
}
