//! The pieces of the signed-read hot path, one by one.
//!
//! What: building the canonical request and hashing an empty and a 1 KiB body; Ed25519
//! `verify_strict`; ed25519-dalek batch verification by batch size (per signature, to set
//! against single verification); consuming a nonce in the sharded cache; looking up a
//! machine's published snapshot among 100 000; encoding and chaining one audit event.
//! Data: synthetic, generated at start.
//! Reproduce: `cargo bench --profile dev --bench hot_path`; the README reports the figures.

#![expect(
    clippy::unwrap_used,
    reason = "a bench with a broken setup should stop at once"
)]

use std::sync::Arc;

use chrono::Utc;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use tempvault::audit::{AuditEvent, NewEvent, Outcome, GENESIS_HASH};
use tempvault::domain::{MachineId, VaultName};
use tempvault::nonce::NonceCache;
use tempvault::protocol::{body_digest, canonical_request, Nonce};

fn bench(c: &mut Criterion) {
    let id = MachineId::random().to_string();
    let mut g = c.benchmark_group("hot_path");

    g.bench_function("canonical_request_empty_body", |b| {
        b.iter(|| {
            let d = body_digest(black_box(b""));
            canonical_request(
                "GET",
                "/v1/default/secrets/app/db",
                &id,
                "1712170800",
                "k9x2m4p7q8w3e5r6",
                &d,
            )
        })
    });
    let kib = vec![7u8; 1024];
    g.bench_function("body_digest_1kib", |b| {
        b.iter(|| body_digest(black_box(&kib)))
    });

    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let msg = canonical_request(
        "GET",
        "/v1/default/secrets/app/db",
        &id,
        "1712170800",
        "k9x2m4p7q8w3e5r6",
        &body_digest(b""),
    );
    let sig = key.sign(&msg);
    let vk = key.verifying_key();
    g.bench_function("verify_strict", |b| {
        b.iter(|| vk.verify_strict(black_box(&msg), &sig).is_ok())
    });

    let cache = NonceCache::new(60);
    let machine = MachineId::random();
    let nonces: Vec<Nonce> = (0..1_000_000)
        .map(|i| Nonce::parse(&format!("n{i:019}")).unwrap())
        .collect();
    let mut i = 0usize;
    let now = Utc::now().timestamp();
    g.bench_function("nonce_consume", |b| {
        b.iter(|| {
            let n = &nonces[i % nonces.len()];
            i += 1;
            black_box(cache.consume(machine, n, now, now))
        })
    });

    let map = dashmap::DashMap::new();
    let ids: Vec<MachineId> = (0..100_000).map(|_| MachineId::random()).collect();
    for id in &ids {
        map.insert(*id, Arc::new(arc_swap::ArcSwap::from_pointee(*id)));
    }
    let mut j = 0usize;
    g.bench_function("snapshot_lookup_of_100k", |b| {
        b.iter(|| {
            let id = &ids[j % ids.len()];
            j += 1;
            let handle = map.get(id).map(|h| h.value().clone());
            black_box(handle.map(|h| **h.load()))
        })
    });

    let event = NewEvent {
        time: Utc::now(),
        vault: VaultName::parse("default").unwrap(),
        machine: Some(machine),
        actor: format!("machine:{machine}"),
        action: "secret.read",
        secret: Some("app/db".into()),
        outcome: Outcome::Allowed,
        reason: None,
        source_ip: Some("203.0.113.7".into()),
        country: Some("DK".into()),
        request_id: "9c0e6f3b1a2d4e5f8a7b6c5d4e3f2a1b".into(),
        detail: None,
    };
    g.bench_function("audit_event_seal_and_encode", |b| {
        b.iter(|| {
            let e = AuditEvent::seal(black_box(event.clone()), 42, GENESIS_HASH);
            serde_json::to_vec(&e).map(|v| v.len())
        })
    });
    g.finish();

    let mut batch = c.benchmark_group("batch_verify_per_signature");
    for size in [1usize, 4, 16, 64] {
        let keys: Vec<SigningKey> = (0..size)
            .map(|_| SigningKey::generate(&mut rand::rngs::OsRng))
            .collect();
        let msgs: Vec<Vec<u8>> = (0..size)
            .map(|k| format!("message {k}").into_bytes())
            .collect();
        let sigs: Vec<Signature> = keys.iter().zip(&msgs).map(|(k, m)| k.sign(m)).collect();
        let vks: Vec<VerifyingKey> = keys.iter().map(|k| k.verifying_key()).collect();
        let refs: Vec<&[u8]> = msgs.iter().map(|m| m.as_slice()).collect();
        batch.throughput(Throughput::Elements(size as u64));
        batch.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(|| ed25519_dalek::verify_batch(black_box(&refs), &sigs, &vks).is_ok())
        });
    }
    batch.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
