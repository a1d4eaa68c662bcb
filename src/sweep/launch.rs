//! The scheduler's side of a sweep: a Slurm array script and a Kubernetes Indexed
//! Job manifest, each running `lenet sweep run DIR` once per trial. Neither
//! scheduler needs anything from lenet but the sweep folder on a shared filesystem
//! and the trial index it already gives each task (`SLURM_ARRAY_TASK_ID`,
//! `JOB_COMPLETION_INDEX`).

use std::fmt::Write as _;
use std::path::Path;

/// `lenet sweep run`'s exit status when the trial itself failed (it diverged, or its
/// settings are refused): running it again would fail the same way, so a scheduler
/// should not retry it. Any other non-zero status is the worker's trouble (a
/// missing file, a full disk) and worth a retry.
pub const EXIT_TRIAL_FAILED: i32 = 3;

/// `lenet sweep run`'s exit status when a signal stopped the trial (it saved where it
/// was): the task should go back in the queue.
pub const EXIT_INTERRUPTED: i32 = 130;

/// Options of the Slurm array script.
#[derive(Clone, Debug, Default)]
pub struct Sbatch {
    /// Tasks running at once (`%P`); none: as many as Slurm allows.
    pub parallel: Option<usize>,
    pub cpus_per_task: usize,
    pub time: Option<String>,
    pub partition: Option<String>,
    pub gpus_per_task: Option<usize>,
    pub mem: Option<String>,
    /// Extra `#SBATCH` lines, as given (`--account=x`).
    pub extra: Vec<String>,
}

/// Shell-quote `s` for a bash script.
fn quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// A job name from the sweep folder's name.
fn job_name(sweep_dir: &Path) -> String {
    let name = sweep_dir.file_name().map_or("sweep".into(), |n| n.to_string_lossy().into_owned());
    let clean: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    let clean = clean.trim_matches('-');
    let name = format!("lenet-{}", if clean.is_empty() { "sweep" } else { clean });
    // Kubernetes takes at most 63 characters (a label value), ending alphanumeric.
    name.chars().take(63).collect::<String>().trim_end_matches('-').to_string()
}

/// A Slurm batch script running `trials` trials as one job array. `exe`: the lenet
/// binary as the compute nodes see it; `sweep_dir`: absolute, on a shared filesystem.
pub fn sbatch_script(exe: &Path, sweep_dir: &Path, data_dir: Option<&Path>, trials: usize, o: &Sbatch) -> String {
    let mut s = String::from("#!/bin/bash\n");
    let dir = sweep_dir.display().to_string();
    let array = match o.parallel {
        Some(p) => format!("0-{}%{p}", trials - 1),
        None => format!("0-{}", trials - 1),
    };
    let _ = writeln!(s, "#SBATCH --job-name={}", job_name(sweep_dir));
    let _ = writeln!(s, "#SBATCH --array={array}");
    let _ = writeln!(s, "#SBATCH --cpus-per-task={}", o.cpus_per_task);
    for (flag, v) in [("time", &o.time), ("partition", &o.partition), ("mem", &o.mem)] {
        if let Some(v) = v {
            let _ = writeln!(s, "#SBATCH --{flag}={v}");
        }
    }
    if let Some(g) = o.gpus_per_task {
        let _ = writeln!(s, "#SBATCH --gpus-per-task={g}");
    }
    for e in &o.extra {
        let _ = writeln!(s, "#SBATCH {e}");
    }
    s += "# Back in the queue after a node failure; a requeued task appends to its own log.\n";
    s += "#SBATCH --requeue\n#SBATCH --open-mode=append\n";
    let _ = writeln!(s, "#SBATCH --output={dir}/logs/slurm-%A_%a.out");
    // Before a time limit: USR1 to the batch shell 120 s early, to stop lenet and requeue.
    s += "#SBATCH --signal=B:USR1@120\n";
    s += r#"#
# One trial per array task: `lenet sweep run` reads SLURM_ARRAY_TASK_ID, trains the
# trial into its run folder and writes its result. A finished trial is not run again;
# a stopped one resumes from its newest checkpoint.
#
# A task cancelled (`scancel JOB_TASK`: Slurm sends lenet SIGTERM itself) or near its time
# limit (USR1 here, passed on as SIGTERM) stops at the end of its batch, saves where it was,
# and puts itself back in the queue to go on from there. To end the sweep for good:
# `scancel --full --signal=KILL JOB` (trials resume from their last checkpoints when run
# again).
set -u
stopped=0
trap 'stopped=1' TERM
trap 'stopped=1; [ -n "${worker:-}" ] && kill -TERM "$worker" 2>/dev/null' USR1
"#;
    let mut cmd = vec![quote(&exe.display().to_string())];
    if let Some(d) = data_dir {
        cmd.push("--data-dir".into());
        cmd.push(quote(&d.display().to_string()));
    }
    cmd.extend(["sweep".into(), "run".into(), quote(&dir), "--threads".into()]);
    cmd.push(format!("\"${{SLURM_CPUS_PER_TASK:-{}}}\"", o.cpus_per_task));
    let _ = writeln!(s, "{} &", cmd.join(" "));
    s += r#"worker=$!
# `wait` returns early when a trap runs: wait until the worker is gone, then once more for
# its own exit status.
while kill -0 "$worker" 2>/dev/null; do
  wait "$worker"
done
wait "$worker"; status=$?
"#;
    let _ = writeln!(s, "if [ \"$stopped\" = 1 ] || [ \"$status\" -eq {EXIT_INTERRUPTED} ]; then");
    s += r#"  echo "trial ${SLURM_ARRAY_TASK_ID} stopped: back in the queue, to resume from its checkpoint"
  scontrol requeue "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"
fi
exit "$status"
"#;
    s
}

/// Options of the Kubernetes manifest.
#[derive(Clone, Debug, Default)]
pub struct K8s {
    pub image: String,
    /// The PersistentVolumeClaim (ReadWriteMany) holding the sweep folder.
    pub claim: String,
    /// Where the claim is mounted in the pod.
    pub mount: String,
    /// The sweep folder's path inside the claim.
    pub sub_path: String,
    pub parallel: usize,
    pub cpus: usize,
    pub memory: Option<String>,
    pub gpus: Option<usize>,
    /// Retries of one index before it is marked failed (the worker's trouble; a
    /// failed trial is never retried).
    pub retries: usize,
    /// Where the datasets are inside the pod (`--data-dir`), if not in the image.
    pub data_dir: Option<String>,
    pub namespace: Option<String>,
}

/// A YAML string (double-quoted, escaped).
fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

/// A Kubernetes Indexed Job running `trials` trials, `parallel` pods at a time, on a
/// shared volume. `JOB_COMPLETION_INDEX`, set by Kubernetes in each pod, is the trial.
pub fn k8s_manifest(sweep_dir: &Path, trials: usize, o: &K8s) -> String {
    let dir = format!("{}/{}", o.mount.trim_end_matches('/'), o.sub_path.trim_matches('/'));
    let dir = dir.trim_end_matches('/');
    let mut args = Vec::new();
    if let Some(d) = &o.data_dir {
        args.extend(["--data-dir".to_string(), d.clone()]);
    }
    args.extend(["sweep".into(), "run".into(), dir.to_string(), "--threads".into(), o.cpus.to_string()]);
    let args = args.iter().map(|a| yaml_str(a)).collect::<Vec<_>>().join(", ");
    let mut s = String::new();
    let _ = writeln!(s, "# lenet sweep: {trials} trials of {}, one pod per trial.", sweep_dir.display());
    s += "# kubectl apply -f this.yaml; `lenet sweep report` on the volume shows where it stands.\n";
    s += "apiVersion: batch/v1\nkind: Job\nmetadata:\n";
    let _ = writeln!(s, "  name: {}", job_name(sweep_dir));
    if let Some(ns) = &o.namespace {
        let _ = writeln!(s, "  namespace: {}", yaml_str(ns));
    }
    s += "  labels:\n    app.kubernetes.io/name: lenet-sweep\nspec:\n";
    s += "  # Pod i runs trial i (JOB_COMPLETION_INDEX); the job is done when every index is.\n";
    s += "  completionMode: Indexed\n";
    let _ = writeln!(s, "  completions: {trials}\n  parallelism: {}", o.parallel);
    let _ = writeln!(s, "  backoffLimitPerIndex: {}", o.retries);
    s += "  podFailurePolicy:\n    rules:\n";
    let _ = writeln!(
        s,
        "      # Exit {EXIT_TRIAL_FAILED}: the trial failed (diverged, refused settings), recorded in results/;\n      # \
         running it again would fail the same way.\n      - action: FailIndex\n        onExitCodes:\n          \
         containerName: trial\n          operator: In\n          values: [{EXIT_TRIAL_FAILED}]"
    );
    s += "      # Evicted or preempted: not the trial's fault, does not count as a retry.\n";
    s += "      - action: Ignore\n        onPodConditions:\n          - type: DisruptionTarget\n            status: \"True\"\n";
    s += "  template:\n    metadata:\n      labels:\n        app.kubernetes.io/name: lenet-sweep\n    spec:\n";
    s += "      restartPolicy: Never\n";
    s += "      # SIGTERM first: lenet stops at its batch's end and saves; the next pod resumes.\n";
    s += "      terminationGracePeriodSeconds: 120\n";
    s += "      containers:\n        - name: trial\n";
    let _ = writeln!(s, "          image: {}", yaml_str(&o.image));
    s += "          command: [\"lenet\"]\n";
    let _ = writeln!(s, "          args: [{args}]");
    s += "          resources:\n            requests:\n";
    let _ = writeln!(s, "              cpu: \"{}\"", o.cpus);
    if let Some(m) = &o.memory {
        let _ = writeln!(s, "              memory: {}", yaml_str(m));
    }
    s += "            limits:\n";
    let _ = writeln!(s, "              cpu: \"{}\"", o.cpus);
    if let Some(m) = &o.memory {
        let _ = writeln!(s, "              memory: {}", yaml_str(m));
    }
    if let Some(g) = o.gpus {
        let _ = writeln!(s, "              nvidia.com/gpu: \"{g}\"");
    }
    s += "          volumeMounts:\n            - name: sweeps\n";
    let _ = writeln!(s, "              mountPath: {}", yaml_str(&o.mount));
    s += "      volumes:\n        - name: sweeps\n          persistentVolumeClaim:\n";
    let _ = writeln!(s, "            claimName: {}", yaml_str(&o.claim));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting_keeps_odd_paths_whole() {
        assert_eq!(quote("/a/b-c.d"), "/a/b-c.d");
        assert_eq!(quote("/my sweeps/it's"), r"'/my sweeps/it'\''s'");
        assert_eq!(job_name(Path::new("/x/My Sweep_2")), "lenet-my-sweep-2");
    }

    #[test]
    fn the_array_spans_every_trial() {
        let o = Sbatch { parallel: Some(4), cpus_per_task: 2, ..Default::default() };
        let s = sbatch_script(Path::new("/opt/lenet"), Path::new("/shared/sw"), None, 8, &o);
        assert!(s.contains("#SBATCH --array=0-7%4\n"), "{s}");
        assert!(s.contains("#SBATCH --requeue\n"));
        assert!(s.contains("#SBATCH --output=/shared/sw/logs/slurm-%A_%a.out\n"));
        assert!(s.contains("/opt/lenet sweep run /shared/sw --threads \"${SLURM_CPUS_PER_TASK:-2}\" &\n"), "{s}");
    }
}
