//! Container logs, kept as kubelet keeps them: one file per container run in the CRI log
//! format (`<RFC3339Nano time> <stdout|stderr> <F|P> <text>`), rotated when it passes a size
//! cap so a flood of output costs bounded disk.
//!
//! ```text
//! <root>/<namespace>_<pod>_<uid>/<container>/<restartCount>.log   (+ .log.1 after rotation)
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// Longer lines are split into `P` (partial) records, as the CRI format does.
const MAX_LINE: usize = 16 << 10;

pub fn container_dir(root: &Path, namespace: &str, pod: &str, uid: &str, container: &str) -> PathBuf {
    root.join(format!("{namespace}_{pod}_{uid}")).join(container)
}

pub fn run_log(dir: &Path, restart: u32) -> PathBuf {
    dir.join(format!("{restart}.log"))
}

struct WriterState {
    path: PathBuf,
    file: Option<std::fs::File>,
    size: u64,
    max_bytes: u64,
}

impl WriterState {
    fn write_record(&mut self, stream: &str, tag: char, text: &[u8]) {
        let mut batch = Batch::new(stream);
        batch.add(self, tag, text);
        batch.flush(self);
    }

    fn write_out(&mut self, bytes: &[u8]) {
        if let Some(f) = self.file.as_mut() {
            // A full disk must not kill the workload; its output is what gets lost.
            if f.write_all(bytes).is_ok() {
                self.size += bytes.len() as u64;
            }
        }
    }

    /// Keeps one older file (`.log.1`), as kubelet's `containerLogMaxFiles` of 2.
    fn rotate(&mut self) {
        self.file = None;
        let _ = std::fs::rename(&self.path, self.path.with_extension("log.1"));
        self.file = std::fs::OpenOptions::new().create(true).append(true).open(&self.path).ok();
        self.size = 0;
    }
}

/// Records of one write from the guest, sharing one timestamp and written with one
/// system call (a flood of short lines would otherwise cost a write per line).
struct Batch {
    prefix_stream: &'static str,
    now: String,
    bytes: Vec<u8>,
}

impl Batch {
    fn new(stream: &str) -> Self {
        let stream = if stream == "stdout" { "stdout" } else { "stderr" };
        Self { prefix_stream: stream, now: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true), bytes: Vec::new() }
    }

    fn add(&mut self, state: &mut WriterState, tag: char, text: &[u8]) {
        let len = self.now.len() + self.prefix_stream.len() + 4 + text.len() + 1;
        if state.size + (self.bytes.len() + len) as u64 > state.max_bytes {
            self.flush(state);
            if state.size + len as u64 > state.max_bytes {
                state.rotate();
            }
        }
        self.bytes.extend_from_slice(self.now.as_bytes());
        self.bytes.push(b' ');
        self.bytes.extend_from_slice(self.prefix_stream.as_bytes());
        self.bytes.push(b' ');
        self.bytes.push(tag as u8);
        self.bytes.push(b' ');
        self.bytes.extend_from_slice(text);
        self.bytes.push(b'\n');
    }

    fn flush(&mut self, state: &mut WriterState) {
        if !self.bytes.is_empty() {
            state.write_out(&self.bytes);
            self.bytes.clear();
        }
    }
}

/// The log of one container run; stdout and stderr write into it through [`LogWriter::sink`].
#[derive(Clone)]
pub struct LogWriter(Arc<Mutex<WriterState>>);

impl LogWriter {
    pub fn open(path: &Path, max_bytes: u64) -> std::io::Result<Self> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Self(Arc::new(Mutex::new(WriterState { path: path.to_owned(), file: Some(file), size, max_bytes }))))
    }

    pub fn sink(&self, stream: &'static str) -> LineSink {
        LineSink { log: self.clone(), stream, pending: Vec::new() }
    }

    /// A whole message from the node itself (e.g. why a run failed), on stderr.
    pub fn note(&self, text: &str) {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for line in text.lines() {
            state.write_record("stderr", 'F', line.as_bytes());
        }
    }
}

/// One stream of a container: buffers up to a newline, then writes a record.
pub struct LineSink {
    log: LogWriter,
    stream: &'static str,
    pending: Vec<u8>,
}

impl LineSink {
    fn push(&mut self, mut buf: &[u8]) {
        let mut state = self.log.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut batch = Batch::new(self.stream);
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            if self.pending.is_empty() {
                batch.add(&mut state, 'F', &buf[..nl]);
            } else {
                self.pending.extend_from_slice(&buf[..nl]);
                let line = std::mem::take(&mut self.pending);
                batch.add(&mut state, 'F', &line);
            }
            buf = &buf[nl + 1..];
        }
        self.pending.extend_from_slice(buf);
        while self.pending.len() >= MAX_LINE {
            let rest = self.pending.split_off(MAX_LINE);
            let part = std::mem::replace(&mut self.pending, rest);
            batch.add(&mut state, 'P', &part);
        }
        batch.flush(&mut state);
    }

    fn flush_partial(&mut self) {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            self.log.0.lock().unwrap_or_else(|e| e.into_inner()).write_record(self.stream, 'F', &line);
        }
    }
}

impl Drop for LineSink {
    fn drop(&mut self) {
        self.flush_partial();
    }
}

// Writes go to a local file under a short lock: cheap enough to do inline.
impl tokio::io::AsyncWrite for LineSink {
    fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.flush_partial();
        Poll::Ready(Ok(()))
    }
}

/// What `kubectl logs` asks for.
#[derive(Clone, Debug, Default)]
pub struct LogQuery {
    pub tail: Option<usize>,
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    pub timestamps: bool,
    pub limit_bytes: Option<usize>,
}

/// One record of a CRI log file.
pub struct Record {
    pub time: chrono::DateTime<chrono::Utc>,
    pub time_text: String,
    pub partial: bool,
    pub text: String,
}

pub fn parse_record(line: &str) -> Option<Record> {
    let mut parts = line.splitn(4, ' ');
    let time_text = parts.next()?.to_owned();
    let _stream = parts.next()?;
    let tag = parts.next()?;
    let text = parts.next().unwrap_or("").to_owned();
    let time = chrono::DateTime::parse_from_rfc3339(&time_text).ok()?.with_timezone(&chrono::Utc);
    Some(Record { time, time_text, partial: tag == "P", text })
}

/// The records of one run (older rotated file first), filtered as `query` says, rendered as
/// kubectl prints them.
pub fn read(path: &Path, query: &LogQuery) -> String {
    let mut records = Vec::new();
    for file in [path.with_extension("log.1"), path.to_owned()] {
        if let Ok(text) = std::fs::read_to_string(&file) {
            records.extend(text.lines().filter_map(parse_record));
        }
    }
    if let Some(since) = query.since {
        records.retain(|r| r.time >= since);
    }
    render(&records, query)
}

pub fn render(records: &[Record], query: &LogQuery) -> String {
    // Partial records join the next one into a single line.
    let mut lines: Vec<(String, String)> = Vec::new();
    let mut open: Option<(String, String)> = None;
    for r in records {
        let (time, mut text) = open.take().unwrap_or_else(|| (r.time_text.clone(), String::new()));
        text.push_str(&r.text);
        if r.partial {
            open = Some((time, text));
        } else {
            lines.push((time, text));
        }
    }
    lines.extend(open);
    let start = query.tail.map_or(0, |t| lines.len().saturating_sub(t));
    let mut out = String::new();
    for (time, text) in &lines[start..] {
        if query.timestamps {
            out.push_str(time);
            out.push(' ');
        }
        out.push_str(text);
        out.push('\n');
        if query.limit_bytes.is_some_and(|l| out.len() >= l) {
            out.truncate(query.limit_bytes.unwrap_or(out.len()));
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn records_rotate_and_read_back_as_kubectl_shows_them() {
        let dir = std::env::temp_dir().join(format!("wasmkube-logs-{}", std::process::id()));
        let path = run_log(&dir, 0);
        let log = LogWriter::open(&path, 4096).unwrap();
        let mut out = log.sink("stdout");
        for i in 0..200 {
            out.write_all(format!("line {i}\n").as_bytes()).await.unwrap();
        }
        out.write_all(b"no newline").await.unwrap();
        drop(out);
        let all = read(&path, &LogQuery::default());
        assert!(all.ends_with("line 199\nno newline\n"), "{all}");
        assert!(!all.starts_with("line 0\n"), "rotation keeps the size bounded");
        let size = std::fs::metadata(&path).unwrap().len() + std::fs::metadata(path.with_extension("log.1")).unwrap().len();
        assert!(size <= 2 * 4096, "{size}");
        let tail = read(&path, &LogQuery { tail: Some(2), timestamps: true, ..Default::default() });
        let lines: Vec<&str> = tail.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].ends_with(" line 199") && lines[0].contains('T'), "{tail}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn long_lines_are_split_and_joined() {
        let dir = std::env::temp_dir().join(format!("wasmkube-logs-long-{}", std::process::id()));
        let path = run_log(&dir, 0);
        let log = LogWriter::open(&path, 1 << 20).unwrap();
        let mut sink = log.sink("stderr");
        let long = "x".repeat(MAX_LINE * 2 + 5);
        sink.push(format!("{long}\n").as_bytes());
        drop(sink);
        assert_eq!(read(&path, &LogQuery::default()), format!("{long}\n"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
