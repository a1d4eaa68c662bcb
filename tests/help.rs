//! Every command's help fits a terminal (issue 24, item 6): wrapped to the terminal's
//! width ($COLUMNS where there is none, as in a pipe), at most 100 columns wide, and
//! readable at 80: no line wider, no value name printed over and over.

use std::process::Command;

fn help(args: &[&str], columns: Option<&str>) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lenet"));
    cmd.args(args).env_remove("COLUMNS");
    if let Some(c) = columns {
        cmd.env("COLUMNS", c);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The names listed under "Commands:" in a help text (but `help`).
fn commands(text: &str) -> Vec<String> {
    text.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter(|l| !l.starts_with("   ")) // a wrapped description's next line
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

/// `lenet`, each command, and each command's commands.
fn every_command() -> Vec<Vec<String>> {
    let mut all = vec![vec![]];
    for c in commands(&help(&["--help"], None)) {
        for sub in commands(&help(&[&c, "--help"], None)) {
            all.push(vec![c.clone(), sub]);
        }
        all.push(vec![c]);
    }
    all
}

#[test]
fn every_help_fits_80_columns_and_wraps_to_at_most_100() {
    let all = every_command();
    assert!(all.len() >= 16, "{all:?}");
    for cmd in &all {
        for (columns, width) in [(Some("80"), 80), (None, 100), (Some("200"), 100)] {
            for flag in ["--help", "-h"] {
                let mut args: Vec<&str> = cmd.iter().map(String::as_str).collect();
                args.push(flag);
                let text = help(&args, columns);
                for line in text.lines() {
                    assert!(
                        line.chars().count() <= width,
                        "lenet {} is {} columns wide with COLUMNS={columns:?}:\n{line}",
                        args.join(" "),
                        line.chars().count()
                    );
                }
            }
        }
    }
}

#[test]
fn no_value_name_is_printed_twice_in_a_row() {
    for cmd in every_command() {
        let mut args: Vec<&str> = cmd.iter().map(String::as_str).collect();
        args.push("--help");
        let text = help(&args, Some("80"));
        for line in text.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            for pair in words.windows(2) {
                assert!(
                    !(pair[0].starts_with('<') && pair[0] == pair[1]),
                    "lenet {} repeats {}:\n{line}",
                    args.join(" "),
                    pair[0]
                );
            }
        }
    }
}
