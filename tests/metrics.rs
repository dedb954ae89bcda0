//! `/metrics` after a small, known run: exact exposition lines for the counts it can
//! predict, and no unbounded label values.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails by panicking; helpers outside #[test] too"
)]

mod common;

use std::time::Duration;

use common::{nonce, now, Server};

#[test]
fn metrics_show_exactly_the_requests_that_were_made() {
    let server = Server::start();
    server.seed_secret("app", "key", "v");
    server.seed_secret("app", "other", "v");
    let m = server.ready_machine("app", "key");
    let target = "/v1/default/secrets/app/key";

    for _ in 0..3 {
        assert_eq!(server.signed(&m, "GET", target).0, 200);
    }
    for _ in 0..2 {
        assert_eq!(
            server.signed(&m, "GET", "/v1/default/secrets/app/other").0,
            403
        );
    }
    let h = m.sign("GET", target, b"", &now().to_string(), &nonce());
    assert_eq!(server.send_signed("GET", target, &h, None).0, 200);
    assert_eq!(server.send_signed("GET", target, &h, None).0, 401);
    let forger = m.forger();
    assert_eq!(server.signed(&forger, "GET", target).0, 401);

    let text = server.metrics();
    for line in [
        r#"tempvault_reads_total{outcome="allowed",reason="none"} 4"#,
        r#"tempvault_reads_total{outcome="denied",reason="secret_not_granted"} 2"#,
        r#"tempvault_reads_total{outcome="denied",reason="nonce_replayed"} 1"#,
        r#"tempvault_reads_total{outcome="failed",reason="authentication_failed"} 1"#,
        r#"tempvault_signature_verifications_total{result="valid"} 7"#,
        r#"tempvault_signature_verifications_total{result="invalid"} 1"#,
        r#"tempvault_read_duration_seconds_count 8"#,
        r#"tempvault_machines{state="active"} 1"#,
        r#"tempvault_http_requests_total{route="/v1/{vault}/secrets/{project}/{name}",status="200"} 4"#,
        r#"tempvault_http_requests_total{route="/v1/{vault}/secrets/{project}/{name}",status="403"} 2"#,
        r#"tempvault_http_requests_total{route="/v1/{vault}/secrets/{project}/{name}",status="401"} 2"#,
        r#"tempvault_actor_restarts_total 0"#,
        r#"tempvault_audit_write_failures_total 0"#,
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing line {line}\n{text}"
        );
    }
    // Labels never carry a machine id, nonce, vault name or concrete path.
    assert!(!text.contains(&m.id));
    assert!(!text.contains(&h.nonce));
    assert!(!text.contains("/v1/default/"));

    // The shipped dashboard and alert rules only query metrics the server exposes.
    let exposed: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    for file in [
        "config/grafana/tempvault-dashboard.json",
        "config/prometheus/alerts.yml",
    ] {
        let config = std::fs::read_to_string(file).unwrap();
        let queried = metric_names(&config);
        assert!(queried.len() >= 5, "{file} names too few metrics");
        for name in queried {
            let known = exposed.iter().any(|e| {
                name == *e
                    || ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|s| name.strip_suffix(s) == Some(e))
            });
            assert!(
                known,
                "{file} queries {name}, which /metrics does not expose"
            );
        }
    }
}

/// Every `tempvault_…` identifier in a configuration file.
fn metric_names(config: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = config;
    while let Some(start) = rest.find("tempvault_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        names.push(&tail[..end]);
        rest = &tail[end..];
    }
    names
}

#[test]
fn rocksdb_memory_is_exported_by_part() {
    let server = Server::start();
    server.seed_secret("app", "key", "v");
    let value = |part: &str| {
        let line = format!("tempvault_store_memory_bytes{{part=\"{part}\"}} ");
        server
            .metrics()
            .lines()
            .find_map(|l| l.strip_prefix(&line).map(str::to_owned))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    // Updated once a second; the writes above are in a memtable.
    let seen = common::eventually(Duration::from_secs(5), || {
        value("memtables").is_some_and(|b| b > 0)
    });
    assert!(seen, "{}", server.metrics());
    assert!(value("block_cache").is_some());
    assert!(value("table_readers").is_some());
}
