//! `lenet serve`: the draw-a-digit page (src/serve/).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;

use lenet::internal::serve::limit::RateLimit;
use lenet::internal::serve::model::ServedModel;
use lenet::internal::serve::{serve, App, Connections, Limits};
use lenet::models::{ModelSource, SHIPPED};

use super::arch::ArchArgs;
use super::models::source;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Checkpoints (.safetensors) or shipped models' names to serve, the first shown
    /// first; the shipped models are always there to switch to (without any, mnist-lenet5
    /// comes first).
    #[arg(value_name = "CKPT|MODEL")]
    pub checkpoints: Vec<String>,
    /// A shipped model to show first, by name (`lenet models` lists them).
    #[arg(long, value_name = "NAME")]
    pub model: Option<String>,
    /// The address to listen on: 127.0.0.1 (this machine only) unless you say otherwise,
    /// e.g. 0.0.0.0 for every network the machine is on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// The port (0: any free one; the address is printed).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Requests per second each client may make, on average (0: no limit).
    #[arg(long, default_value_t = 50.0, value_name = "PER_SECOND")]
    pub rate_limit: f64,
    /// The largest request body taken, in megabytes.
    #[arg(long, default_value_t = 16.0, value_name = "MB")]
    pub max_body: f64,
    /// The largest picture taken, in megapixels (a phone's photo is 12).
    #[arg(long, default_value_t = 16.0, value_name = "MEGAPIXELS")]
    pub max_pixels: f64,
    /// Pictures classified at once (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
    /// Connections open at once, all clients together; one more is told 503 and closed.
    #[arg(long, default_value_t = Connections::default().max, value_name = "N")]
    pub max_connections: usize,
    /// Connections open at once from one address.
    #[arg(long, default_value_t = Connections::default().per_address, value_name = "N")]
    pub max_connections_per_address: usize,
    /// Seconds a client has to send a request's headers, may idle between requests, and may
    /// leave an answer unread.
    #[arg(long, default_value_t = Connections::default().header_timeout.as_secs_f64(), value_name = "SECONDS")]
    pub header_timeout: f64,
    /// Architecture, for files that do not carry one (PyTorch state_dicts).
    #[command(flatten)]
    pub arch: ArchArgs,
}

pub fn run(args: ServeArgs, data_dir: Option<&Path>) -> Result<()> {
    let want = if args.arch.is_set() { Some(args.arch.spec("d2l")?) } else { None };
    let mut sources: Vec<ModelSource> = Vec::new();
    if let Some(name) = &args.model {
        sources.push(source(None, Some(name))?);
    }
    for arg in &args.checkpoints {
        sources.push(source(Some(arg), None)?);
    }
    if sources.is_empty() {
        sources.push(source(None, Some("mnist-lenet5"))?);
    }
    let given: Vec<String> = sources.iter().map(ModelSource::id).collect();
    sources.extend(SHIPPED.iter().map(ModelSource::Shipped).filter(|s| !given.contains(&s.id())));
    let mut models = Vec::with_capacity(sources.len());
    for s in &sources {
        // The architecture flags are for the files given, not for the shipped models.
        let spec = if matches!(s, ModelSource::File(_)) { want.as_ref() } else { None };
        models.push(ServedModel::new(s, s.load(spec)?)?);
    }
    let workers =
        if args.workers == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { args.workers };
    for (flag, v) in [("--max-body", args.max_body), ("--max-pixels", args.max_pixels)] {
        if !(v.is_finite() && v > 0.0) {
            anyhow::bail!("{flag} {v}: give a positive number");
        }
    }
    if !(args.rate_limit.is_finite() && args.rate_limit >= 0.0) {
        anyhow::bail!("--rate-limit {}: give requests per second, or 0 for no limit", args.rate_limit);
    }
    if args.max_connections == 0 || args.max_connections_per_address == 0 {
        anyhow::bail!("--max-connections and --max-connections-per-address must be at least 1");
    }
    if !(args.header_timeout.is_finite() && args.header_timeout > 0.0 && args.header_timeout <= 3600.0) {
        anyhow::bail!("--header-timeout {}: give seconds, more than 0 and at most 3600", args.header_timeout);
    }
    let connections = Connections {
        max: args.max_connections,
        per_address: args.max_connections_per_address,
        header_timeout: std::time::Duration::from_secs_f64(args.header_timeout),
    };
    let limits =
        Limits { max_body: (args.max_body * 1e6) as usize, max_pixels: (args.max_pixels * 1e6) as u64, connections };
    let rate = (args.rate_limit > 0.0).then(|| RateLimit::new(args.rate_limit, (2.0 * args.rate_limit).max(10.0)));
    let app = App::new(models, limits, workers, rate, data_dir.map(Path::to_path_buf));
    let first = app.models[0].info.id.clone();
    let count = app.models.len();

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let addr = SocketAddr::new(args.host, args.port);
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        let bound = listener.local_addr()?;
        let host = if bound.ip().is_unspecified() { "localhost".to_string() } else { bound.ip().to_string() };
        let host = if bound.is_ipv6() && !bound.ip().is_unspecified() { format!("[{host}]") } else { host };
        println!("lenet serve: http://{host}:{}/  ({first} first, {count} models; Ctrl-C stops)", bound.port());
        serve(listener, Arc::new(app)).await.context("the server stopped")
    })
}
