//! Isolation between vaults, and between the holders of different tokens.
//!
//! `denials.rs` already shows the plain cases: a machine signing `/v1/other/...`, and a
//! vault-scoped admin token sent to a handful of the other vault's routes; `story.rs` shows
//! that a spent or made-up bootstrap token gets a failing script. This file goes further:
//! every path trick a machine can sign, every admin route and every way of naming another
//! vault's objects from one's own vault, with the other vault's whole state compared before
//! and after; and bootstrap tokens used under another vault, for another machine, twice at
//! once, after they expire, or garbled.
//!
//! The two vaults are `alpha` and `alpha-b`: the second name starts with the first, so a
//! lookup by key prefix that forgot its separator would mix them up.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails by panicking; helpers outside #[test] too"
)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use common::{code, nonce, now, Machine, Server};
use ed25519_dalek::SigningKey;
use serde_json::{json, Value};

const A: &str = "alpha";
const B: &str = "alpha-b";

/// One vault with everything an attacker could aim at.
struct Tenant {
    vault: String,
    token: String,
    /// The value of `app/key` in this vault.
    value: String,
    /// Approved, member of `app`, granted `app/key`, with one extension on record.
    active: Machine,
    /// Registered, waiting for approval.
    pending: Machine,
    /// Created, its bootstrap token not used yet.
    created: String,
}

fn tenant(server: &Server, vault: &str) -> Tenant {
    let (s, body) = server.admin("POST", "/v1/vaults", Some(json!({"name": vault})));
    assert_eq!(s, 201, "{body}");
    let token = body["admin_token"].as_str().unwrap().to_owned();
    let value = format!("secret-of-{vault}");
    let admin = |method: &str, path: String, body: Option<Value>| {
        let (s, b) = server.admin_as(&token, method, &path, body);
        assert!((200..300).contains(&s), "{method} {path}: {s} {b}");
        b
    };
    for project in ["app".to_owned(), format!("only-{vault}")] {
        admin(
            "POST",
            format!("/v1/{vault}/projects"),
            Some(json!({"name": project})),
        );
    }
    admin(
        "PUT",
        format!("/v1/{vault}/projects/app/secrets/key"),
        Some(json!({"value": value})),
    );
    admin(
        "PUT",
        format!("/v1/{vault}/settings/ip-allowlist"),
        Some(json!({"cidrs": ["127.0.0.0/8", "::1/128"]})),
    );
    let active = register_in(server, &token, vault);
    let base = format!("/v1/{vault}/machines/{}", active.id);
    admin("POST", format!("{base}/approve"), None);
    admin("PUT", format!("{base}/projects/app"), None);
    admin("PUT", format!("{base}/grants/app/key"), None);
    admin(
        "POST",
        format!("{base}/extensions"),
        Some(json!({"extend_by": {"hours": 1}, "reason": "setup"})),
    );
    let pending = register_in(server, &token, vault);
    let created = create_in(server, &token, vault, json!({"hours": 8}))["machine"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    Tenant {
        vault: vault.to_owned(),
        token,
        value,
        active,
        pending,
        created,
    }
}

/// Creates a temporary machine in `vault` with `token`; returns machine and bootstrap.
fn create_in(server: &Server, token: &str, vault: &str, lifetime: Value) -> Value {
    let (s, body) = server.admin_as(
        token,
        "POST",
        &format!("/v1/{vault}/machines/temporary"),
        Some(json!({"name": "isolated", "lifetime": lifetime})),
    );
    assert_eq!(s, 201, "{body}");
    body
}

/// Creates a machine in `vault` and registers a fresh key with its bootstrap token.
fn register_in(server: &Server, token: &str, vault: &str) -> Machine {
    let created = create_in(server, token, vault, json!({"hours": 8}));
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let (s, reg) = post_key(created["bootstrap"]["url"].as_str().unwrap(), &key);
    assert_eq!(s, 200, "{reg}");
    assert_eq!(reg["machine_id"], created["machine"]["id"]);
    Machine {
        id: reg["machine_id"].as_str().unwrap().to_owned(),
        key,
        vault: vault.to_owned(),
    }
}

fn post_key(url: &str, key: &SigningKey) -> (u16, Value) {
    common::respond(ureq::post(url).send_json(json!({
        "public_key": STANDARD.encode(key.verifying_key().to_bytes())
    })))
}

fn fresh_key() -> SigningKey {
    SigningKey::generate(&mut rand::rngs::OsRng)
}

/// Sends a request byte for byte as given, on its own connection. `ureq` resolves `..`
/// segments before sending, and the point here is to send them.
fn raw_http(
    server: &Server,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> (u16, Value) {
    let addr = server.url.strip_prefix("http://").unwrap();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let body = body.unwrap_or(b"");
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, payload) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let payload = if chunked {
        dechunk(payload)
    } else {
        payload.to_owned()
    };
    let value = serde_json::from_str(&payload).unwrap_or(Value::String(payload));
    (status, value)
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

/// A request signed by `m` over exactly `target`, sent exactly as `target`.
fn signed_raw(server: &Server, m: &Machine, method: &str, target: &str) -> (u16, Value) {
    let h = m.sign(method, target, b"", &now().to_string(), &nonce());
    let headers = [
        ("X-Machine-Id", h.machine_id.as_str()),
        ("X-Timestamp", h.timestamp.as_str()),
        ("X-Nonce", h.nonce.as_str()),
        ("X-Signature", h.signature.as_str()),
    ];
    raw_http(server, method, target, &headers, None)
}

/// Every page of an audit listing, read with the operator token.
fn all_events(server: &Server, path: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let (s, page) = server.admin("GET", &format!("{path}?after={after}&limit=1000"), None);
        assert_eq!(s, 200, "{path}: {page}");
        all.extend(page["events"].as_array().cloned().unwrap_or_default());
        match page["next_after"].as_u64() {
            Some(n) => after = n,
            None => return all,
        }
    }
}

/// Drops the fields of a machine view that move with the clock.
fn settle(mut machine: Value) -> Value {
    if let Some(o) = machine.as_object_mut() {
        o.remove("seconds_left");
    }
    machine
}

/// Everything the operator can see of a vault: machines (each in full, with its audit
/// trail and access report), projects, the IP allowlist and the vault's audit log.
fn state_of(server: &Server, vault: &str) -> Value {
    let get = |path: String| {
        let (s, body) = server.admin("GET", &path, None);
        assert_eq!(s, 200, "{path}: {body}");
        body
    };
    let listed = get(format!("/v1/{vault}/machines"));
    let mut machines = serde_json::Map::new();
    for m in listed["machines"].as_array().unwrap() {
        let id = m["id"].as_str().unwrap();
        let base = format!("/v1/{vault}/machines/{id}");
        machines.insert(
            id.to_owned(),
            json!({
                "listed": settle(m.clone()),
                "shown": settle(get(base.clone())),
                "audit": all_events(server, &format!("{base}/audit")),
                "access_report": get(format!("{base}/access-report")),
            }),
        );
    }
    json!({
        "machines": machines,
        "projects": get(format!("/v1/{vault}/projects")),
        "ip_allowlist": get(format!("/v1/{vault}/settings/ip-allowlist")),
        "audit": all_events(server, &format!("/v1/{vault}/audit")),
    })
}

// === Machines ===

/// A machine of vault A signs each of these targets exactly as sent, so the signature
/// always verifies against what goes on the wire; whatever the path says, the answer is a
/// 4xx with a code, never the value of vault B's `app/key` (which has the same project and
/// name as the secret A's machine is granted). Afterwards B's whole state, audit log
/// included, is what it was: the attempts left no trace and changed nothing there.
#[test]
fn a_machine_never_reads_another_vaults_secret_whatever_path_it_signs() {
    let server = Server::start();
    let a = tenant(&server, A);
    let b = tenant(&server, B);

    // The raw client and signing work: A's machine reads A's secret, as sent and with an
    // encoded letter (the route decodes `%6B` to `k`; the signature covers the raw form).
    for target in ["/v1/alpha/secrets/app/key", "/v1/alpha/secrets/app/%6Bey"] {
        let (status, body) = signed_raw(&server, &a.active, "GET", target);
        assert_eq!(status, 200, "{target}: {body}");
        assert_eq!(body["value"], a.value.as_str(), "{target}");
    }

    let before = state_of(&server, B);
    let addr = server.url.strip_prefix("http://").unwrap().to_owned();
    let absolute = format!("http://{addr}/v1/alpha-b/secrets/app/key");
    let attempts: Vec<(String, u16, &str)> = vec![
        // Dot segments are not resolved: the route does not match.
        (
            "/v1/alpha/../alpha-b/secrets/app/key".into(),
            404,
            "not_found",
        ),
        (
            "/v1/alpha/secrets/../../alpha-b/secrets/app/key".into(),
            404,
            "not_found",
        ),
        (
            "/v1/alpha/secrets/app/key/../../../../alpha-b/secrets/app/key".into(),
            404,
            "not_found",
        ),
        ("/v1/./alpha-b/secrets/app/key".into(), 404, "not_found"),
        ("//v1/alpha-b/secrets/app/key".into(), 404, "not_found"),
        // Encoded slashes stay inside one segment: a project called `../../alpha-b/...`
        // that A's machine is no member of.
        (
            "/v1/alpha/secrets/..%2F..%2Falpha-b%2Fsecrets%2Fapp/key".into(),
            403,
            "not_project_member",
        ),
        (
            "/v1/alpha/secrets/app/..%2F..%2F..%2Falpha-b%2Fsecrets%2Fapp%2Fkey".into(),
            403,
            "secret_not_granted",
        ),
        // A vault segment that decodes to something else than `alpha`.
        (
            "/v1/alpha%2F..%2Falpha-b/secrets/app/key".into(),
            401,
            "authentication_failed",
        ),
        (
            "/v1/%61lpha-b/secrets/app/key".into(),
            401,
            "authentication_failed",
        ),
        (
            "/v1/%61%6C%70%68%61%2D%62/secrets/app/key".into(),
            401,
            "authentication_failed",
        ),
        (
            "/v1/alpha%00/secrets/app/key".into(),
            401,
            "authentication_failed",
        ),
        (
            "/v1/alpha-b%00alpha/secrets/app/key".into(),
            401,
            "authentication_failed",
        ),
        (
            "/v1/ALPHA-B/secrets/app/key".into(),
            401,
            "authentication_failed",
        ),
        // B's path with something that names A elsewhere in the request.
        (
            "/v1/alpha-b/secrets/app/key?vault=alpha".into(),
            401,
            "authentication_failed",
        ),
        (
            "/v1/alpha-b/secrets/app/key#alpha".into(),
            401,
            "authentication_failed",
        ),
        ("/v1/%61lpha-b/machine".into(), 401, "authentication_failed"),
        // The absolute form of the request target.
        (absolute, 401, "authentication_failed"),
    ];
    for (target, status, expected) in &attempts {
        let (got, body) = signed_raw(&server, &a.active, "GET", target);
        assert!(
            !body.to_string().contains(&b.value),
            "{target}: B's value leaked: {body}"
        );
        assert_eq!((got, code(&body)), (*status, *expected), "{target}: {body}");
    }
    // Signed for A's own path but sent to B's: the signature does not cover it.
    let h = a.active.sign(
        "GET",
        "/v1/alpha/secrets/app/key",
        b"",
        &now().to_string(),
        &nonce(),
    );
    let (status, body) = server.send_signed("GET", "/v1/alpha-b/secrets/app/key", &h, None);
    assert_eq!((status, code(&body)), (401, "authentication_failed"));

    assert_eq!(state_of(&server, B), before, "vault B changed");
    let b_audit = serde_json::to_string(&all_events(&server, "/v1/alpha-b/audit")).unwrap();
    assert!(!b_audit.contains(&a.active.id), "A's machine in B's log");
    // B's machine still reads B's unchanged secret.
    let (status, body) = server.signed(&b.active, "GET", "/v1/alpha-b/secrets/app/key");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["value"], b.value.as_str());
    assert_eq!(body["version"], 1);
}

// === Admin tokens ===

/// Calls on another vault's objects, each with what the vault's own token gets for it.
/// In this order every call succeeds for the owner, and each one that writes changes
/// something (the pending machine is approved, the active one loses its grant and
/// membership, and so on).
fn routes_into(t: &Tenant) -> Vec<(&'static str, String, Option<Value>, u16)> {
    let v = &t.vault;
    let active = format!("/v1/{v}/machines/{}", t.active.id);
    let pending = format!("/v1/{v}/machines/{}", t.pending.id);
    vec![
        ("GET", format!("/v1/{v}/projects"), None, 200),
        ("GET", format!("/v1/{v}/settings/ip-allowlist"), None, 200),
        ("GET", format!("/v1/{v}/machines?state=pending"), None, 200),
        ("GET", format!("{active}/audit"), None, 200),
        ("GET", format!("{active}/access-report"), None, 200),
        ("GET", format!("/v1/{v}/audit?outcome=allowed"), None, 200),
        (
            "POST",
            format!("/v1/{v}/machines/temporary"),
            Some(json!({"name": "intruder", "lifetime": {"hours": 1}})),
            201,
        ),
        ("POST", format!("{pending}/approve"), None, 200),
        ("PUT", format!("{pending}/projects/app"), None, 200),
        ("PUT", format!("{pending}/grants/app/key"), None, 200),
        ("DELETE", format!("{active}/grants/app/key"), None, 200),
        ("DELETE", format!("{active}/projects/app"), None, 200),
        (
            "PUT",
            format!("{active}/guardrails"),
            Some(json!({"ip_allowlist": ["203.0.113.0/24"]})),
            200,
        ),
        (
            "POST",
            format!("{active}/extensions"),
            Some(json!({"extend_by": {"hours": 2}, "reason": "intruder"})),
            200,
        ),
        (
            "POST",
            format!("{active}/extensions/1/revert"),
            Some(json!({"reason": "intruder"})),
            200,
        ),
        (
            "PUT",
            format!("/v1/{v}/settings/ip-allowlist"),
            Some(json!({"cidrs": ["203.0.113.0/24"]})),
            200,
        ),
        (
            "PUT",
            format!("/v1/{v}/projects/app/secrets/planted"),
            Some(json!({"value": "planted"})),
            200,
        ),
        (
            "POST",
            format!("/v1/{v}/projects"),
            Some(json!({"name": "planted"})),
            201,
        ),
        (
            "POST",
            format!("{active}/disable"),
            Some(json!({"reason": "intruder"})),
            200,
        ),
    ]
}

/// A's token names B's objects from A's own vault: every such call is a 404, because
/// objects are looked up inside the vault of the path.
fn foreign_objects_from(me: &Tenant, other: &Tenant) -> Vec<(&'static str, String, Option<Value>)> {
    let v = &me.vault;
    let theirs = format!("/v1/{v}/machines/{}", other.active.id);
    let their_pending = format!("/v1/{v}/machines/{}", other.pending.id);
    let their_created = format!("/v1/{v}/machines/{}", other.created);
    let mine = format!("/v1/{v}/machines/{}", me.active.id);
    let only_theirs = format!("only-{}", other.vault);
    vec![
        ("GET", theirs.clone(), None),
        ("GET", their_created.clone(), None),
        ("GET", format!("{theirs}/audit"), None),
        ("GET", format!("{theirs}/access-report"), None),
        ("POST", format!("{their_pending}/approve"), None),
        (
            "POST",
            format!("{theirs}/disable"),
            Some(json!({"reason": "x"})),
        ),
        ("PUT", format!("{theirs}/projects/app"), None),
        ("DELETE", format!("{theirs}/projects/app"), None),
        ("PUT", format!("{theirs}/grants/app/key"), None),
        ("DELETE", format!("{theirs}/grants/app/key"), None),
        (
            "PUT",
            format!("{theirs}/guardrails"),
            Some(json!({"ip_allowlist": ["203.0.113.0/24"]})),
        ),
        (
            "POST",
            format!("{theirs}/extensions"),
            Some(json!({"extend_by": {"hours": 2}, "reason": "x"})),
        ),
        (
            "POST",
            format!("{theirs}/extensions/1/revert"),
            Some(json!({"reason": "x"})),
        ),
        // Their project, attached to my machine or written into from my vault.
        ("PUT", format!("{mine}/projects/{only_theirs}"), None),
        ("PUT", format!("{mine}/grants/{only_theirs}/key"), None),
        (
            "PUT",
            format!("/v1/{v}/projects/{only_theirs}/secrets/key"),
            Some(json!({"value": "planted"})),
        ),
    ]
}

/// The other vault named in ways that differ from its plain name, sent byte for byte.
fn disguised_routes(me: &Tenant, other: &Tenant) -> Vec<(&'static str, String, u16, &'static str)> {
    let (m, o) = (&me.vault, &other.vault);
    let first = format!("%{:02X}", o.as_bytes()[0]);
    let encoded = format!("{first}{}", &o[1..]);
    vec![
        ("GET", format!("/v1/{encoded}/machines"), 403, "forbidden"),
        ("GET", format!("/v1/{encoded}/audit"), 403, "forbidden"),
        (
            "GET",
            format!("/v1/{m}%2F..%2F{o}/machines"),
            403,
            "forbidden",
        ),
        ("GET", format!("/v1/{m}/../{o}/machines"), 404, "not_found"),
        (
            "GET",
            format!("/v1/{m}/machines/../../{o}/machines"),
            404,
            "not_found",
        ),
        ("GET", format!("//v1/{o}/machines"), 404, "not_found"),
        (
            "GET",
            format!("/v1/{o}/machines?vault={m}"),
            403,
            "forbidden",
        ),
        (
            "GET",
            format!("/v1/{}/machines", o.to_uppercase()),
            403,
            "forbidden",
        ),
        ("GET", format!("/v1/{o}%00/machines"), 403, "forbidden"),
        (
            "PUT",
            format!("/v1/{encoded}/settings/ip-allowlist"),
            403,
            "forbidden",
        ),
        (
            "POST",
            format!("/v1/{encoded}/machines/{}/approve", other.pending.id),
            403,
            "forbidden",
        ),
    ]
}

/// A vault-scoped admin token of vault A can neither read nor change vault B, by any route
/// and however B is named: each call is refused with its status and code, and B's entire
/// state (machines with their histories, audit trails and access reports, projects, IP
/// allowlist, vault audit log) is byte for byte what it was. From A's own vault, B's
/// machines and projects do not exist. Then, as the control, B's own token makes the very
/// same calls and every one succeeds: the refused calls were well-formed and would have
/// changed B.
#[test]
fn a_vault_scoped_token_can_neither_read_nor_change_another_vault() {
    let server = Server::start();
    let a = tenant(&server, A);
    let b = tenant(&server, B);

    for (me, other) in [(&a, &b), (&b, &a)] {
        let before = state_of(&server, &other.vault);
        let my_before = settle(
            server
                .admin(
                    "GET",
                    &format!("/v1/{}/machines/{}", me.vault, me.active.id),
                    None,
                )
                .1,
        );

        for (method, path, body, _) in routes_into(other) {
            let (status, resp) = server.admin_as(&me.token, method, &path, body);
            assert_eq!(
                (status, code(&resp)),
                (403, "forbidden"),
                "{} token: {method} {path}: {resp}",
                me.vault
            );
        }
        // Creating a vault with the other vault's name: forbidden, not "already exists".
        let (status, resp) = server.admin_as(
            &me.token,
            "POST",
            "/v1/vaults",
            Some(json!({"name": other.vault})),
        );
        assert_eq!((status, code(&resp)), (403, "forbidden"), "{resp}");

        for (method, path, body) in foreign_objects_from(me, other) {
            let (status, resp) = server.admin_as(&me.token, method, &path, body);
            assert_eq!(
                (status, code(&resp)),
                (404, "not_found"),
                "{} token: {method} {path}: {resp}",
                me.vault
            );
        }

        let auth = format!("Bearer {}", me.token);
        for (method, path, status, expected) in disguised_routes(me, other) {
            let body = (method != "GET").then_some(br#"{"cidrs": ["203.0.113.0/24"]}"#.as_slice());
            let (got, resp) = raw_http(&server, method, &path, &[("Authorization", &auth)], body);
            assert_eq!(
                (got, code(&resp)),
                (status, expected),
                "{} token: {method} {path}: {resp}",
                me.vault
            );
        }

        // What A's token may see of its own vault holds nothing of B's.
        let mine = [
            format!("/v1/{}/machines", me.vault),
            format!("/v1/{}/machines?vault={}", me.vault, other.vault),
            format!("/v1/{}/projects", me.vault),
            format!("/v1/{}/audit?limit=1000", me.vault),
        ];
        for path in mine {
            let (status, resp) = server.admin_as(&me.token, "GET", &path, None);
            assert_eq!(status, 200, "{path}: {resp}");
            let text = resp.to_string();
            for foreign in [
                other.active.id.as_str(),
                other.pending.id.as_str(),
                other.created.as_str(),
                &format!("\"only-{}\"", other.vault),
                &format!("\"vault\":\"{}\"", other.vault),
            ] {
                assert!(!text.contains(foreign), "{path} shows {foreign}: {text}");
            }
        }

        assert_eq!(
            state_of(&server, &other.vault),
            before,
            "{} changed through {}'s token",
            other.vault,
            me.vault
        );
        // My own machine did not pick up the other vault's project either.
        let my_after = settle(
            server
                .admin(
                    "GET",
                    &format!("/v1/{}/machines/{}", me.vault, me.active.id),
                    None,
                )
                .1,
        );
        assert_eq!(my_after, my_before);
        let (status, body) = server.signed(
            &other.active,
            "GET",
            &format!("/v1/{}/secrets/app/key", other.vault),
        );
        assert_eq!(
            (status, body["value"].as_str()),
            (200, Some(other.value.as_str()))
        );
    }

    // The control: B's own token, the same calls, all accepted; B has changed.
    let before = state_of(&server, B);
    for (method, path, body, expected) in routes_into(&b) {
        let (status, resp) = server.admin_as(&b.token, method, &path, body);
        assert_eq!(status, expected, "owner: {method} {path}: {resp}");
    }
    let after = state_of(&server, B);
    assert_ne!(after["machines"], before["machines"]);
    assert_ne!(after["projects"], before["projects"]);
    assert_ne!(after["ip_allowlist"], before["ip_allowlist"]);
    let shown = &after["machines"][&b.pending.id]["shown"];
    assert_eq!(shown["state"], "active");
}

// === Bootstrap tokens ===

/// A bootstrap token belongs to its vault: under any other vault's URL (an existing one
/// with a name that starts the same, the built-in one, one that does not exist) both the
/// script and the registration are refused, and the refusals do not spend it; under its
/// own vault it then works once, for its own machine.
#[test]
fn a_bootstrap_token_is_refused_under_any_other_vault_and_still_works_in_its_own() {
    let server = Server::start();
    let a = tenant(&server, A);
    let _b = tenant(&server, B);
    let created = create_in(&server, &a.token, A, json!({"hours": 2}));
    let id = created["machine"]["id"].as_str().unwrap();
    let token = created["bootstrap"]["token"].as_str().unwrap();
    let url = created["bootstrap"]["url"].as_str().unwrap();
    assert!(
        url.ends_with(&format!("/v1/{A}/temp-bootstrap/{token}")),
        "{url}"
    );
    let machines_before = |vault: &str| {
        server
            .admin("GET", &format!("/v1/{vault}/machines"), None)
            .1
    };
    let (b_before, default_before) = (machines_before(B), machines_before("default"));

    let key = fresh_key();
    for vault in [B, "default", "nonexistent", "ALPHA", "%61lpha-b"] {
        let target = format!("/v1/{vault}/temp-bootstrap/{token}");
        let (status, script) = raw_http(&server, "GET", &target, &[], None);
        assert_eq!(status, 404, "{target}");
        assert!(
            script.as_str().unwrap().contains("exit 1"),
            "{target}: {script}"
        );
        let body =
            json!({"public_key": STANDARD.encode(key.verifying_key().to_bytes())}).to_string();
        let (status, resp) = raw_http(&server, "POST", &target, &[], Some(body.as_bytes()));
        assert_eq!(
            (status, code(&resp)),
            (404, "bootstrap_token_invalid"),
            "{target}: {resp}"
        );
    }
    assert_eq!(machines_before(B), b_before);
    assert_eq!(machines_before("default"), default_before);
    let (_, shown) = server.admin("GET", &format!("/v1/{A}/machines/{id}"), None);
    assert_eq!(shown["state"], "created");
    assert!(shown["public_key"].is_null(), "{shown}");

    // Its own vault: the script is served and the key registers this machine.
    let (status, script) = common::respond(ureq::get(url).call());
    assert_eq!(status, 200);
    assert!(script.as_str().unwrap().contains("TV_VAULT='alpha'"));
    let (status, reg) = post_key(url, &key);
    assert_eq!(status, 200, "{reg}");
    assert_eq!(
        reg,
        json!({"machine_id": id, "vault": A, "state": "pending"})
    );
}

/// The token decides which machine is registered; nothing the caller sends can point it
/// at another one. Naming another machine in the body is refused (and spends nothing);
/// X's token registers X, and machine Y, created alongside, is left untouched until its
/// own token is used. A token of a machine disabled before it registered is refused.
#[test]
fn a_bootstrap_token_registers_only_its_own_machine() {
    let server = Server::start();
    let a = tenant(&server, A);
    let x = create_in(&server, &a.token, A, json!({"hours": 2}));
    let y = create_in(&server, &a.token, A, json!({"hours": 2}));
    let x_id = x["machine"]["id"].as_str().unwrap();
    let y_id = y["machine"]["id"].as_str().unwrap();
    let x_url = x["bootstrap"]["url"].as_str().unwrap();
    let show = |id: &str| {
        server
            .admin("GET", &format!("/v1/{A}/machines/{id}"), None)
            .1
    };

    let key_x = fresh_key();
    let key_b64 = STANDARD.encode(key_x.verifying_key().to_bytes());
    for body in [
        json!({"public_key": key_b64, "machine_id": y_id}),
        json!({"public_key": key_b64, "machine": {"id": y_id}}),
    ] {
        let (status, resp) = common::respond(ureq::post(x_url).send_json(body.clone()));
        assert_eq!(
            (status, code(&resp)),
            (400, "invalid_json"),
            "{body}: {resp}"
        );
    }
    // A query naming Y is no part of the registration: X's token registers X.
    let (status, reg) = common::respond(
        ureq::post(&format!("{x_url}?machine_id={y_id}")).send_json(json!({"public_key": key_b64})),
    );
    assert_eq!(status, 200, "{reg}");
    assert_eq!(reg["machine_id"], x_id);
    assert_eq!(show(x_id)["public_key"], key_b64.as_str());
    let y_shown = show(y_id);
    assert_eq!(y_shown["state"], "created");
    assert!(y_shown["public_key"].is_null(), "{y_shown}");

    // Y's token, used now, registers Y with its own key; X keeps its key.
    let key_y = fresh_key();
    let (status, reg) = post_key(y["bootstrap"]["url"].as_str().unwrap(), &key_y);
    assert_eq!(status, 200, "{reg}");
    assert_eq!(reg["machine_id"], y_id);
    assert_eq!(
        show(y_id)["public_key"],
        STANDARD.encode(key_y.verifying_key().to_bytes()).as_str()
    );
    assert_eq!(show(x_id)["public_key"], key_b64.as_str());

    // Disabled before it ever registered: its token no longer works.
    let z = create_in(&server, &a.token, A, json!({"hours": 2}));
    let z_id = z["machine"]["id"].as_str().unwrap();
    let (status, _) = server.admin_as(
        &a.token,
        "POST",
        &format!("/v1/{A}/machines/{z_id}/disable"),
        Some(json!({"reason": "not needed"})),
    );
    assert_eq!(status, 200);
    let (status, resp) = post_key(z["bootstrap"]["url"].as_str().unwrap(), &fresh_key());
    assert_eq!(
        (status, code(&resp)),
        (404, "bootstrap_token_invalid"),
        "{resp}"
    );
    assert!(show(z_id)["public_key"].is_null());
}

/// Once a token has registered a key it can never replace it: not right after, not under
/// another vault, not after the machine is approved, and not by racing the first use.
/// The registered key keeps working and a key offered afterwards never does.
#[test]
fn a_used_bootstrap_token_can_never_replace_the_registered_key() {
    let server = Server::start();
    let a = tenant(&server, A);
    let created = create_in(&server, &a.token, A, json!({"hours": 2}));
    let id = created["machine"]["id"].as_str().unwrap().to_owned();
    let url = created["bootstrap"]["url"].as_str().unwrap().to_owned();
    let token = created["bootstrap"]["token"].as_str().unwrap();
    let owner = fresh_key();
    assert_eq!(post_key(&url, &owner).0, 200);

    let intruder = fresh_key();
    let b_url = url.replace(&format!("/v1/{A}/"), &format!("/v1/{B}/"));
    for u in [&url, &b_url] {
        let (status, resp) = post_key(u, &intruder);
        assert_eq!(
            (status, code(&resp)),
            (404, "bootstrap_token_invalid"),
            "{u}"
        );
    }
    let base = format!("/v1/{A}/machines/{id}");
    for step in ["approve", "projects/app", "grants/app/key"] {
        let method = if step == "approve" { "POST" } else { "PUT" };
        let (s, body) = server.admin_as(&a.token, method, &format!("{base}/{step}"), None);
        assert_eq!(s, 200, "{step}: {body}");
    }
    let (status, resp) = post_key(&url, &intruder);
    assert_eq!(
        (status, code(&resp)),
        (404, "bootstrap_token_invalid"),
        "{resp}"
    );
    let (status, script) = raw_http(
        &server,
        "GET",
        &format!("/v1/{A}/temp-bootstrap/{token}"),
        &[],
        None,
    );
    assert_eq!(status, 404);
    assert!(script.as_str().unwrap().contains("exit 1"));

    let target = format!("/v1/{A}/secrets/app/key");
    let as_owner = Machine {
        id: id.clone(),
        key: owner.clone(),
        vault: A.into(),
    };
    let as_intruder = Machine {
        id: id.clone(),
        key: intruder,
        vault: A.into(),
    };
    let (status, body) = server.signed(&as_owner, "GET", &target);
    assert_eq!(
        (status, body["value"].as_str()),
        (200, Some(a.value.as_str()))
    );
    let (status, body) = server.signed(&as_intruder, "GET", &target);
    assert_eq!((status, code(&body)), (401, "authentication_failed"));
    let registered = all_events(&server, &format!("{base}/audit"))
        .iter()
        .filter(|e| e["action"] == "machine.registered")
        .count();
    assert_eq!(registered, 1);

    // A fresh token raced by 12 hosts at once: exactly one key is registered, and it is
    // the key of the one host that was told so.
    let created = create_in(&server, &a.token, A, json!({"hours": 2}));
    let id = created["machine"]["id"].as_str().unwrap().to_owned();
    let url = created["bootstrap"]["url"].as_str().unwrap().to_owned();
    let keys: Vec<SigningKey> = (0..12).map(|_| fresh_key()).collect();
    let barrier = std::sync::Barrier::new(keys.len());
    let answers: Vec<(u16, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = keys
            .iter()
            .map(|k| {
                let (url, barrier) = (&url, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    post_key(url, k)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners: Vec<usize> = (0..answers.len())
        .filter(|&i| answers[i].0 == 200)
        .collect();
    assert_eq!(winners.len(), 1, "{answers:?}");
    for (i, (status, body)) in answers.iter().enumerate() {
        if i != winners[0] {
            assert_eq!(
                (*status, code(body)),
                (404, "bootstrap_token_invalid"),
                "{body}"
            );
        }
    }
    let (_, shown) = server.admin("GET", &format!("/v1/{A}/machines/{id}"), None);
    assert_eq!(
        shown["public_key"],
        STANDARD
            .encode(keys[winners[0]].verifying_key().to_bytes())
            .as_str()
    );
    let registered = all_events(&server, &format!("/v1/{A}/machines/{id}/audit"))
        .iter()
        .filter(|e| e["action"] == "machine.registered")
        .count();
    assert_eq!(registered, 1);
}

/// Garbled tokens (one character changed, one short, one long, a character outside the
/// alphabet, the case flipped, the token twice) and an expired token are all refused, for
/// the script and for registration, with the same answer as an unknown token; none of the
/// garbled attempts spends the real token, which works afterwards.
#[test]
fn expired_and_garbled_bootstrap_tokens_are_refused() {
    let server = Server::start();
    let a = tenant(&server, A);
    let created = create_in(&server, &a.token, A, json!({"hours": 2}));
    let token = created["bootstrap"]["token"].as_str().unwrap().to_owned();
    let url = created["bootstrap"]["url"].as_str().unwrap().to_owned();
    let flip = |c: char| if c == 'A' { 'B' } else { 'A' };
    let last = token.chars().last().unwrap();
    let garbled = [
        format!("{}{}", &token[..42], flip(last)),
        format!(
            "{}{}{}",
            flip(token.chars().next().unwrap()),
            &token[1..21],
            &token[21..]
        ),
        token[..42].to_owned(),
        format!("{token}A"),
        format!("{}.{}", &token[..21], &token[22..]),
        token
            .chars()
            .map(|c| {
                if c.is_ascii_lowercase() {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect(),
        format!("{token}{token}"),
        "A".repeat(43),
    ];
    let key = fresh_key();
    for g in &garbled {
        assert_ne!(g, &token);
        let target = format!("/v1/{A}/temp-bootstrap/{g}");
        let (status, script) = raw_http(&server, "GET", &target, &[], None);
        assert_eq!(status, 404, "{g}");
        assert!(script.as_str().unwrap().contains("exit 1"), "{g}");
        let body =
            json!({"public_key": STANDARD.encode(key.verifying_key().to_bytes())}).to_string();
        let (status, resp) = raw_http(&server, "POST", &target, &[], Some(body.as_bytes()));
        assert_eq!(
            (status, code(&resp)),
            (404, "bootstrap_token_invalid"),
            "{g}: {resp}"
        );
    }
    let (status, reg) = post_key(&url, &key);
    assert_eq!(
        status, 200,
        "the real token was spent by a garbled one: {reg}"
    );

    // A token whose machine (and so the token) has run out of time.
    let short = create_in(&server, &a.token, A, json!({"seconds": 2}));
    let expires: chrono::DateTime<chrono::Utc> = short["bootstrap"]["expires_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    while chrono::Utc::now() <= expires {
        std::thread::sleep(Duration::from_millis(50));
    }
    let short_url = short["bootstrap"]["url"].as_str().unwrap();
    let (status, resp) = post_key(short_url, &fresh_key());
    assert_eq!(
        (status, code(&resp)),
        (404, "bootstrap_token_invalid"),
        "{resp}"
    );
    let id = short["machine"]["id"].as_str().unwrap();
    let (_, shown) = server.admin("GET", &format!("/v1/{A}/machines/{id}"), None);
    assert!(shown["public_key"].is_null(), "{shown}");
    assert_eq!(shown["state"], "expired");
}
