//! Signed machine requests: reading a secret and asking about oneself.

use std::time::Instant;

use actix_web::{web, HttpRequest, HttpResponse};
use secrecy::ExposeSecret;
use serde_json::json;

use super::errors::{payload_error, ApiError};
use super::request_meta;
use crate::audit::Outcome;
use crate::domain::VaultName;
use crate::engine::Engine;
use crate::protocol::AuthHeaders;
use crate::read_path::{MachineRequest, ReadError};

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/v1/{vault}/secrets/{project}/{name}",
        web::get().to(read_secret),
    )
    .route("/v1/{vault}/machine", web::get().to(whoami));
}

/// Pulls the signed parts out of a request. The target is the path and query exactly as
/// the client sent them, before any percent-decoding, because that is what was signed.
fn machine_request<'a>(
    req: &'a HttpRequest,
    vault: &'a VaultName,
    body: &'a [u8],
    engine: &Engine,
) -> MachineRequest<'a> {
    let headers = req.headers();
    MachineRequest {
        vault,
        method: req.method().as_str(),
        target: req.uri().path_and_query().map_or("/", |pq| pq.as_str()),
        body,
        auth: AuthHeaders::parse(|name| headers.get_all(name).map(|v| v.as_bytes())),
        meta: request_meta(req, engine),
    }
}

fn parse_vault(raw: &str) -> Result<VaultName, ReadError> {
    // A vault that cannot exist has no machines: the same answer as an unknown machine.
    VaultName::parse(raw).map_err(|_| ReadError::AuthenticationFailed)
}

async fn read_secret(
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
    body: Result<web::Bytes, actix_web::Error>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    let body = body.map_err(payload_error)?;
    let started = Instant::now();
    let (vault, project, name) = path.into_inner();
    let result = async {
        let vault = parse_vault(&vault)?;
        let request = machine_request(&req, &vault, &body, &engine);
        engine.read_secret(request, &project, &name).await
    }
    .await;
    observe(&engine, &result, started);
    let secret = result?;
    let Ok(value) = std::str::from_utf8(secret.value.expose_secret()) else {
        return Err(ApiError::internal(&"stored secret is not UTF-8"));
    };
    Ok(HttpResponse::Ok()
        .insert_header(("cache-control", "no-store"))
        .json(json!({"project": project, "name": name, "version": secret.version, "value": value})))
}

async fn whoami(
    req: HttpRequest,
    vault: web::Path<String>,
    body: Result<web::Bytes, actix_web::Error>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    let body = body.map_err(payload_error)?;
    let started = Instant::now();
    let result = async {
        let vault = parse_vault(&vault)?;
        let request = machine_request(&req, &vault, &body, &engine);
        engine.whoami(request).await
    }
    .await;
    observe(&engine, &result, started);
    let snapshot = result?;
    let record = engine
        .machines
        .record(&snapshot.vault, snapshot.id)?
        .ok_or_else(|| ApiError::internal(&"machine record missing"))?;
    let now = chrono::Utc::now();
    Ok(HttpResponse::Ok()
        .insert_header(("cache-control", "no-store"))
        .json(json!({
            "id": record.id,
            "vault": record.vault,
            "name": record.name,
            "state": record.state_at(now),
            "expires_at": record.expires_at(),
            "guardrails": record.guardrails,
            "projects": record.projects,
            "grants": record.grants,
        })))
}

fn observe<T>(engine: &Engine, result: &Result<T, ReadError>, started: Instant) {
    let (outcome, reason) = match result {
        Ok(_) => (Outcome::Allowed, "none"),
        Err(e @ (ReadError::Header(_) | ReadError::Skew(_) | ReadError::AuthenticationFailed)) => {
            (Outcome::Failed, e.code())
        }
        Err(e) => (Outcome::Denied, e.code()),
    };
    engine
        .metrics
        .reads
        .with_label_values(&[outcome.as_str(), reason])
        .inc();
    engine
        .metrics
        .read_seconds
        .observe(started.elapsed().as_secs_f64());
    if let Err(e) = result {
        tracing::debug!(deny.reason = e.code(), "machine request refused");
    }
}
