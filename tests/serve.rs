//! `lenet serve` (issue 23) end to end over loopback, with a real HTTP client: the
//! answer is `lenet predict --json`'s plus every layer's output (checked against the
//! f64 reference chain), bad requests get a clear message and the right status and
//! leave the server up, concurrent requests do not mix, and the errors gallery is the
//! model's real errors on its test set.

#[path = "common/reference.rs"]
#[allow(dead_code)]
mod reference;
#[path = "common/server.rs"]
mod server;

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use image::{GrayImage, ImageFormat, Luma};
use serde_json::Value;

use lenet::data::DatasetKind;
use lenet::internal::input::pixel_affine;
use lenet::models;
use server::Server;

#[path = "common/real_data.rs"]
mod real_data;

fn photo(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/photo-digits").join(name)
}

/// POST `body` to `url`: the status and the JSON answer.
fn post(url: &str, content_type: &str, body: &[u8]) -> (u16, Value) {
    let answer = match ureq::post(url).set("Content-Type", content_type).send_bytes(body) {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{url}: {e}"),
    };
    let status = answer.status();
    let text = answer.into_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: not JSON ({e}): {text:.200}")))
}

fn get(url: &str) -> (u16, String, String) {
    let answer = match ureq::get(url).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{url}: {e}"),
    };
    let (status, kind) = (answer.status(), answer.content_type().to_string());
    (status, kind, answer.into_string().unwrap())
}

fn multipart(field: &str, file_name: &str, bytes: &[u8]) -> (String, Vec<u8>) {
    let boundary = "lenet-test-boundary-7MA4YWxkTrZu0gW";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{file_name}\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn png(img: &GrayImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png).unwrap();
    out.into_inner()
}

/// A dark ring on white paper, `side` pixels square.
fn drawn_ring(side: u32) -> GrayImage {
    let c = side as f32 / 2.0;
    GrayImage::from_fn(side, side, |x, y| {
        let r = ((x as f32 - c).powi(2) + (y as f32 - c).powi(2)).sqrt();
        Luma([if (r - 0.3 * side as f32).abs() < 0.05 * side as f32 { 20 } else { 240 }])
    })
}

fn floats(b64: &str) -> Vec<f32> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
    bytes.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

fn bytes(b64: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(b64).unwrap()
}

/// What `lenet predict --json` prints for one picture.
fn predict_json(model: &str, picture: &Path) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_lenet"))
        .args(["predict", "--device", "cpu", "--model", model, "--json"])
        .arg(picture)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<Value>(&out.stdout).unwrap()[0].clone()
}

/// The answer holds what `predict --json` prints for the same picture (the file name
/// aside), whether the picture came as the body or as a multipart field; and every
/// layer's output is what the f64 reference chain computes from the input it reports.
#[test]
fn predict_answers_what_predict_json_prints_and_every_layer() {
    for model in ["mnist-lenet5", "mnist-relu"] {
        let server = Server::start(&["--model", model, "--rate-limit", "0"], &[]);
        let picture = photo("3-0.jpg");
        let file = std::fs::read(&picture).unwrap();
        let (status, answer) = post(&format!("{}/api/predict", server.url), "image/jpeg", &file);
        assert_eq!(status, 200, "{answer}");
        let want = predict_json(model, &picture);
        for key in ["preprocess", "inverted", "size", "ink_box", "warnings"] {
            assert_eq!(answer[key], want[key], "{model}: {key}");
        }
        assert_eq!(answer["file"], "body");
        assert_eq!(answer["model"], model);
        let (got, want_p) = (answer["predictions"].as_array().unwrap(), want["predictions"].as_array().unwrap());
        assert_eq!(got.len(), 3, "top 3 by default, as predict");
        for (g, w) in got.iter().zip(want_p) {
            assert_eq!(g["class"], w["class"], "{model}");
            assert_eq!(g["name"], w["name"], "{model}");
            let (g, w) = (g["probability"].as_f64().unwrap(), w["probability"].as_f64().unwrap());
            assert!((g - w).abs() <= 1e-6 * w.max(1e-30) + 1e-12, "{model}: {g} vs {w}");
        }
        assert_eq!(got[0]["class"], 3, "{model} reads the photographed 3");
        assert_eq!(answer.get("distances").is_some(), want.get("distances").is_some(), "{model}");

        // The same picture as a multipart field: the same answer, named by its file name.
        let (kind, body) = multipart("image", "three.jpg", &file);
        let (status, by_form) = post(&format!("{}/api/predict", server.url), &kind, &body);
        assert_eq!(status, 200, "{by_form}");
        assert_eq!(by_form["file"], "three.jpg");
        assert_eq!(by_form["predictions"], answer["predictions"]);
        assert_eq!(by_form["layers"], answer["layers"]);

        // Every layer, against the f64 reference chain on the input the answer reports.
        let ck = models::find(model).unwrap().checkpoint();
        let side = answer["input"]["size"].as_u64().unwrap() as usize;
        assert_eq!(side, ck.spec.input.size);
        let pixels = bytes(answer["input"]["pixels"].as_str().unwrap());
        assert_eq!(pixels.len(), side * side);
        let (scale, shift) = pixel_affine(ck.spec.input.normalize);
        let x: Vec<f64> = pixels.iter().map(|&p| (p as f32 * scale + shift) as f64).collect();
        let params: Vec<f64> = ck.params.iter().map(|&v| v as f64).collect();
        let chain = reference::reference(&ck.spec, &params, &x, &[3], None);
        let layers = answer["layers"].as_array().unwrap();
        assert_eq!(layers.len(), ck.spec.layers.len(), "{model}: one entry per layer");
        for (i, (layer, want)) in layers.iter().zip(&chain.outputs).enumerate() {
            let got = floats(layer["data"].as_str().unwrap());
            let shape: Vec<usize> = serde_json::from_value(layer["shape"].clone()).unwrap();
            assert_eq!(shape.iter().product::<usize>(), got.len(), "{model}: layer {i}'s shape");
            reference::assert_close(&format!("{model}: layer {i} ({})", layer["kind"]), &got, want, 1e-4);
            let min = got.iter().copied().fold(f32::INFINITY, f32::min);
            let max = got.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(layer["min"].as_f64().unwrap(), min as f64, "{model}: layer {i}'s min");
            assert_eq!(layer["max"].as_f64().unwrap(), max as f64, "{model}: layer {i}'s max");
        }
        // The last layer is the outputs: for LeNet-5's RBF layer, minus the distances.
        if let Some(d) = answer.get("distances") {
            let last = floats(layers.last().unwrap()["data"].as_str().unwrap());
            let d: Vec<f32> = serde_json::from_value(d.clone()).unwrap();
            assert_eq!(d, last.iter().map(|v| -v).collect::<Vec<_>>());
        }
        // `?layers=false` leaves them out; `top` says how many classes.
        let (_, small) = post(&format!("{}/api/predict?layers=false&top=10", server.url), "image/jpeg", &file);
        assert!(small.get("layers").is_none());
        assert_eq!(small["predictions"].as_array().unwrap().len(), 10);
    }
}

/// Every bad request gets its status and a message that says what is wrong, and the
/// server answers the next good request as before.
#[test]
fn bad_requests_get_clear_errors_and_the_server_stays_up() {
    let mut server = Server::start(&["--model", "mnist-relu", "--rate-limit", "0", "--max-body", "1"], &[]);
    let url = format!("{}/api/predict", server.url);
    let good = std::fs::read(photo("7-0.jpg")).unwrap();
    let mut truncated = png(&drawn_ring(120));
    truncated.truncate(truncated.len() / 2);
    let huge = vec![0u8; 1_500_000];
    let blank = png(&GrayImage::from_pixel(64, 64, Luma([200])));
    let (form_kind, no_field) = multipart("picture", "x.png", &good);
    let (big_kind, big_form) = multipart("image", "big.png", &vec![0u8; 1_200_000]);
    let cases: Vec<(&str, String, Vec<u8>, u16, &str)> = vec![
        ("a text file", "text/plain".into(), b"hello, this is no picture".to_vec(), 415, "not an image"),
        ("a GIF", "image/gif".into(), b"GIF89a\x01\x00\x01\x00\x00\x00\x00;".to_vec(), 415, "Gif image"),
        ("an empty body", "image/png".into(), Vec::new(), 400, "empty"),
        ("a truncated PNG", "image/png".into(), truncated, 400, "cannot decode this Png file"),
        ("a body over the limit", "image/png".into(), huge, 413, "larger than 1.0 MB"),
        ("a blank picture", "image/png".into(), blank, 422, "the image is blank"),
        ("a form without an image field", form_kind, no_field, 400, "no field named \"image\""),
        ("a form over the limit", big_kind, big_form, 413, "larger than 1.0 MB"),
    ];
    for (what, kind, body, status, says) in cases {
        let (got, answer) = post(&url, &kind, &body);
        assert_eq!(got, status, "{what}: {answer}");
        let message = answer["error"].as_str().unwrap_or_else(|| panic!("{what}: no message: {answer}"));
        assert!(message.contains(says), "{what}: {message}");
        let (got, answer) = post(&url, "image/jpeg", &good);
        assert_eq!((got, &answer["predictions"][0]["class"]), (200, &Value::from(7)), "after {what}: {answer}");
    }
    let (got, answer) = post(&format!("{url}?top=three"), "image/jpeg", &good);
    assert_eq!(got, 400);
    assert!(answer["error"].as_str().unwrap().contains("a bad query string"), "{answer}");
    let (got, answer) = post(&format!("{url}?model=no-such-model"), "image/jpeg", &good);
    assert_eq!(got, 404);
    assert!(answer["error"].as_str().unwrap().contains("mnist-relu, mnist-d2l"), "{answer}");
    let (got, _, text) = get(&url);
    assert_eq!(got, 405, "GET on /api/predict");
    assert!(text.contains("wrong method: POST /api/predict takes a picture"), "{text}");
    let (got, _, text) = get(&format!("{}/nothing/here", server.url));
    assert_eq!(got, 404);
    assert!(text.contains("no such page"), "{text}");
    assert!(server.is_running());
}

/// A picture with more pixels than the server takes is refused from its header, before
/// it is decoded: with the default limit (16 megapixels) a 64-megapixel PNG of a few
/// hundred kilobytes, and with `--max-pixels 0.01` a 200×200 one.
#[test]
fn oversized_pictures_are_refused_before_decoding() {
    let server = Server::start(&["--model", "mnist-relu", "--rate-limit", "0"], &[]);
    let bomb = png(&GrayImage::new(8000, 8000));
    assert!(bomb.len() < 1_000_000, "{} bytes", bomb.len());
    let (status, answer) = post(&format!("{}/api/predict", server.url), "image/png", &bomb);
    assert_eq!(status, 413, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("8000×8000 pixels, at most 16.0 megapixels"), "{answer}");

    let small = Server::start(&["--model", "mnist-relu", "--max-pixels", "0.01"], &[]);
    let (status, answer) = post(&format!("{}/api/predict", small.url), "image/png", &png(&drawn_ring(200)));
    assert_eq!(status, 413, "{answer}");
    let (status, _) = post(&format!("{}/api/predict", small.url), "image/png", &png(&drawn_ring(100)));
    assert_eq!(status, 200);
}

/// A client over its rate gets 429 with Retry-After; another client is not held back.
#[test]
fn a_client_over_its_rate_is_told_to_slow_down() {
    // 0.01 a second: the burst of 10, then nothing for 100 s, however slow this machine is.
    let server = Server::start(&["--model", "mnist-relu", "--rate-limit", "0.01"], &[]);
    let url = format!("{}/api/models", server.url);
    // A burst of 10 (twice the rate, at least 10), then refusals.
    let statuses: Vec<u16> = (0..14)
        .map(|_| match ureq::get(&url).call() {
            Ok(r) => r.status(),
            Err(ureq::Error::Status(code, r)) => {
                assert!(r.header("Retry-After").is_some_and(|s| s.parse::<u64>().unwrap() >= 1));
                assert!(r.into_string().unwrap().contains("too many requests"));
                code
            }
            Err(e) => panic!("{e}"),
        })
        .collect();
    assert_eq!(statuses.iter().filter(|&&s| s == 200).count(), 10, "{statuses:?}");
    assert!(statuses[10..].iter().all(|&s| s == 429), "{statuses:?}");
    // The page itself is not rate limited.
    assert_eq!(get(&format!("{}/", server.url)).0, 200);
}

/// Many requests at once, each for its own picture, each get that picture's answer: the
/// pool's networks do not mix up their inputs.
#[test]
fn concurrent_requests_each_get_their_own_answer() {
    let server = Server::start(&["--model", "mnist-lenet5", "--rate-limit", "0", "--workers", "4"], &[]);
    let url = format!("{}/api/predict?top=10", server.url);
    let pictures: Vec<Vec<u8>> = (0..10).map(|d| std::fs::read(photo(&format!("{d}-0.jpg"))).unwrap()).collect();
    let alone: Vec<Value> = pictures.iter().map(|p| post(&url, "image/jpeg", p).1).collect();
    std::thread::scope(|s| {
        for t in 0..8 {
            let (url, pictures, alone) = (&url, &pictures, &alone);
            s.spawn(move || {
                for k in 0..12 {
                    let d = (t * 3 + k) % 10;
                    let (status, answer) = post(url, "image/jpeg", &pictures[d]);
                    assert_eq!(status, 200, "{answer}");
                    assert_eq!(answer["probabilities"], alone[d]["probabilities"], "thread {t}, picture {d}");
                    assert_eq!(answer["layers"], alone[d]["layers"], "thread {t}, picture {d}");
                }
            });
        }
    });
}

/// The models list: the checkpoints given first (a file as a file, with its path as its
/// id), then every shipped model with its card's accuracy; the page and its files are
/// served with their types.
#[test]
fn the_models_list_and_the_page() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mine.safetensors");
    std::fs::write(&file, models::find("fashion-mnist-d2l").unwrap().bytes()).unwrap();
    let server = Server::start(&[file.to_str().unwrap(), "--rate-limit", "0"], &[]);
    assert!(server.url.starts_with("http://127.0.0.1:"), "binds to this machine only by default: {}", server.url);
    let (status, kind, text) = get(&format!("{}/api/models", server.url));
    assert_eq!((status, kind.as_str()), (200, "application/json"));
    let list: Value = serde_json::from_str(&text).unwrap();
    let models_listed = list["models"].as_array().unwrap();
    assert_eq!(list["default"], file.display().to_string());
    assert_eq!(models_listed.len(), 7);
    assert_eq!(models_listed[0]["source"], "file");
    assert_eq!(models_listed[0]["dataset"], "fashion-mnist");
    assert_eq!(models_listed[0]["classes"][9], "Ankle boot");
    for m in &models_listed[1..] {
        let card = models::find(m["id"].as_str().unwrap()).unwrap().card();
        assert_eq!(m["test_accuracy"].as_f64().unwrap(), card.test_accuracy);
        // Trainable parameters, as the paper counts them (LeNet-5's C3 table leaves 900 of its buffer out).
        let trainable: usize = models::find(&card.name)
            .unwrap()
            .checkpoint()
            .spec
            .resolve()
            .unwrap()
            .iter()
            .map(|l| l.trainable_count())
            .sum();
        assert_eq!(m["parameters"].as_u64().unwrap() as usize, trainable);
        assert_eq!(trainable == card.parameters, card.architecture != "lenet5");
        assert_eq!(m["architecture"], card.architecture.as_str());
    }
    let lenet5 = models_listed.iter().find(|m| m["id"] == "mnist-lenet5").unwrap();
    assert_eq!((&lenet5["bitmaps"]["width"], &lenet5["bitmaps"]["height"]), (&Value::from(7), &Value::from(12)));
    assert_eq!(lenet5["layers"].as_array().unwrap().len(), 14);
    assert_eq!(lenet5["input_size"], 32);
    assert_eq!(lenet5["parameters"], 60_000);

    for (path, kind, has) in [
        ("/", "text/html", "<canvas id=\"pad\""),
        ("/app.js", "text/javascript", "/api/predict"),
        ("/style.css", "text/css", "#pad"),
    ] {
        let (status, got_kind, text) = get(&format!("{}{path}", server.url));
        assert_eq!((status, got_kind.as_str()), (200, kind), "{path}");
        assert!(text.contains(has), "{path}");
    }
    // Served from the binary: nothing was written next to the model.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

/// Uploads are never written anywhere: a server run in an empty folder, with its
/// temporary folder and home there too, leaves them empty after pictures of every kind.
#[test]
fn uploads_are_never_written_to_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (run, tmp, home) = (dir.path().join("run"), dir.path().join("tmp"), dir.path().join("home"));
    for d in [&run, &tmp, &home] {
        std::fs::create_dir(d).unwrap();
    }
    let server = Server::start_in(
        &run,
        &["--model", "mnist-relu", "--rate-limit", "0"],
        &[("TMPDIR", tmp.to_str().unwrap()), ("HOME", home.to_str().unwrap())],
    );
    let url = format!("{}/api/predict", server.url);
    let photo_bytes = std::fs::read(photo("5-0.jpg")).unwrap();
    assert_eq!(post(&url, "image/jpeg", &photo_bytes).0, 200);
    let (kind, form) = multipart("image", "five.jpg", &photo_bytes);
    assert_eq!(post(&url, &kind, &form).0, 200);
    assert_eq!(post(&url, "image/png", &png(&drawn_ring(300))).0, 200);
    assert_eq!(post(&url, "text/plain", b"no picture").0, 415);
    for d in [&run, &tmp, &home] {
        let left: Vec<_> = std::fs::read_dir(d).unwrap().map(|e| e.unwrap().path()).collect();
        assert!(left.is_empty(), "{}: {left:?}", d.display());
    }
}

/// The gallery holds exactly the model's errors on its real test set: as many as its
/// card says (with the card's instruction set), each labelled and predicted as the test
/// set and the network say, with the test image's own pixels.
#[test]
fn the_errors_gallery_is_the_models_test_errors() {
    let Some(dir) = real_data::real_data_dir(DatasetKind::Mnist) else { return };
    let m = models::find("mnist-relu").unwrap();
    let card = m.card();
    let server = Server::start(&["--model", m.name], &[("LENET_ISA", &card.isa)]);
    let (status, _, text) = get(&format!("{}/api/errors?limit=1000", server.url));
    assert_eq!(status, 200, "{text}");
    let gallery = &serde_json::from_str::<Value>(&text).unwrap()["gallery"];
    assert_eq!(gallery["errors"].as_u64().unwrap() as usize, card.test_errors);
    assert_eq!(gallery["total"], 10_000);
    assert_eq!(gallery["accuracy"].as_f64().unwrap(), card.test_accuracy);
    let items = gallery["items"].as_array().unwrap();
    assert_eq!(items.len(), card.test_errors);
    let ds = lenet::data::dataset::Dataset::load_from(DatasetKind::Mnist, &dir).unwrap();
    for item in items {
        let i = item["index"].as_u64().unwrap() as usize;
        assert_eq!(item["label"].as_u64().unwrap() as u8, ds.test.labels[i]);
        assert_ne!(item["label"], item["predicted"]);
        assert_eq!(bytes(item["pixels"].as_str().unwrap()), ds.test.images.image(i), "test image {i}");
    }
    // `limit` bounds the items, not the count.
    let (_, _, text) = get(&format!("{}/api/errors?limit=5&model=mnist-relu", server.url));
    let gallery = &serde_json::from_str::<Value>(&text).unwrap()["gallery"];
    assert_eq!(
        (gallery["items"].as_array().unwrap().len(), gallery["errors"].as_u64().unwrap() as usize),
        (5, card.test_errors)
    );
}

/// Without the dataset, the gallery says how to get it (and the rest still works).
#[test]
fn the_gallery_without_data_says_how_to_get_it() {
    let empty = tempfile::tempdir().unwrap();
    let server = Server::start(
        &["--model", "mnist-relu", "--data-dir", empty.path().to_str().unwrap()],
        &[
            ("HOME", empty.path().to_str().unwrap()),
            ("LENET_DATA", ""),
            ("XDG_CACHE_HOME", empty.path().to_str().unwrap()),
        ],
    );
    let (status, _, text) = get(&format!("{}/api/errors", server.url));
    assert_eq!(status, 404, "{text}");
    assert!(text.contains("lenet data fetch mnist") || text.contains("setup-data"), "{text}");
    let (status, _) =
        post(&format!("{}/api/predict", server.url), "image/jpeg", &std::fs::read(photo("1-0.jpg")).unwrap());
    assert_eq!(status, 200);
}
