//! Test harness: runs the real `tempvault` binary on a loopback port with a fresh data
//! directory, and talks HTTP to it.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub const BIN: &str = env!("CARGO_BIN_EXE_tempvault");

/// A running server process, killed when dropped.
pub struct Server {
    pub url: String,
    pub data: PathBuf,
    pub token: String,
    child: Child,
    config: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

/// Extra TOML appended to the test configuration.
#[derive(Default, Clone)]
pub struct Options {
    pub extra: String,
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    /// Log filter and file for the server's standard error (default: `warn`, inherited).
    pub log: Option<(String, PathBuf)>,
}

impl Options {
    pub fn with_data_dir(mut self, dir: PathBuf) -> Self {
        self.data_dir = Some(dir);
        self
    }
}

impl Server {
    /// Starts a server on a fresh data directory.
    pub fn start() -> Self {
        Self::start_with(Options::default())
    }

    pub fn start_with(opts: Options) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = opts
            .data_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("data"));
        let mut s = Self::launch(&data, &opts, dir.path().join("tempvault.toml"));
        s._dir = Some(dir);
        s
    }

    fn launch(data: &Path, opts: &Options, config: PathBuf) -> Self {
        let listen = opts.listen.clone().unwrap_or_else(|| "127.0.0.1:0".into());
        let text = format!(
            "listen = \"{listen}\"\ndata_dir = \"{}\"\n{}\n",
            data.display(),
            if opts.extra.contains("[lifecycle]") {
                opts.extra.clone()
            } else {
                format!(
                    "{}\n[lifecycle]\nmin_lifetime = \"1s\"\nsweep_interval = \"200ms\"\n",
                    opts.extra
                )
            }
        );
        std::fs::write(&config, text).expect("write config");
        let (child, url) = spawn(&config, opts.log.as_ref());
        let token = std::fs::read_to_string(data.join("admin.token"))
            .expect("admin.token")
            .trim()
            .to_owned();
        Self {
            url,
            data: data.to_owned(),
            token,
            child,
            config,
            _dir: None,
        }
    }

    /// Kills the process hard, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the process as an operator would (SIGTERM), waits for it to exit and starts it
    /// again on the same data directory and configuration. Returns the stopped process's
    /// exit status.
    pub fn restart_gracefully(&mut self) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(sent.success(), "kill -TERM failed");
        let status = self.child.wait().expect("wait");
        let (child, url) = spawn(&self.config, None);
        self.child = child;
        self.url = url;
        status
    }

    /// Kills and starts again on the same data directory and configuration.
    pub fn restart(&mut self) {
        self.kill();
        let (child, url) = spawn(&self.config, None);
        self.child = child;
        self.url = url;
    }

    pub fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.admin_as(&self.token, method, path, body)
    }

    pub fn admin_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let req = ureq::request(method, &format!("{}{path}", self.url))
            .set("Authorization", &format!("Bearer {token}"));
        respond(match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        })
    }

    /// Sends a raw request with the given headers and body.
    pub fn raw(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> (u16, Value) {
        let mut req = ureq::request(method, &format!("{}{target}", self.url));
        for (k, v) in headers {
            req = req.set(k, v);
        }
        respond(match body {
            Some(b) => req.send_bytes(b),
            None => req.call(),
        })
    }

    /// Creates a project, a secret in it, and returns nothing; panics on failure.
    pub fn seed_secret(&self, project: &str, name: &str, value: &str) {
        let (s, b) = self.admin(
            "POST",
            "/v1/default/projects",
            Some(json!({"name": project})),
        );
        assert!(s == 201 || s == 409, "{s} {b}");
        let (s, b) = self.admin(
            "PUT",
            &format!("/v1/default/projects/{project}/secrets/{name}"),
            Some(json!({"value": value})),
        );
        assert_eq!(s, 200, "{b}");
    }

    /// Creates a temporary machine named `name` and returns the answer (machine and
    /// bootstrap), asserting it was created.
    pub fn create_temporary(&self, name: &str, lifetime: Value) -> Value {
        let (status, body) = self.admin(
            "POST",
            "/v1/default/machines/temporary",
            Some(json!({"name": name, "lifetime": lifetime})),
        );
        assert_eq!(status, 201, "{body}");
        body
    }

    /// Creates a temporary machine and registers a fresh key for it through the bootstrap
    /// endpoint, the way the script does. Returns the machine, still pending.
    pub fn register_machine(&self, lifetime: Value) -> Machine {
        let (s, created) = self.admin(
            "POST",
            "/v1/default/machines/temporary",
            Some(json!({"name": "test", "lifetime": lifetime})),
        );
        assert_eq!(s, 201, "{created}");
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        let url = created["bootstrap"]["url"]
            .as_str()
            .expect("url")
            .to_owned();
        let (s, reg) = respond(ureq::post(&url).send_json(json!({
            "public_key": STANDARD.encode(key.verifying_key().to_bytes())
        })));
        assert_eq!(s, 200, "{reg}");
        Machine {
            id: reg["machine_id"].as_str().expect("id").to_owned(),
            key,
            vault: "default".into(),
        }
    }

    /// A registered, approved machine that is a member of `project` and granted `secret`.
    pub fn ready_machine(&self, project: &str, secret: &str) -> Machine {
        let m = self.register_machine(json!({"hours": 8}));
        self.approve_and_grant(&m, project, secret);
        m
    }

    pub fn approve_and_grant(&self, m: &Machine, project: &str, secret: &str) {
        let base = format!("/v1/default/machines/{}", m.id);
        let (s, b) = self.admin("POST", &format!("{base}/approve"), None);
        assert_eq!(s, 200, "{b}");
        let (s, b) = self.admin("PUT", &format!("{base}/projects/{project}"), None);
        assert_eq!(s, 200, "{b}");
        let (s, b) = self.admin("PUT", &format!("{base}/grants/{project}/{secret}"), None);
        assert_eq!(s, 200, "{b}");
    }

    /// Sends a request signed by `m`, exactly per the protocol.
    pub fn signed(&self, m: &Machine, method: &str, target: &str) -> (u16, Value) {
        let h = m.sign(method, target, b"", &now().to_string(), &nonce());
        self.send_signed(method, target, &h, None)
    }

    pub fn send_signed(
        &self,
        method: &str,
        target: &str,
        h: &Signed,
        body: Option<&[u8]>,
    ) -> (u16, Value) {
        let headers = [
            ("X-Machine-Id", h.machine_id.as_str()),
            ("X-Timestamp", h.timestamp.as_str()),
            ("X-Nonce", h.nonce.as_str()),
            ("X-Signature", h.signature.as_str()),
        ];
        self.raw(method, target, &headers, body)
    }

    /// Runs `tempvault admin ARGS` against this server with the operator token.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(BIN)
            .arg("admin")
            .args(args)
            .env("TEMPVAULT_ADDR", &self.url)
            .env("TEMPVAULT_TOKEN", &self.token)
            .output()
            .expect("run tempvault admin")
    }

    /// Like [`Server::cli`], asserting success and returning standard output.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "admin {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    pub fn metrics(&self) -> String {
        ureq::get(&format!("{}/metrics", self.url))
            .call()
            .expect("metrics")
            .into_string()
            .expect("text")
    }

    pub fn audit_of(&self, machine: &str) -> Vec<Value> {
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            let (s, page) = self.admin(
                "GET",
                &format!("/v1/default/machines/{machine}/audit?after={after}&limit=1000"),
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
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs a printed bootstrap command with `sh` on a "host" whose identity lives in `home`.
pub fn bootstrap_host(home: &Path, command: &str) -> std::process::Output {
    Command::new("sh")
        .args(["-c", command])
        .env("TEMPVAULT_HOME", home)
        .output()
        .expect("run sh")
}

/// Like [`bootstrap_host`], asserting success; returns the machine id the script printed.
pub fn bootstrap_ok(home: &Path, command: &str) -> String {
    let out = bootstrap_host(home, command);
    assert!(
        out.status.success(),
        "bootstrap failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

/// Starts the binary and waits for its "listening" line.
fn spawn(config: &Path, log: Option<&(String, PathBuf)>) -> (Child, String) {
    let (filter, stderr) = match log {
        Some((filter, path)) => (
            filter.as_str(),
            Stdio::from(std::fs::File::create(path).expect("log file")),
        ),
        None => ("warn", Stdio::inherit()),
    };
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config)
        .env("TEMPVAULT_LOG", filter)
        .env_remove("TEMPVAULT_LISTEN")
        .env_remove("TEMPVAULT_DATA_DIR")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn tempvault");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read listening line");
    let url = line
        .trim()
        .strip_prefix("tempvault listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_owned();
    // The server refuses timestamps from its own start second (so that a restart opens no
    // replay window); let that second pass before the test signs anything.
    let started = now();
    while now() <= started {
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, url)
}

pub fn respond(r: Result<ureq::Response, ureq::Error>) -> (u16, Value) {
    match r {
        Ok(r) => {
            let status = r.status();
            let text = r.into_string().unwrap_or_default();
            (
                status,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            )
        }
        Err(ureq::Error::Status(status, r)) => {
            let text = r.into_string().unwrap_or_default();
            (
                status,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            )
        }
        Err(e) => panic!("transport error: {e}"),
    }
}

/// A machine identity held by the test.
pub struct Machine {
    pub id: String,
    pub key: SigningKey,
    pub vault: String,
}

/// The four signed header values.
pub struct Signed {
    pub machine_id: String,
    pub timestamp: String,
    pub nonce: String,
    pub signature: String,
}

impl Machine {
    /// Someone claiming this machine's id, signing with a key of their own.
    pub fn forger(&self) -> Machine {
        Machine {
            id: self.id.clone(),
            key: SigningKey::generate(&mut rand::rngs::OsRng),
            vault: self.vault.clone(),
        }
    }

    /// Signs per the documented protocol, built here independently of the server's code.
    pub fn sign(
        &self,
        method: &str,
        target: &str,
        body: &[u8],
        timestamp: &str,
        nonce: &str,
    ) -> Signed {
        let digest = hex::encode(Sha256::digest(body));
        let canonical = format!(
            "tempvault-request-v1\n{method}\n{target}\n{}\n{timestamp}\n{nonce}\n{digest}",
            self.id
        );
        let sig = self.key.sign(canonical.as_bytes());
        Signed {
            machine_id: self.id.clone(),
            timestamp: timestamp.to_owned(),
            nonce: nonce.to_owned(),
            signature: STANDARD.encode(sig.to_bytes()),
        }
    }
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

pub fn nonce() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// Waits until `f` returns true or the deadline passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// The error message of an error response.
pub fn message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or("")
}

/// The error code of an error response.
pub fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}
