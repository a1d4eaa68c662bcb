//! The JSON API the page uses, and scripts may:
//!
//! - `GET /api/models`: the models to choose from, the default first.
//! - `POST /api/predict?model=ID&top=K&layers=false`: the picture as the request body
//!   (or as a multipart field `image`); answers what `lenet predict --json` prints for it,
//!   plus `model`, `probabilities` (all ten, in class order), `input` (what the network
//!   sees) and `layers` (every layer's output).
//! - `GET /api/errors?model=ID&limit=N`: the test images the model gets wrong.
//!
//! Errors are `{"error": "..."}` with a status that says whose fault it was.

use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, Multipart, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::predict::{decode_image, picture_json, prepare, ImageError, ImageProblem, Style};

use super::gallery::{find_errors, Gallery};
use super::lens::{Lens, Thought};
use super::App;

/// An answer with an error status and a message for the page.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

impl From<ImageError> for ApiError {
    fn from(e: ImageError) -> ApiError {
        let status = match e.kind {
            ImageProblem::NotAnImage => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ImageProblem::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ImageProblem::Empty | ImageProblem::Corrupt | ImageProblem::Unreadable => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, e.to_string())
    }
}

fn bad_query(e: QueryRejection) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, format!("a bad query string: {}", e.body_text()))
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

impl App {
    /// The model a request names (`?model=ID`), or the default one.
    fn lens(&self, id: Option<&str>) -> Result<Arc<Lens>, ApiError> {
        match id {
            None | Some("") => Ok(self.lenses[0].clone()),
            Some(id) => self.lenses.iter().find(|l| l.info.id == id).cloned().ok_or_else(|| {
                let known: Vec<&str> = self.lenses.iter().map(|l| l.info.id.as_str()).collect();
                ApiError::new(StatusCode::NOT_FOUND, format!("no model {id:?} here; there are {}", known.join(", ")))
            }),
        }
    }
}

pub async fn models(State(app): State<Arc<App>>) -> Json<Value> {
    let infos: Vec<_> = app.lenses.iter().map(|l| &l.info).collect();
    Json(json!({ "default": app.lenses[0].info.id, "models": infos }))
}

#[derive(Deserialize)]
pub struct PredictQuery {
    model: Option<String>,
    top: Option<usize>,
    layers: Option<bool>,
}

pub async fn predict(
    State(app): State<Arc<App>>,
    q: Result<Query<PredictQuery>, QueryRejection>,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(bad_query)?;
    let lens = app.lens(q.model.as_deref())?;
    let (name, bytes) = read_picture(request, app.limits.max_body).await?;
    // At most `workers` pictures are decoded and classified at once; the rest wait here.
    let _permit = app.work.acquire().await.map_err(internal)?;
    let max_pixels = app.limits.max_pixels;
    let (top, with_layers) = (q.top.unwrap_or(3).clamp(1, 10), q.layers.unwrap_or(true));
    tokio::task::spawn_blocking(move || classify(&lens, &name, &bytes, max_pixels, top, with_layers))
        .await
        .map_err(internal)?
        .map(Json)
}

/// The picture in a request: the body, or a multipart form's `image` field (its file
/// name, or "body", names it in messages).
async fn read_picture(request: Request, max_body: usize) -> Result<(String, axum::body::Bytes), ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request is larger than {:.1} MB, the most this server takes", max_body as f64 / 1e6),
        )
    };
    let multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    if !multipart {
        return match tokio::time::timeout(BODY_TIME, read_body(request.into_body(), max_body)).await {
            Err(_) => Err(ApiError::new(StatusCode::REQUEST_TIMEOUT, "the request body took too long to arrive")),
            Ok(Err(BodyError::Unreadable)) => {
                Err(ApiError::new(StatusCode::BAD_REQUEST, "the request body could not be read"))
            }
            Ok(Err(BodyError::TooLarge)) => Err(too_large()),
            Ok(Ok(bytes)) => Ok(("body".to_string(), bytes.into())),
        };
    }
    let form_error = |e: axum::extract::multipart::MultipartError| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => too_large(),
        status => ApiError::new(status, format!("a bad multipart form: {}", e.body_text())),
    };
    let mut form = Multipart::from_request(request, &()).await.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    while let Some(field) = form.next_field().await.map_err(form_error)? {
        if field.name() == Some("image") {
            let name = field.file_name().unwrap_or("image").to_string();
            let bytes = field.bytes().await.map_err(form_error)?;
            return Ok((name, bytes));
        }
    }
    Err(ApiError::new(StatusCode::BAD_REQUEST, "the multipart form has no field named \"image\""))
}

/// How long a request body may take to arrive.
const BODY_TIME: std::time::Duration = std::time::Duration::from_secs(30);
/// How much of a body over the limit is read (and dropped) so that the client, still
/// sending, gets the 413 answer rather than a broken connection; beyond it, the
/// connection is dropped.
const DRAIN: usize = 64 << 20;

enum BodyError {
    Unreadable,
    TooLarge,
}

/// The body, if it has at most `max` bytes.
async fn read_body(mut body: Body, max: usize) -> Result<Vec<u8>, BodyError> {
    use http_body_util::BodyExt;
    let mut bytes = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|_| BodyError::Unreadable)?.into_data() else { continue };
        seen += data.len();
        if seen <= max {
            bytes.extend_from_slice(&data);
        } else if seen > max + DRAIN {
            break;
        }
    }
    if seen > max {
        return Err(BodyError::TooLarge);
    }
    Ok(bytes)
}

/// Decode, prepare as `lenet predict` does, and look through the network.
fn classify(
    lens: &Lens,
    name: &str,
    bytes: &[u8],
    max_pixels: u64,
    top: usize,
    with_layers: bool,
) -> Result<Value, ApiError> {
    let img = decode_image(bytes, Path::new(name), Some(max_pixels))?;
    let prepared = prepare(&img, Style::Auto, lens.dataset)
        .map_err(|problem| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("{name}: {problem}")))?;
    let thought = lens.think(&prepared).map_err(internal)?;
    let names = lens.class_names();
    let mut answer =
        picture_json(name, &prepared, &thought.probabilities, &thought.outputs, lens.is_rbf(), top, &names);
    answer["model"] = json!(lens.info.id);
    answer["probabilities"] = json!(thought.probabilities);
    let side = lens.info.input_size;
    answer["input"] = json!({ "size": side, "pixels": base64_of(&thought.input) });
    if with_layers {
        answer["layers"] = layers_json(lens, &thought);
    }
    Ok(answer)
}

fn base64_of(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Each layer's output as little-endian f32s in base64 (exact, and a quarter of JSON
/// numbers' size), with its shape and range.
fn layers_json(lens: &Lens, thought: &Thought) -> Value {
    lens.info
        .layers
        .iter()
        .zip(&thought.layers)
        .map(|(info, values)| {
            let (min, max) = values.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            json!({
                "index": info.index,
                "kind": info.kind,
                "module": info.module,
                "shape": info.shape,
                "min": min,
                "max": max,
                "data": base64_of(&bytes),
            })
        })
        .collect()
}

#[derive(Deserialize)]
pub struct ErrorsQuery {
    model: Option<String>,
    limit: Option<usize>,
}

pub async fn errors(
    State(app): State<Arc<App>>,
    q: Result<Query<ErrorsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(bad_query)?;
    let lens = app.lens(q.model.as_deref())?;
    let data_dir = app.data_dir.clone();
    let found = {
        let lens = lens.clone();
        // The first request for a model classifies its test set (on every core); later ones read the result.
        tokio::task::spawn_blocking(move || {
            lens.gallery.get_or_init(|| find_errors(&lens, data_dir.as_deref()).map_err(|e| format!("{e:#}"))).clone()
        })
        .await
        .map_err(internal)?
    };
    let mut gallery: Gallery = found.map_err(|e| ApiError::new(StatusCode::NOT_FOUND, e))?;
    gallery.items.truncate(q.limit.unwrap_or(200));
    Ok(Json(json!({ "model": lens.info.id, "gallery": gallery })))
}

/// The page's files, embedded in the binary.
pub async fn asset(path: &'static str) -> Response {
    let (body, kind) = match path {
        "app.js" => (include_str!("page/app.js"), "text/javascript; charset=utf-8"),
        "style.css" => (include_str!("page/style.css"), "text/css; charset=utf-8"),
        _ => (include_str!("page/index.html"), "text/html; charset=utf-8"),
    };
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    response
}

pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such page or API call (the API: /api/models, /api/predict, /api/errors)")
}
