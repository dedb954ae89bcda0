//! `tempvault admin`: every admin endpoint, as commands.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::table;
use crate::domain::Lifetime;

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Server base URL.
    #[arg(
        long,
        env = "TEMPVAULT_ADDR",
        default_value = "http://127.0.0.1:8750",
        global = true
    )]
    addr: String,
    /// Admin bearer token; default: the operator token in the data directory.
    #[arg(long, env = "TEMPVAULT_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Data directory to find `admin.token` in.
    #[arg(
        long,
        env = "TEMPVAULT_DATA_DIR",
        default_value = "./data",
        global = true
    )]
    data_dir: PathBuf,
    /// Vault to act on.
    #[arg(
        long,
        env = "TEMPVAULT_VAULT",
        default_value = "default",
        global = true
    )]
    vault: String,
    /// Print the server's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Vaults (operator token).
    Vault {
        #[command(subcommand)]
        command: VaultCommand,
    },
    /// Projects of the vault.
    Project {
        #[command(subcommand)]
        command: ProjectCommand,
    },
    /// Secrets of the vault.
    Secret {
        #[command(subcommand)]
        command: SecretCommand,
    },
    /// Machines of the vault.
    Machine {
        #[command(subcommand)]
        command: MachineCommand,
    },
    /// The vault's audit log.
    Audit {
        #[arg(long, default_value_t = 0)]
        after: u64,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Vault-wide settings.
    Settings {
        #[command(subcommand)]
        command: SettingsCommand,
    },
}

#[derive(Debug, Subcommand)]
enum VaultCommand {
    /// Create a vault; prints its vault-scoped admin token once.
    Create { name: String },
}

#[derive(Debug, Subcommand)]
enum ProjectCommand {
    Create { name: String },
    List,
}

#[derive(Debug, Subcommand)]
enum SecretCommand {
    /// Write a new version; the value comes from --value, --value-file or standard input.
    Put {
        /// `project/name`.
        secret: String,
        #[arg(long, conflicts_with = "value_file")]
        value: Option<String>,
        #[arg(long)]
        value_file: Option<PathBuf>,
        /// Access policy as JSON, or @file.
        #[arg(long)]
        policy: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum MachineCommand {
    /// Create a temporary machine and print its bootstrap command.
    CreateTemporary {
        name: String,
        /// Lifetime such as 8h, 30d, 3mo or 1mo2d8h (1 hour to 12 months).
        #[arg(long)]
        lifetime: String,
        #[arg(long)]
        description: Option<String>,
        /// Guardrails as JSON, or @file.
        #[arg(long)]
        guardrails: Option<String>,
    },
    /// List machines, optionally by state.
    List {
        #[arg(long)]
        state: Option<String>,
    },
    /// Show one machine with its history.
    Show {
        id: String,
    },
    Approve {
        id: String,
    },
    Disable {
        id: String,
        #[arg(long)]
        reason: String,
    },
    AddProject {
        id: String,
        project: String,
    },
    RemoveProject {
        id: String,
        project: String,
    },
    /// Grant `project/secret`.
    Grant {
        id: String,
        secret: String,
    },
    /// Revoke `project/secret`.
    Revoke {
        id: String,
        secret: String,
    },
    /// Guardrails of a machine.
    Guardrails {
        #[command(subcommand)]
        command: GuardrailsCommand,
    },
    /// Push the expiry forward, by a lifetime or to an instant, with a reason.
    Extend {
        id: String,
        #[arg(long, conflicts_with = "to", required_unless_present = "to")]
        by: Option<String>,
        /// RFC 3339 instant, such as 2027-01-31T17:00:00Z.
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        reason: String,
    },
    RevertExtension {
        id: String,
        extension: u32,
        #[arg(long)]
        reason: String,
    },
    /// The machine's audit events.
    Audit {
        id: String,
        #[arg(long, default_value_t = 0)]
        after: u64,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Which secrets the machine touched, and when.
    AccessReport {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum GuardrailsCommand {
    /// Replace the guardrails with JSON, or @file.
    Set {
        id: String,
        guardrails: String,
    },
    Show {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum SettingsCommand {
    /// The vault-wide IP allowlist.
    IpAllowlist {
        #[command(subcommand)]
        command: AllowlistCommand,
    },
}

#[derive(Debug, Subcommand)]
enum AllowlistCommand {
    /// Replace the list; no CIDRs removes it.
    Set {
        cidrs: Vec<String>,
    },
    Show,
}

/// Sends a request, returning the JSON body or the server's error as a message.
pub(super) fn send(request: ureq::Request, body: Option<&Value>) -> Result<Value, String> {
    let response = match body {
        Some(b) => request.send_json(b.clone()),
        None => request.call(),
    };
    match response {
        Ok(r) => r.into_json().map_err(|e| format!("unreadable answer: {e}")),
        Err(ureq::Error::Status(status, r)) => {
            let v: Value = r.into_json().unwrap_or_default();
            let code = v["error"]["code"].as_str().unwrap_or("error");
            let message = v["error"]["message"].as_str().unwrap_or("");
            Err(format!("{code} (HTTP {status}): {message}"))
        }
        Err(e) => Err(format!("cannot reach the server: {e}")),
    }
}

struct Client {
    addr: String,
    token: String,
    vault: String,
}

impl Client {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.addr.trim_end_matches('/'));
        let request =
            ureq::request(method, &url).set("Authorization", &format!("Bearer {}", self.token));
        send(request, body.as_ref())
    }

    fn v(&self, rest: &str) -> String {
        format!("/v1/{}{rest}", self.vault)
    }
}

fn json_arg(text: &str) -> Result<Value, String> {
    let raw = match text.strip_prefix('@') {
        Some(path) => {
            std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?
        }
        None => text.to_owned(),
    };
    serde_json::from_str(&raw).map_err(|e| format!("invalid JSON: {e}"))
}

fn split_secret(s: &str) -> Result<(&str, &str), String> {
    s.split_once('/')
        .ok_or_else(|| format!("{s:?} is not of the form project/secret"))
}

pub(super) fn run(args: AdminArgs) -> Result<ExitCode, String> {
    let token = match args.token {
        Some(t) => t,
        None => {
            let path = args.data_dir.join("admin.token");
            std::fs::read_to_string(&path)
                .map_err(|e| {
                    format!(
                        "no --token or TEMPVAULT_TOKEN, and cannot read {}: {e}",
                        path.display()
                    )
                })?
                .trim()
                .to_owned()
        }
    };
    let client = Client {
        addr: args.addr,
        token,
        vault: args.vault,
    };
    let (value, printer) = dispatch(&client, args.command)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
    } else {
        printer(&value);
    }
    Ok(ExitCode::SUCCESS)
}

type Printer = fn(&Value);

fn dispatch(c: &Client, command: AdminCommand) -> Result<(Value, Printer), String> {
    Ok(match command {
        AdminCommand::Vault {
            command: VaultCommand::Create { name },
        } => (
            c.call("POST", "/v1/vaults", Some(json!({"name": name})))?,
            print_vault,
        ),
        AdminCommand::Project {
            command: ProjectCommand::Create { name },
        } => (
            c.call("POST", &c.v("/projects"), Some(json!({"name": name})))?,
            print_project,
        ),
        AdminCommand::Project {
            command: ProjectCommand::List,
        } => (c.call("GET", &c.v("/projects"), None)?, print_projects),
        AdminCommand::Secret {
            command:
                SecretCommand::Put {
                    secret,
                    value,
                    value_file,
                    policy,
                },
        } => {
            let (project, name) = split_secret(&secret)?;
            let value = match (value, value_file) {
                (Some(v), _) => v,
                (None, Some(path)) => std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
                (None, None) => {
                    std::io::read_to_string(std::io::stdin()).map_err(|e| e.to_string())?
                }
            };
            let mut body = json!({"value": value});
            if let Some(p) = policy {
                body["policy"] = json_arg(&p)?;
            }
            (
                c.call(
                    "PUT",
                    &c.v(&format!("/projects/{project}/secrets/{name}")),
                    Some(body),
                )?,
                print_written,
            )
        }
        AdminCommand::Machine { command } => machine(c, command)?,
        AdminCommand::Audit { after, limit } => (
            c.call(
                "GET",
                &c.v(&format!("/audit?after={after}&limit={limit}")),
                None,
            )?,
            print_audit,
        ),
        AdminCommand::Settings {
            command: SettingsCommand::IpAllowlist { command },
        } => match command {
            AllowlistCommand::Set { cidrs } => (
                c.call(
                    "PUT",
                    &c.v("/settings/ip-allowlist"),
                    Some(json!({"cidrs": cidrs})),
                )?,
                print_cidrs,
            ),
            AllowlistCommand::Show => (
                c.call("GET", &c.v("/settings/ip-allowlist"), None)?,
                print_cidrs,
            ),
        },
    })
}

fn machine(c: &Client, command: MachineCommand) -> Result<(Value, Printer), String> {
    let m = |id: &str, rest: &str| c.v(&format!("/machines/{id}{rest}"));
    Ok(match command {
        MachineCommand::CreateTemporary {
            name,
            lifetime,
            description,
            guardrails,
        } => {
            let lifetime = Lifetime::parse_compact(&lifetime).map_err(|e| e.to_string())?;
            let mut body = json!({"name": name, "lifetime": lifetime});
            if let Some(d) = description {
                body["description"] = json!(d);
            }
            if let Some(g) = guardrails {
                body["guardrails"] = json_arg(&g)?;
            }
            (
                c.call("POST", &c.v("/machines/temporary"), Some(body))?,
                print_created,
            )
        }
        MachineCommand::List { state } => {
            let q = state.map(|s| format!("?state={s}")).unwrap_or_default();
            (
                c.call("GET", &c.v(&format!("/machines{q}")), None)?,
                print_machines,
            )
        }
        MachineCommand::Show { id } => (c.call("GET", &m(&id, ""), None)?, print_machine),
        MachineCommand::Approve { id } => {
            (c.call("POST", &m(&id, "/approve"), None)?, print_machine)
        }
        MachineCommand::Disable { id, reason } => (
            c.call("POST", &m(&id, "/disable"), Some(json!({"reason": reason})))?,
            print_machine,
        ),
        MachineCommand::AddProject { id, project } => (
            c.call("PUT", &m(&id, &format!("/projects/{project}")), None)?,
            print_machine,
        ),
        MachineCommand::RemoveProject { id, project } => (
            c.call("DELETE", &m(&id, &format!("/projects/{project}")), None)?,
            print_machine,
        ),
        MachineCommand::Grant { id, secret } => {
            split_secret(&secret)?;
            (
                c.call("PUT", &m(&id, &format!("/grants/{secret}")), None)?,
                print_machine,
            )
        }
        MachineCommand::Revoke { id, secret } => {
            split_secret(&secret)?;
            (
                c.call("DELETE", &m(&id, &format!("/grants/{secret}")), None)?,
                print_machine,
            )
        }
        MachineCommand::Guardrails {
            command: GuardrailsCommand::Set { id, guardrails },
        } => (
            c.call("PUT", &m(&id, "/guardrails"), Some(json_arg(&guardrails)?))?,
            print_guardrails,
        ),
        MachineCommand::Guardrails {
            command: GuardrailsCommand::Show { id },
        } => (c.call("GET", &m(&id, ""), None)?, print_guardrails),
        MachineCommand::Extend { id, by, to, reason } => {
            let mut body = json!({"reason": reason});
            match (by, to) {
                (Some(by), _) => {
                    body["extend_by"] =
                        json!(Lifetime::parse_compact(&by).map_err(|e| e.to_string())?)
                }
                (None, Some(to)) => body["expires_at"] = json!(to),
                (None, None) => return Err("give --by or --to".into()),
            }
            (
                c.call("POST", &m(&id, "/extensions"), Some(body))?,
                print_machine,
            )
        }
        MachineCommand::RevertExtension {
            id,
            extension,
            reason,
        } => (
            c.call(
                "POST",
                &m(&id, &format!("/extensions/{extension}/revert")),
                Some(json!({"reason": reason})),
            )?,
            print_machine,
        ),
        MachineCommand::Audit { id, after, limit } => (
            c.call(
                "GET",
                &m(&id, &format!("/audit?after={after}&limit={limit}")),
                None,
            )?,
            print_audit,
        ),
        MachineCommand::AccessReport { id } => (
            c.call("GET", &m(&id, "/access-report"), None)?,
            print_report,
        ),
    })
}

// === Printers ===

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn print_vault(v: &Value) {
    println!("vault {} created", s(&v["name"]));
    println!("vault admin token (shown once): {}", s(&v["admin_token"]));
}

fn print_project(v: &Value) {
    println!("project {} created", s(&v["name"]));
}

fn print_projects(v: &Value) {
    let rows: Vec<Vec<String>> = v["projects"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| vec![s(&p["name"]), s(&p["created_at"])])
        .collect();
    table::print(&["PROJECT", "CREATED"], &rows);
}

fn print_written(v: &Value) {
    println!(
        "{}/{} is now at version {}",
        s(&v["project"]),
        s(&v["name"]),
        s(&v["version"])
    );
}

fn print_created(v: &Value) {
    let m = &v["machine"];
    table::print_pairs(&[
        ("machine", s(&m["id"])),
        ("name", s(&m["name"])),
        ("expires", s(&m["expires_at"])),
        ("bootstrap expires", s(&v["bootstrap"]["expires_at"])),
    ]);
    println!(
        "\nRun this once on the host (it works one time only):\n\n  {}\n",
        s(&v["bootstrap"]["command"])
    );
}

fn time_left(seconds: &Value) -> String {
    let Some(mut left) = seconds.as_i64() else {
        return "-".into();
    };
    if left <= 0 {
        return "none".into();
    }
    let days = left / 86_400;
    left %= 86_400;
    let (h, m) = (left / 3600, (left % 3600) / 60);
    if days > 0 {
        format!("{days}d{h}h")
    } else {
        format!("{h}h{m}m")
    }
}

fn print_machines(v: &Value) {
    let rows: Vec<Vec<String>> = v["machines"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            vec![
                s(&m["id"]),
                s(&m["name"]),
                s(&m["state"]),
                s(&m["expires_at"]),
                time_left(&m["seconds_left"]),
            ]
        })
        .collect();
    table::print(&["ID", "NAME", "STATE", "EXPIRES", "LEFT"], &rows);
}

fn print_machine(m: &Value) {
    let list = |v: &Value| {
        let items: Vec<String> = v
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| match x {
                Value::Object(o) => format!("{}/{}", s(&o["project"]), s(&o["secret"])),
                other => s(other),
            })
            .collect();
        if items.is_empty() {
            "-".into()
        } else {
            items.join(", ")
        }
    };
    table::print_pairs(&[
        ("machine", s(&m["id"])),
        ("name", s(&m["name"])),
        ("state", s(&m["state"])),
        ("created", s(&m["created_at"])),
        ("original expiry", s(&m["original_expires_at"])),
        ("expires", s(&m["expires_at"])),
        ("time left", time_left(&m["seconds_left"])),
        ("projects", list(&m["projects"])),
        ("grants", list(&m["grants"])),
        (
            "disabled",
            m["disabled"].as_object().map_or("-".into(), |d| {
                format!("{} ({})", s(&d["reason"]), s(&d["at"]))
            }),
        ),
    ]);
    let history = m["extensions"].as_array().cloned().unwrap_or_default();
    if !history.is_empty() {
        println!("\nextensions:");
        let rows: Vec<Vec<String>> = history
            .iter()
            .map(|e| {
                let reverted = e["reverted"].as_object().map_or("-".into(), |r| {
                    format!("{} ({})", s(&r["reason"]), s(&r["at"]))
                });
                vec![
                    s(&e["id"]),
                    s(&e["previous_expires_at"]),
                    s(&e["new_expires_at"]),
                    s(&e["reason"]),
                    s(&e["by"]),
                    reverted,
                ]
            })
            .collect();
        table::print(&["ID", "FROM", "TO", "REASON", "BY", "REVERTED"], &rows);
    }
}

fn print_guardrails(m: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(&m["guardrails"]).unwrap_or_default()
    );
}

fn print_audit(v: &Value) {
    let rows: Vec<Vec<String>> = v["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            vec![
                s(&e["seq"]),
                s(&e["time"]),
                s(&e["action"]),
                s(&e["outcome"]),
                s(&e["reason"]),
                s(&e["secret"]),
                s(&e["actor"]),
                s(&e["source_ip"]),
            ]
        })
        .collect();
    table::print(
        &[
            "SEQ", "TIME", "ACTION", "OUTCOME", "REASON", "SECRET", "ACTOR", "SOURCE",
        ],
        &rows,
    );
    if let Some(next) = v["next_after"].as_u64() {
        println!("(more: --after {next})");
    }
}

fn print_report(v: &Value) {
    let rows: Vec<Vec<String>> = v["secrets"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, r)| {
            vec![
                k.clone(),
                s(&r["first"]),
                s(&r["last"]),
                s(&r["count"]),
                s(&r["denials"]),
            ]
        })
        .collect();
    table::print(&["SECRET", "FIRST", "LAST", "READS", "DENIALS"], &rows);
}

fn print_cidrs(v: &Value) {
    let cidrs: Vec<String> = v["cidrs"].as_array().into_iter().flatten().map(s).collect();
    println!(
        "{}",
        if cidrs.is_empty() {
            "(no vault-wide IP allowlist)".into()
        } else {
            cidrs.join("\n")
        }
    );
}
