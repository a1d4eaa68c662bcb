//! `lenet serve`: a local web page to draw a digit (or upload a photo) and watch a
//! model read it, layer by layer, as LeCun's LeNet-5 demos showed it; with the test
//! images the model gets wrong, and a switch between the shipped models and the
//! user's own checkpoints. One page, embedded in the binary (`page/`), over a small
//! JSON API ([`api`]) that scripts may use too.
//!
//! The server (axum on tokio) binds to 127.0.0.1 unless told otherwise, bounds the
//! request body, the image's pixels and the requests per second of each client
//! ([`limit`]), never writes an upload anywhere, and answers a bad request with a
//! message, never by falling over; it caps the connections of the whole server and of
//! each address and times out a request's headers ([`conn`]). Pictures are classified on the CPU, one
//! single-threaded network per request in flight ([`model`]).

pub mod api;
pub mod conn;
pub mod gallery;
pub mod limit;
pub mod model;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::Semaphore;

use self::api::ApiError;
pub use self::conn::Connections;
use self::limit::RateLimit;
use self::model::ServedModel;

/// What a request, and a client, may bring.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Bytes of request body.
    pub max_body: usize,
    /// Pixels of a decoded picture.
    pub max_pixels: u64,
    /// Connections at once and the time for a request's headers.
    pub connections: Connections,
}

/// The server's state: the models (the default first) and the limits.
pub struct App {
    pub models: Vec<Arc<ServedModel>>,
    pub limits: Limits,
    /// Pictures classified at once.
    pub work: Semaphore,
    /// Megapixels decoded at once (permits), so that memory stays bounded: a picture takes
    /// its megapixels' worth, rounded up, at most all of them.
    pub pixel_budget: Semaphore,
    pub pixel_budget_mp: u32,
    pub rate: Option<RateLimit>,
    /// Where the datasets are (for the errors gallery).
    pub data_dir: Option<PathBuf>,
}

impl App {
    pub fn new(
        models: Vec<ServedModel>,
        limits: Limits,
        workers: usize,
        rate: Option<RateLimit>,
        data_dir: Option<PathBuf>,
    ) -> App {
        assert!(!models.is_empty(), "a server needs a model");
        // Two of the largest pictures at once (~36 bytes a pixel while decoding and preparing).
        let pixel_budget_mp = (2 * limits.max_pixels.div_ceil(1_000_000)).clamp(1, u32::MAX as u64 / 2) as u32;
        App {
            models: models.into_iter().map(Arc::new).collect(),
            limits,
            work: Semaphore::new(workers.max(1)),
            pixel_budget: Semaphore::new(pixel_budget_mp as usize),
            pixel_budget_mp,
            rate,
            data_dir,
        }
    }
}

/// The routes: the page, its two files, and the API.
pub fn router(app: Arc<App>) -> Router {
    let api = Router::new()
        .route("/api/models", get(api::models))
        .route("/api/predict", post(api::predict))
        .route("/api/errors", get(api::errors))
        .route_layer(middleware::from_fn_with_state(app.clone(), rate_limited));
    Router::new()
        .route("/", get(|| api::asset("index.html")))
        .route("/app.js", get(|| api::asset("app.js")))
        .route("/style.css", get(|| api::asset("style.css")))
        .merge(api)
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::wrong_method)
        // The predict handler reads bodies under this limit itself (draining a little past it so
        // the client hears the 413); axum's own extractors get the same limit.
        .layer(DefaultBodyLimit::max(app.limits.max_body))
        .with_state(app)
}

/// Refuse a client's request beyond its rate, saying when to come back.
async fn rate_limited(
    State(app): State<Arc<App>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(rate) = &app.rate {
        if let Err(wait) = rate.take(client.ip(), Instant::now()) {
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            let mut response =
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too many requests from this address: slow down")
                    .into_response();
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
            return response;
        }
    }
    next.run(request).await
}

/// Serve `app` on `listener` until Ctrl-C (or SIGTERM).
pub async fn serve(listener: tokio::net::TcpListener, app: Arc<App>) -> std::io::Result<()> {
    let caps = app.limits.connections;
    conn::serve_connections(listener, router(app), caps, stopped()).await
}

async fn stopped() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
