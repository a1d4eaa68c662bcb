//! `lenet sweep k8s` (issue 25, item 3): the Indexed Job manifest parses as YAML, has
//! the fields that make one pod per trial on a shared volume, and passes Kubernetes' own
//! schemas in strict mode (kubernetes-validate, offline: no cluster needed), for the
//! oldest release with per-index retries (1.31) and the newest it knows.
//!
//! The Python tools come from scripts/setup-k8s-validate (.venv), which scripts/test runs;
//! there LENET_REQUIRE_K8S_VALIDATE=1 makes their absence a failure instead of a skip.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

fn venv_bin(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin").join(name)
}

fn tools() -> bool {
    let ok = venv_bin("kubernetes-validate").is_file();
    if !ok {
        assert!(
            std::env::var_os("LENET_REQUIRE_K8S_VALIDATE").is_none(),
            "LENET_REQUIRE_K8S_VALIDATE is set, but .venv has no kubernetes-validate: run scripts/setup-k8s-validate"
        );
        eprintln!("skipping: no kubernetes-validate in .venv (scripts/setup-k8s-validate)");
    }
    ok
}

fn lenet(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_lenet")).args(args).output().unwrap();
    assert!(o.status.success(), "lenet {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

/// The manifest as JSON, parsed by PyYAML (an independent YAML reader).
fn parse_yaml(yaml: &str) -> Value {
    let mut child = Command::new(venv_bin("python"))
        .args(["-c", "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(sys.stdin))))"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(yaml.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "not YAML: {}\n{yaml}", String::from_utf8_lossy(&out.stderr));
    let docs: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(docs.len(), 1, "one document, the Job");
    docs.into_iter().next().unwrap()
}

#[test]
fn the_indexed_job_runs_one_pod_per_trial_on_the_shared_volume() {
    if !tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("sweep.toml");
    std::fs::write(&file, "[grid]\narch = [\"relu\", \"d2l\"]\nlr = [0.1, 0.3, 0.9]\nseed = [1, 2]\n").unwrap();
    let dir = tmp.path().join("Activations 2026");
    let (f, d) = (file.to_str().unwrap(), dir.to_str().unwrap());
    lenet(&["sweep", "plan", f, "--out", d]);
    let yaml = lenet(&[
        "sweep",
        "k8s",
        d,
        "--image",
        "registry.example/lenet:0.2",
        "--parallel",
        "5",
        "--cpus",
        "4",
        "--gpus",
        "1",
        "--claim",
        "team-nfs",
        "--mount",
        "/mnt/sweeps",
        "--pod-data-dir",
        "/data",
        "--namespace",
        "ml",
    ]);
    let job = parse_yaml(&yaml);
    let at = |p: &str| job.pointer(p).unwrap_or_else(|| panic!("{p} missing:\n{yaml}")).clone();
    assert_eq!(at("/apiVersion"), "batch/v1");
    assert_eq!(at("/kind"), "Job");
    assert_eq!(at("/metadata/name"), "lenet-activations-2026", "a valid DNS-1123 name");
    assert_eq!(at("/metadata/namespace"), "ml");
    assert_eq!(at("/spec/completionMode"), "Indexed");
    assert_eq!(at("/spec/completions"), 12, "one completion per trial");
    assert_eq!(at("/spec/parallelism"), 5);
    assert!(at("/spec/backoffLimitPerIndex").as_u64().unwrap() > 0);
    let pod = at("/spec/template/spec");
    assert_eq!(pod["restartPolicy"], "Never", "podFailurePolicy needs it");
    assert!(pod["terminationGracePeriodSeconds"].as_u64().unwrap() >= 30, "time to save at SIGTERM");
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "registry.example/lenet:0.2");
    let argv: Vec<&str> = c["command"]
        .as_array()
        .unwrap()
        .iter()
        .chain(c["args"].as_array().unwrap())
        .map(|a| a.as_str().unwrap())
        .collect();
    // No index on the command line: each pod reads its own JOB_COMPLETION_INDEX.
    assert_eq!(
        argv,
        ["lenet", "--data-dir", "/data", "sweep", "run", "/mnt/sweeps/Activations 2026", "--threads", "4"]
    );
    assert_eq!(c["resources"]["limits"]["nvidia.com/gpu"], "1");
    assert_eq!(c["resources"]["requests"]["cpu"], "4");
    assert_eq!(c["volumeMounts"][0]["mountPath"], "/mnt/sweeps");
    let volume = &pod["volumes"][0];
    assert_eq!(volume["name"], c["volumeMounts"][0]["name"]);
    assert_eq!(volume["persistentVolumeClaim"]["claimName"], "team-nfs");
    // A failed trial (exit 3) is not retried; an evicted pod does not count as a retry.
    let rules = at("/spec/podFailurePolicy/rules");
    let fail = rules.as_array().unwrap().iter().find(|r| r["action"] == "FailIndex").unwrap();
    assert_eq!(fail["onExitCodes"]["values"], serde_json::json!([lenet::internal::sweep::launch::EXIT_TRIAL_FAILED]));
    assert_eq!(fail["onExitCodes"]["containerName"], c["name"]);
    assert!(rules
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["action"] == "Ignore" && r["onPodConditions"][0]["type"] == "DisruptionTarget"));

    let path = tmp.path().join("job.yaml");
    std::fs::write(&path, &yaml).unwrap();
    for version in ["1.31.0", "1.37.0"] {
        let o = Command::new(venv_bin("kubernetes-validate"))
            .args(["--strict", "-k", version])
            .arg(&path)
            .output()
            .unwrap();
        let said = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(o.status.success() && said.contains("passed"), "Kubernetes {version}: {said}\n{yaml}");
    }
}
