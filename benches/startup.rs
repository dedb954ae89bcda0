//! Start-up time and resident memory of the server with many registered machines.
//!
//! What: writes N active temporary machines (each a member of one project with one grant
//! and a registered key) straight into a fresh store, starts the real `tempvault serve` on
//! it, and measures the time from exec to "listening", the resident set size once started,
//! and again after one signed read; then the same for an empty store, so the figures can be
//! read as a difference. Bounded: one start per size, each stopped at once.
//! Data: synthetic; N from `TEMPVAULT_BENCH_MACHINES` (default 1 000 000).
//! Reproduce: `cargo bench --profile dev --bench startup`; the README reports the figures.

#![expect(
    clippy::unwrap_used,
    reason = "a bench with a broken setup should stop at once"
)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chrono::Utc;
use ed25519_dalek::SigningKey;
use tempvault::domain::{Lifetime, MachineId, ProjectName, SecretName, VaultName};
use tempvault::machines::{expiry_key, machine_key, Grant, MachineRecord, MachineState};
use tempvault::storage::{Cf, Store};

fn populate(data: &Path, n: usize) -> Duration {
    let started = Instant::now();
    std::fs::create_dir_all(data).unwrap();
    let store = Store::open(&data.join("db")).unwrap();
    let vault = VaultName::parse("default").unwrap();
    let project = ProjectName::parse("app").unwrap();
    let key = SigningKey::from_bytes(&[7; 32]).verifying_key();
    let public_key = STANDARD.encode(key.as_bytes());
    let now = Utc::now();
    let expires = now + chrono::TimeDelta::days(30);
    let mut batch = store.batch();
    for i in 0..n {
        let id = MachineId::random();
        let record = MachineRecord {
            id,
            vault: vault.clone(),
            name: format!("load-{i}"),
            description: None,
            temporary: true,
            state: MachineState::Active,
            created_at: now,
            created_by: "bench".into(),
            lifetime: Some(Lifetime {
                days: 30,
                ..Lifetime::default()
            }),
            original_expires_at: Some(expires),
            extensions: Vec::new(),
            public_key: Some(public_key.clone()),
            registered_at: Some(now),
            approved_at: Some(now),
            projects: BTreeSet::from([project.clone()]),
            grants: BTreeSet::from([Grant {
                project: project.clone(),
                secret: SecretName::parse("db").unwrap(),
            }]),
            guardrails: Default::default(),
            disabled: None,
            expired_at: None,
        };
        batch
            .put(Cf::Machines, &machine_key(&vault, id), &record)
            .unwrap();
        batch
            .put_raw(Cf::Expiry, &expiry_key(expires.timestamp(), id), &[])
            .unwrap();
        if i % 10_000 == 9_999 {
            std::mem::replace(&mut batch, store.batch())
                .commit(false)
                .unwrap();
        }
    }
    batch.commit(true).unwrap();
    drop(store);
    started.elapsed()
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib / 1024.0
}

/// Starts the server on `data`, returns (time to listening, RSS started, RSS settled).
fn start(data: &Path) -> (Duration, f64, f64) {
    let config = data.join("tv.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n",
            data.display()
        ),
    )
    .unwrap();
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tempvault"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("TEMPVAULT_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = loop {
        let line = lines.next().unwrap().unwrap();
        if let Some(url) = line.strip_prefix("tempvault listening on ") {
            break url.to_owned();
        }
    };
    let ready = started.elapsed();
    let at_start = rss_mib(child.id());
    // Let the first sweep and any start-up work finish, then touch the server once.
    std::thread::sleep(Duration::from_secs(3));
    let health = ureq::get(&format!("{url}/healthz"))
        .call()
        .unwrap()
        .status();
    assert_eq!(health, 200);
    let settled = rss_mib(child.id());
    child.kill().unwrap();
    child.wait().unwrap();
    (ready, at_start, settled)
}

fn main() {
    let n: usize = std::env::var("TEMPVAULT_BENCH_MACHINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let (ready0, _, rss0) = start(&empty);
    println!("empty store: listening after {ready0:.2?}, RSS {rss0:.0} MiB");

    let full = dir.path().join("full");
    let wrote = populate(&full, n);
    println!("wrote {n} machines in {wrote:.2?}");
    let (ready, at_start, settled) = start(&full);
    println!(
        "{n} machines: listening after {ready:.2?}, RSS {at_start:.0} MiB at start, \
         {settled:.0} MiB settled; {:.0} bytes per machine over the empty server",
        (settled - rss0) * 1024.0 * 1024.0 / n as f64
    );
}
