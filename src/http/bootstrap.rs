//! Host registration: the bootstrap script and the public key it sends back.
//!
//! No bearer token here: the bootstrap token in the URL is the credential. Neither the
//! token nor anything derived from it is logged.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;

use super::errors::ApiError;
use super::request_meta;
use crate::audit::Outcome;
use crate::bootstrap::{self, BootstrapRecord};
use crate::engine::Engine;
use crate::machines::{Command, MachineState};
use crate::storage::Cf;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/{vault}/temp-bootstrap/{token}", web::get().to(script))
        .route(
            "/v1/{vault}/temp-bootstrap/{token}",
            web::post().to(register),
        );
}

#[derive(Debug, Deserialize)]
struct ScriptQuery {
    #[serde(default)]
    os: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Registration {
    public_key: String,
}

/// Finds a usable token of this vault, for a machine still waiting for its key.
fn usable_token(
    engine: &Engine,
    vault: &str,
    token: &str,
) -> Result<Option<(Vec<u8>, BootstrapRecord)>, ApiError> {
    if !bootstrap::is_token_shaped(token) {
        return Ok(None);
    }
    let key = bootstrap::token_key(token);
    let Some(record) = engine.store.get::<BootstrapRecord>(Cf::Bootstrap, &key)? else {
        return Ok(None);
    };
    let now = Utc::now();
    if record.vault.as_str() != vault || !record.is_usable(now) {
        return Ok(None);
    }
    let machine = engine.machines.record(&record.vault, record.machine_id)?;
    let waiting = machine.is_some_and(|m| m.state_at(now) == MachineState::Created);
    Ok(waiting.then_some((key, record)))
}

async fn script(
    path: web::Path<(String, String)>,
    query: web::Query<ScriptQuery>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    let (vault, token) = path.into_inner();
    let windows = query.os.as_deref() == Some("windows");
    let usable = usable_token(&engine, &vault, &token)?;
    let (status, body) = match usable {
        Some((_, record)) => {
            let (url, _) = bootstrap::command(&engine.public_url, &record.vault, &token);
            let render = if windows {
                bootstrap::ps_script
            } else {
                bootstrap::sh_script
            };
            (
                StatusCode::OK,
                render(&engine.public_url, &record.vault, &url),
            )
        }
        None if windows => (
            StatusCode::NOT_FOUND,
            bootstrap::ps_error_script().to_owned(),
        ),
        None => (
            StatusCode::NOT_FOUND,
            bootstrap::sh_error_script().to_owned(),
        ),
    };
    let content_type = if windows {
        "text/plain; charset=utf-8"
    } else {
        "text/x-shellscript; charset=utf-8"
    };
    Ok(HttpResponse::build(status)
        .insert_header(("cache-control", "no-store"))
        .content_type(content_type)
        .body(body))
}

async fn register(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Json<Registration>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    let (vault, token) = path.into_inner();
    let Some((token_key, record)) = usable_token(&engine, &vault, &token)? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "bootstrap_token_invalid",
            "this bootstrap token is unknown, already used or expired",
        ));
    };
    let public_key = parse_public_key(&body.public_key)?;

    let now = Utc::now();
    let cmd = Command::RegisterKey {
        public_key,
        token_key,
        now,
    };
    let meta = request_meta(&req, &engine);
    let event = engine.event(
        &meta,
        &record.vault,
        Some(record.machine_id),
        "bootstrap".to_owned(),
        "machine.registered",
        None,
        Outcome::Ok,
        None,
        None,
        now,
    );
    // The key, the spent token and the event are written in one batch.
    let machine = engine
        .machines
        .command_audited(record.machine_id, cmd, event, engine.audit.clone())
        .await?;
    tracing::info!(machine.id = %machine.id, "machine registered its key; pending approval");
    Ok(HttpResponse::Ok().json(json!({
        "machine_id": machine.id,
        "vault": machine.vault,
        "state": machine.state,
    })))
}

fn parse_public_key(text: &str) -> Result<[u8; 32], ApiError> {
    let bytes = STANDARD.decode(text.trim()).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_public_key",
            "public_key must be standard base64",
        )
    })?;
    bytes.try_into().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_public_key",
            "public_key must be the 32 raw bytes of an Ed25519 public key",
        )
    })
}
