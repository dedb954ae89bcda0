//! Health, readiness and metrics.

use actix_web::{web, HttpResponse};

use crate::engine::Engine;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// Ready when the store answers and the audit writer is running.
async fn readyz(engine: web::Data<Engine>) -> HttpResponse {
    let store_ok = engine.vaults.any().is_ok();
    let audit_ok = engine.audit.is_running();
    let body = serde_json::json!({"store": store_ok, "audit": audit_ok});
    if store_ok && audit_ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

async fn metrics(engine: web::Data<Engine>) -> HttpResponse {
    engine.metrics.nonce_entries.set(engine.nonces.len() as i64);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(engine.metrics.render())
}
