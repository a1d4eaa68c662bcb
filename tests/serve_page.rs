//! `lenet serve`'s page in headless Chromium (issue 23): tests/page/page.mjs draws on
//! the canvas, uploads a photo, clicks a gallery item and switches models, through
//! Playwright (playwright-core from npm, scripts/setup-playwright) driving Debian's
//! `chromium`. It keeps screenshots in target/tmp/ and prints how long the page took
//! from a stroke to its drawn answer.

#[path = "common/server.rs"]
mod server;

use std::path::Path;
use std::process::Command;

use server::Server;

fn required() -> bool {
    std::env::var("LENET_REQUIRE_CHROMIUM").is_ok_and(|v| v == "1")
}

#[test]
fn the_page_draws_uploads_and_browses_errors_in_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let playwright = root.join("tests/page/node_modules/playwright-core");
    let chromium = std::env::var("LENET_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let node = Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    if !(playwright.exists() && Path::new(&chromium).exists() && node) {
        let missing = format!(
            "node {node}, {} {}, {chromium} {}",
            playwright.display(),
            playwright.exists(),
            Path::new(&chromium).exists()
        );
        if required() {
            panic!("the page test needs node, Playwright and Chromium ({missing}): run scripts/setup-playwright");
        }
        eprintln!("skipping the page test ({missing}): scripts/setup-playwright installs them");
        return;
    }
    if lenet::data::locate::locate(lenet::data::DatasetKind::Mnist, None).is_err() {
        assert!(!required(), "the page test needs MNIST for the errors gallery: run scripts/setup-data");
        eprintln!("skipping the page test: no MNIST for the errors gallery");
        return;
    }
    let server = Server::start(&[], &[]);
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let photo = root.join("tests/fixtures/photo-digits/4-1.jpg");
    let run = Command::new("node")
        .arg(root.join("tests/page/page.mjs"))
        .args([&server.url, out.to_str().unwrap(), photo.to_str().unwrap(), "4"])
        .env("LENET_CHROMIUM", &chromium)
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "the page test failed:\n{stdout}\n{stderr}");
    println!("{stdout}");
    println!("screenshots: {0}/serve-page.png, {0}/serve-page-fashion.png", out.display());
    let screenshot = std::fs::read(out.join("serve-page.png")).unwrap();
    let img = image::load_from_memory(&screenshot).unwrap();
    assert!(img.width() >= 1000 && img.height() >= 900, "{}×{}", img.width(), img.height());
}
