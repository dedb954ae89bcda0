//! The in-process read path beside a bare signature check.
//!
//! What: the server's per-request work for a secret read, minus HTTP and audit: parse the
//! four headers, check the skew, verify the Ed25519 signature with `verify_strict`, consume
//! the nonce, look up the machine's snapshot, check membership and grant, read the secret's
//! head and sealed value from RocksDB and decrypt it. Beside it, `verify_strict` alone on
//! the same canonical request.
//! Data: one machine, one 32-byte secret in a RocksDB store in a temporary directory.
//! Reproduce: `cargo bench --bench read_path`; the README reports the ratio of the two means.

#![expect(
    clippy::unwrap_used,
    reason = "a bench with a broken setup should stop at once"
)]

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chrono::Utc;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use ed25519_dalek::{Signer, SigningKey};
use futures_util::FutureExt as _;
use tempvault::client::sign_with;
use tempvault::domain::{MachineId, ProjectName, SecretName, VaultName};
use tempvault::machines::{Grant, MachineRecord, MachineSnapshot, MachineState};
use tempvault::metrics::Metrics;
use tempvault::nonce::NonceCache;
use tempvault::protocol::{
    body_digest, canonical_request, check_skew, verify, AuthHeaders, SignatureVerifier,
};
use tempvault::storage::{Sealer, Store};
use tempvault::vaults::Vaults;

fn machine(vault: &VaultName, key: &SigningKey) -> MachineRecord {
    let now = Utc::now();
    MachineRecord {
        id: MachineId::random(),
        vault: vault.clone(),
        name: "bench".into(),
        description: None,
        temporary: true,
        state: MachineState::Active,
        created_at: now,
        created_by: "bench".into(),
        lifetime: None,
        original_expires_at: Some(now + chrono::TimeDelta::days(1)),
        extensions: vec![],
        public_key: Some(STANDARD.encode(key.verifying_key().to_bytes())),
        registered_at: Some(now),
        approved_at: Some(now),
        projects: [ProjectName::parse("app").unwrap()].into(),
        grants: [Grant {
            project: ProjectName::parse("app").unwrap(),
            secret: SecretName::parse("db").unwrap(),
        }]
        .into(),
        guardrails: Default::default(),
        disabled: None,
        expired_at: None,
    }
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    let (sealer, _) = Sealer::load_or_create(&dir.path().join("key")).unwrap();
    let vaults = Vaults::new(store, sealer);
    let vault = VaultName::parse("default").unwrap();
    vaults.create(vault.clone(), None).unwrap();
    let project = ProjectName::parse("app").unwrap();
    let secret = SecretName::parse("db").unwrap();
    vaults
        .create_project(&vault, project.clone(), None)
        .unwrap();
    vaults
        .put_secret(
            &vault,
            &project,
            &secret,
            &[7u8; 32],
            None,
            "bench".into(),
            1 << 16,
            None,
        )
        .unwrap();

    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let record = machine(&vault, &key);
    let id = record.id.to_string();
    let snapshot = Arc::new(MachineSnapshot::from_record(&record));
    let snapshots = dashmap::DashMap::new();
    snapshots.insert(record.id, snapshot);
    let nonces = NonceCache::new(60);
    let metrics = Metrics::new();
    let verifier = SignatureVerifier::new(
        1,
        metrics.verify_batch_size.clone(),
        metrics.verify_batch_fallbacks.clone(),
    );
    let target = "/v1/default/secrets/app/db";
    let ts = Utc::now().timestamp().to_string();

    // Pre-sign a pool of requests with distinct nonces so the nonce check always passes.
    let pool: Vec<_> = (0..50_000)
        .map(|i| {
            sign_with(
                &key,
                &id,
                "GET",
                target,
                b"",
                &ts,
                &format!("nonce-{i:016}"),
            )
        })
        .collect();
    let mut next = 0usize;

    let mut group = c.benchmark_group("read_path");
    group.bench_function("full_read_path", |b| {
        b.iter(|| {
            let h = &pool[next % pool.len()];
            next += 1;
            let headers = AuthHeaders::parse(|name| {
                let v: &str = match name {
                    "x-machine-id" => &h.machine_id,
                    "x-timestamp" => &h.timestamp,
                    "x-nonce" => &h.nonce,
                    _ => &h.signature,
                };
                std::iter::once(v.as_bytes())
            })
            .unwrap();
            let now = Utc::now().timestamp();
            check_skew(headers.timestamp, now, 60, 0).unwrap();
            let snap = snapshots.get(&headers.machine_id).unwrap().clone();
            // Alone, as a lone request is served: verified at once, no batch to wait for.
            let verified = verify(
                &verifier,
                snap.key.unwrap(),
                headers,
                "GET",
                target,
                &body_digest(b""),
            )
            .now_or_never()
            .flatten()
            .unwrap();
            // The pool wraps around after 50 000 iterations; a reused nonce is then refused,
            // which costs the same as accepting it.
            let _ = nonces.consume(
                verified.machine_id(),
                verified.nonce(),
                verified.timestamp(),
                now,
            );
            assert!(snap.is_member("app") && snap.is_granted("app", "db"));
            let head = vaults.head(&vault, "app", "db").unwrap().unwrap();
            let value = vaults
                .value(&vault, "app", "db", head.version)
                .unwrap()
                .unwrap();
            black_box(value);
        })
    });

    let message = canonical_request(
        "GET",
        target,
        &id,
        &ts,
        "nonce-0000000000000000",
        &body_digest(b""),
    );
    let signature = key.sign(&message);
    let vk = key.verifying_key();
    group.bench_function("verify_strict_only", |b| {
        b.iter(|| {
            vk.verify_strict(black_box(&message), black_box(&signature))
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
