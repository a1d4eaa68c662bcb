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

use crate::predict::{decode_image, picture_dimensions, picture_json, prepare, ImageError, ImageProblem, Style};

use super::gallery::{find_errors, Gallery};
use super::model::{Activations, ServedModel};
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
    fn model(&self, id: Option<&str>) -> Result<Arc<ServedModel>, ApiError> {
        match id {
            None | Some("") => Ok(self.models[0].clone()),
            Some(id) => self.models.iter().find(|l| l.info.id == id).cloned().ok_or_else(|| {
                let known: Vec<&str> = self.models.iter().map(|l| l.info.id.as_str()).collect();
                ApiError::new(StatusCode::NOT_FOUND, format!("no model {id:?} here; there are {}", known.join(", ")))
            }),
        }
    }
}

pub async fn models(State(app): State<Arc<App>>) -> Json<Value> {
    let infos: Vec<_> = app.models.iter().map(|l| &l.info).collect();
    Json(json!({ "default": app.models[0].info.id, "models": infos }))
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
    let model = app.model(q.model.as_deref())?;
    let (name, bytes) = read_picture(request, app.limits.max_body).await?;
    // At most `workers` pictures are decoded and classified at once, and at most
    // `pixel_budget` megapixels of them (decoding takes ~36 bytes a pixel); the rest wait here.
    let _work = app.work.acquire().await.map_err(internal)?;
    let megapixels = picture_dimensions(&bytes).map_or(1, |(w, h)| (w as u64 * h as u64).div_ceil(1_000_000));
    let share = megapixels.clamp(1, app.pixel_budget_mp as u64) as u32;
    let _pixels = app.pixel_budget.acquire_many(share).await.map_err(internal)?;
    let max_pixels = app.limits.max_pixels;
    let (top, with_layers) = (q.top.unwrap_or(3).clamp(1, 10), q.layers.unwrap_or(true));
    tokio::task::spawn_blocking(move || classify(&model, &name, &bytes, max_pixels, top, with_layers))
        .await
        .map_err(internal)?
        .map(Json)
}

/// The picture in a request: the body, or a multipart form's `image` field (its file
/// name, or "body", names it in messages). The whole body is read first, under one size
/// and time limit for both.
async fn read_picture(request: Request, max_body: usize) -> Result<(String, axum::body::Bytes), ApiError> {
    let (parts, body) = request.into_parts();
    let bytes = match tokio::time::timeout(BODY_TIME, read_body(body, max_body)).await {
        Err(_) => return Err(ApiError::new(StatusCode::REQUEST_TIMEOUT, "the request body took too long to arrive")),
        Ok(Err(BodyError::Unreadable)) => {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "the request body could not be read"))
        }
        Ok(Err(BodyError::TooLarge)) => {
            let mb = max_body as f64 / 1e6;
            let problem = format!("the request is larger than {mb:.1} MB, the most this server takes");
            return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, problem));
        }
        Ok(Ok(bytes)) => bytes,
    };
    let multipart = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    if !multipart {
        return Ok(("body".to_string(), bytes.into()));
    }
    image_field(Request::from_parts(parts, Body::from(bytes))).await
}

/// A multipart form's `image` field (the form is already in memory).
async fn image_field(request: Request) -> Result<(String, axum::body::Bytes), ApiError> {
    let form_error = |e: axum::extract::multipart::MultipartError| {
        ApiError::new(e.status(), format!("a bad multipart form: {}", e.body_text()))
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
    model: &ServedModel,
    name: &str,
    bytes: &[u8],
    max_pixels: u64,
    top: usize,
    with_layers: bool,
) -> Result<Value, ApiError> {
    let img = decode_image(bytes, Path::new(name), Some(max_pixels))?;
    let prepared = prepare(&img, Style::Auto, model.dataset)
        .map_err(|problem| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("{name}: {problem}")))?;
    let seen = model.activations(&prepared).map_err(internal)?;
    let names = model.class_names();
    let mut answer = picture_json(name, &prepared, &seen.probabilities, &seen.outputs, model.is_rbf(), top, &names);
    answer["model"] = json!(model.info.id);
    answer["probabilities"] = json!(seen.probabilities);
    let side = model.info.input_size;
    answer["input"] = json!({ "size": side, "pixels": base64_of(&seen.input) });
    if with_layers {
        answer["layers"] = layers_json(model, &seen);
    }
    Ok(answer)
}

fn base64_of(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Each layer's output as little-endian f32s in base64 (exact, and a quarter of JSON
/// numbers' size), with its shape and range.
fn layers_json(model: &ServedModel, seen: &Activations) -> Value {
    model
        .info
        .layers
        .iter()
        .zip(&seen.layers)
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
    let model = app.model(q.model.as_deref())?;
    // The first request for a model classifies its test set (on every core); requests
    // meanwhile wait here without holding a thread; later ones read the result.
    let gallery = model
        .gallery
        .get_or_try_init(|| {
            let (model, data_dir) = (model.clone(), app.data_dir.clone());
            async move {
                tokio::task::spawn_blocking(move || find_errors(&model, data_dir.as_deref()))
                    .await
                    .map_err(internal)?
                    .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, format!("{e:#}")))
            }
        })
        .await?;
    let limit = q.limit.unwrap_or(200);
    let gallery = Gallery { items: gallery.items.iter().take(limit).cloned().collect(), ..gallery.summary() };
    Ok(Json(json!({ "model": model.info.id, "gallery": gallery })))
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

pub async fn wrong_method() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "wrong method: POST /api/predict takes a picture; GET /api/models and /api/errors",
    )
}

pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such page or API call (the API: /api/models, /api/predict, /api/errors)")
}
