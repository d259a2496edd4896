//! What the load binaries share: the release `tessera` binary, its admin
//! commands, starting it, and a blocking HTTP client.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Server {
    pub child: Child,
    pub base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn tessera_bin() -> PathBuf {
    // TESSERA_BIN compares another build (A/B runs).
    let bin = std::env::var_os("TESSERA_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/tessera"),
        PathBuf::from,
    );
    assert!(
        bin.exists(),
        "build it first: cargo build --release -p tessera-cli"
    );
    bin
}

pub fn env_args() -> Vec<(String, String)> {
    std::env::var("TESSERA_LOAD_DATABASE_URL")
        .map(|url| vec![("TESSERA_DATABASE_URL".to_owned(), url)])
        .unwrap_or_default()
}

pub fn admin(dir: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new(tessera_bin())
        .current_dir(dir)
        .args(args)
        .envs(env_args())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "tessera {args:?}");
    String::from_utf8(out.stdout).unwrap()
}

pub fn start(dir: &Path) -> (Server, Duration) {
    let started = Instant::now();
    let mut child = Command::new(tessera_bin())
        .current_dir(dir)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .envs(env_args())
        .env("TESSERA_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut base = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("tessera: listening ") {
            base = format!("http://{}", rest.split_whitespace().next().unwrap());
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let agent = agent();
    loop {
        if let Ok(r) = agent.get(format!("{base}/readyz")).call() {
            if r.status() == 200 {
                break;
            }
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    (Server { child, base }, started.elapsed())
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

pub fn post(agent: &ureq::Agent, url: &str, form: &[(&str, &str)]) -> Value {
    let mut r = agent.post(url).send_form(form.iter().copied()).unwrap();
    serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap()
}


pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

