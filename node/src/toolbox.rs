//! The built-in tools `kubectl exec` can run in a wasm container, which has no programs of
//! its own besides its module: `tar` (what `kubectl cp` runs both ways), `ls`, `cat`,
//! `env`, `echo`, `test`, `mkdir`, `rm`, `pwd`, `true`, `false`.
//!
//! They see the file system the container's module sees: its volumes at their mount
//! paths, nothing else. Paths, `..` and symbolic links resolve in that namespace (a link
//! to `/etc/passwd` points at the container's `/etc/passwd`, which does not exist unless a
//! volume is mounted there), and a read-only mount refuses writes with EROFS. Messages and
//! exit codes follow GNU coreutils and tar, which scripts and kubectl compare against.

use crate::exec::Io;
use crate::wasm::{Mount, Stdin};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Every built-in tool's name, for the not-found message.
pub const NAMES: [&str; 11] = ["tar", "ls", "cat", "env", "echo", "test", "mkdir", "rm", "pwd", "true", "false"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    Tar,
    Ls,
    Cat,
    Env,
    Echo,
    Test,
    Mkdir,
    Rm,
    Pwd,
    True,
    False,
}

impl Tool {
    /// The tool `program` names: a bare name or one in the usual program directories.
    pub fn named(program: &str) -> Option<Tool> {
        let name = ["/bin/", "/usr/bin/", "/usr/local/bin/", "/sbin/", "/usr/sbin/"].iter().find_map(|d| program.strip_prefix(d)).unwrap_or(program);
        Some(match name {
            "tar" => Tool::Tar,
            "ls" => Tool::Ls,
            "cat" => Tool::Cat,
            "env" => Tool::Env,
            "echo" => Tool::Echo,
            "test" | "[" => Tool::Test,
            "mkdir" => Tool::Mkdir,
            "rm" => Tool::Rm,
            "pwd" => Tool::Pwd,
            "true" => Tool::True,
            "false" => Tool::False,
            _ => return None,
        })
    }
}

/// Runs `tool` with `args` over `mounts`; returns its exit code.
pub async fn run(tool: Tool, args: &[String], mounts: &[Mount], env: &[(String, String)], io: Io) -> i32 {
    let fs = Fs { mounts: mounts.iter().map(|m| (normalize(&m.guest), m.host.clone(), m.read_only)).collect() };
    let args = args.to_vec();
    let env = env.to_vec();
    let stdin: Box<dyn Read + Send> = match io.stdin {
        Stdin::Empty => Box::new(std::io::empty()),
        Stdin::Bytes(b) => Box::new(std::io::Cursor::new(b)),
        Stdin::Stream(s) => Box::new(tokio_util::io::SyncIoBridge::new(s)),
    };
    let mut stdout = tokio_util::io::SyncIoBridge::new(io.stdout);
    let mut stderr = tokio_util::io::SyncIoBridge::new(io.stderr);
    // The tools do blocking file I/O and the bridges block on the session's streams.
    let done = tokio::task::spawn_blocking(move || {
        let code = {
            let mut out = std::io::BufWriter::with_capacity(64 << 10, &mut stdout);
            let code = run_blocking(tool, &args, &fs, &env, stdin, &mut out, &mut stderr);
            let _ = out.flush();
            code
        };
        let _ = stdout.shutdown();
        let _ = stderr.shutdown();
        code
    });
    done.await.unwrap_or(1)
}

fn run_blocking(tool: Tool, args: &[String], fs: &Fs, env: &[(String, String)], stdin: Box<dyn Read + Send>, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let mut t = Ctx { fs, out, err, code: 0 };
    match tool {
        Tool::True => 0,
        Tool::False => 1,
        Tool::Pwd => t.line("/"),
        Tool::Echo => echo(&mut t, args),
        Tool::Env => {
            for (k, v) in env {
                t.line(&format!("{k}={v}"));
            }
            0
        }
        Tool::Cat => cat(&mut t, args, stdin),
        Tool::Ls => ls(&mut t, args),
        Tool::Test => test(&mut t, args),
        Tool::Mkdir => mkdir(&mut t, args),
        Tool::Rm => rm(&mut t, args),
        Tool::Tar => tar(&mut t, args, stdin),
    }
}

/// A tool's streams and the exit code it is heading for.
struct Ctx<'a> {
    fs: &'a Fs,
    out: &'a mut dyn Write,
    err: &'a mut dyn Write,
    code: i32,
}

impl Ctx<'_> {
    fn line(&mut self, text: &str) -> i32 {
        let _ = writeln!(self.out, "{text}");
        0
    }
    /// A diagnostic; the tool ends with `code` unless it ends worse.
    fn fail(&mut self, code: i32, text: &str) {
        let _ = writeln!(self.err, "{text}");
        self.code = self.code.max(code);
    }
}

/// The container's file system: its mounts by guest path.
struct Fs {
    mounts: Vec<(String, PathBuf, bool)>,
}

/// Where a guest path is on the host.
#[derive(Debug, PartialEq, Eq)]
enum Place {
    /// In a mount: the host path and whether the mount is read-only.
    Host(PathBuf, bool),
    /// A directory of the namespace that only holds mount points (`/`, `/var` for a
    /// mount at `/var/data`): it lists them and cannot be written.
    Virtual(Vec<String>),
}

/// An error as the C library names it.
#[derive(Debug, PartialEq, Eq)]
struct Errno(&'static str);

impl From<std::io::Error> for Errno {
    fn from(e: std::io::Error) -> Self {
        use std::io::ErrorKind::*;
        Errno(match e.kind() {
            NotFound => "No such file or directory",
            PermissionDenied => "Permission denied",
            AlreadyExists => "File exists",
            ReadOnlyFilesystem => "Read-only file system",
            NotADirectory => "Not a directory",
            IsADirectory => "Is a directory",
            DirectoryNotEmpty => "Directory not empty",
            StorageFull => "No space left on device",
            _ => "Input/output error",
        })
    }
}

const ENOENT: Errno = Errno("No such file or directory");
const EROFS: Errno = Errno("Read-only file system");
const ELOOP: Errno = Errno("Too many levels of symbolic links");

/// `/`-separated components of a guest path after `.` and `..`, as an absolute path.
fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

impl Fs {
    /// The host place of a normalized guest path, links not followed.
    fn place(&self, guest: &str) -> Result<Place, Errno> {
        let best = self.mounts.iter().filter(|(g, _, _)| guest == g || g == "/" || guest.starts_with(&format!("{g}/"))).max_by_key(|(g, _, _)| g.len());
        if let Some((g, host, ro)) = best {
            let rest = guest[g.len()..].trim_start_matches('/');
            return Ok(Place::Host(if rest.is_empty() { host.clone() } else { host.join(rest) }, *ro));
        }
        let prefix = if guest == "/" { "/".to_owned() } else { format!("{guest}/") };
        let mut children: Vec<String> = self.mounts.iter().filter_map(|(g, _, _)| g.strip_prefix(&prefix)).filter_map(|r| r.split('/').next()).map(String::from).collect();
        children.sort();
        children.dedup();
        if children.is_empty() && guest != "/" {
            return Err(ENOENT);
        }
        Ok(Place::Virtual(children))
    }

    /// Resolves `path` (relative to `/`) in the guest namespace: symbolic links are
    /// followed as the guest would see them, the last one only when `follow_last`.
    /// Returns the final guest path and its place.
    fn resolve(&self, path: &str, follow_last: bool) -> Result<(String, Place), Errno> {
        let mut pending: Vec<String> = path.split('/').filter(|c| !c.is_empty()).map(String::from).rev().collect();
        let mut done: Vec<String> = Vec::new();
        let mut links = 0;
        // Past a component that does not exist there are no links to follow: the rest is
        // where something may be created.
        let mut missing = false;
        while let Some(c) = pending.pop() {
            match c.as_str() {
                "." => continue,
                ".." => {
                    done.pop();
                    continue;
                }
                _ => done.push(c),
            }
            let last = pending.is_empty();
            if missing || (last && !follow_last) {
                continue;
            }
            let guest = format!("/{}", done.join("/"));
            let Place::Host(host, _) = self.place(&guest)? else { continue };
            let Ok(meta) = std::fs::symlink_metadata(&host) else {
                missing = true;
                continue;
            };
            if meta.file_type().is_symlink() {
                links += 1;
                if links > 40 {
                    return Err(ELOOP);
                }
                let target = std::fs::read_link(&host)?.to_string_lossy().into_owned();
                done.pop();
                if target.starts_with('/') {
                    done.clear();
                }
                pending.extend(target.split('/').filter(|c| !c.is_empty()).map(String::from).rev());
            } else if !last && !meta.is_dir() {
                return Err(Errno("Not a directory"));
            }
        }
        let guest = format!("/{}", done.join("/"));
        let place = self.place(&guest)?;
        Ok((guest, place))
    }

    /// The host path of `path` for reading.
    fn read_path(&self, path: &str, follow_last: bool) -> Result<(String, Place), Errno> {
        self.resolve(path, follow_last)
    }

    /// The host path of `path` for writing: in a mount that is not read-only.
    fn write_path(&self, path: &str, follow_last: bool) -> Result<PathBuf, Errno> {
        let resolved = match self.resolve(path, follow_last) {
            // Outside every volume there is no file system to write to.
            Err(ENOENT) if !self.mounts.iter().any(|(g, _, _)| normalize(path).starts_with(g.as_str())) => return Err(EROFS),
            other => other?,
        };
        match resolved.1 {
            Place::Host(host, false) => Ok(host),
            Place::Host(_, true) | Place::Virtual(_) => Err(EROFS),
        }
    }
}

/// Opens a file for reading without following a link in its last component (resolution
/// already followed the guest's links; a link appearing since is refused).
fn open_nofollow(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path)
}

fn echo(t: &mut Ctx, args: &[String]) -> i32 {
    let (newline, words) = match args.first().map(String::as_str) {
        Some("-n") => (false, &args[1..]),
        _ => (true, args),
    };
    let _ = write!(t.out, "{}{}", words.join(" "), if newline { "\n" } else { "" });
    0
}

/// Copies stdin as it comes: an interactive session sees each piece echoed at once.
fn copy_stdin(stdin: &mut dyn Read, out: &mut dyn Write) {
    let mut buf = vec![0u8; 32 << 10];
    while let Ok(n @ 1..) = stdin.read(&mut buf) {
        if out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
            return;
        }
    }
}

fn cat(t: &mut Ctx, args: &[String], mut stdin: Box<dyn Read + Send>) -> i32 {
    let files: Vec<&String> = args.iter().filter(|a| !a.starts_with('-') || a.as_str() == "-").collect();
    if files.is_empty() {
        copy_stdin(&mut stdin, t.out);
        return 0;
    }
    for f in files {
        if f == "-" {
            copy_stdin(&mut stdin, t.out);
            continue;
        }
        let opened = match t.fs.read_path(f, true) {
            Ok((_, Place::Virtual(_))) => Err(Errno("Is a directory")),
            Ok((_, Place::Host(host, _))) if host.is_dir() => Err(Errno("Is a directory")),
            Ok((_, Place::Host(host, _))) => open_nofollow(&host).map_err(Errno::from),
            Err(e) => Err(e),
        };
        match opened {
            Ok(mut file) => {
                let _ = std::io::copy(&mut file, t.out);
            }
            Err(e) => t.fail(1, &format!("cat: {f}: {}", e.0)),
        }
    }
    t.code
}

fn ls(t: &mut Ctx, args: &[String]) -> i32 {
    let flags: String = args.iter().filter(|a| a.starts_with('-') && a.len() > 1).flat_map(|a| a.chars().skip(1)).collect();
    let (long, all) = (flags.contains('l'), flags.contains('a'));
    let mut paths: Vec<&str> = args.iter().filter(|a| !a.starts_with('-') || a.len() == 1).map(String::as_str).collect();
    if paths.is_empty() {
        paths.push("/");
    }
    let many = paths.len() > 1;
    for (n, p) in paths.iter().enumerate() {
        let entries = match t.fs.read_path(p, true) {
            Ok((_, Place::Virtual(children))) => Ok(Some(children.into_iter().map(|c| (c, None)).collect::<Vec<_>>())),
            Ok((_, Place::Host(host, _))) => match std::fs::symlink_metadata(&host) {
                Ok(m) if m.is_dir() => std::fs::read_dir(&host).map_err(Errno::from).map(|rd| {
                    let mut v: Vec<(String, Option<std::fs::Metadata>)> = rd.flatten().map(|e| (e.file_name().to_string_lossy().into_owned(), e.metadata().ok())).collect();
                    v.sort_by(|a, b| a.0.cmp(&b.0));
                    Some(v)
                }),
                Ok(m) => Ok({
                    let _ = t_line_entry(t.out, p, Some(&m), long);
                    None
                }),
                Err(e) => Err(Errno::from(e)),
            },
            Err(e) => Err(e),
        };
        match entries {
            Ok(Some(list)) => {
                if many {
                    let _ = writeln!(t.out, "{}{p}:", if n > 0 { "\n" } else { "" });
                }
                for (name, meta) in list.iter().filter(|(name, _)| all || !name.starts_with('.')) {
                    let _ = t_line_entry(t.out, name, meta.as_ref(), long);
                }
            }
            Ok(None) => {}
            Err(e) => t.fail(2, &format!("ls: cannot access '{p}': {}", e.0)),
        }
    }
    t.code
}

/// One `ls` line: the name, or with `-l` the mode, size and name.
fn t_line_entry(out: &mut dyn Write, name: &str, meta: Option<&std::fs::Metadata>, long: bool) -> std::io::Result<()> {
    if !long {
        return writeln!(out, "{name}");
    }
    use std::os::unix::fs::PermissionsExt;
    let Some(m) = meta else { return writeln!(out, "drwxr-xr-x {:>10} {name}", 0) };
    let kind = if m.is_dir() { 'd' } else if m.file_type().is_symlink() { 'l' } else { '-' };
    let mode = m.permissions().mode();
    let bits: String = (0..9).map(|i| if mode & (0o400 >> i) != 0 { ['r', 'w', 'x'][i % 3] } else { '-' }).collect();
    writeln!(out, "{kind}{bits} {:>10} {name}", m.len())
}

fn test(t: &mut Ctx, args: &[String]) -> i32 {
    let args: Vec<&str> = args.iter().map(String::as_str).filter(|a| *a != "]").collect();
    let place = |p: &str| t.fs.read_path(p, true).ok().map(|(_, place)| place);
    let meta = |p: &str| match place(p) {
        Some(Place::Host(h, _)) => std::fs::metadata(h).ok().map(|m| (m.is_dir(), m.is_file(), m.len())),
        Some(Place::Virtual(_)) => Some((true, false, 0)),
        None => None,
    };
    let ok = match args.as_slice() {
        ["-d", p] => meta(p).is_some_and(|m| m.0),
        ["-f", p] => meta(p).is_some_and(|m| m.1),
        ["-e", p] => meta(p).is_some(),
        ["-s", p] => meta(p).is_some_and(|m| m.2 > 0),
        ["-w", p] => matches!(place(p), Some(Place::Host(_, false))) && meta(p).is_some(),
        ["-r", p] => meta(p).is_some(),
        ["-n", s] => !s.is_empty(),
        ["-z", s] => s.is_empty(),
        [a, "=", b] => a == b,
        [a, "!=", b] => a != b,
        [s] => !s.is_empty(),
        [] => false,
        other => {
            t.fail(2, &format!("test: unsupported expression: {}", other.join(" ")));
            return 2;
        }
    };
    i32::from(!ok)
}

fn mkdir(t: &mut Ctx, args: &[String]) -> i32 {
    let parents = args.iter().any(|a| a == "-p");
    for p in args.iter().filter(|a| !a.starts_with('-')) {
        let made = t.fs.write_path(p, true).and_then(|host| if parents { std::fs::create_dir_all(&host) } else { std::fs::create_dir(&host) }.map_err(Errno::from));
        if let Err(e) = made {
            t.fail(1, &format!("mkdir: cannot create directory '{p}': {}", e.0));
        }
    }
    t.code
}

fn rm(t: &mut Ctx, args: &[String]) -> i32 {
    let flags: String = args.iter().filter(|a| a.starts_with('-')).flat_map(|a| a.chars().skip(1)).collect();
    let (recursive, force) = (flags.contains('r') || flags.contains('R'), flags.contains('f'));
    for p in args.iter().filter(|a| !a.starts_with('-')) {
        let removed = t.fs.write_path(p, false).and_then(|host| {
            let meta = std::fs::symlink_metadata(&host)?;
            if meta.is_dir() {
                if !recursive {
                    return Err(Errno("Is a directory"));
                }
                std::fs::remove_dir_all(&host)?;
            } else {
                std::fs::remove_file(&host)?;
            }
            Ok(())
        });
        match removed {
            Err(e) if force && e == ENOENT => {}
            Err(e) => t.fail(1, &format!("rm: cannot remove '{p}': {}", e.0)),
            Ok(()) => {}
        }
    }
    t.code
}

/// What a `tar` command line asks for.
#[derive(Debug, Default, PartialEq, Eq)]
struct TarArgs {
    mode: Option<char>,
    file: Option<String>,
    dir: Option<String>,
    keep_mtime: bool,
    verbose: bool,
    paths: Vec<String>,
}

/// GNU tar's argument forms kubectl and people use: `cf - PATH`, `-xmf - -C DIR`,
/// `--extract --file=-`, `-C DIR` anywhere.
fn tar_args(args: &[String]) -> Result<TarArgs, String> {
    let mut a = TarArgs { keep_mtime: true, ..Default::default() };
    let mut it = args.iter().peekable();
    let mut first = true;
    while let Some(arg) = it.next() {
        let mut next = |what: &str| it.next().cloned().ok_or_else(|| format!("option requires an argument -- '{what}'"));
        if let Some(long) = arg.strip_prefix("--") {
            let (name, value) = long.split_once('=').map_or((long, None), |(n, v)| (n, Some(v.to_owned())));
            match name {
                "create" => a.mode = Some('c'),
                "extract" | "get" => a.mode = Some('x'),
                "list" => a.mode = Some('t'),
                "file" => a.file = Some(value.map_or_else(|| next("f"), Ok)?),
                "directory" => a.dir = Some(value.map_or_else(|| next("C"), Ok)?),
                "touch" => a.keep_mtime = false,
                "verbose" => a.verbose = true,
                "no-same-owner" | "no-same-permissions" | "preserve-permissions" | "same-permissions" => {}
                other => return Err(format!("unrecognized option '--{other}'")),
            }
        } else if (arg.starts_with('-') && arg.len() > 1) || (first && !arg.is_empty()) {
            // Old-style bundled flags (`cf`) are only the first word; `-` flags anywhere.
            for flag in arg.trim_start_matches('-').chars() {
                match flag {
                    'c' | 'x' | 't' => a.mode = Some(flag),
                    'f' => a.file = Some(next("f")?),
                    'C' => a.dir = Some(next("C")?),
                    'm' => a.keep_mtime = false,
                    'v' => a.verbose = true,
                    'p' | 'o' => {}
                    'z' | 'j' | 'J' => return Err(format!("-{flag}: compression is not available in this container")),
                    other => return Err(format!("invalid option -- '{other}'")),
                }
            }
        } else {
            a.paths.push(arg.clone());
        }
        first = false;
    }
    Ok(a)
}

fn tar(t: &mut Ctx, args: &[String], stdin: Box<dyn Read + Send>) -> i32 {
    let a = match tar_args(args) {
        Ok(a) => a,
        Err(e) => {
            t.fail(2, &format!("tar: {e}\nTry 'tar --help' or 'tar --usage' for more information."));
            return 2;
        }
    };
    if a.file.as_deref().is_some_and(|f| f != "-") {
        t.fail(2, "tar: only the archive on stdin or stdout (-f -) is available in this container");
        return 2;
    }
    let base = a.dir.clone().unwrap_or_else(|| "/".into());
    let base = if base.starts_with('/') { base } else { format!("/{base}") };
    match a.mode {
        Some('c') => tar_create(t, &a, &base),
        Some('x') => tar_extract(t, &a, &base, stdin),
        Some('t') => tar_list(t, stdin),
        _ => {
            t.fail(2, "tar: You must specify one of the '-Acdtrux', '--delete' or '--test-label' options\nTry 'tar --help' or 'tar --usage' for more information.");
            2
        }
    }
}

fn tar_create(t: &mut Ctx, a: &TarArgs, base: &str) -> i32 {
    if a.paths.is_empty() {
        t.fail(2, "tar: Cowardly refusing to create an empty archive\nTry 'tar --help' or 'tar --usage' for more information.");
        return 2;
    }
    let mut warned_root = false;
    let fs = t.fs;
    let mut builder = tar::Builder::new(&mut *t.out);
    builder.follow_symlinks(false);
    let mut errors: Vec<String> = Vec::new();
    for p in &a.paths {
        let guest = if p.starts_with('/') { p.clone() } else { format!("{base}/{p}") };
        // Member names are the path as given, leading `/` and `../` removed, as GNU tar does.
        let name = p.trim_start_matches('/').to_owned();
        if p.starts_with('/') && !warned_root {
            errors.push("tar: Removing leading `/' from member names".into());
            warned_root = true;
        }
        let name = if name.is_empty() { ".".to_owned() } else { name.trim_end_matches('/').to_owned() };
        match fs.read_path(&guest, false) {
            Ok((_, Place::Host(host, _))) => add_tree(&mut builder, &host, &name, &mut errors),
            Ok((_, Place::Virtual(_))) => errors.push(format!("tar: {p}: Cannot archive a directory that only holds volume mounts; name a volume")),
            Err(e) => errors.push(format!("tar: {p}: Cannot stat: {}", e.0)),
        }
    }
    let finished = builder.finish();
    let failed = errors.iter().any(|e| !e.contains("Removing leading"));
    for e in &errors {
        let _ = writeln!(t.err, "{e}");
    }
    if failed {
        let _ = writeln!(t.err, "tar: Exiting with failure status due to previous errors");
        return 2;
    }
    i32::from(finished.is_err()) * 2
}

/// Archives `host` as `name`, directories recursively; links are archived as links.
fn add_tree<W: Write>(builder: &mut tar::Builder<W>, host: &Path, name: &str, errors: &mut Vec<String>) {
    let meta = match std::fs::symlink_metadata(host) {
        Ok(m) => m,
        Err(e) => return errors.push(format!("tar: {name}: Cannot stat: {}", Errno::from(e).0)),
    };
    if meta.is_dir() {
        if let Err(e) = builder.append_dir(name, host) {
            return errors.push(format!("tar: {name}: {e}"));
        }
        let mut children: Vec<_> = match std::fs::read_dir(host) {
            Ok(rd) => rd.flatten().map(|e| e.file_name()).collect(),
            Err(e) => return errors.push(format!("tar: {name}: Cannot open: {}", Errno::from(e).0)),
        };
        children.sort();
        for child in children {
            let child_name = if name == "." { child.to_string_lossy().into_owned() } else { format!("{name}/{}", child.to_string_lossy()) };
            add_tree(builder, &host.join(&child), &child_name, errors);
        }
    } else if meta.is_file() || meta.file_type().is_symlink() {
        if let Err(e) = builder.append_path_with_name(host, name) {
            errors.push(format!("tar: {name}: Cannot open: {e}"));
        }
    } else {
        errors.push(format!("tar: {name}: socket ignored"));
    }
}

fn tar_list(t: &mut Ctx, stdin: Box<dyn Read + Send>) -> i32 {
    let mut archive = tar::Archive::new(stdin);
    let entries = match archive.entries() {
        Ok(e) => e,
        Err(e) => {
            t.fail(2, &format!("tar: {e}"));
            return 2;
        }
    };
    for entry in entries {
        match entry {
            Ok(e) => {
                let _ = writeln!(t.out, "{}", e.path().map(|p| p.display().to_string()).unwrap_or_default());
            }
            Err(e) => {
                t.fail(2, &format!("tar: {e}"));
                break;
            }
        }
    }
    t.code
}

fn tar_extract(t: &mut Ctx, a: &TarArgs, base: &str, stdin: Box<dyn Read + Send>) -> i32 {
    let mut archive = tar::Archive::new(stdin);
    let entries = match archive.entries() {
        Ok(e) => e,
        Err(e) => {
            t.fail(2, &format!("tar: {e}"));
            return 2;
        }
    };
    let mut failed = false;
    for entry in entries {
        let mut entry = match entry {
            Ok(e) => e,
            Err(e) => {
                let _ = writeln!(t.err, "tar: {e}");
                failed = true;
                break;
            }
        };
        let raw = match entry.path() {
            Ok(p) => p.to_string_lossy().into_owned(),
            Err(e) => {
                let _ = writeln!(t.err, "tar: {e}");
                failed = true;
                continue;
            }
        };
        // GNU tar refuses members that climb out of the directory.
        if raw.split('/').any(|c| c == "..") {
            let _ = writeln!(t.err, "tar: {raw}: Member name contains '..'");
            failed = true;
            continue;
        }
        let name = raw.trim_start_matches('/');
        if name.is_empty() || name == "." || name == "./" {
            continue;
        }
        let guest = format!("{}/{name}", base.trim_end_matches('/'));
        if a.verbose {
            let _ = writeln!(t.out, "{raw}");
        }
        let kind = entry.header().entry_type();
        let mode = entry.header().mode().unwrap_or(0o644);
        let mtime = entry.header().mtime().ok();
        let written: Result<(), Errno> = (|| {
            let host = t.fs.write_path(&guest, false)?;
            if let Some(parent) = host.parent() {
                if !parent.is_dir() {
                    std::fs::create_dir_all(parent)?;
                }
            }
            use std::os::unix::fs::PermissionsExt;
            match kind {
                tar::EntryType::Directory => {
                    if !host.is_dir() {
                        std::fs::create_dir(&host)?;
                    }
                    let _ = std::fs::set_permissions(&host, std::fs::Permissions::from_mode(mode & 0o7777 | 0o700));
                }
                tar::EntryType::Symlink => {
                    let target = entry.link_name().ok().flatten().map(|l| l.into_owned()).unwrap_or_default();
                    let _ = std::fs::remove_file(&host);
                    std::os::unix::fs::symlink(target, &host)?;
                }
                tar::EntryType::Link => {
                    // A hard link to an earlier member: copied, as the target resolves in the guest.
                    let target = entry.link_name().ok().flatten().map(|l| l.to_string_lossy().into_owned()).unwrap_or_default();
                    let (_, place) = t.fs.read_path(&format!("{}/{}", base.trim_end_matches('/'), target.trim_start_matches('/')), true)?;
                    let Place::Host(src, _) = place else { return Err(ENOENT) };
                    std::fs::copy(src, &host)?;
                }
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    if std::fs::symlink_metadata(&host).is_ok_and(|m| m.file_type().is_symlink()) {
                        std::fs::remove_file(&host)?;
                    }
                    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(&host)?;
                    std::io::copy(&mut entry, &mut file)?;
                    let _ = file.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777));
                    if let (true, Some(m)) = (a.keep_mtime, mtime) {
                        let _ = file.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(m));
                    }
                }
                _ => {}
            }
            Ok(())
        })();
        if let Err(e) = written {
            let _ = writeln!(t.err, "tar: {name}: Cannot open: {}", e.0);
            failed = true;
        }
    }
    if failed {
        let _ = writeln!(t.err, "tar: Exiting with failure status due to previous errors");
        return 2;
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("wasmkube-toolbox-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn run_tool(fs: &Fs, tool: Tool, args: &[&str], stdin: Vec<u8>) -> (i32, Vec<u8>, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let code = run_blocking(tool, &args, fs, &[("A".into(), "1".into())], Box::new(std::io::Cursor::new(stdin)), &mut out, &mut err);
        (code, out, String::from_utf8_lossy(&err).into_owned())
    }

    #[test]
    fn paths_and_links_resolve_inside_the_container_namespace() {
        let d = tmp("resolve");
        let (data, conf) = (d.join("data"), d.join("conf"));
        std::fs::create_dir_all(data.join("sub")).unwrap();
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::write(conf.join("app.yaml"), "x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", data.join("escape")).unwrap();
        std::os::unix::fs::symlink("../../../config/app.yaml", data.join("sub/cfg")).unwrap();
        std::os::unix::fs::symlink("../../config/app.yaml", data.join("sub/dangling")).unwrap();
        let fs = Fs { mounts: vec![("/var/data".into(), data.clone(), false), ("/config".into(), conf.clone(), true)] };
        assert_eq!(fs.resolve("/var/data/../../config/app.yaml", true).unwrap().1, Place::Host(conf.join("app.yaml"), true));
        assert_eq!(fs.resolve("/var/data/sub/cfg", true).unwrap(), ("/config/app.yaml".into(), Place::Host(conf.join("app.yaml"), true)));
        assert_eq!(fs.resolve("/var/data/sub/dangling", true), Err(ENOENT));
        assert_eq!(fs.resolve("/var/data/sub/dangling", false).unwrap().1, Place::Host(data.join("sub/dangling"), false));
        // A link to the host's /etc/passwd is the guest's /etc/passwd: nothing is mounted there.
        assert_eq!(fs.resolve("/var/data/escape", true), Err(ENOENT));
        assert_eq!(fs.resolve("/", true).unwrap().1, Place::Virtual(vec!["config".into(), "var".into()]));
        assert_eq!(fs.write_path("/config/app.yaml", true), Err(EROFS));
        assert_eq!(fs.write_path("/new", true), Err(EROFS));
    }

    #[test]
    fn tar_round_trips_a_tree_and_refuses_read_only_mounts_and_climbing_members() {
        let d = tmp("tar");
        let (src, dst, ro) = (d.join("src"), d.join("dst"), d.join("ro"));
        for dir in [&src, &dst, &ro] {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::create_dir_all(src.join("dir/deep")).unwrap();
        std::fs::write(src.join("dir/a.txt"), "alpha\n").unwrap();
        std::fs::write(src.join("dir/deep/b.bin"), vec![7u8; 100_000]).unwrap();
        std::os::unix::fs::symlink("a.txt", src.join("dir/link")).unwrap();
        let fs = Fs { mounts: vec![("/src".into(), src.clone(), false), ("/dst".into(), dst.clone(), false), ("/ro".into(), ro.clone(), true)] };
        // What `kubectl cp pod:/src/dir ./x` runs.
        let (code, archive, err) = run_tool(&fs, Tool::Tar, &["cf", "-", "/src/dir"], vec![]);
        assert_eq!(code, 0, "{err}");
        assert!(err.contains("Removing leading `/' from member names"), "{err}");
        let (code, listing, _) = run_tool(&fs, Tool::Tar, &["tf", "-"], archive.clone());
        assert_eq!(code, 0);
        let listing = String::from_utf8(listing).unwrap();
        for member in ["src/dir", "src/dir/a.txt", "src/dir/deep/b.bin", "src/dir/link"] {
            assert!(listing.lines().any(|l| l == member), "{member} in {listing}");
        }
        // What `kubectl cp ./x pod:/dst/x` runs.
        let (code, _, err) = run_tool(&fs, Tool::Tar, &["-xmf", "-", "-C", "/dst"], archive.clone());
        assert_eq!(code, 0, "{err}");
        assert_eq!(std::fs::read_to_string(dst.join("src/dir/a.txt")).unwrap(), "alpha\n");
        assert_eq!(std::fs::read(dst.join("src/dir/deep/b.bin")).unwrap(), vec![7u8; 100_000]);
        assert_eq!(std::fs::read_link(dst.join("src/dir/link")).unwrap(), PathBuf::from("a.txt"));
        let (code, _, err) = run_tool(&fs, Tool::Tar, &["-xmf", "-", "-C", "/ro"], archive);
        assert_eq!(code, 2);
        assert!(err.contains("Read-only file system"), "{err}");
        assert_eq!(std::fs::read_dir(&ro).unwrap().count(), 0);
        // A member that climbs out is refused and nothing lands outside.
        let mut evil = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        h.as_gnu_mut().unwrap().name[..9].copy_from_slice(b"../escape");
        h.set_cksum();
        evil.append(&h, &b"bad"[..]).unwrap();
        let (code, _, err) = run_tool(&fs, Tool::Tar, &["xf", "-", "-C", "/dst"], evil.into_inner().unwrap());
        assert_eq!(code, 2, "{err}");
        assert!(!d.join("escape").exists() && !src.join("escape").exists());
    }

    #[test]
    fn the_small_tools_answer_as_coreutils_do() {
        let d = tmp("tools");
        std::fs::write(d.join("f"), "hello\n").unwrap();
        let fs = Fs { mounts: vec![("/data".into(), d.clone(), false)] };
        assert_eq!(run_tool(&fs, Tool::Cat, &["/data/f"], vec![]).1, b"hello\n");
        assert_eq!(run_tool(&fs, Tool::Cat, &[], b"piped".to_vec()).1, b"piped");
        let (code, _, err) = run_tool(&fs, Tool::Cat, &["/data/missing"], vec![]);
        assert_eq!((code, err.as_str()), (1, "cat: /data/missing: No such file or directory\n"));
        assert_eq!(run_tool(&fs, Tool::Ls, &["/data"], vec![]).1, b"f\n");
        assert_eq!(run_tool(&fs, Tool::Ls, &[], vec![]).1, b"data\n");
        let (code, _, err) = run_tool(&fs, Tool::Ls, &["/nope"], vec![]);
        assert_eq!((code, err.as_str()), (2, "ls: cannot access '/nope': No such file or directory\n"));
        assert_eq!(run_tool(&fs, Tool::Test, &["-d", "/data"], vec![]).0, 0);
        assert_eq!(run_tool(&fs, Tool::Test, &["-d", "/data/f"], vec![]).0, 1);
        assert_eq!(run_tool(&fs, Tool::Env, &[], vec![]).1, b"A=1\n");
        assert_eq!(run_tool(&fs, Tool::Echo, &["a", "b"], vec![]).1, b"a b\n");
        assert_eq!(run_tool(&fs, Tool::Mkdir, &["-p", "/data/x/y"], vec![]).0, 0);
        assert!(d.join("x/y").is_dir());
        assert_eq!(run_tool(&fs, Tool::Rm, &["-r", "/data/x"], vec![]).0, 0);
        assert!(!d.join("x").exists());
        assert_eq!(Tool::named("/bin/ls"), Some(Tool::Ls));
        assert_eq!(Tool::named("sh"), None);
    }

    #[test]
    fn tar_reads_the_argument_forms_kubectl_and_people_use() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let a = tar_args(&s(&["cf", "-", "/data/file"])).unwrap();
        assert_eq!((a.mode, a.file.as_deref(), a.paths.as_slice()), (Some('c'), Some("-"), &["/data/file".to_string()][..]));
        let a = tar_args(&s(&["-xmf", "-", "-C", "/data"])).unwrap();
        assert_eq!((a.mode, a.dir.as_deref(), a.keep_mtime), (Some('x'), Some("/data"), false));
        let a = tar_args(&s(&["--extract", "--file=-", "--directory", "/d"])).unwrap();
        assert_eq!((a.mode, a.file.as_deref(), a.dir.as_deref()), (Some('x'), Some("-"), Some("/d")));
        assert!(tar_args(&s(&["-czf", "-", "x"])).is_err());
    }
}
