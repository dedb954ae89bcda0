//! `kill -9` in the middle of work: whatever the server acknowledged before it died is
//! there after it restarts, with its audit event, and the audit chain verifies.
//!
//! `audit.rs` already kills the server under concurrent reads and compares the total of
//! served reads with the total of audited ones. Here the admin side is crashed too (every
//! kind of write, each acknowledged one checked for its effect and its event), and reads
//! are matched per machine and per round, from both sides: no fewer audited reads than
//! served ones, and no more than served plus the requests still in flight at the kill.
//! Responses carry no request id, so reads are matched by count. And beyond what was
//! acknowledged: a change found in force after the restart must have its event too.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails by panicking; helpers outside #[test] too"
)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use common::{Machine, Server, BIN};
use ed25519_dalek::SigningKey;
use serde_json::{json, Value};

/// Number of secrets the admin writer cycles through, `app/s0` to `app/s3`.
const SECRETS: usize = 4;

/// Runs `tempvault audit verify` on a stopped server's data; asserts the chain is intact
/// and returns how many events it holds.
fn verify_chain(data: &Path, when: &str) -> u64 {
    let out = Command::new(BIN)
        .args(["audit", "verify", "--data-dir"])
        .arg(data)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{when}: audit verify failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .strip_prefix("audit chain intact: ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{when}: unexpected verify output {stdout:?}"))
}

/// An HTTP client for worker threads, which outlive the server they talk to.
struct Client {
    agent: ureq::Agent,
    url: String,
    token: String,
}

impl Client {
    fn new(server: &Server) -> Self {
        Self {
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(5))
                .build(),
            url: server.url.clone(),
            token: server.token.clone(),
        }
    }

    /// An admin call. `None` when no answer came: the server is gone.
    fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Option<(u16, Value)> {
        let req = self
            .agent
            .request(method, &format!("{}{path}", self.url))
            .set("Authorization", &format!("Bearer {}", self.token));
        answer(match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        })
    }

    /// Registers `key` at a bootstrap URL.
    fn register(&self, url: &str, key: &SigningKey) -> Option<(u16, Value)> {
        answer(self.agent.post(url).send_json(json!({
            "public_key": STANDARD.encode(key.verifying_key().to_bytes())
        })))
    }

    /// A signed read of `target` by `m`.
    fn read(&self, m: &Machine, target: &str) -> Option<(u16, Value)> {
        let h = m.sign(
            "GET",
            target,
            b"",
            &common::now().to_string(),
            &common::nonce(),
        );
        answer(
            self.agent
                .get(&format!("{}{target}", self.url))
                .set("X-Machine-Id", &h.machine_id)
                .set("X-Timestamp", &h.timestamp)
                .set("X-Nonce", &h.nonce)
                .set("X-Signature", &h.signature)
                .call(),
        )
    }
}

fn answer(r: Result<ureq::Response, ureq::Error>) -> Option<(u16, Value)> {
    let resp = match r {
        Ok(resp) => resp,
        Err(ureq::Error::Status(_, resp)) => resp,
        Err(ureq::Error::Transport(_)) => return None,
    };
    let status = resp.status();
    // A body cut short by the kill is no acknowledgement either.
    let text = resp.into_string().ok()?;
    Some((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// Every event of the default vault, oldest first.
fn vault_events(server: &Server) -> Vec<Value> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let (s, page) = server.admin(
            "GET",
            &format!("/v1/default/audit?after={after}&limit=1000"),
            None,
        );
        assert_eq!(s, 200, "{page}");
        all.extend(page["events"].as_array().cloned().unwrap_or_default());
        match page["next_after"].as_u64() {
            Some(n) => after = n,
            None => return all,
        }
    }
}

/// Waits until the workers have made `what` progress (so that a busy machine cannot move
/// the kill before any work), failing the test if they never do.
fn wait_for(round: usize, what: &str, cond: impl FnMut() -> bool) {
    assert!(
        common::eventually(Duration::from_secs(20), cond),
        "round {round}: no {what} within 20 s"
    );
}

fn clone_machine(m: &Machine) -> Machine {
    Machine {
        id: m.id.clone(),
        key: m.key.clone(),
        vault: m.vault.clone(),
    }
}

// === Admin writes ===

/// The steps the machine writer takes for each machine, in order, with the audit action
/// each one must leave.
const MACHINE_STEPS: [&str; 5] = [
    "machine.created",
    "machine.registered",
    "machine.approved",
    "machine.project_added",
    "machine.granted",
];

/// A machine the writer started, and how many of its steps were acknowledged.
struct MachineAck {
    id: String,
    key: SigningKey,
    acked: usize,
}

/// Everything the admin writers were told succeeded, and what they tried beyond it.
#[derive(Default)]
struct Acks {
    machines: Vec<MachineAck>,
    /// Acknowledged secret versions, per secret.
    versions: BTreeMap<usize, Vec<u32>>,
    /// The highest version sent, per secret, acknowledged or not.
    version_tried: BTreeMap<usize, u32>,
    projects: Vec<String>,
    /// Vaults with the admin token their creation returned.
    vaults: Vec<(String, String)>,
    /// Acknowledged allowlist numbers (see [`allowlist`]), and the highest one sent.
    allowlists: Vec<u32>,
    allowlist_tried: u32,
    /// Answers that were neither a success nor a dead connection.
    unexpected: Vec<String>,
}

/// The vault-wide allowlist number `n` writes: loopback (so reads keep working) and one
/// range that names `n`.
fn allowlist(n: u32) -> Vec<String> {
    vec![
        "127.0.0.0/8".into(),
        "::1/128".into(),
        format!("10.{}.{}.0/24", n / 256, n % 256),
    ]
}

fn allowlist_number(cidrs: &Value) -> u32 {
    let third = cidrs[2].as_str().unwrap();
    let parts: Vec<u32> = third
        .trim_end_matches(".0/24")
        .split('.')
        .skip(1)
        .map(|p| p.parse().unwrap())
        .collect();
    parts[0] * 256 + parts[1]
}

/// Creates machines and takes each through registration, approval, membership and grant.
fn machine_writer(c: &Client, round: usize, stop: &AtomicBool, acks: &Mutex<Acks>) {
    for i in 0.. {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let body = json!({"name": format!("crash-{round}-{i}"), "lifetime": {"hours": 8}});
        let Some((status, created)) = c.admin("POST", "/v1/default/machines/temporary", Some(body))
        else {
            return;
        };
        if status != 201 {
            acks.lock()
                .unwrap()
                .unexpected
                .push(format!("create: {status} {created}"));
            return;
        }
        let id = created["machine"]["id"].as_str().unwrap().to_owned();
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        let slot = {
            let mut a = acks.lock().unwrap();
            a.machines.push(MachineAck {
                id: id.clone(),
                key: key.clone(),
                acked: 1,
            });
            a.machines.len() - 1
        };
        let base = format!("/v1/default/machines/{id}");
        for (step, action) in MACHINE_STEPS.iter().enumerate().skip(1) {
            let answer = match step {
                1 => c.register(created["bootstrap"]["url"].as_str().unwrap(), &key),
                2 => c.admin("POST", &format!("{base}/approve"), None),
                3 => c.admin("PUT", &format!("{base}/projects/app"), None),
                _ => c.admin("PUT", &format!("{base}/grants/app/key"), None),
            };
            let Some((status, body)) = answer else { return };
            let mut a = acks.lock().unwrap();
            if status != 200 {
                a.unexpected.push(format!("{action}: {status} {body}"));
                return;
            }
            a.machines[slot].acked = step + 1;
        }
    }
}

/// Writes new versions of `app/s0` to `app/s3` in turn; version `v` of `s{k}` has the
/// value `s{k}-v{v}`. Each secret has this one writer, so the version the server answers
/// must be exactly the next one.
fn secret_writer(c: &Client, current: &[u32], stop: &AtomicBool, acks: &Mutex<Acks>) {
    let mut next: Vec<u32> = current.iter().map(|v| v + 1).collect();
    for i in 0.. {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let k = i % SECRETS;
        let v = next[k];
        acks.lock().unwrap().version_tried.insert(k, v);
        let body = json!({"value": format!("s{k}-v{v}")});
        let path = format!("/v1/default/projects/app/secrets/s{k}");
        let Some((status, resp)) = c.admin("PUT", &path, Some(body)) else {
            return;
        };
        let mut a = acks.lock().unwrap();
        if status != 200 || resp["version"] != v {
            a.unexpected.push(format!("s{k} v{v}: {status} {resp}"));
            return;
        }
        a.versions.entry(k).or_default().push(v);
        next[k] += 1;
    }
}

/// Creates projects and vaults and replaces the vault-wide IP allowlist, in turn.
fn settings_writer(
    c: &Client,
    round: usize,
    first_allowlist: u32,
    stop: &AtomicBool,
    acks: &Mutex<Acks>,
) {
    let mut n = first_allowlist;
    for i in 0.. {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let (status, body, expected) = match i % 4 {
            0 | 2 => {
                let name = format!("p-{round}-{i}");
                let Some((s, b)) =
                    c.admin("POST", "/v1/default/projects", Some(json!({"name": name})))
                else {
                    return;
                };
                if s == 201 {
                    acks.lock().unwrap().projects.push(name);
                }
                (s, b, 201)
            }
            1 => {
                acks.lock().unwrap().allowlist_tried = n;
                let Some((s, b)) = c.admin(
                    "PUT",
                    "/v1/default/settings/ip-allowlist",
                    Some(json!({"cidrs": allowlist(n)})),
                ) else {
                    return;
                };
                if s == 200 {
                    acks.lock().unwrap().allowlists.push(n);
                    n += 1;
                }
                (s, b, 200)
            }
            _ => {
                let name = format!("v-{round}-{i}");
                let Some((s, b)) = c.admin("POST", "/v1/vaults", Some(json!({"name": name})))
                else {
                    return;
                };
                if s == 201 {
                    let token = b["admin_token"].as_str().unwrap().to_owned();
                    acks.lock().unwrap().vaults.push((name, token));
                }
                (s, b, 201)
            }
        };
        if status != expected {
            acks.lock()
                .unwrap()
                .unexpected
                .push(format!("settings {i}: {status} {body}"));
            return;
        }
    }
}

/// The newest version of each `app/s{k}` as the reader machine sees it, checking that
/// its value is the one written for that version.
fn secret_versions(server: &Server, reader: &Machine, count: usize) -> Vec<u32> {
    let mut out = vec![0; count];
    for (k, slot) in out.iter_mut().enumerate() {
        let (status, body) = server.signed(reader, "GET", &format!("/v1/default/secrets/app/s{k}"));
        assert_eq!(status, 200, "s{k}: {body}");
        let v = body["version"].as_u64().unwrap() as u32;
        assert_eq!(body["value"], format!("s{k}-v{v}"), "s{k}: {body}");
        *slot = v;
    }
    out
}

/// Three writer threads make every kind of admin change as fast as they can, and the
/// server is killed with SIGKILL once each kind has been acknowledged in the round: at
/// once in the first round, 250 ms later in the second, 600 ms later in the third. After
/// each restart every acknowledged change is in force (a fully set-up machine reads its secret
/// with the key it registered, each secret is at or past its last acknowledged version and
/// holds the value written for it, each project, vault token and allowlist is there) and
/// has its audit event, and the chain verifies offline after every kill and at the end.
#[test]
fn every_acknowledged_admin_write_survives_kill_9_with_its_audit_event() {
    let mut server = Server::start();
    server.seed_secret("app", "key", "app-key-value");
    for k in 0..SECRETS {
        server.seed_secret("app", &format!("s{k}"), &format!("s{k}-v1"));
    }
    let reader = server.ready_machine("app", "key");
    for k in 0..SECRETS {
        let (s, b) = server.admin(
            "PUT",
            &format!("/v1/default/machines/{}/grants/app/s{k}", reader.id),
            None,
        );
        assert_eq!(s, 200, "{b}");
    }
    let acks = Mutex::new(Acks::default());
    let mut chain_len = 0;

    // The kill comes once every writer has something acknowledged in the round, and then
    // at once, a little later, or later still.
    for (round, kill_after_ms) in [(0usize, 0u64), (1, 250), (2, 600)] {
        let current = secret_versions(&server, &reader, SECRETS);
        let first_allowlist = acks.lock().unwrap().allowlist_tried + 1;
        let stop = AtomicBool::new(false);
        let (c1, c2, c3) = (
            Client::new(&server),
            Client::new(&server),
            Client::new(&server),
        );
        std::thread::scope(|s| {
            s.spawn(|| machine_writer(&c1, round, &stop, &acks));
            s.spawn(|| secret_writer(&c2, &current, &stop, &acks));
            s.spawn(|| settings_writer(&c3, round, first_allowlist, &stop, &acks));
            let counts = |a: &Acks| {
                [
                    a.machines
                        .iter()
                        .filter(|m| m.acked == MACHINE_STEPS.len())
                        .count(),
                    a.versions.values().map(Vec::len).sum(),
                    a.projects.len(),
                    a.allowlists.len(),
                    a.vaults.len(),
                ]
            };
            let before = counts(&acks.lock().unwrap());
            wait_for(round, "acknowledged write of every kind", || {
                let now = counts(&acks.lock().unwrap());
                now.iter().zip(before).all(|(n, b)| *n > b)
            });
            std::thread::sleep(Duration::from_millis(kill_after_ms));
            server.kill();
            stop.store(true, Ordering::Relaxed);
        });
        let a = acks.lock().unwrap();
        assert!(a.unexpected.is_empty(), "round {round}: {:?}", a.unexpected);
        let events = verify_chain(&server.data, &format!("after kill {round}"));
        assert!(events > chain_len, "round {round}: the chain did not grow");
        chain_len = events;

        server.restart();
        let log = vault_events(&server);
        let event = |pred: &dyn Fn(&Value) -> bool| log.iter().any(pred);

        // Machines: each acknowledged step is in the record and in the machine's trail.
        for m in &a.machines {
            let (status, shown) =
                server.admin("GET", &format!("/v1/default/machines/{}", m.id), None);
            assert_eq!(
                status, 200,
                "round {round}: acknowledged machine lost: {shown}"
            );
            let facts = [
                true,
                shown["public_key"] == STANDARD.encode(m.key.verifying_key().to_bytes()).as_str(),
                shown["stored_state"] == "active",
                shown["projects"].to_string().contains("\"app\""),
                grants_app_key(&shown),
            ];
            for (step, action) in MACHINE_STEPS.iter().enumerate() {
                let audited = event(&|e| e["machine"] == m.id.as_str() && e["action"] == *action);
                if step < m.acked {
                    assert!(
                        facts[step],
                        "round {round}: {action} of {} lost: {shown}",
                        m.id
                    );
                    assert!(
                        audited,
                        "round {round}: {action} of {} acknowledged, not audited",
                        m.id
                    );
                }
            }
            if m.acked == MACHINE_STEPS.len() {
                let me = Machine {
                    id: m.id.clone(),
                    key: m.key.clone(),
                    vault: "default".into(),
                };
                let (status, body) = server.signed(&me, "GET", "/v1/default/secrets/app/key");
                assert_eq!(
                    status, 200,
                    "round {round}: set-up machine cannot read: {body}"
                );
                assert_eq!(body["value"], "app-key-value");
            }
        }

        // Secrets: at or past the last acknowledged version, never past the last one sent.
        let now_at = secret_versions(&server, &reader, SECRETS);
        for (k, &v) in now_at.iter().enumerate() {
            let acked = a.versions.get(&k).cloned().unwrap_or_default();
            let floor = acked.last().copied().unwrap_or(1).max(current[k]);
            let tried = a.version_tried.get(&k).copied().unwrap_or(floor).max(floor);
            assert!(
                (floor..=tried).contains(&v),
                "round {round}: s{k} is at v{v}, acknowledged up to v{floor}, sent up to v{tried}"
            );
            let written = |v: u32| {
                event(&|e| {
                    e["action"] == "secret.written"
                        && e["secret"] == format!("app/s{k}")
                        && e["detail"]["version"] == v
                })
            };
            for &acked_v in &acked {
                assert!(
                    written(acked_v),
                    "round {round}: s{k} v{acked_v} acknowledged, not audited"
                );
            }
        }

        // Projects.
        let (_, listed) = server.admin("GET", "/v1/default/projects", None);
        let names: Vec<&str> = listed["projects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        let project_event = |name: &str| {
            event(&|e| e["action"] == "project.created" && e["detail"]["project"] == name)
        };
        for p in &a.projects {
            assert!(
                names.contains(&p.as_str()),
                "round {round}: project {p} lost"
            );
            assert!(project_event(p), "round {round}: project {p} not audited");
        }
        // And the other way: every project in force, acknowledged or not, has its event
        // (the project and its event are written in one batch).
        for p in &names {
            assert!(
                project_event(p),
                "round {round}: project {p} is in force but was never audited"
            );
        }

        // Every machine in force, acknowledged or not, has its creation event.
        let (_, machines) = server.admin("GET", "/v1/default/machines", None);
        for m in machines["machines"].as_array().unwrap() {
            let id = m["id"].as_str().unwrap();
            assert!(
                event(&|e| e["action"] == "machine.created" && e["machine"] == id),
                "round {round}: machine {id} is in force but its creation was never audited"
            );
        }

        // Vaults: the token each creation returned works, and the creation is audited.
        for (name, token) in &a.vaults {
            let (status, body) =
                server.admin_as(token, "GET", &format!("/v1/{name}/projects"), None);
            assert_eq!(
                status, 200,
                "round {round}: vault {name} or its token lost: {body}"
            );
            let (status, page) = server.admin("GET", &format!("/v1/{name}/audit"), None);
            assert_eq!(status, 200);
            assert!(
                page["events"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["action"] == "vault.created"),
                "round {round}: vault {name} not audited"
            );
        }

        // The allowlist: the last acknowledged one or a later one sent before the kill.
        let (_, shown) = server.admin("GET", "/v1/default/settings/ip-allowlist", None);
        if let Some(&last) = a.allowlists.last() {
            let n = allowlist_number(&shown["cidrs"]);
            assert!(
                (last..=a.allowlist_tried).contains(&n),
                "round {round}: allowlist {n}, acknowledged up to {last}, sent up to {}",
                a.allowlist_tried
            );
        }
        for &n in &a.allowlists {
            assert!(
                event(&|e| e["action"] == "vault.ip_allowlist_set"
                    && e["detail"]["cidrs"] == json!(allowlist(n))),
                "round {round}: allowlist {n} not audited"
            );
        }
    }

    server.kill();
    let events = verify_chain(&server.data, "at the end");
    assert!(events > chain_len);
}

/// Whether the machine's record grants `app/key`.
fn grants_app_key(shown: &Value) -> bool {
    shown["grants"].as_array().is_some_and(|g| {
        g.iter()
            .any(|g| g["project"] == "app" && g["secret"] == "key")
    })
}

/// The audit log must account for what is in force, acknowledged or not: a change that
/// took effect without an event is an unaudited change (a grant nobody can trace). Four
/// threads toggle the grant of `app/key` on their own machine (grant, revoke, grant, ...)
/// and two threads write new versions of their own secret; the server is killed with
/// SIGKILL once every thread has two changes acknowledged, at once, 200 ms or 450 ms later
/// (one round each). After each restart, for every machine the newest `machine.granted` /
/// `machine.revoked` event must say what the record says, and for every secret the newest
/// `secret.written` event must name the version in force.
#[test]
fn after_kill_9_the_audit_log_accounts_for_every_change_in_force() {
    const TOGGLERS: usize = 4;
    const WRITTEN: usize = 2;
    let mut server = Server::start();
    server.seed_secret("app", "key", "v");
    for k in 0..WRITTEN {
        server.seed_secret("app", &format!("s{k}"), &format!("s{k}-v1"));
    }
    let reader = server.ready_machine("app", "key");
    for k in 0..WRITTEN {
        let path = format!("/v1/default/machines/{}/grants/app/s{k}", reader.id);
        assert_eq!(server.admin("PUT", &path, None).0, 200);
    }
    let machines: Vec<Machine> = (0..TOGGLERS)
        .map(|_| {
            let m = server.register_machine(json!({"hours": 8}));
            let base = format!("/v1/default/machines/{}", m.id);
            assert_eq!(
                server.admin("POST", &format!("{base}/approve"), None).0,
                200
            );
            assert_eq!(
                server.admin("PUT", &format!("{base}/projects/app"), None).0,
                200
            );
            m
        })
        .collect();
    let mut unaccounted = Vec::new();

    for (round, kill_after_ms) in [(0usize, 0u64), (1, 200), (2, 450)] {
        let current = secret_versions(&server, &reader, WRITTEN);
        let stop = AtomicBool::new(false);
        let unexpected = Mutex::new(Vec::<String>::new());
        let done: Vec<AtomicUsize> = (0..TOGGLERS + WRITTEN)
            .map(|_| AtomicUsize::new(0))
            .collect();
        std::thread::scope(|s| {
            for (m, done) in machines.iter().zip(&done) {
                let (c, stop, unexpected) = (Client::new(&server), &stop, &unexpected);
                let grant = format!("/v1/default/machines/{}/grants/app/key", m.id);
                s.spawn(move || {
                    for method in ["PUT", "DELETE"].iter().cycle() {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let Some((status, body)) = c.admin(method, &grant, None) else {
                            return;
                        };
                        if status != 200 {
                            unexpected.lock().unwrap().push(format!("{status} {body}"));
                            return;
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
            for ((k, &v), done) in current.iter().enumerate().zip(&done[TOGGLERS..]) {
                let (c, stop, unexpected) = (Client::new(&server), &stop, &unexpected);
                s.spawn(move || {
                    for v in v + 1.. {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let path = format!("/v1/default/projects/app/secrets/s{k}");
                        let body = json!({"value": format!("s{k}-v{v}")});
                        let Some((status, resp)) = c.admin("PUT", &path, Some(body)) else {
                            return;
                        };
                        if status != 200 {
                            unexpected.lock().unwrap().push(format!("{status} {resp}"));
                            return;
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
            wait_for(round, "two acknowledged changes by every writer", || {
                done.iter().all(|d| d.load(Ordering::Relaxed) >= 2)
            });
            std::thread::sleep(Duration::from_millis(kill_after_ms));
            server.kill();
            stop.store(true, Ordering::Relaxed);
        });
        let unexpected = unexpected.into_inner().unwrap();
        assert!(unexpected.is_empty(), "round {round}: {unexpected:?}");
        verify_chain(&server.data, &format!("after kill {round}"));

        server.restart();
        let log = vault_events(&server);
        for m in &machines {
            let (_, shown) = server.admin("GET", &format!("/v1/default/machines/{}", m.id), None);
            let in_force = grants_app_key(&shown);
            let newest = log.iter().rev().find(|e| {
                e["machine"] == m.id.as_str()
                    && e["secret"] == "app/key"
                    && (e["action"] == "machine.granted" || e["action"] == "machine.revoked")
            });
            let audited = newest.is_some_and(|e| e["action"] == "machine.granted");
            if in_force != audited {
                unaccounted.push(format!(
                    "round {round}: machine {} has app/key {} but its newest event is {}",
                    m.id,
                    if in_force { "granted" } else { "not granted" },
                    newest.map_or("none".into(), |e| format!(
                        "{} (seq {})",
                        e["action"], e["seq"]
                    ))
                ));
            }
        }
        for (k, &v) in secret_versions(&server, &reader, WRITTEN)
            .iter()
            .enumerate()
        {
            let newest = log
                .iter()
                .filter(|e| e["action"] == "secret.written" && e["secret"] == format!("app/s{k}"))
                .filter_map(|e| e["detail"]["version"].as_u64())
                .max();
            if newest != Some(u64::from(v)) {
                unaccounted.push(format!(
                    "round {round}: app/s{k} is at version {v} but the newest secret.written \
                     event is for version {newest:?}"
                ));
            }
        }
    }
    server.kill();
    verify_chain(&server.data, "at the end");
    assert!(
        unaccounted.is_empty(),
        "changes in force after kill -9 with no audit event:\n{}",
        unaccounted.join("\n")
    );
}

// === Reads under load ===

/// Eight threads (two per machine, four machines) read as fast as they can; the server is
/// killed with SIGKILL once every machine has been served, at once, 300 ms or 700 ms later
/// (one round each). For each machine and round, the allowed `secret.read` events written
/// during the round number at least the 200s received (a read is answered only once its
/// event is durable) and at most those plus the two requests that may have been in flight
/// at the kill. Nothing else is answered: no refusal, no 503. The chain verifies offline
/// after every kill.
#[test]
fn every_served_read_is_audited_across_kill_9_per_machine_and_round() {
    const THREADS_PER_MACHINE: usize = 2;
    let mut server = Server::start();
    server.seed_secret("app", "key", "read-under-load");
    let machines: Vec<Machine> = (0..4).map(|_| server.ready_machine("app", "key")).collect();
    let target = "/v1/default/secrets/app/key";
    let allowed_reads = |server: &Server, m: &Machine| {
        server
            .audit_of(&m.id)
            .iter()
            .filter(|e| e["action"] == "secret.read" && e["outcome"] == "allowed")
            .count()
    };
    let mut audited_before: Vec<usize> =
        machines.iter().map(|m| allowed_reads(&server, m)).collect();
    assert_eq!(audited_before, vec![0; machines.len()]);
    let mut chain_len = 0;

    for (round, kill_after_ms) in [(0usize, 0u64), (1, 300), (2, 700)] {
        let served: Vec<Mutex<usize>> = machines.iter().map(|_| Mutex::new(0)).collect();
        let unexpected = Mutex::new(Vec::<String>::new());
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            for (i, m) in machines.iter().enumerate() {
                for _ in 0..THREADS_PER_MACHINE {
                    let (c, m) = (Client::new(&server), clone_machine(m));
                    let (served, unexpected, stop) = (&served[i], &unexpected, &stop);
                    s.spawn(move || {
                        while !stop.load(Ordering::Relaxed) {
                            let Some((status, body)) = c.read(&m, target) else {
                                return;
                            };
                            if status == 200 && body["value"] == "read-under-load" {
                                *served.lock().unwrap() += 1;
                            } else {
                                unexpected.lock().unwrap().push(format!("{status} {body}"));
                                return;
                            }
                        }
                    });
                }
            }
            wait_for(round, "served read for every machine", || {
                served.iter().all(|n| *n.lock().unwrap() > 0)
            });
            std::thread::sleep(Duration::from_millis(kill_after_ms));
            server.kill();
            stop.store(true, Ordering::Relaxed);
        });
        let unexpected = unexpected.into_inner().unwrap();
        assert!(unexpected.is_empty(), "round {round}: {unexpected:?}");
        let events = verify_chain(&server.data, &format!("after kill {round}"));
        assert!(events > chain_len, "round {round}: the chain did not grow");
        chain_len = events;

        server.restart();
        for (i, m) in machines.iter().enumerate() {
            let served = *served[i].lock().unwrap();
            assert!(served > 0, "round {round}: machine {i} was served nothing");
            let total = allowed_reads(&server, m);
            let audited = total - audited_before[i];
            assert!(
                (served..=served + THREADS_PER_MACHINE).contains(&audited),
                "round {round}, machine {i}: {served} reads served, {audited} audited"
            );
            audited_before[i] = total;
        }
    }
    server.kill();
    assert!(verify_chain(&server.data, "at the end") >= chain_len);
}
