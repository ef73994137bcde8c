//! The README's quick start, run as written: every ```sh block from the top of README.md
//! to the end of its "Quick start" section, command by command, with bash, in a fresh
//! home directory (so `~/.wasmkube` and kubectl's cache start empty).
//!
//! - `cargo run --release -- ARGS` starts the binary under test with `ARGS` in the
//!   background and waits for its `wasmkube ready` line; `scripts/test` is skipped.
//! - The commands run in a directory that looks like a checkout: the repository's files,
//!   and `target/release/wasmkube` being the binary under test, so
//!   `export PATH=$PWD/target/release:$PATH` finds it. It is also on `PATH` from the start.
//! - Every command must exit 0. A comment line right after a command (`# hello from
//!   hello`) is output it documents: its text must appear in the command's stdout, `...`
//!   standing for anything. Comments after a command on its own line are prose.
//! - Shell state (exported variables) carries over from one command to the next.
//!
//! The README's commands name `up`'s default addresses (`127.0.0.1:5000` for the
//! registry), so this cluster runs on them: the test waits until they are free.

use crate::harness::{lines_of, wait_for_or_none, TempDir};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One command of the quick start and the output it documents.
#[derive(Debug, PartialEq)]
struct Step {
    command: String,
    expect: Vec<String>,
}

/// The README from its top to the end of the "Quick start" section.
fn quick_start(readme: &str) -> &str {
    let start = readme.find("\n## Quick start\n").expect("README.md has a \"## Quick start\" section");
    let body = start + "\n## Quick start\n".len();
    let end = readme[body..].find("\n## ").map_or(readme.len(), |i| body + i);
    &readme[..end]
}

/// The lines of every ```sh block, block by block.
fn sh_blocks(text: &str) -> Vec<Vec<&str>> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in text.lines() {
        match current.as_mut() {
            None if line.trim_end() == "```sh" => current = Some(Vec::new()),
            None => {}
            Some(_) if line.trim_end() == "```" => blocks.extend(current.take()),
            Some(lines) => lines.push(line),
        }
    }
    assert!(current.is_none(), "an unterminated ```sh block");
    blocks
}

/// A block's commands (with their continuation lines, `\` at the end), each with the
/// comment lines that follow it as its documented output.
fn steps(block: &[&str]) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut pending = String::new();
    for line in block {
        let trimmed = line.trim();
        if pending.is_empty() {
            if trimmed.is_empty() {
                continue;
            }
            if let Some(comment) = trimmed.strip_prefix('#') {
                let last = steps.last_mut().unwrap_or_else(|| panic!("output {trimmed:?} follows no command"));
                last.expect.push(comment.trim().to_owned());
                continue;
            }
        }
        // bash reads the continuations itself, as from a paste into a terminal.
        pending.push_str(line.trim_end());
        if pending.ends_with('\\') {
            pending.push('\n');
        } else {
            steps.push(Step { command: std::mem::take(&mut pending), expect: Vec::new() });
        }
    }
    assert!(pending.is_empty(), "a block ends in a continuation line: {pending:?}");
    steps
}

/// `cmd   # prose` -> `cmd` (only for the lines the test reads itself, not for bash).
fn without_comment(command: &str) -> &str {
    command.split(" #").next().unwrap_or(command).trim()
}

/// Whether `out` shows `expected`, where `...` stands for anything.
fn shows(out: &str, expected: &str) -> bool {
    let mut rest = out;
    for part in expected.split("...").map(str::trim).filter(|p| !p.is_empty()) {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

/// A directory laid out like a checkout: the repository's entries (linked), and
/// `target/release/wasmkube` being the binary under test.
fn checkout(dir: &Path) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = dir.join("checkout");
    std::fs::create_dir_all(root.join("target/release")).expect("checkout dir");
    for entry in std::fs::read_dir(repo).expect("read the repository") {
        let entry = entry.expect("repository entry");
        if entry.file_name() != "target" {
            std::os::unix::fs::symlink(entry.path(), root.join(entry.file_name())).expect("link a repository entry");
        }
    }
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_wasmkube"), root.join("target/release/wasmkube")).expect("link the binary");
    root
}

/// The addresses `up` listens on by default.
fn default_ports_free() -> bool {
    use std::net::{TcpListener, UdpSocket};
    ["127.0.0.1:6443", "127.0.0.1:5000", "127.0.0.1:1053"].iter().all(|a| TcpListener::bind(a).is_ok()) && UdpSocket::bind("127.0.0.1:1053").is_ok()
}

/// `wasmkube up` as the quick start runs it; killed (and its log shown) if the test fails.
struct Up {
    child: Option<Child>,
    log: PathBuf,
}

impl Up {
    fn start(args: &[&str], cwd: &Path, env: &[(&str, &Path)], log: PathBuf) -> Self {
        let stderr = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wasmkube"));
        cmd.args(args).current_dir(cwd).env_remove("WASMKUBE_HOME").env_remove("KUBECONFIG").stdout(Stdio::piped()).stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn wasmkube");
        let lines = lines_of(child.stdout.take().expect("stdout"));
        let up = Self { child: Some(child), log };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if line.contains("wasmkube ready") => break,
                Ok(_) => continue,
                Err(_) => panic!("`wasmkube {}` did not print `wasmkube ready` within 60 s", args.join(" ")),
            }
        }
        // Keep reading stdout, so the server never writes into a full pipe.
        std::thread::spawn(move || while lines.recv().is_ok() {});
        up
    }

    /// SIGTERM, as Ctrl-C would: the cluster must stop cleanly.
    fn stop(mut self) {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let status = wait_for_or_none(30, || child.try_wait().ok().flatten());
        match status {
            Some(s) => assert!(s.success(), "wasmkube up exited with {s}:\n{}", std::fs::read_to_string(&self.log).unwrap_or_default()),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("wasmkube up did not stop on SIGTERM");
            }
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(200).collect();
            eprintln!("--- last {} lines of the wasmkube log ---", tail.len());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// Runs `command` with bash in `cwd`, after the shell state `state` saved (exported
/// variables), which it then updates. Returns (exit status, stdout, stderr).
fn bash(command: &str, cwd: &Path, state: &Path, env: &[(&str, &Path)], secs: u64) -> (Option<i32>, String, String) {
    let script = format!("set -eo pipefail\n. \"$QUICKSTART_STATE\"\n{command}\nexport -p > \"$QUICKSTART_STATE\"\n");
    let (out_path, err_path) = (state.with_extension("out"), state.with_extension("err"));
    let mut cmd = Command::new("bash");
    cmd.arg("-c").arg(script).current_dir(cwd).env("QUICKSTART_STATE", state).env_remove("WASMKUBE_HOME").env_remove("KUBECONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    // Its own process group, so a command that hangs is stopped with everything it started.
    use std::os::unix::process::CommandExt;
    let mut child = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("run bash");
    let status = wait_for_or_none(secs, || child.try_wait().ok().flatten());
    if status.is_none() {
        let _ = Command::new("kill").args(["-KILL", "--"]).arg(format!("-{}", child.id())).status();
        let _ = child.wait();
    }
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    (status.map(|s| s.code().unwrap_or(-1)), read(&out_path), read(&err_path))
}

#[test]
fn readme_quick_start_runs_as_written() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).expect("README.md");
    let blocks = sh_blocks(quick_start(&readme));
    let steps: Vec<Step> = blocks.iter().flat_map(|b| steps(b)).collect();
    assert!(steps.iter().any(|s| without_comment(&s.command) == "cargo run --release -- up"), "the quick start starts the cluster: {steps:#?}");
    assert!(steps.iter().any(|s| !s.expect.is_empty()), "the quick start documents some output: {steps:#?}");

    let dir = TempDir::new("quickstart");
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let cwd = checkout(dir.path());
    let state = dir.path().join("shell-state");
    std::fs::write(&state, "").expect("shell state");
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_wasmkube")).parent().expect("binary dir").to_path_buf();
    let path = std::env::join_paths(std::iter::once(bin_dir).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()))).expect("PATH");
    let path = PathBuf::from(path);
    let env = [("HOME", home.as_path()), ("PATH", path.as_path())];

    let mut up: Option<Up> = None;
    for step in &steps {
        let line = without_comment(&step.command);
        if line == "scripts/test" {
            continue;
        }
        if let Some(args) = line.strip_prefix("cargo run --release -- ") {
            assert!(up.is_none(), "the quick start starts a second cluster: {line}");
            assert!(wait_for_or_none(300, || default_ports_free().then_some(())).is_some(), "127.0.0.1:6443, :5000 or :1053 stayed in use for 5 minutes: the quick start's cluster needs them");
            let args: Vec<&str> = args.split_whitespace().collect();
            up = Some(Up::start(&args, &cwd, &env, dir.path().join("wasmkube.log")));
            continue;
        }
        assert!(!line.starts_with("cargo "), "a cargo command the test does not know how to stand in for: {line}");
        assert!(up.is_some(), "{line:?} runs before the cluster is started");
        eprintln!("$ {}", step.command);
        let (code, out, err) = bash(&step.command, &cwd, &state, &env, 300);
        eprint!("{out}");
        assert_eq!(code, Some(0), "`{}` failed (exit {code:?}, None: timed out)\nstdout:\n{out}\nstderr:\n{err}", step.command);
        for want in &step.expect {
            assert!(shows(&out, want), "`{}` should print {want:?}; it printed:\n{out}\nstderr:\n{err}", step.command);
        }
    }
    up.expect("the quick start started a cluster").stop();
}

#[test]
fn quick_start_commands_are_read_as_written() {
    let text = "intro\n```sh\ncargo run --release -- up   # start\nscripts/test\n```\n## Quick start\n\n```yaml\nnot: shell\n```\n\
                ```sh\nexport A=1\n# out ... put\nkubectl run x \\\n  --port=1\n\ncurl y   # prose\n# hello\n```\n### More\n```sh\nlast\n```\n## Next\n```sh\nnot run\n```\n";
    let blocks = sh_blocks(quick_start(text));
    assert_eq!(blocks.len(), 3);
    let all: Vec<Step> = blocks.iter().flat_map(|b| steps(b)).collect();
    let step = |c: &str, e: &[&str]| Step { command: c.into(), expect: e.iter().map(|s| s.to_string()).collect() };
    assert_eq!(
        all,
        [step("cargo run --release -- up   # start", &[]), step("scripts/test", &[]), step("export A=1", &["out ... put"]), step("kubectl run x \\\n  --port=1", &[]), step("curl y   # prose", &["hello"]), step("last", &[])]
    );
    assert_eq!(without_comment(&all[0].command), "cargo run --release -- up");
    assert!(shows("pushed a (wasip1, 123 bytes)\n", "pushed a (wasip1, ... bytes)"));
    assert!(!shows("pushed a (wasip2, 123 bytes)\n", "pushed a (wasip1, ... bytes)"));
    assert!(shows("hello from hello-abc\n", "hello from hello-"));
}

/// `wasmkube push` and `pull` as the quick start uses them, with their output going into
/// a pipe nobody reads (`| head -1`, a closed stdout): no panic, exit 0, and `pull`
/// fills the cache that `up`'s node starts pods from (`~/.wasmkube/node/images`).
#[test]
fn push_and_pull_into_closed_pipes_and_the_shared_data_dir() {
    use std::io::BufRead;
    let dir = TempDir::new("pipes");
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let wasmkube = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_wasmkube"));
        c.args(args).env("HOME", &home).env_remove("WASMKUBE_HOME").current_dir(env!("CARGO_MANIFEST_DIR"));
        c
    };
    let mut registry = KillOnDrop(wasmkube(&["registry", "--addr", "127.0.0.1:0"]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawn wasmkube registry"));
    let mut line = String::new();
    std::io::BufReader::new(registry.0.stdout.take().expect("stdout")).read_line(&mut line).expect("ready line");
    let addr = line.split_whitespace().find_map(|w| w.strip_prefix("http://")).unwrap_or_else(|| panic!("no address in {line:?}")).to_owned();
    assert!(line.contains(&format!("{}", home.join(".wasmkube/registry").display())), "`registry` keeps its storage in the data dir: {line}");
    let image = format!("{addr}/hello:v1");

    // A reader that is gone before anything is written: every write fails with EPIPE.
    let closed = |args: &[&str]| {
        let mut child = wasmkube(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn wasmkube");
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success() && !stderr.contains("panicked"), "wasmkube {args:?} into a closed pipe: {}\n{stderr}", out.status);
    };
    closed(&["push", "wasm-examples/hello-wagi.wasm", &image]);
    closed(&["pull", &image]);
    closed(&["--help"]);

    // As a user types it.
    let script = format!("set -o pipefail; wasmkube push wasm-examples/hello-wagi.wasm {image} | head -1 && wasmkube pull --pull-policy Always {image} | head -1");
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_wasmkube")).parent().expect("binary dir");
    let path = std::env::join_paths(std::iter::once(bin_dir.to_path_buf()).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()))).expect("PATH");
    let out = Command::new("bash").arg("-c").arg(&script).env("PATH", path).env("HOME", &home).env_remove("WASMKUBE_HOME").current_dir(env!("CARGO_MANIFEST_DIR")).output().expect("bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{script}: {}\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    let size = std::fs::metadata(Path::new(env!("CARGO_MANIFEST_DIR")).join("wasm-examples/hello-wagi.wasm")).expect("hello-wagi.wasm").len();
    assert_eq!(stdout.lines().collect::<Vec<_>>(), [format!("pushed {image} (wasip1, {size} bytes)"), format!("pulled {image}")]);

    // `pull` without --cache-dir fills the node's cache in the data dir.
    let out = wasmkube(&["pull", &image]).output().expect("pull");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let cached = stdout.lines().find_map(|l| l.strip_prefix("cached: ")).unwrap_or_else(|| panic!("no cached line: {stdout}"));
    assert!(Path::new(cached).starts_with(home.join(".wasmkube/node/images")), "{cached}");
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
