//! A `lenet serve` process for a test: started on a free port of 127.0.0.1, its address
//! read from what it prints, killed when the test is done.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub url: String,
    /// Kept open: the server may print more.
    _stdout: BufReader<std::process::ChildStdout>,
}

impl Server {
    /// `lenet serve --port 0 ARGS...`, with `env` set for it.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::start_in(Path::new("."), args, env)
    }

    /// [`Server::start`] with `dir` as the working folder.
    #[allow(dead_code)] // not every test binary that includes this asks
    pub fn start_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lenet"));
        cmd.current_dir(dir);
        cmd.arg("serve").args(["--port", "0"]).args(args).stdout(Stdio::piped()).stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("lenet serve starts");
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut line).unwrap();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("lenet serve printed no address: {line:?}"))
            .trim_end_matches('/')
            .to_string();
        Server { child, url, _stdout: stdout }
    }

    /// Whether the process is still running.
    #[allow(dead_code)] // not every test binary that includes this asks
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
