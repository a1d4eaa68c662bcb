//! The README never drifts from the command line (issue 26): every `lenet …` line in
//! its shell blocks (and `cargo run --release -- …`, the same binary) parses with
//! `--help` appended, so a renamed command, a removed option, or a value clap checks as it
//! parses (`--optimizer`, `--device`, numbers) fails here; and every `scripts/…` it shows
//! exists. Values read later (an `--arch` name, a model, a file) are not checked here.

use std::path::Path;
use std::process::Command;

/// The README's shell lines: those in ```sh blocks, comments and leading spaces gone.
fn shell_lines() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut lines = Vec::new();
    let mut in_sh = false;
    for line in readme.lines() {
        if let Some(lang) = line.trim_start().strip_prefix("```") {
            in_sh = !in_sh && lang.trim() == "sh";
            continue;
        }
        if in_sh {
            let code = line.split(" #").next().unwrap().trim();
            if !code.is_empty() && !code.starts_with('#') {
                lines.push(code.to_string());
            }
        }
    }
    lines
}

/// Split a command as a shell would (quotes, no expansions), up to the first `|`, `>`,
/// `&&` or `;`.
fn words(command: &str) -> Vec<String> {
    let (mut words, mut word, mut quote, mut started) = (Vec::new(), String::new(), None, false);
    for c in command.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => (quote, started) = (Some(c), true),
            (None, c) if c.is_whitespace() => {
                if started {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            (None, '|' | '>' | ';') => break,
            (None, c) => (word, started) = (word + &c.to_string(), true),
        }
    }
    if started {
        words.push(word);
    }
    if let Some(i) = words.iter().position(|w| w == "&&") {
        words.truncate(i);
    }
    words
}

/// The `lenet` arguments of a README line, if it runs lenet.
fn lenet_args(line: &str) -> Option<Vec<String>> {
    let w = words(line);
    if w.first()? == "lenet" {
        return Some(w[1..].to_vec());
    }
    // `scripts/setup-data && cargo run --release -- train`: the part after `--` (an
    // example's arguments are the example's).
    let cargo = line.find("cargo run")?;
    let w = words(&line[cargo..]);
    if w.iter().any(|a| a == "--example") {
        return None;
    }
    Some(w[w.iter().position(|a| a == "--")? + 1..].to_vec())
}

#[test]
fn every_lenet_line_in_the_readme_parses() {
    let lines = shell_lines();
    let commands: Vec<(String, Vec<String>)> =
        lines.iter().filter_map(|l| lenet_args(l).map(|args| (l.clone(), args))).collect();
    // The command list alone has some thirty: a parser that finds none must fail.
    assert!(commands.len() >= 30, "{} lenet lines in the README: {commands:?}", commands.len());
    let mut failures = Vec::new();
    for (line, mut args) in commands {
        args.push("--help".into());
        let out = Command::new(env!("CARGO_BIN_EXE_lenet")).args(&args).env("COLUMNS", "100").output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || !stdout.contains("Usage: lenet") {
            failures.push(format!("{line}\n    {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
    }
    assert!(failures.is_empty(), "README lines that lenet does not parse:\n{}", failures.join("\n"));
}

#[test]
fn every_script_in_the_readme_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut scripts: Vec<String> =
        shell_lines().iter().flat_map(|l| words(l)).filter(|w| w.starts_with("scripts/")).collect();
    scripts.dedup();
    assert!(scripts.len() >= 5, "{scripts:?}");
    for s in scripts {
        let meta = std::fs::metadata(root.join(&s)).unwrap_or_else(|e| panic!("README shows {s}: {e}"));
        use std::os::unix::fs::PermissionsExt;
        assert!(meta.permissions().mode() & 0o111 != 0, "{s} is not executable");
    }
}

#[test]
fn a_drifted_line_would_fail() {
    // The check above is only as good as its parsing: an unknown option or command
    // before `--help` must fail, a known one must not.
    let parses =
        |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_lenet")).args(args).output().unwrap().status.success();
    assert!(parses(&["train", "--arch", "relu", "--epochs", "2", "--help"]));
    assert!(!parses(&["train", "--arhc", "relu", "--help"]));
    assert!(!parses(&["trian", "--help"]));
    assert!(!parses(&["train", "--optimizer", "adom", "--help"]));
    assert_eq!(
        words("lenet summary --arch lenet5 --toml > my.toml"),
        ["lenet", "summary", "--arch", "lenet5", "--toml"]
    );
    assert_eq!(words("lenet sweep sbatch 'a b' | sbatch"), ["lenet", "sweep", "sbatch", "a b"]);
}
