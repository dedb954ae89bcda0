//! The HTTP surface: routes, extractors, error mapping and request metrics.
//!
//! Routes mirror the URL tree: [`admin`] for bearer-token calls, [`machine`] for signed
//! machine requests, [`bootstrap`] for host registration, [`ops`] for health and metrics.

mod admin;
mod bootstrap;
pub mod client_ip;
mod errors;
mod machine;
mod ops;

use std::sync::Arc;

use actix_web::dev::Service as _;
use actix_web::{web, HttpRequest};
use futures_util::future::Either;
use futures_util::FutureExt as _;

pub use errors::ApiError;

use crate::engine::{Engine, RequestMeta};

/// Adds every route, the body limits and the JSON error handlers to an app.
pub fn configure(engine: Arc<Engine>) -> impl Fn(&mut web::ServiceConfig) + Clone {
    move |cfg: &mut web::ServiceConfig| {
        let max_body = engine.config.limits.max_body_bytes;
        cfg.app_data(web::Data::from(engine.clone()))
            .app_data(web::PayloadConfig::new(max_body))
            .app_data(
                web::JsonConfig::default()
                    .limit(max_body)
                    .error_handler(errors::json_error),
            )
            .app_data(web::PathConfig::default().error_handler(errors::path_error))
            .app_data(web::QueryConfig::default().error_handler(errors::query_error))
            // Signed reads are most of the traffic: their routes are tried first.
            .configure(machine::routes)
            .configure(ops::routes)
            .configure(bootstrap::routes)
            .configure(admin::routes);
    }
}

/// Builds the full application, with request metrics and a JSON 404 for unknown routes.
pub fn app(
    engine: Arc<Engine>,
) -> actix_web::App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<actix_web::body::BoxBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let metrics = engine.metrics.clone();
    let max_header_bytes = engine.config.limits.max_header_bytes;
    actix_web::App::new()
        .configure(configure(engine))
        .default_service(web::to(errors::unknown_route))
        .wrap_fn(move |req, srv| {
            let size: usize = req
                .headers()
                .iter()
                .map(|(k, v)| k.as_str().len() + v.len())
                .sum();
            if size <= max_header_bytes {
                return Either::Left(srv.call(req));
            }
            let err = ApiError::new(
                actix_web::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                format!("request headers exceed {max_header_bytes} bytes"),
            );
            Either::Right(std::future::ready(Ok(req.error_response(err))))
        })
        .wrap_fn(move |req, srv| {
            let metrics = metrics.clone();
            srv.call(req).map(move |res| {
                // Asked after routing, the pattern comes from the route that matched; asked
                // before, the router would match the path a second time.
                let (route, status) = match &res {
                    Ok(r) => (r.request().match_pattern(), r.status().as_u16()),
                    Err(e) => (None, e.as_response_error().status_code().as_u16()),
                };
                let route = route.as_deref().unwrap_or("unmatched");
                metrics
                    .http_requests
                    .with_label_values(&[route, itoa_status(status)])
                    .inc();
                res
            })
        })
}

fn itoa_status(status: u16) -> &'static str {
    match status {
        200 => "200",
        201 => "201",
        204 => "204",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        409 => "409",
        413 => "413",
        431 => "431",
        500 => "500",
        503 => "503",
        s if s < 300 => "2xx",
        s if s < 400 => "3xx",
        s if s < 500 => "4xx",
        _ => "5xx",
    }
}

/// The request id and source address of a request.
pub(crate) fn request_meta(req: &HttpRequest, engine: &Engine) -> RequestMeta {
    let peer = req
        .peer_addr()
        .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |a| a.ip());
    let forwarded = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok());
    RequestMeta {
        // From the thread's own generator: `Uuid::new_v4` asks the kernel for every id.
        request_id: uuid::Builder::from_random_bytes(rand::random())
            .into_uuid()
            .simple()
            .to_string(),
        source_ip: client_ip::resolve(peer, forwarded, &engine.trusted_proxies),
    }
}
