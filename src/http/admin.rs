//! Admin calls, authenticated by bearer token and confined to the token's scope.

use std::collections::BTreeMap;
use std::future::{ready, Ready};
use std::marker::PhantomData;

use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};

use super::errors::ApiError;
use super::request_meta;
use crate::audit::{AuditQuery, Filter, NewEvent, Outcome, Page};
use crate::bootstrap::{self, BootstrapRecord};
use crate::domain::{Lifetime, MachineId, ProjectName, SecretName, VaultName};
use crate::engine::Engine;
use crate::guardrails::{GuardrailSpec, Guardrails};
use crate::machines::{Command, Grant, MachineRecord, MachineState};
use crate::tokens::{self, Admin, Scope};
use crate::vaults::IpAllowlistSetting;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/vaults", web::post().to(create_vault))
        .route("/v1/{vault}/projects", web::post().to(create_project))
        .route("/v1/{vault}/projects", web::get().to(list_projects))
        .route(
            "/v1/{vault}/projects/{project}/secrets/{name}",
            web::put().to(put_secret),
        )
        .route(
            "/v1/{vault}/machines/temporary",
            web::post().to(create_temporary),
        )
        .route("/v1/{vault}/machines", web::get().to(list_machines))
        .route("/v1/{vault}/machines/{id}", web::get().to(show_machine))
        .route("/v1/{vault}/machines/{id}/approve", web::post().to(approve))
        .route("/v1/{vault}/machines/{id}/disable", web::post().to(disable))
        .route(
            "/v1/{vault}/machines/{id}/projects/{project}",
            web::put().to(add_member),
        )
        .route(
            "/v1/{vault}/machines/{id}/projects/{project}",
            web::delete().to(remove_member),
        )
        .route(
            "/v1/{vault}/machines/{id}/grants/{project}/{secret}",
            web::put().to(grant),
        )
        .route(
            "/v1/{vault}/machines/{id}/grants/{project}/{secret}",
            web::delete().to(revoke),
        )
        .route(
            "/v1/{vault}/machines/{id}/guardrails",
            web::put().to(set_guardrails),
        )
        .route(
            "/v1/{vault}/machines/{id}/extensions",
            web::post().to(extend),
        )
        .route(
            "/v1/{vault}/machines/{id}/extensions/{extension}/revert",
            web::post().to(revert),
        )
        .route(
            "/v1/{vault}/machines/{id}/audit",
            web::get().to(machine_audit),
        )
        .route(
            "/v1/{vault}/machines/{id}/access-report",
            web::get().to(access_report),
        )
        .route("/v1/{vault}/audit", web::get().to(vault_audit))
        .route(
            "/v1/{vault}/settings/ip-allowlist",
            web::put().to(set_ip_allowlist),
        )
        .route(
            "/v1/{vault}/settings/ip-allowlist",
            web::get().to(get_ip_allowlist),
        );
}

// === Authentication and scope ===

/// An admin request whose bearer token checked out.
#[derive(Debug)]
struct AdminAuth(Admin);

impl FromRequest for AdminAuth {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        ready(authenticate(req))
    }
}

fn authenticate(req: &HttpRequest) -> Result<AdminAuth, ApiError> {
    let unauthorized = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or invalid admin bearer token",
        )
    };
    let engine = req
        .app_data::<web::Data<Engine>>()
        .ok_or_else(|| ApiError::internal(&"engine missing from app data"))?;
    let mut values = req.headers().get_all("authorization");
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(unauthorized());
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(unauthorized)?;
    tokens::authenticate(&engine.store, token.trim())?
        .map(AdminAuth)
        .ok_or_else(unauthorized)
}

/// The vault named in the path, if this token may act on it and it exists. The scope is
/// checked before existence, so a vault-scoped token learns nothing about other vaults.
fn vault_access(admin: &Admin, raw: &str, engine: &Engine) -> Result<VaultName, ApiError> {
    let forbidden = || {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this token may not act on that vault",
        )
    };
    if let Scope::Vault { vault } = &admin.scope {
        if vault.as_str() != raw {
            return Err(forbidden());
        }
    }
    let vault = VaultName::parse(raw).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if !admin.scope.allows(&vault) {
        return Err(forbidden());
    }
    if !engine.vaults.exists(&vault)? {
        return Err(ApiError::not_found(format!("vault {vault} does not exist")));
    }
    Ok(vault)
}

fn machine_in(engine: &Engine, vault: &VaultName, raw_id: &str) -> Result<MachineRecord, ApiError> {
    let id = MachineId::parse(raw_id).map_err(|e| ApiError::bad_request(e.to_string()))?;
    engine
        .machines
        .record(vault, id)?
        .ok_or_else(|| ApiError::not_found(format!("machine {id} does not exist in this vault")))
}

fn parse<T>(r: Result<T, impl std::fmt::Display>) -> Result<T, ApiError> {
    r.map_err(|e| ApiError::bad_request(e.to_string()))
}

/// Runs blocking store work off the request worker.
async fn blocking<T, E>(f: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, ApiError>
where
    T: Send + 'static,
    E: Into<ApiError> + Send + 'static,
{
    web::block(f)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .map_err(Into::into)
}

/// The audit event of an admin change.
#[expect(clippy::too_many_arguments, reason = "one field each of the event")]
fn change_event(
    engine: &Engine,
    req: &HttpRequest,
    admin: &Admin,
    vault: &VaultName,
    machine: Option<MachineId>,
    action: &'static str,
    secret: Option<String>,
    detail: Option<Value>,
) -> NewEvent {
    let meta = request_meta(req, engine);
    let mut event = engine.event(
        &meta,
        vault,
        machine,
        admin.actor(),
        action,
        secret,
        Outcome::Ok,
        None,
        None,
        Utc::now(),
    );
    event.detail = detail;
    event
}

fn machine_view(record: &MachineRecord) -> Value {
    let now = Utc::now();
    let mut v = serde_json::to_value(record).unwrap_or_default();
    let expires_at = record.expires_at();
    v["stored_state"] = json!(record.state);
    v["state"] = json!(record.state_at(now));
    v["expires_at"] = json!(expires_at);
    v["seconds_left"] = json!(expires_at.map(|at| (at - now).num_seconds().max(0)));
    v
}

/// A value that may only be written as a JSON object. serde would otherwise also read a
/// struct from an array of its fields in order, so that `[]` passed as guardrails without a
/// single rule and `["x"]` as `{"name": "x"}`.
#[derive(Debug)]
struct Object<T>(T);

impl<T> std::ops::Deref for Object<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct OnlyMaps<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for OnlyMaps<T> {
            type Value = T;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }

        d.deserialize_map(OnlyMaps(PhantomData)).map(Object)
    }
}

fn object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Object::deserialize(d).map(|o| o.0)
}

fn optional_object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    Option::<Object<T>>::deserialize(d).map(|o| o.map(|o| o.0))
}

// === Vaults, projects, secrets ===

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NameBody {
    name: String,
}

async fn create_vault(
    req: HttpRequest,
    AdminAuth(admin): AdminAuth,
    body: web::Json<Object<NameBody>>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    if admin.scope != Scope::Operator {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only an operator token may create vaults",
        ));
    }
    let name = parse(VaultName::parse(&body.name))?;
    let event = change_event(
        &engine,
        &req,
        &admin,
        &name,
        None,
        "vault.created",
        None,
        None,
    );
    let audit = Some((event, engine.audit.clone()));
    let e = engine.clone().into_inner();
    // The vault and its event are one write; the vault's first token is issued after.
    let (record, token) = blocking(move || {
        let record = e.vaults.create(name, audit)?;
        let token = tokens::issue(
            &e.store,
            Scope::Vault {
                vault: record.name.clone(),
            },
        )?;
        Ok::<_, ApiError>((record, token))
    })
    .await?;
    Ok(HttpResponse::Created().json(json!({
        "name": record.name,
        "created_at": record.created_at,
        "admin_token": token.expose_secret(),
    })))
}

async fn create_project(
    req: HttpRequest,
    AdminAuth(admin): AdminAuth,
    vault: web::Path<String>,
    body: web::Json<Object<NameBody>>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    let vault = vault_access(&admin, &vault, &engine)?;
    let name = parse(ProjectName::parse(&body.name))?;
    let detail = json!({ "project": name });
    let event = change_event(
        &engine,
        &req,
        &admin,
        &vault,
        None,
        "project.created",
        None,
        Some(detail),
    );
    let audit = Some((event, engine.audit.clone()));
    let (e, v) = (engine.clone().into_inner(), vault.clone());
    let record = blocking(move || e.vaults.create_project(&v, name, audit)).await?;
    Ok(HttpResponse::Created().json(record))
}

async fn list_projects(
    AdminAuth(admin): AdminAuth,
    vault: web::Path<String>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    let vault = vault_access(&admin, &vault, &engine)?;
    Ok(HttpResponse::Ok().json(json!({"projects": engine.vaults.projects(&vault)?})))
}

/// No `Debug`: the value must never reach a log line.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretBody {
    value: String,
    #[serde(default, deserialize_with = "optional_object")]
    policy: Option<GuardrailSpec>,
}

async fn put_secret(
    req: HttpRequest,
    AdminAuth(admin): AdminAuth,
    path: web::Path<(String, String, String)>,
    body: web::Json<Object<SecretBody>>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    let (vault, project, name) = path.into_inner();
    let vault = vault_access(&admin, &vault, &engine)?;
    let project = parse(ProjectName::parse(&project))?;
    let name = parse(SecretName::parse(&name))?;
    let SecretBody { value, policy } = body.into_inner().0;
    let value = secrecy::SecretBox::new(Box::new(value.into_bytes()));
    let max = engine.config.limits.max_secret_bytes;
    let (e, v, p, n, by) = (
        engine.clone().into_inner(),
        vault.clone(),
        project.clone(),
        name.clone(),
        admin.actor(),
    );
    let secret = format!("{project}/{name}");
    // The version is known only once written; put_secret sets it as the event's detail.
    let event = change_event(
        &engine,
        &req,
        &admin,
        &vault,
        None,
        "secret.written",
        Some(secret),
        None,
    );
    let audit = Some((event, engine.audit.clone()));
    let version = blocking(move || {
        e.vaults
            .put_secret(&v, &p, &n, value.expose_secret(), policy, by, max, audit)
    })
    .await?;
    Ok(HttpResponse::Ok().json(json!({"project": project, "name": name, "version": version})))
}

// === Machines ===

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTemporary {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(deserialize_with = "object")]
    lifetime: Lifetime,
    #[serde(default, deserialize_with = "optional_object")]
    guardrails: Option<GuardrailSpec>,
}

#[derive(Debug, Serialize)]
struct BootstrapView {
    token: String,
    url: String,
    command: String,
    expires_at: DateTime<Utc>,
}

fn check_text(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    let len = value.chars().count();
    if value.trim().is_empty() || len > max {
        return Err(ApiError::bad_request(format!(
            "{field} must be 1 to {max} characters"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(())
}

async fn create_temporary(
    req: HttpRequest,
    AdminAuth(admin): AdminAuth,
    vault: web::Path<String>,
    body: web::Json<Object<CreateTemporary>>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    let vault = vault_access(&admin, &vault, &engine)?;
    let body = body.into_inner().0;
    check_text("name", &body.name, 100)?;
    if let Some(d) = &body.description {
        check_text("description", d, 1000)?;
    }
    let guardrails = body.guardrails.unwrap_or_default();
    Guardrails::compile(&guardrails).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_guardrails",
            format!("guardrails: {e}"),
        )
    })?;
    let now = Utc::now();
    let expires_at = body
        .lifetime
        .expiry_from(now, engine.config.lifecycle.min_lifetime)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_lifetime", e.to_string()))?;

    let record = MachineRecord {
        id: MachineId::random(),
        vault: vault.clone(),
        name: body.name,
        description: body.description,
        temporary: true,
        state: MachineState::Created,
        created_at: now,
        created_by: admin.actor(),
        lifetime: Some(body.lifetime),
        original_expires_at: Some(expires_at),
        extensions: Vec::new(),
        public_key: None,
        registered_at: None,
        approved_at: None,
        projects: Default::default(),
        grants: Default::default(),
        guardrails,
        disabled: None,
        expired_at: None,
    };
    let token = bootstrap::new_token();
    let token_record = BootstrapRecord {
        vault: vault.clone(),
        machine_id: record.id,
        expires_at: (now + bootstrap::TOKEN_LIFETIME).min(expires_at),
        used_at: None,
    };
    let (url, command) = bootstrap::command(&engine.public_url, &vault, &token.token);
    let view = BootstrapView {
        token: token.token,
        url,
        command,
        expires_at: token_record.expires_at,
    };

    let detail =
        json!({"name": record.name, "lifetime": record.lifetime, "expires_at": expires_at});
    let event = change_event(
        &engine,
        &req,
        &admin,
        &vault,
        Some(record.id),
        "machine.created",
        None,
        Some(detail),
    );
    let audit = Some((event, engine.audit.clone()));
    let (e, r) = (engine.clone().into_inner(), record.clone());
    blocking(move || e.machines.create(r, &token.key, &token_record, audit)).await?;
    tracing::info!(machine.id = %record.id, "temporary machine created");
    Ok(HttpResponse::Created().json(json!({"machine": machine_view(&record), "bootstrap": view})))
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    #[serde(default)]
    state: Option<String>,
}

async fn list_machines(
    AdminAuth(admin): AdminAuth,
    vault: web::Path<String>,
    query: web::Query<ListQuery>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    let vault = vault_access(&admin, &vault, &engine)?;
    let state = match query.state.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(MachineState::parse(s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "state {s:?} is not one of created, pending, active, disabled, expired"
            ))
        })?),
    };
    let machines: Vec<Value> = engine
        .machines
        .list(&vault, state)?
        .iter()
        .map(machine_view)
        .collect();
    Ok(HttpResponse::Ok().json(json!({"machines": machines})))
}

async fn show_machine(
    AdminAuth(admin): AdminAuth,
    path: web::Path<(String, String)>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    let (vault, id) = path.into_inner();
    let vault = vault_access(&admin, &vault, &engine)?;
    Ok(HttpResponse::Ok().json(machine_view(&machine_in(&engine, &vault, &id)?)))
}

/// Sends a command to a machine of this vault, audits it and answers with the machine.
#[expect(
    clippy::too_many_arguments,
    reason = "one per part of an audited change"
)]
async fn change(
    req: &HttpRequest,
    admin: &Admin,
    engine: &Engine,
    vault: &VaultName,
    raw_id: &str,
    cmd: Command,
    action: &'static str,
    secret: Option<String>,
    detail: Option<Value>,
) -> Result<HttpResponse, ApiError> {
    let id = machine_in(engine, vault, raw_id)?.id;
    let event = change_event(engine, req, admin, vault, Some(id), action, secret, detail);
    let record = engine
        .machines
        .command_audited(id, cmd, event, engine.audit.clone())
        .await?;
    Ok(HttpResponse::Ok().json(machine_view(&record)))
}

async fn approve(
    req: HttpRequest,
    AdminAuth(admin): AdminAuth,
    path: web::Path<(String, String)>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    let (vault, id) = path.into_inner();
    let vault = vault_access(&admin, &vault, &engine)?;
    let cmd = Command::Approve { now: Utc::now() };
    change(
        &req,
        &admin,
        &engine,
        &vault,
        &id,
        cmd,
        "machine.approved",
        None,
        None,
    )
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    reason: String,
}

async fn disable(
    req: HttpRequest,
    AdminAuth(admin): AdminAuth,
    path: web::Path<(String, String)>,
    body: web::Json<Object<ReasonBody>>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    let (vault, id) = path.into_inner();
    let vault = vault_access(&admin, &vault, &engine)?;
    check_text("reason", &body.reason, 500)?;
    let detail = json!({"reason": body.reason});
    let cmd = Command::Disable {
        reason: body.into_inner().0.reason,
        by: admin.actor(),
        now: Utc::now(),
    };
    change(
        &req,
        &admin,
        &engine,
        &vault,
        &id,
        cmd,
        "machine.disabled",
        None,
        Some(detail),
    )
    .await
}

async fn membership(
    req: HttpRequest,
    admin: Admin,
    path: (String, String, String),
    engine: web::Data<Engine>,
    member: bool,
) -> Result<HttpResponse, ApiError> {
    let (vault, id, project) = path;
    let vault = vault_access(&admin, &vault, &engine)?;
    let project = parse(ProjectName::parse(&project))?;
    if member && !engine.vaults.project_exists(&vault, &project)? {
        return Err(ApiError::not_found(format!(
            "project {project} does not exist"
        )));
    }
    let action = if member {
        "machine.project_added"
    } else {
        "machine.project_removed"
    };
    let detail = json!({"project": project});
    let cmd = Command::SetMember { project, member };
    change(
        &req,
        &admin,
        &engine,
        &vault,
        &id,
        cmd,
        action,
        None,
        Some(detail),
    )
    .await
}

async fn add_member(
    req: HttpRequest,
    AdminAuth(admin): AdminAuth,
    path: web::Path<(String, String, String)>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    membership(req, admin, path.into_inner(), engine, true).await
}

async fn remove_member(
    req: HttpRequest,
    AdminAuth(admin): AdminAuth,
    path: web::Path<(String, String, String)>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    membership(req, admin, path.into_inner(), engine, false).await
}

async fn set_grant(
    req: HttpRequest,
    admin: Admin,
    path: (String, String, String, String),
    engine: web::Data<Engine>,
    granted: bool,
) -> Result<HttpResponse, ApiError> {
    let (vault, id, project, secret) = path;
    let vault = vault_access(&admin, &vault, &engine)?;
    let grant = Grant {
        project: parse(ProjectName::parse(&project))?,
        secret: parse(SecretName::parse(&secret))?,
    };
    if granted && !engine.vaults.project_exists(&vault, &grant.project)? {
        return Err(ApiError::not_found(format!(
            "project {} does not exist",
            grant.project
        )));
    }
    let action = if granted {
        "machine.granted"
    } else {
        "machine.revoked"
    };
    let secret = Some(format!("{}/{}", grant.project, grant.secret));
    let cmd = Command::SetGrant { grant, granted };
    change(
        &req, &admin, &engine, &vault, &id, cmd, action, secret, None,
    )
    .await
}

async fn grant(
    req: HttpRequest,
    AdminAuth(admin): AdminAuth,
    path: web::Path<(String, String, String, String)>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    set_grant(req, admin, path.into_inner(), engine, true).await
}

async fn revoke(
    req: HttpRequest,
    AdminAuth(admin): AdminAuth,
    path: web::Path<(String, String, String, String)>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    set_grant(req, admin, path.into_inner(), engine, false).await
}

async fn set_guardrails(
    req: HttpRequest,
    AdminAuth(admin): AdminAuth,
    path: web::Path<(String, String)>,
    body: web::Json<Object<GuardrailSpec>>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    let (vault, id) = path.into_inner();
    let vault = vault_access(&admin, &vault, &engine)?;
    let spec = body.into_inner().0;
    Guardrails::compile(&spec).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_guardrails",
            format!("guardrails: {e}"),
        )
    })?;
    let detail = json!({"guardrails": spec});
    let cmd = Command::SetGuardrails { spec };
    change(
        &req,
        &admin,
        &engine,
        &vault,
        &id,
        cmd,
        "machine.guardrails_set",
        None,
        Some(detail),
    )
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExtendBody {
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "optional_object")]
    extend_by: Option<Lifetime>,
    reason: String,
}

async fn extend(
    req: HttpRequest,
    AdminAuth(admin): AdminAuth,
    path: web::Path<(String, String)>,
    body: web::Json<Object<ExtendBody>>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    let (vault, id) = path.into_inner();
    let vault = vault_access(&admin, &vault, &engine)?;
    let body = body.into_inner().0;
    check_text("reason", &body.reason, 500)?;
    let machine = machine_in(&engine, &vault, &id)?;
    let current = machine.expires_at().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "not_temporary",
            "machine has no expiry to extend",
        )
    })?;
    let to = match (body.expires_at, body.extend_by) {
        (Some(at), None) => at,
        (None, Some(by)) if by != Lifetime::default() => by.after(current).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_expiry",
                "extend_by is too large",
            )
        })?,
        (None, Some(_)) => return Err(ApiError::bad_request("extend_by must not be zero")),
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of expires_at and extend_by",
            ))
        }
    };
    let detail =
        json!({"reason": body.reason, "previous_expires_at": current, "new_expires_at": to});
    let cmd = Command::Extend {
        to,
        reason: body.reason,
        by: admin.actor(),
        now: Utc::now(),
    };
    change(
        &req,
        &admin,
        &engine,
        &vault,
        &id,
        cmd,
        "machine.extended",
        None,
        Some(detail),
    )
    .await
}

async fn revert(
    req: HttpRequest,
    AdminAuth(admin): AdminAuth,
    path: web::Path<(String, String, u32)>,
    body: web::Json<Object<ReasonBody>>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    let (vault, id, extension) = path.into_inner();
    let vault = vault_access(&admin, &vault, &engine)?;
    check_text("reason", &body.reason, 500)?;
    let detail = json!({"extension": extension, "reason": body.reason});
    let cmd = Command::Revert {
        extension,
        reason: body.into_inner().0.reason,
        by: admin.actor(),
        now: Utc::now(),
    };
    change(
        &req,
        &admin,
        &engine,
        &vault,
        &id,
        cmd,
        "machine.extension_reverted",
        None,
        Some(detail),
    )
    .await
}

// === Audit ===

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    #[serde(default)]
    after: u64,
    #[serde(default = "default_limit")]
    limit: usize,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    outcome: Option<Outcome>,
    #[serde(default)]
    since: Option<DateTime<Utc>>,
    #[serde(default)]
    until: Option<DateTime<Utc>>,
    /// `json` (default) or `jsonl`: one event per line, for export.
    #[serde(default)]
    format: Option<String>,
}

fn default_limit() -> usize {
    100
}

impl PageQuery {
    fn query(&self) -> Result<AuditQuery, ApiError> {
        if !(1..=crate::audit::MAX_LIMIT).contains(&self.limit) {
            return Err(ApiError::bad_request(format!(
                "limit must be 1 to {}",
                crate::audit::MAX_LIMIT
            )));
        }
        Ok(AuditQuery {
            after: self.after,
            limit: self.limit,
            filter: Filter {
                action: self.action.clone(),
                outcome: self.outcome,
                since: self.since,
                until: self.until,
            },
        })
    }

    /// Renders a page as JSON, or as JSON Lines with the cursor in `X-Next-After`.
    fn respond(&self, page: Page) -> Result<HttpResponse, ApiError> {
        match self.format.as_deref() {
            None | Some("json") => Ok(HttpResponse::Ok().json(page)),
            Some("jsonl") => {
                let mut body = String::new();
                for e in &page.events {
                    body.push_str(&serde_json::to_string(e).unwrap_or_default());
                    body.push('\n');
                }
                let mut resp = HttpResponse::Ok();
                resp.content_type("application/jsonl");
                if let Some(next) = page.next_after {
                    resp.insert_header(("x-next-after", next.to_string()));
                }
                Ok(resp.body(body))
            }
            Some(other) => Err(ApiError::bad_request(format!(
                "format {other:?} is not json or jsonl"
            ))),
        }
    }
}

async fn machine_audit(
    AdminAuth(admin): AdminAuth,
    path: web::Path<(String, String)>,
    query: web::Query<PageQuery>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    let (vault, id) = path.into_inner();
    let vault = vault_access(&admin, &vault, &engine)?;
    let machine = machine_in(&engine, &vault, &id)?;
    query.respond(query.query()?.machine(&engine.store, machine.id)?)
}

async fn vault_audit(
    AdminAuth(admin): AdminAuth,
    vault: web::Path<String>,
    query: web::Query<PageQuery>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    let vault = vault_access(&admin, &vault, &engine)?;
    query.respond(query.query()?.vault(&engine.store, &vault)?)
}

#[derive(Debug, Default, Serialize)]
struct SecretAccess {
    first: Option<DateTime<Utc>>,
    last: Option<DateTime<Utc>>,
    count: u64,
    denials: u64,
}

async fn access_report(
    AdminAuth(admin): AdminAuth,
    path: web::Path<(String, String)>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    let (vault, id) = path.into_inner();
    let vault = vault_access(&admin, &vault, &engine)?;
    let machine = machine_in(&engine, &vault, &id)?;
    let mut report: BTreeMap<String, SecretAccess> = BTreeMap::new();
    let mut query = AuditQuery {
        after: 0,
        limit: crate::audit::MAX_LIMIT,
        filter: Filter {
            action: Some("secret.read".into()),
            ..Filter::default()
        },
    };
    loop {
        let page = query.machine(&engine.store, machine.id)?;
        for e in page.events.iter().filter(|e| e.action == "secret.read") {
            let Some(secret) = &e.secret else { continue };
            let entry = report.entry(secret.clone()).or_default();
            if e.outcome == Outcome::Allowed {
                entry.first.get_or_insert(e.time);
                entry.last = Some(e.time);
                entry.count += 1;
            } else {
                entry.denials += 1;
            }
        }
        let Some(next) = page.next_after else { break };
        query.after = next;
    }
    Ok(HttpResponse::Ok().json(json!({"machine": machine.id, "secrets": report})))
}

// === Settings ===

/// The body of `PUT .../settings/ip-allowlist`; unlike the stored setting, it refuses
/// fields it does not know.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowlistBody {
    cidrs: Vec<String>,
}

async fn set_ip_allowlist(
    req: HttpRequest,
    AdminAuth(admin): AdminAuth,
    vault: web::Path<String>,
    body: web::Json<Object<AllowlistBody>>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    let vault = vault_access(&admin, &vault, &engine)?;
    let setting = IpAllowlistSetting {
        cidrs: body.into_inner().0.cidrs,
    };
    let detail = json!({"cidrs": setting.cidrs});
    let event = change_event(
        &engine,
        &req,
        &admin,
        &vault,
        None,
        "vault.ip_allowlist_set",
        None,
        Some(detail),
    );
    let audit = Some((event, engine.audit.clone()));
    let (e, v, s) = (engine.clone().into_inner(), vault.clone(), setting.clone());
    blocking(move || e.vaults.set_ip_allowlist(&v, &s, audit)).await?;
    Ok(HttpResponse::Ok().json(setting))
}

async fn get_ip_allowlist(
    AdminAuth(admin): AdminAuth,
    vault: web::Path<String>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    let vault = vault_access(&admin, &vault, &engine)?;
    Ok(HttpResponse::Ok().json(engine.vaults.ip_allowlist_setting(&vault)?))
}
