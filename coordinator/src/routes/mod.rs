//! The HTTP API: one file per group of routes, all over a shared `Arc<Coordinator>`.

pub mod admin;
pub mod audit;
pub mod bases;
pub mod contributions;
pub mod gate;
pub mod ops;
pub mod receipts;

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use axum::{middleware, Router};
use utoipa::OpenApi;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    edge::observe::{self, HttpOptions, Observer},
    openapi::ApiDoc,
    Coordinator,
};

/// Every route with its OpenAPI operation: the router and the document are both built from this one
/// table, so an undocumented route cannot exist. Every route but the upload answers within
/// `deadline`; the upload streams its body and is bounded by its idle timeout instead.
fn table(deadline: Duration) -> OpenApiRouter<Arc<Coordinator>> {
    let bounded = OpenApiRouter::new()
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::openapi))
        .routes(routes!(ops::round))
        .routes(routes!(ops::whoami))
        .routes(routes!(bases::latest))
        .routes(routes!(bases::manifest))
        .routes(routes!(bases::file))
        .routes(routes!(bases::archive))
        .routes(routes!(bases::lineage))
        .routes(routes!(bases::lineage_one))
        .routes(routes!(audit::diff_manifest))
        .routes(routes!(audit::diff))
        .routes(routes!(receipts::fused_receipt))
        .routes(routes!(receipts::signing_key))
        .routes(routes!(audit::optimizer_state))
        .routes(routes!(contributions::announce))
        .routes(routes!(contributions::status))
        .routes(routes!(gate::status))
        .routes(routes!(gate::record))
        .routes(routes!(gate::report))
        .routes(routes!(gate::report_site))
        .routes(routes!(gate::promote))
        .routes(routes!(gate::discard))
        .routes(routes!(admin::fuse))
        .routes(routes!(admin::get_config, admin::set_config))
        .routes(routes!(admin::rollback))
        .routes(routes!(admin::create_token))
        .routes(routes!(admin::revoke_token))
        .routes(routes!(admin::drop_contribution))
        .route_layer(middleware::from_fn_with_state(deadline, observe::deadline));
    let streaming = OpenApiRouter::new().routes(routes!(contributions::upload));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(bounded)
        .merge(streaming)
        .route_layer(middleware::from_fn(observe::matched))
}

/// The coordinator's router with default request settings.
pub fn router(c: Arc<Coordinator>) -> Router {
    router_with(c, HttpOptions::default())
}

/// The coordinator's router: the route table under the request layers (id, span, access log,
/// metrics).
pub fn router_with(c: Arc<Coordinator>, options: HttpOptions) -> Router {
    let observer = Observer {
        metrics: c.metrics.clone(),
        trust_forwarded: options.trust_forwarded,
    };
    let (router, _) = table(options.request_timeout).split_for_parts();
    router
        .with_state(c)
        .layer(middleware::from_fn_with_state(observer, observe::observe))
}

/// The OpenAPI document of exactly the routes [`router`] serves (built once).
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOC.get_or_init(|| table(Duration::from_secs(1)).split_for_parts().1)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// The served document lists every route once, with operation ids that client generators accept
    /// (unique), including the ones the hand-kept list had missed.
    #[test]
    fn the_document_has_every_route_with_unique_operation_ids() {
        let doc = serde_json::to_value(super::document()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        let mut ids = BTreeSet::new();
        let mut operations = 0;
        for (path, item) in paths {
            for (method, op) in item.as_object().unwrap() {
                let id = op["operationId"].as_str().unwrap_or_default().to_string();
                assert!(!id.is_empty(), "{method} {path} has no operationId");
                assert!(ids.insert(id.clone()), "operationId `{id}` is not unique");
                operations += 1;
            }
        }
        assert_eq!(operations, 32, "{ids:?}");
        for (path, method) in [
            ("/v1/gate/{iteration}/reports", "post"),
            ("/v1/admin/config", "get"),
            ("/v1/admin/config", "put"),
            ("/v1/openapi.json", "get"),
            ("/v1/admin/contributions/{contributor}/drop", "post"),
        ] {
            assert!(
                paths[path][method].is_object(),
                "{method} {path} undocumented"
            );
        }
    }

    /// Every route the clients call (`coldfuse_shared::api::routes`) is one the coordinator serves.
    #[test]
    fn the_clients_routes_are_served() {
        let doc = serde_json::to_value(super::document()).unwrap();
        for template in coldfuse_shared::api::routes::ALL {
            assert!(
                doc["paths"][template].is_object(),
                "the clients call {template}, which the coordinator does not serve"
            );
        }
    }
}
