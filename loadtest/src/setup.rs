//! Setting up the fleet through the admin API, the way an operator would.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::SigningKey;
use serde_json::{json, Value};

use crate::plan::Mix;
use crate::Args;

/// An admin API client.
pub struct Admin {
    server: String,
    token: String,
    vault: String,
    agent: ureq::Agent,
}

/// A machine identity the generator signs for.
#[derive(Clone)]
pub struct Identity {
    pub id: String,
    pub key: SigningKey,
}

/// Every identity the run uses, and the secret they read.
pub struct Fleet {
    pub target: String,
    pub valid: Vec<Identity>,
    pub expired: Vec<Identity>,
    pub guarded: Vec<Identity>,
    pub server: String,
}

impl Admin {
    pub fn new(args: &Args) -> Result<Self, String> {
        let token = match &args.token {
            Some(t) => t.clone(),
            None => std::fs::read_to_string(args.data_dir.join("admin.token"))
                .map_err(|e| format!("no --token and cannot read admin.token: {e}"))?
                .trim()
                .to_owned(),
        };
        Ok(Self {
            server: args.server.clone(),
            token,
            vault: args.vault.clone(),
            agent: ureq::agent(),
        })
    }

    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let req = self
            .agent
            .request(method, &format!("{}{path}", self.server))
            .set("Authorization", &format!("Bearer {}", self.token));
        let resp = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        match resp {
            Ok(r) => r.into_json().map_err(|e| e.to_string()),
            Err(ureq::Error::Status(s, r)) => Err(format!(
                "{method} {path}: HTTP {s}: {}",
                r.into_string().unwrap_or_default()
            )),
            Err(e) => Err(format!("{method} {path}: {e}")),
        }
    }

    /// How many audit events of `action` the vault recorded from `since` until `until`.
    pub fn count_events(
        &self,
        action: &str,
        since: std::time::SystemTime,
        until: std::time::SystemTime,
    ) -> Result<u64, String> {
        let since = humantime::format_rfc3339_nanos(since).to_string();
        let until = humantime::format_rfc3339_nanos(until).to_string();
        let mut count = 0u64;
        let mut after: Option<u64> = None;
        // Bounded: a run produces at most one summary per machine per window.
        for _ in 0..1000 {
            let cursor = after.map(|a| format!("&after={a}")).unwrap_or_default();
            let page = self.call(
                "GET",
                &format!(
                    "/v1/{}/audit?action={action}&since={since}&until={until}&limit=1000{cursor}",
                    self.vault
                ),
                None,
            )?;
            count += page["events"].as_array().map_or(0, |e| e.len() as u64);
            match page["next_after"].as_u64() {
                Some(next) => after = Some(next),
                None => return Ok(count),
            }
        }
        Err("audit listing did not end".into())
    }

    /// The server's `/metrics` text.
    pub fn metrics(&self) -> Result<String, String> {
        self.agent
            .get(&format!("{}/metrics", self.server))
            .call()
            .map_err(|e| e.to_string())?
            .into_string()
            .map_err(|e| e.to_string())
    }

    fn v(&self, rest: &str) -> String {
        format!("/v1/{}{rest}", self.vault)
    }

    /// Creates a temporary machine, registers a fresh key for it, approves it and grants it
    /// the secret.
    fn machine(
        &self,
        project: &str,
        lifetime: Value,
        guardrails: Value,
    ) -> Result<Identity, String> {
        let created = self.call(
            "POST",
            &self.v("/machines/temporary"),
            Some(json!({"name": "loadtest", "lifetime": lifetime, "guardrails": guardrails})),
        )?;
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        let url = created["bootstrap"]["url"]
            .as_str()
            .ok_or("no bootstrap url")?;
        // Register at the bootstrap path on the server we were given, whatever its public URL.
        let path = url
            .find("/v1/")
            .map(|i| &url[i..])
            .ok_or("odd bootstrap url")?;
        let reg: Value = self
            .agent
            .post(&format!("{}{path}", self.server))
            .send_json(json!({"public_key": STANDARD.encode(key.verifying_key().to_bytes())}))
            .map_err(|e| format!("register: {e}"))?
            .into_json()
            .map_err(|e| e.to_string())?;
        let id = reg["machine_id"]
            .as_str()
            .ok_or("no machine id")?
            .to_owned();
        let m = |rest: &str| self.v(&format!("/machines/{id}{rest}"));
        self.call("POST", &m("/approve"), None)?;
        self.call("PUT", &m(&format!("/projects/{project}")), None)?;
        self.call("PUT", &m(&format!("/grants/{project}/secret")), None)?;
        Ok(Identity { id, key })
    }
}

/// Sets up the project, the secret and every machine the mix needs.
pub fn fleet(admin: &Admin, machines: usize, mix: &Mix) -> Result<Fleet, String> {
    let project = format!("loadtest-{}", hex::encode(rand::random::<[u8; 4]>()));
    admin.call(
        "POST",
        &admin.v("/projects"),
        Some(json!({"name": project})),
    )?;
    admin.call(
        "PUT",
        &admin.v(&format!("/projects/{project}/secrets/secret")),
        Some(json!({"value": "x".repeat(32)})),
    )?;
    let long = json!({"days": 1});
    let valid = (0..machines.max(1))
        .map(|_| admin.machine(&project, long.clone(), json!({})))
        .collect::<Result<Vec<_>, _>>()?;
    let guarded = if mix.guardrail > 0 {
        vec![admin.machine(&project, long, json!({"ip_allowlist": ["192.0.2.1/32"]}))?]
    } else {
        Vec::new()
    };
    let expired = if mix.expired > 0 {
        let m = admin
            .machine(&project, json!({"seconds": 2}), json!({}))
            .map_err(|e| format!("{e}\n(expired machines need the server's lifecycle.min_lifetime at 2s or less)"))?;
        std::thread::sleep(std::time::Duration::from_millis(2500));
        vec![m]
    } else {
        Vec::new()
    };
    Ok(Fleet {
        target: admin.v(&format!("/secrets/{project}/secret")),
        valid,
        expired,
        guarded,
        server: admin.server.clone(),
    })
}
