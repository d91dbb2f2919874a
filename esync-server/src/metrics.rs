//! Prometheus metrics of the Server (prometheus-client, one [`Registry`] per
//! [`Metrics`], no process-wide recorder): HTTP requests by listener, route
//! template, method and status; bytes received by image uploads; delta jobs
//! by outcome; campaign offers and results. Served as text by [`metrics_router`] (`GET /metrics`) on its
//! own listener.
//!
//! The route label is the matched route template (`/admin/v1/images/{sha256}`),
//! never the raw path, so the number of series stays bounded whatever
//! clients send; requests that match no route are counted under
//! [`UNMATCHED`].

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Route label of requests that matched no route.
pub const UNMATCHED: &str = "(unmatched)";

/// Content type of the Prometheus text exposition format (OpenMetrics).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of the request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Which listener (`admin`, `device`).
    pub listener: String,
    /// HTTP method.
    pub method: String,
    /// Matched route template, or [`UNMATCHED`].
    pub route: String,
    /// Response status code.
    pub status: u16,
}

/// Labels of the delta job counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeltaLabels {
    /// `done`, `failed`, `lost` or `error`.
    pub outcome: String,
}

/// Labels of the campaign result counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CampaignResultLabels {
    /// The member's new state: `succeeded`, `failed` or `rolled_back`.
    pub state: String,
}

/// The Server's metrics. Cheap to clone (shared counters).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    requests: Family<RequestLabels, Counter>,
    upload_bytes: Counter,
    delta_jobs: Family<DeltaLabels, Counter>,
    campaign_offers: Counter,
    campaign_results: Family<CampaignResultLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("esync_server");
        let requests = Family::<RequestLabels, Counter>::default();
        let upload_bytes = Counter::default();
        let delta_jobs = Family::<DeltaLabels, Counter>::default();
        let campaign_offers = Counter::default();
        let campaign_results = Family::<CampaignResultLabels, Counter>::default();
        registry.register(
            "campaign_offers",
            "Campaign offers made by this process (a pending vehicle offered at its check-in)",
            campaign_offers.clone(),
        );
        registry.register(
            "campaign_results",
            "Campaign results counted by this process, by the vehicle's new state",
            campaign_results.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests answered, by listener, route, method and status",
            requests.clone(),
        );
        registry.register(
            "image_upload_bytes",
            "Bytes received by image uploads (kept or refused)",
            upload_bytes.clone(),
        );
        registry.register(
            "delta_jobs",
            "Delta jobs run by this process, by outcome",
            delta_jobs.clone(),
        );
        Self {
            registry: Arc::new(registry),
            requests,
            upload_bytes,
            delta_jobs,
            campaign_offers,
            campaign_results,
        }
    }

    /// Counts one answered request.
    pub fn record_request(&self, listener: &str, method: &str, route: &str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                listener: listener.to_owned(),
                method: method.to_owned(),
                route: route.to_owned(),
                status,
            })
            .inc();
    }

    /// Adds `n` received upload bytes.
    pub fn add_upload_bytes(&self, n: u64) {
        self.upload_bytes.inc_by(n);
    }

    /// Counts one delta job outcome.
    pub fn record_delta(&self, outcome: &str) {
        self.delta_jobs
            .get_or_create(&DeltaLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Counts `n` campaign offers.
    pub fn add_campaign_offers(&self, n: u64) {
        self.campaign_offers.inc_by(n);
    }

    /// Counts one campaign result (the member's new state).
    pub fn record_campaign_result(&self, state: &str) {
        self.campaign_results
            .get_or_create(&CampaignResultLabels {
                state: state.to_owned(),
            })
            .inc();
    }

    /// Campaign offers counted so far.
    pub fn campaign_offers(&self) -> u64 {
        self.campaign_offers.get()
    }

    /// The current value of the request counter for these labels (0 if never
    /// counted).
    pub fn requests(&self, listener: &str, method: &str, route: &str, status: u16) -> u64 {
        self.requests
            .get_or_create(&RequestLabels {
                listener: listener.to_owned(),
                method: method.to_owned(),
                route: route.to_owned(),
                status,
            })
            .get()
    }

    /// Bytes received by uploads so far.
    pub fn upload_bytes(&self) -> u64 {
        self.upload_bytes.get()
    }

    /// Every metric in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Adds request counting to every route of `router` (call after the
    /// routes are added; `listener` names the listener in the labels).
    /// Requests that match no route do not pass this layer: a router that
    /// wants them counted records them in its fallback (as the admin
    /// router does, under [`UNMATCHED`]).
    pub fn instrument<S: Clone + Send + Sync + 'static>(
        &self,
        router: Router<S>,
        listener: &'static str,
    ) -> Router<S> {
        router.route_layer(axum::middleware::from_fn_with_state(
            (self.clone(), listener),
            count_request,
        ))
    }
}

async fn count_request(
    State((metrics, listener)): State<(Metrics, &'static str)>,
    req: Request,
    next: Next,
) -> Response {
    let method = req.method().as_str().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| UNMATCHED.to_owned(), |p| p.as_str().to_owned());
    let resp = next.run(req).await;
    metrics.record_request(listener, &method, &route, resp.status().as_u16());
    resp
}

/// `GET /metrics` over `metrics`.
pub fn metrics_router(metrics: Metrics) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .with_state(metrics)
}

async fn render(State(metrics): State<Metrics>) -> Response {
    (
        [(http::header::CONTENT_TYPE, CONTENT_TYPE)],
        metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_with_their_labels() {
        let m = Metrics::new();
        m.record_request("admin", "GET", "/admin/v1/vehicles", 200);
        m.record_request("admin", "GET", "/admin/v1/vehicles", 200);
        m.add_upload_bytes(1234);
        m.record_delta("done");
        let text = m.render();
        assert!(text.contains(
            "esync_server_http_requests_total{listener=\"admin\",method=\"GET\",route=\"/admin/v1/vehicles\",status=\"200\"} 2"
        ), "{text}");
        assert!(
            text.contains("esync_server_image_upload_bytes_total 1234"),
            "{text}"
        );
        assert!(
            text.contains("esync_server_delta_jobs_total{outcome=\"done\"} 1"),
            "{text}"
        );
        assert_eq!(m.requests("admin", "GET", "/admin/v1/vehicles", 200), 2);
    }
}
