//! Guardrail evaluation beside one `verify_strict`.
//!
//! What: evaluating compiled guardrails with all three kinds set (two time windows in
//! Europe/Copenhagen and America/New_York, a six-entry IPv4/IPv6 allowlist, a three-country
//! list looked up in a real `.mmdb`), the way the read path does for one request; and
//! Ed25519 `verify_strict` of one canonical request.
//! Data: the flat-layout country database that `.ci/fetch-geo` puts in `target/test-geo`.
//! Reproduce: `.ci/fetch-geo && cargo bench --bench guardrails`; the README reports the ratio.

#![expect(
    clippy::unwrap_used,
    reason = "a bench with a broken setup should stop at once"
)]

use std::net::IpAddr;

use chrono::Utc;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use ed25519_dalek::{Signer, SigningKey};
use tempvault::guardrails::{GeoDb, GuardrailSpec, Guardrails, Source};

fn bench(c: &mut Criterion) {
    let db = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-geo/flat.mmdb");
    assert!(db.exists(), "run .ci/fetch-geo first");
    let geo = GeoDb::open(&db);
    let spec: GuardrailSpec = serde_json::from_value(serde_json::json!({
        "time_windows": [
            {"timezone": "Europe/Copenhagen", "start": "00:00", "end": "24:00"},
            {"timezone": "America/New_York", "days": ["mon", "tue"], "start": "22:00", "end": "06:00"}
        ],
        "ip_allowlist": ["203.0.113.0/24", "198.51.100.7", "2001:db8::/32", "10.0.0.0/8", "192.0.2.0/24", "130.225.0.0/16"],
        "countries": ["SE", "NO", "DK"]
    }))
    .unwrap();
    let guardrails = Guardrails::compile(&spec).unwrap();
    let ip: IpAddr = "130.225.0.1".parse().unwrap();
    let now = Utc::now();
    assert_eq!(guardrails.evaluate(&Source::new(now, ip, &geo)), Ok(()));

    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let message = b"tempvault-request-v1\nGET\n/v1/default/secrets/app/db\n8f14e45f-ceea-4672-9b4a-1c2d3e4f5a6b\n1712170800\nk9x2m4p7q8w3e5r6\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    let signature = key.sign(message);
    let vk = key.verifying_key();

    let mut group = c.benchmark_group("guardrails");
    group.bench_function("evaluate_all_three_kinds", |b| {
        b.iter(|| {
            let source = Source::new(black_box(now), black_box(ip), &geo);
            black_box(guardrails.evaluate(&source))
        })
    });
    group.bench_function("verify_strict", |b| {
        b.iter(|| {
            vk.verify_strict(black_box(message), black_box(&signature))
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
