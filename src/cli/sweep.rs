//! `lenet sweep`: plan a sweep, run its trials (one per scheduler task, or here),
//! write the scheduler's job, report.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use lenet::internal::atomic::write_atomic;
use lenet::internal::sweep::launch::{self, EXIT_INTERRUPTED, EXIT_TRIAL_FAILED};
use lenet::internal::sweep::report::SweepReport;
use lenet::internal::sweep::{Status, SweepDir, SweepFile, SweepStopped, Trial, TrialFailed, TrialResult};
use lenet::trainer::{Diverged, Interrupted};

use super::{Cli, Command as LenetCommand};

#[derive(Subcommand, Debug)]
pub enum SweepCommand {
    /// Expand a sweep file ([base], [grid], [random]) into DIR/trials.jsonl.
    Plan {
        /// The sweep file (TOML).
        file: PathBuf,
        /// The sweep folder, on a filesystem every worker sees.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Run one trial (--index, $SLURM_ARRAY_TASK_ID or $JOB_COMPLETION_INDEX), or all
    /// unfinished ones here (--local).
    Run(RunArgs),
    /// Print a Slurm batch script that runs the sweep as a job array (pipe it to sbatch).
    Sbatch(SbatchArgs),
    /// Print a Kubernetes Indexed Job manifest that runs the sweep (kubectl apply -f -).
    K8s(K8sArgs),
    /// Mean ± std over seeds per configuration, the best one, a plot per swept axis, and
    /// the missing or failed trials: a table here and an HTML page.
    Report {
        /// The sweep folder.
        dir: PathBuf,
        /// The HTML page (default: DIR/report.html).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The sweep folder.
    pub dir: PathBuf,
    /// The trial to run (default: $SLURM_ARRAY_TASK_ID, else $JOB_COMPLETION_INDEX).
    #[arg(long, conflicts_with = "local")]
    pub index: Option<usize>,
    /// Run every unfinished trial on this machine, -j at a time, each in its own process
    /// with its output in DIR/logs/NNNN.log.
    #[arg(long)]
    pub local: bool,
    /// Trials at once with --local.
    #[arg(short = 'j', long, default_value_t = 1, requires = "local")]
    pub jobs: usize,
    /// With --local, also retry the trials that failed.
    #[arg(long, requires = "local")]
    pub retry_failed: bool,
    /// CPU threads of a trial that does not set its own (default: all cores, shared
    /// evenly between --local's -j trials).
    #[arg(long)]
    pub threads: Option<usize>,
}

#[derive(Args, Debug)]
pub struct SbatchArgs {
    /// The sweep folder (on a filesystem the compute nodes share).
    pub dir: PathBuf,
    /// Array tasks running at once (--array=0-N%P).
    #[arg(long, value_name = "P")]
    pub parallel: Option<usize>,
    #[arg(long, default_value_t = 2)]
    pub cpus_per_task: usize,
    /// Wall-time limit per task (Slurm's format, e.g. 2:00:00).
    #[arg(long)]
    pub time: Option<String>,
    #[arg(long)]
    pub partition: Option<String>,
    #[arg(long)]
    pub gpus_per_task: Option<usize>,
    /// Memory per node (Slurm's format, e.g. 4G).
    #[arg(long)]
    pub mem: Option<String>,
    /// Another #SBATCH line, e.g. --sbatch=--account=cv (repeatable).
    #[arg(long = "sbatch", value_name = "OPTION", allow_hyphen_values = true)]
    pub extra: Vec<String>,
    /// The lenet binary as the nodes see it (default: this one).
    #[arg(long)]
    pub lenet: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct K8sArgs {
    /// The sweep folder (inside the shared volume).
    pub dir: PathBuf,
    /// The container image with lenet on its PATH.
    #[arg(long)]
    pub image: String,
    /// The PersistentVolumeClaim (ReadWriteMany) holding the sweep folder.
    #[arg(long, default_value = "lenet-sweeps")]
    pub claim: String,
    /// Where the claim is mounted in each pod.
    #[arg(long, default_value = "/sweeps")]
    pub mount: String,
    /// The sweep folder's path inside the claim (default: DIR's name).
    #[arg(long)]
    pub sub_path: Option<String>,
    /// Pods at once.
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// CPUs per pod (requested and the limit; the trial's threads).
    #[arg(long, default_value_t = 2)]
    pub cpus: usize,
    /// Memory per pod (Kubernetes' format, e.g. 2Gi).
    #[arg(long, default_value = "2Gi")]
    pub memory: String,
    /// GPUs per pod (nvidia.com/gpu).
    #[arg(long)]
    pub gpus: Option<usize>,
    /// Retries of an index whose pod failed for another reason than its trial.
    #[arg(long, default_value_t = 2)]
    pub retries: usize,
    /// The datasets' folder inside the pod (--data-dir), if not found by default.
    #[arg(long = "pod-data-dir", value_name = "DIR")]
    pub pod_data_dir: Option<String>,
    #[arg(long)]
    pub namespace: Option<String>,
}

pub fn run(cmd: SweepCommand, data_dir: Option<&Path>) -> Result<()> {
    match cmd {
        SweepCommand::Plan { file, out } => plan(&file, &out),
        SweepCommand::Run(args) => {
            let (dir, trials) = SweepDir::open(&args.dir)?;
            if args.local {
                return run_local(&dir, &trials, &args, data_dir);
            }
            let index = match args.index {
                Some(i) => i,
                None => index_from_scheduler()?,
            };
            let trial = trials.get(index).with_context(|| {
                format!("trial {index}: {} has {} trials (0 to {})", dir.path.display(), trials.len(), trials.len() - 1)
            })?;
            run_trial(&dir, trial, trials.len(), args.threads, data_dir)
        }
        SweepCommand::Sbatch(a) => {
            let (dir, trials) = SweepDir::open(&a.dir)?;
            let exe = match a.lenet {
                Some(p) => p,
                None => std::env::current_exe().context("cannot find the lenet binary; give --lenet")?,
            };
            let o = launch::Sbatch {
                parallel: a.parallel,
                cpus_per_task: a.cpus_per_task,
                time: a.time,
                partition: a.partition,
                gpus_per_task: a.gpus_per_task,
                mem: a.mem,
                extra: a.extra,
            };
            // Slurm opens each task's log there and does not make the folder.
            let logs = dir.path.join("logs");
            std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
            let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
            if abs(&dir.path).to_string_lossy().contains(char::is_whitespace) {
                bail!(
                    "{}: Slurm's #SBATCH --output takes no path with spaces; move or link the sweep folder",
                    abs(&dir.path).display()
                );
            }
            let data = data_dir.map(abs);
            print!("{}", launch::sbatch_script(&abs(&exe), &abs(&dir.path), data.as_deref(), trials.len(), &o));
            Ok(())
        }
        SweepCommand::K8s(a) => {
            let (dir, trials) = SweepDir::open(&a.dir)?;
            let sub_path = a.sub_path.unwrap_or_else(|| {
                std::path::absolute(&dir.path)
                    .ok()
                    .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .unwrap_or_default()
            });
            let o = launch::K8s {
                image: a.image,
                claim: a.claim,
                mount: a.mount,
                sub_path,
                parallel: a.parallel.min(trials.len()).max(1),
                cpus: a.cpus,
                memory: Some(a.memory),
                gpus: a.gpus,
                retries: a.retries,
                data_dir: a.pod_data_dir,
                namespace: a.namespace,
            };
            print!("{}", launch::k8s_manifest(&dir.path, trials.len(), &o));
            Ok(())
        }
        SweepCommand::Report { dir, out } => {
            let (dir, trials) = SweepDir::open(&dir)?;
            let report = SweepReport::build(&dir, trials);
            print!("{}", report.to_text());
            let out = out.unwrap_or_else(|| dir.path.join("report.html"));
            write_atomic(&out, report.to_html()?.as_bytes())?;
            println!("\nwrote {}", out.display());
            Ok(())
        }
    }
}

fn plan(file: &Path, out: &Path) -> Result<()> {
    let sweep = SweepFile::load(file)?;
    // Every trial's options must be ones `lenet train` takes, with values it accepts:
    // a typo fails here, not in trial 37 on a cluster.
    let arch_files = sweep.arch_files();
    for t in sweep.trials() {
        let mut args = train_command(&t, Path::new(""), None);
        // Not copied into the sweep folder yet: the files where the sweep file names them.
        for a in args.iter_mut() {
            if let Some((_, found)) =
                arch_files.iter().find(|(written, _)| *a == lenet::internal::sweep::plan::arch_copy(written))
            {
                *a = found.to_string_lossy().into_owned();
            }
        }
        parse_train(&args).with_context(|| format!("{}: trial {} ({})", file.display(), t.index, t.name))?;
    }
    let (dir, trials, new) = SweepDir::create(out, file, &sweep)?;
    if !new {
        println!("{} already holds this plan ({} trials): nothing changed", dir.path.display(), trials.len());
        return Ok(());
    }
    let axes = dir.axes(&trials);
    println!("{} trials in {}", trials.len(), dir.trials_file().display());
    if !axes.is_empty() {
        println!("swept: {}", axes.join(", "));
    }
    let show = trials.len().min(5);
    for t in &trials[..show] {
        println!("  {:>4}  {}", t.index, t.name);
    }
    if trials.len() > show {
        println!("  ...");
    }
    let d = dir.path.display();
    println!("run them: lenet sweep run {d} --local -j 2  |  lenet sweep sbatch {d} | sbatch  |  lenet sweep k8s {d} --image IMAGE");
    Ok(())
}

/// `lenet train ...` for a fresh trial (without the binary's name).
fn train_command(trial: &Trial, sweep_dir: &Path, threads: Option<usize>) -> Vec<String> {
    let mut args = vec!["train".to_string()];
    args.extend(trial.train_args(sweep_dir));
    if let (Some(t), false) = (threads, trial.options.contains_key("threads")) {
        args.extend(["--threads".into(), t.to_string()]);
    }
    args
}

fn parse_train(args: &[String]) -> Result<Box<super::train::TrainArgs>> {
    let cli = Cli::try_parse_from(std::iter::once("lenet").chain(args.iter().map(String::as_str)))
        .map_err(|e| anyhow::anyhow!("not lenet train options: {}", e.to_string().trim()))?;
    match cli.command {
        LenetCommand::Train(t) => {
            t.check()?;
            Ok(t)
        }
        _ => unreachable!("the command is train"),
    }
}

/// The trial index a scheduler gives: a Slurm array task's, else a Kubernetes Indexed
/// Job pod's.
fn index_from_scheduler() -> Result<usize> {
    for var in ["SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX"] {
        if let Ok(v) = std::env::var(var) {
            return v.trim().parse().with_context(|| format!("${var} is '{v}', not a trial index"));
        }
    }
    bail!(
        "which trial? give --index I, run it as a Slurm array task ($SLURM_ARRAY_TASK_ID) or a Kubernetes \
         Indexed Job pod ($JOB_COMPLETION_INDEX), or run them all here with --local"
    )
}

/// Run one trial in this process: nothing when it is finished or another worker has
/// it; else train it (resuming its run folder when it has a checkpoint) and record
/// its result, or why it failed.
fn run_trial(
    dir: &SweepDir,
    trial: &Trial,
    count: usize,
    threads: Option<usize>,
    data_dir: Option<&Path>,
) -> Result<()> {
    let i = trial.index;
    let done = |r: &TrialResult| {
        println!("trial {i} ({}) is finished: test acc {:.4} after {} epochs", trial.name, r.test_acc, r.epochs);
    };
    if let Some(r) = dir.result(i) {
        done(&r);
        return Ok(());
    }
    let claim = dir.claim(i, |who| {
        println!("trial {i} ({}) is running elsewhere ({who}): waiting until it finishes or stops", trial.name);
    })?;
    // The worker that held the lock may have finished it meanwhile.
    if let Some(r) = dir.result(i) {
        done(&r);
        return Ok(());
    }
    let run = dir.run_dir(i);
    if let Some((_, history)) = dir.finished_run(i) {
        let r = TrialResult::of(trial, &history)?;
        dir.record_result(&claim, &r)?;
        println!("trial {i} ({}) had finished training: result recorded", trial.name);
        return Ok(());
    }
    let resuming = !lenet::internal::run::RunDir { path: run.clone() }.checkpoints().is_empty();
    let args = if resuming {
        // The checkpoint holds the config; where it runs is the trial's choice still.
        let mut a = vec!["train".into(), "--resume".into(), run.to_string_lossy().into_owned()];
        if let Some(device) = trial.options.get("device") {
            a.extend(["--device".into(), lenet::internal::sweep::plan::show(device)]);
        }
        a
    } else {
        let mut a = train_command(trial, &dir.path, threads);
        a.extend(["--run-dir".into(), run.to_string_lossy().into_owned()]);
        a
    };
    println!("trial {i} of {count}: {}  ({})", trial.name, lenet::internal::sweep::hostname());
    println!("lenet {}", args.join(" "));
    let data_dir = data_dir.map(Path::to_path_buf).or(trial.data_dir());
    let trained = parse_train(&args).and_then(|t| super::train::run(*t, data_dir.as_deref()));
    match trained {
        Ok(()) => {
            let (_, history) = dir
                .finished_run(i)
                .with_context(|| format!("trial {i} trained, but {} holds no finished checkpoint", run.display()))?;
            let r = TrialResult::of(trial, &history)?;
            dir.record_result(&claim, &r)?;
            println!("trial {i} finished: test acc {:.4}; result in {}", r.test_acc, dir.result_file(i).display());
            Ok(())
        }
        // Stopped by a signal, having saved where it was: to be resumed, not a failure.
        Err(e) if e.is::<Interrupted>() => {
            eprintln!("or, for the sweep: lenet sweep run {} --index {i}", dir.path.display());
            Err(e)
        }
        Err(e) => {
            // A diverged run diverges again; any other trouble (a full disk, missing
            // data, no GPU on this node) may pass: the scheduler's retry is welcome.
            let settled = e.is::<Diverged>();
            let error = format!("{e:#}");
            dir.record_failure(&claim, trial, &error, !settled)?;
            match settled {
                true => Err(TrialFailed { index: i, error }.into()),
                false => Err(e.context(format!("trial {i} ({})", trial.name))),
            }
        }
    }
}

/// A SIGINT/SIGTERM counter: the local runner passes each signal on to its workers.
fn count_signals() -> Result<Arc<AtomicUsize>> {
    let count = Arc::new(AtomicUsize::new(0));
    #[cfg(unix)]
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let c = count.clone();
        // SAFETY: the handler only increments an atomic, which is async-signal-safe.
        unsafe { signal_hook::low_level::register(signal, move || _ = c.fetch_add(1, Ordering::SeqCst)) }?;
    }
    Ok(count)
}

/// `--local -j N`: every unfinished trial, N worker processes at a time, each in its
/// own process group (a Ctrl-C reaches them once, passed on by this runner).
fn run_local(dir: &SweepDir, trials: &[Trial], args: &RunArgs, data_dir: Option<&Path>) -> Result<()> {
    let jobs = args.jobs.max(1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = args.threads.unwrap_or((cores / jobs).max(1));
    let statuses: Vec<Status> = trials.iter().map(|t| dir.status(t)).collect();
    let todo: Vec<&Trial> = trials
        .iter()
        .zip(&statuses)
        .filter(|(_, s)| match s {
            Status::Pending | Status::Stopped(_) => true,
            Status::Failed(f) => f.retry || args.retry_failed,
            Status::Done(_) | Status::Running(_) => false,
        })
        .map(|(t, _)| t)
        .collect();
    let done = statuses.iter().filter(|s| matches!(s, Status::Done(_))).count();
    let skipped_failed = trials.len() - todo.len() - done;
    println!(
        "{} of {} trials to run, {jobs} at a time, {threads} threads each; logs in {}",
        todo.len(),
        trials.len(),
        dir.path.join("logs").display()
    );
    if skipped_failed > 0 && !args.retry_failed {
        println!("({skipped_failed} failed or running trials left alone: --retry-failed runs the failed again)");
    }
    let exe = std::env::current_exe().context("cannot find the lenet binary")?;
    let signals = count_signals()?;
    let mut forwarded = 0;
    let mut queue = todo.into_iter();
    let mut running: BTreeMap<usize, Child> = BTreeMap::new();
    let (mut finished, mut failed, mut stopped, mut broken) = (0, 0, 0, 0);
    loop {
        let stopping = signals.load(Ordering::SeqCst) > 0;
        while !stopping && running.len() < jobs {
            let Some(t) = queue.next() else { break };
            let log_path = dir.log_file(t.index);
            let logs = dir.path.join("logs");
            std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
            let log = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .with_context(|| format!("cannot open {}", log_path.display()))?;
            let mut cmd = Command::new(&exe);
            if let Some(d) = data_dir {
                cmd.arg("--data-dir").arg(d);
            }
            cmd.args(["sweep", "run"]).arg(&dir.path).args(["--index", &t.index.to_string()]);
            cmd.args(["--threads", &threads.to_string()]);
            let out = log.try_clone().with_context(|| format!("cannot open {}", log_path.display()))?;
            cmd.stdin(Stdio::null()).stdout(out).stderr(log);
            #[cfg(unix)]
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
            let child = cmd.spawn().with_context(|| format!("cannot start {}", exe.display()))?;
            println!("trial {:>4} started: {}", t.index, t.name);
            running.insert(t.index, child);
        }
        if running.is_empty() {
            break;
        }
        let received = signals.load(Ordering::SeqCst);
        if received > forwarded {
            forwarded = received;
            #[cfg(unix)]
            for child in running.values() {
                // SAFETY: kill(2) on our own child's pid.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            }
            eprintln!("stopping: each running trial saves at the end of its batch");
        }
        let mut ended = Vec::new();
        for (&i, child) in running.iter_mut() {
            if let Some(status) = child.try_wait()? {
                ended.push((i, status.code()));
            }
        }
        for (i, code) in ended {
            running.remove(&i);
            match code {
                Some(0) => {
                    finished += 1;
                    match dir.result(i) {
                        Some(r) => println!("trial {i:>4} finished: test acc {:.4} ({:.0} s)", r.test_acc, r.seconds),
                        None => println!("trial {i:>4}: taken by another worker"),
                    }
                }
                Some(EXIT_TRIAL_FAILED) => {
                    failed += 1;
                    let why = dir.failure(i).map_or("see its log".into(), |f| f.error);
                    println!("trial {i:>4} failed: {why}");
                }
                Some(EXIT_INTERRUPTED) => {
                    stopped += 1;
                    println!("trial {i:>4} stopped; it resumes from its checkpoint next time");
                }
                other => {
                    broken += 1;
                    let how = other.map_or("killed by a signal".into(), |c| format!("exit status {c}"));
                    println!("trial {i:>4}: its worker ended with {how}: see {}", dir.log_file(i).display());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("{finished} finished, {failed} failed, {stopped} stopped, {broken} workers broke");
    if signals.load(Ordering::SeqCst) > 0 {
        eprintln!("to go on: lenet sweep run {} --local -j {jobs}", dir.path.display());
        return Err(SweepStopped.into());
    }
    if broken > 0 {
        bail!("{broken} trial workers ended abnormally (their logs are in {})", dir.path.join("logs").display());
    }
    println!("lenet sweep report {}", dir.path.display());
    Ok(())
}
