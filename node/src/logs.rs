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

/// What `kubectl logs` asks for, once the node has picked the run to read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogQuery {
    /// Only the last this many lines of what is already there.
    pub tail: Option<usize>,
    /// Only records written at or after this time.
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Each line starts with the time it was written (RFC 3339, nanoseconds).
    pub timestamps: bool,
    /// Stop after this many bytes of output (possibly mid-line, as kubelet does).
    pub limit_bytes: Option<usize>,
}

/// One record of a CRI log file.
pub struct Record {
    pub time: chrono::DateTime<chrono::Utc>,
    pub time_text: String,
    pub partial: bool,
    pub text: Vec<u8>,
}

/// Parses one line of a CRI log file (without its newline). The text is kept as bytes:
/// what a program writes need not be UTF-8, and kubectl passes it through as it is.
pub fn parse_record(line: &[u8]) -> Option<Record> {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let time_text = std::str::from_utf8(parts.next()?).ok()?.to_owned();
    let _stream = parts.next()?;
    let tag = parts.next()?;
    let text = parts.next().unwrap_or_default().to_vec();
    let time = chrono::DateTime::parse_from_rfc3339(&time_text).ok()?.with_timezone(&chrono::Utc);
    Some(Record { time, time_text, partial: tag == b"P", text })
}

/// One line as kubectl shows it: partial records joined, stamped with the first one's time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub time_text: String,
    pub text: Vec<u8>,
}

/// Joins `P` (partial) records with the records that complete them.
#[derive(Default)]
pub struct Joiner {
    open: Option<Line>,
}

impl Joiner {
    /// The line `record` completes, if it does.
    pub fn push(&mut self, record: Record) -> Option<Line> {
        let mut line = self.open.take().unwrap_or_else(|| Line { time_text: record.time_text, text: Vec::new() });
        line.text.extend_from_slice(&record.text);
        if record.partial {
            self.open = Some(line);
            None
        } else {
            Some(line)
        }
    }

    /// A partial line no record completed (the run ended mid-line).
    pub fn finish(&mut self) -> Option<Line> {
        self.open.take()
    }
}

/// Writes lines as kubectl prints them, up to the byte limit.
pub struct Printer {
    timestamps: bool,
    left: Option<usize>,
}

impl Printer {
    pub fn new(query: &LogQuery) -> Self {
        Self { timestamps: query.timestamps, left: query.limit_bytes }
    }

    /// Appends `line` to `out`, cut at the byte limit.
    pub fn print(&mut self, line: &Line, out: &mut Vec<u8>) {
        let start = out.len();
        if self.timestamps {
            out.extend_from_slice(line.time_text.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(&line.text);
        out.push(b'\n');
        if let Some(left) = self.left.as_mut() {
            let written = (out.len() - start).min(*left);
            out.truncate(start + written);
            *left -= written;
        }
    }

    /// The byte limit is reached: nothing more will be printed.
    pub fn full(&self) -> bool {
        self.left == Some(0)
    }
}

/// The records of one run (older rotated file first), filtered as `query` says, rendered as
/// kubectl prints them.
/// [`read`] as text, for tests and messages.
pub fn read_text(path: &Path, query: &LogQuery) -> String {
    String::from_utf8_lossy(&read(path, query)).into_owned()
}

pub fn read(path: &Path, query: &LogQuery) -> Vec<u8> {
    match RunLog::open(path) {
        Ok((_, records)) => render(records, query),
        Err(_) => Vec::new(),
    }
}

/// Renders records of one run: `since` and `tail` apply, then the byte limit.
pub fn render(records: Vec<Record>, query: &LogQuery) -> Vec<u8> {
    let mut joiner = Joiner::default();
    let lines = initial_lines(records, query, &mut joiner);
    // A line the run left unfinished counts as a line once nothing more will come.
    let open = joiner.finish().filter(|_| query.tail != Some(0));
    let mut out = Vec::new();
    let mut printer = Printer::new(query);
    for line in lines.iter().chain(open.as_ref()) {
        if printer.full() {
            break;
        }
        printer.print(line, &mut out);
    }
    out
}

/// The whole lines of what is already written, after `since` and `tail`. A partial line
/// at the end stays in `joiner`, for a follower to complete with what comes next.
pub fn initial_lines(records: Vec<Record>, query: &LogQuery, joiner: &mut Joiner) -> Vec<Line> {
    let mut lines: Vec<Line> = records.into_iter().filter(|r| query.since.is_none_or(|since| r.time >= since)).filter_map(|r| joiner.push(r)).collect();
    if let Some(tail) = query.tail {
        lines.drain(..lines.len().saturating_sub(tail));
    }
    lines
}

/// Reads one run's log as it grows: what is there at first, then what is appended,
/// across rotations (when the file is renamed to `.log.1` and a new one begins).
pub struct RunLog {
    path: PathBuf,
    file: Option<std::fs::File>,
    /// Identity (device, inode) of the open file, to notice a rotation.
    id: (u64, u64),
    /// Bytes after the last newline: a record still being written.
    carry: Vec<u8>,
}

fn file_id(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

impl RunLog {
    /// Opens the run's log; returns it with every complete record written so far.
    pub fn open(path: &Path) -> std::io::Result<(Self, Vec<Record>)> {
        // The current file first, so a rotation right now cannot make us miss it; then
        // the rotated one, unless it is the very file just opened.
        let file = std::fs::File::open(path)?;
        let id = file_id(&file.metadata()?);
        let mut log = Self { path: path.to_owned(), file: Some(file), id, carry: Vec::new() };
        let mut records = Vec::new();
        let rotated = path.with_extension("log.1");
        if let Ok(old) = std::fs::File::open(&rotated) {
            if old.metadata().map(|m| file_id(&m)).ok() != Some(id) {
                let mut old_log = Self { path: rotated, file: Some(old), id: (0, 0), carry: Vec::new() };
                records.extend(old_log.read_file()?);
            }
        }
        records.extend(log.read_file()?);
        Ok((log, records))
    }

    /// The complete records appended since the last call. When the file was rotated,
    /// the rest of the old file comes first, then the new file from its start.
    pub fn next_records(&mut self) -> std::io::Result<Vec<Record>> {
        let mut records = self.read_file()?;
        let current = std::fs::metadata(&self.path).map(|m| file_id(&m));
        if matches!(current, Ok(id) if id != self.id) {
            if let Ok(file) = std::fs::File::open(&self.path) {
                // Read the old file to its end once more: the writer may have added to it
                // after the read above, before it rotated.
                records.extend(self.read_file()?);
                self.carry.clear();
                self.id = file.metadata().map(|m| file_id(&m))?;
                self.file = Some(file);
                records.extend(self.read_file()?);
            }
        }
        Ok(records)
    }

    fn read_file(&mut self) -> std::io::Result<Vec<Record>> {
        use std::io::Read;
        let Some(file) = self.file.as_mut() else { return Ok(Vec::new()) };
        let mut buf = std::mem::take(&mut self.carry);
        file.read_to_end(&mut buf)?;
        let complete = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        self.carry = buf.split_off(complete);
        Ok(buf.split(|&b| b == b'\n').filter(|l| !l.is_empty()).filter_map(parse_record).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).unwrap()
    }

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
        let all = text(read(&path, &LogQuery::default()));
        assert!(all.ends_with("line 199\nno newline\n"), "{all}");
        assert!(!all.starts_with("line 0\n"), "rotation keeps the size bounded");
        let size = std::fs::metadata(&path).unwrap().len() + std::fs::metadata(path.with_extension("log.1")).unwrap().len();
        assert!(size <= 2 * 4096, "{size}");
        let tail = text(read(&path, &LogQuery { tail: Some(2), timestamps: true, ..Default::default() }));
        let lines: Vec<&str> = tail.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].ends_with(" line 199") && lines[0].contains('T'), "{tail}");
        let limited = read(&path, &LogQuery { tail: Some(2), limit_bytes: Some(12), ..Default::default() });
        assert_eq!(text(limited), "line 199\nno ");
        let future = chrono::Utc::now() + chrono::Duration::hours(1);
        assert!(read(&path, &LogQuery { since: Some(future), ..Default::default() }).is_empty());
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
        sink.push(b"\xff\xfe not utf-8\n");
        drop(sink);
        let mut want = format!("{long}\n").into_bytes();
        want.extend_from_slice(b"\xff\xfe not utf-8\n");
        assert_eq!(read(&path, &LogQuery::default()), want);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_follower_sees_appended_records_across_a_rotation() {
        let dir = std::env::temp_dir().join(format!("wasmkube-logs-follow-{}", std::process::id()));
        let path = run_log(&dir, 3);
        // Records here are 46 and 82 bytes: the fourth write rotates, once.
        let log = LogWriter::open(&path, 250).unwrap();
        let mut sink = log.sink("stdout");
        sink.push(b"first\n");
        let (mut follower, records) = RunLog::open(&path).unwrap();
        assert_eq!(records.len(), 1);
        assert!(follower.next_records().unwrap().is_empty());
        for i in 0..4 {
            sink.push(format!("line {i} with some padding to fill the file\n").as_bytes());
        }
        assert!(path.with_extension("log.1").exists(), "the writer rotated");
        let texts: Vec<String> = follower.next_records().unwrap().into_iter().map(|r| text(r.text)).collect();
        assert_eq!(texts, (0..4).map(|i| format!("line {i} with some padding to fill the file")).collect::<Vec<_>>());
        sink.push(b"half");
        assert!(follower.next_records().unwrap().is_empty(), "a record without its newline is not read yet");
        drop(sink);
        assert_eq!(follower.next_records().unwrap().into_iter().map(|r| text(r.text)).collect::<Vec<_>>(), ["half"]);
        let _ = std::fs::remove_dir_all(dir);
    }
}
