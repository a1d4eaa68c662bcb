//! A load generator for `lenet serve` on loopback: starts the server (target/release/lenet,
//! or $LENET_BIN) on a free port without a rate limit, sends one picture over and over
//! from C clients (each on its own keep-alive connection) until N requests or S seconds,
//! and prints requests per second, the latency's median, p90 and p99, the errors, and
//! the server's memory before, after and at its peak.
//!
//! cargo build --release && cargo run --release --example serve_load -- \
//!     [--requests 5000] [--seconds 60] [--clients 2] [--model mnist-lenet5] [--no-layers] [--picture FILE]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

struct Options {
    requests: usize,
    seconds: f64,
    clients: usize,
    model: String,
    layers: bool,
    picture: PathBuf,
}

fn options() -> Options {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut o = Options {
        requests: 5000,
        seconds: 60.0,
        clients: 2,
        model: "mnist-lenet5".into(),
        layers: true,
        picture: root.join("tests/fixtures/photo-digits/3-0.jpg"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--requests" => o.requests = value().parse().unwrap(),
            "--seconds" => o.seconds = value().parse().unwrap(),
            "--clients" => o.clients = value().parse().unwrap(),
            "--model" => o.model = value(),
            "--picture" => o.picture = value().into(),
            "--no-layers" => o.layers = false,
            _ => panic!("unknown option {a}"),
        }
    }
    o
}

/// Resident and peak memory of a process, in MiB (Linux).
fn memory_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> f64 {
        let kib = status.lines().find(|l| l.starts_with(name)).and_then(|l| l.split_whitespace().nth(1));
        kib.and_then(|v| v.parse::<f64>().ok()).unwrap_or(f64::NAN) / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let o = options();
    let bin = std::env::var("LENET_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/lenet"));
    let mut server = Command::new(&bin)
        .args(["serve", "--port", "0", "--rate-limit", "0", "--model", &o.model])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e} (cargo build --release first)", bin.display()));
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let base = line.split_whitespace().find(|w| w.starts_with("http://")).expect("an address").trim_end_matches('/');
    let url = format!("{base}/api/predict?layers={}", o.layers);
    let picture = std::fs::read(&o.picture).unwrap();
    let pid = server.id();

    // Warm up: every pooled network built, the page's first answers out of the way.
    let agent = ureq::AgentBuilder::new().build();
    for _ in 0..50 {
        agent.post(&url).send_bytes(&picture).unwrap().into_string().unwrap();
    }
    let before = memory_mib(pid);

    let sent = AtomicUsize::new(0);
    let errors = AtomicUsize::new(0);
    let deadline = Instant::now() + Duration::from_secs_f64(o.seconds);
    let start = Instant::now();
    let mut latencies: Vec<f64> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..o.clients)
            .map(|_| {
                s.spawn(|| {
                    let agent = ureq::AgentBuilder::new().build();
                    let mut mine = Vec::new();
                    while sent.fetch_add(1, Ordering::Relaxed) < o.requests && Instant::now() < deadline {
                        let t = Instant::now();
                        let ok = agent.post(&url).send_bytes(&picture).ok().and_then(|r| r.into_string().ok());
                        mine.push(t.elapsed().as_secs_f64() * 1e3);
                        if ok.is_none_or(|body| !body.contains("\"predictions\"")) {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    mine
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    let wall = start.elapsed().as_secs_f64();
    let after = memory_mib(pid);
    latencies.sort_by(f64::total_cmp);
    let n = latencies.len();
    println!(
        "lenet serve, {} ({}), {} clients on loopback: {n} requests in {wall:.1} s = {:.0} requests/s",
        o.model,
        if o.layers { "with every layer's output" } else { "predictions only" },
        o.clients,
        n as f64 / wall
    );
    println!(
        "latency ms: median {:.2}, p90 {:.2}, p99 {:.2}, max {:.2}; errors {}",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.9),
        percentile(&latencies, 0.99),
        latencies[n - 1],
        errors.load(Ordering::Relaxed)
    );
    println!(
        "server memory MiB: resident {:.1} after warm-up, {:.1} after the run, peak {:.1}",
        before.0, after.0, after.1
    );
    let _ = server.kill();
    let _ = server.wait();
}
