//! A load generator for `lenet serve` on loopback: starts the server (target/release/lenet,
//! or $LENET_BIN) on a free port without a rate limit, sends one picture over and over
//! from C clients (each on its own keep-alive connection) until N requests or S seconds,
//! and prints requests per second, the latency's median, p90 and p99, the errors, and
//! the server's memory before, after and at its peak.
//!
//! With `--slowloris N`, N more connections from 127.0.0.2, 127.0.0.3, … (16 from each
//! address) send a request's headers a byte every 100 ms and never finish them, all the
//! while; each one the server cuts or refuses is opened again. Extra server options go
//! after `--`.
//!
//! cargo build --release && cargo run --release --example serve_load -- \
//!     [--requests 5000] [--seconds 60] [--clients 2] [--model mnist-lenet5] [--no-layers] [--picture FILE]
//!     [--slowloris N] [-- SERVER OPTIONS]

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
    slowloris: usize,
    server_options: Vec<String>,
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
        slowloris: 0,
        server_options: Vec::new(),
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
            "--slowloris" => o.slowloris = value().parse().unwrap(),
            "--" => {
                o.server_options = args.by_ref().collect();
                break;
            }
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
        .args(&o.server_options)
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

    let attack = Slowloris::new(base, o.slowloris);
    let stop_attack = std::sync::atomic::AtomicBool::new(false);
    let sent = AtomicUsize::new(0);
    let errors = AtomicUsize::new(0);
    let deadline = Instant::now() + Duration::from_secs_f64(o.seconds);
    let start = Instant::now();
    let mut latencies: Vec<f64> = std::thread::scope(|s| {
        let attacker = s.spawn(|| attack.run(&stop_attack));
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
        let latencies = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
        stop_attack.store(true, Ordering::Relaxed);
        attacker.join().unwrap();
        latencies
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
    if o.slowloris > 0 {
        println!(
            "slowloris: {} connections held from {} addresses; {} cut by the server, {} refused at a cap",
            o.slowloris,
            o.slowloris.div_ceil(16),
            attack.cut.load(Ordering::Relaxed),
            attack.refused.load(Ordering::Relaxed)
        );
    }
    let _ = server.kill();
    let _ = server.wait();
}

/// Connections that send headers a byte at a time and never finish, reopened when the
/// server cuts or refuses them.
struct Slowloris {
    server: std::net::SocketAddr,
    count: usize,
    cut: AtomicUsize,
    refused: AtomicUsize,
}

impl Slowloris {
    fn new(base: &str, count: usize) -> Slowloris {
        let server = base.trim_start_matches("http://").parse().expect("host:port");
        Slowloris { server, count, cut: AtomicUsize::new(0), refused: AtomicUsize::new(0) }
    }

    /// Connection `i`, from 127.0.0.(2 + i / 16), with its request begun.
    fn open(&self, i: usize) -> Option<std::net::TcpStream> {
        use socket2::{Domain, Socket, Type};
        let from = std::net::Ipv4Addr::new(127, 0, 0, 2 + (i / 16) as u8);
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).ok()?;
        socket.bind(&std::net::SocketAddr::new(from.into(), 0).into()).ok()?;
        socket.connect(&self.server.into()).ok()?;
        let mut stream: std::net::TcpStream = socket.into();
        stream.set_nonblocking(true).ok()?;
        std::io::Write::write_all(&mut stream, b"POST /api/predict HTTP/1.1\r\nhost: x\r\n").ok()?;
        Some(stream)
    }

    fn run(&self, stop: &std::sync::atomic::AtomicBool) {
        use std::io::{Read, Write};
        let mut conns: Vec<Option<std::net::TcpStream>> = (0..self.count).map(|i| self.open(i)).collect();
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
            for (i, slot) in conns.iter_mut().enumerate() {
                let mut gone = slot.is_none();
                if let Some(c) = slot {
                    let mut buf = [0u8; 512];
                    match c.read(&mut buf) {
                        // A 503 from a cap, or the end of the stream from the header timeout.
                        Ok(n) if n > 0 && buf.starts_with(b"HTTP/1.1 503") => {
                            self.refused.fetch_add(1, Ordering::Relaxed);
                            gone = true;
                        }
                        Ok(_) => {
                            self.cut.fetch_add(1, Ordering::Relaxed);
                            gone = true;
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => {
                            self.cut.fetch_add(1, Ordering::Relaxed);
                            gone = true;
                        }
                    }
                    if !gone && c.write_all(b"x").is_err() {
                        self.cut.fetch_add(1, Ordering::Relaxed);
                        gone = true;
                    }
                }
                if gone {
                    *slot = self.open(i);
                }
            }
        }
    }
}
