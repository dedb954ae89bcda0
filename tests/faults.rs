//! Faults in the store: when the audit log cannot be written, reads fail closed.
//!
//! The data directory sits on a small tmpfs (this needs root, as CI and the development
//! machines have) that the test then fills up.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails by panicking; helpers outside #[test] too"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{code, Server};

struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(size_mb: u32) -> Self {
        let dir = tempfile::tempdir().unwrap().keep();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mb}m"), "tmpfs"])
            .arg(&dir)
            .status()
            .expect("run mount");
        assert!(status.success(), "mounting a tmpfs needs root");
        Self(dir)
    }

    fn fill(&self) -> PathBuf {
        let filler = self.0.join("filler");
        // dd stops with "No space left on device"; that is the point.
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=64k"])
            .arg(format!("of={}", filler.display()))
            .output();
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn data_dir_on(fs: &Path) -> common::Options {
    common::Options::default().with_data_dir(fs.join("data"))
}

#[test]
fn a_full_disk_turns_reads_into_503_and_service_resumes_by_itself_when_space_returns() {
    let fs = Tmpfs::mount(16);
    let mut server = Server::start_with(data_dir_on(&fs.0));
    server.seed_secret("app", "key", "v");
    let m = server.ready_machine("app", "key");
    let target = "/v1/default/secrets/app/key";
    assert_eq!(server.signed(&m, "GET", target).0, 200);

    // Fill the disk. Reads may still succeed while the write-ahead log has space it
    // reserved earlier; each of those is durable. The first write that finds no space
    // must turn the read into a 503.
    let filler = fs.fill();
    let mut served = 1;
    let mut refused = None;
    for _ in 0..5000 {
        let (status, body) = server.signed(&m, "GET", target);
        match status {
            200 => served += 1,
            503 => {
                refused = Some(code(&body).to_owned());
                break;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(
        refused.as_deref(),
        Some("audit_unavailable"),
        "no 503 while the disk was full"
    );
    let metrics = server.metrics();
    let failures = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tempvault_audit_write_failures_total "))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(failures >= 1, "{metrics}");

    // With space again the server comes back by itself: the audit writer reopens the
    // store and reads are served and audited again, without a restart.
    std::fs::remove_file(filler).unwrap();
    let back = common::eventually(std::time::Duration::from_secs(10), || {
        let (status, _) = server.signed(&m, "GET", target);
        if status == 200 {
            served += 1;
        }
        status == 200
    });
    assert!(back, "reads did not resume once the disk had room");
    let (status, _) = server.admin(
        "POST",
        "/v1/default/projects",
        Some(serde_json::json!({"name": "after"})),
    );
    assert_eq!(status, 201, "admin writes work again too");

    // Every read that was served has its event, and the chain is whole.
    let allowed = server
        .audit_of(&m.id)
        .iter()
        .filter(|e| e["action"] == "secret.read" && e["outcome"] == "allowed")
        .count();
    assert!(allowed >= served, "{allowed} audited < {served} served");
    server.kill();
    let out = Command::new(common::BIN)
        .args(["audit", "verify", "--data-dir"])
        .arg(&server.data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
