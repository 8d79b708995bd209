//! The interfaces file parser, after ifupdown2's `ifupdown/networkinterfaces.py`
//! (`networkInterfaces.process_interfaces` and the `process_*` handlers).
//!
//! Mirrored: line continuations (`process_interfaces` joins the text at every `\`), comments
//! (a line whose first non-blank character is `#`), the keywords `source`, `source-directory`,
//! `auto`, `allow-<class>`, `iface`, `vlan`; option lines up to the next keyword, split at the
//! first blank, `_` → `-` in the name, `$IFACE` in the value; `source <glob>` (sorted matches;
//! `*` skips dot files, as Python's `glob`; relative to the sourcing file's directory; a
//! missing file without `*` is a warning) and `source-directory <dir>` (every entry,
//! `os.listdir`, no run-parts name rule).
//!
//! Not mirrored: mako templates (`read_filedata` renders files that contain `%`; here they
//! are read as they are), `iface` name ranges (`swp[1-4]`), wildcards in directory parts of
//! a `source` path (reported), and the entry order of `source-directory` (sorted here;
//! `os.listdir` order there). Line numbers are physical (ifupdown2 counts the joined lines).
//!
//! Absolute paths in `source` lines are resolved under the root the file was read from, so
//! a test root `R` reads `R/etc/network/interfaces.d/*`.

use std::io;
use std::path::{Path, PathBuf};

use super::{Diagnostic, Interfaces, Location, Opt, Stanza};

/// How deep `source` may nest; ifupdown2 itself recurses until Python's recursion limit.
const MAX_DEPTH: usize = 16;

/// What the parser reads files and directories through.
pub trait Loader {
    /// The text of file `path`.
    ///
    /// # Errors
    /// As [`crate::conf_read::read_regular_text`] (never blocks; refuses a FIFO, socket or
    /// device).
    fn read(&mut self, path: &Path) -> io::Result<String>;

    /// The entries of directory `dir`: name and whether it is a regular file (after
    /// following symlinks).
    ///
    /// # Errors
    /// As `std::fs::read_dir`.
    fn list(&mut self, dir: &Path) -> io::Result<Vec<(String, bool)>>;
}

/// [`Loader`] on the file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct FsLoader;

impl Loader for FsLoader {
    fn read(&mut self, path: &Path) -> io::Result<String> {
        crate::conf_read::read_regular_text(path)
    }

    fn list(&mut self, dir: &Path) -> io::Result<Vec<(String, bool)>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let is_file = std::fs::metadata(e.path())
                .map(|m| m.is_file())
                .unwrap_or(false);
            out.push((e.file_name().to_string_lossy().into_owned(), is_file));
        }
        Ok(out)
    }
}

/// Reading the top file failed, or `source` nests too deep.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The top file could not be read (other than being absent).
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `source` lines nest deeper than 16 files (a loop).
    #[error("{at}: source nests deeper than {MAX_DEPTH} files (a loop?)")]
    TooDeep { at: Location },
}

/// Reads `<root>/etc/network/interfaces` from the file system; `Ok(None)` when it is absent.
///
/// # Errors
/// [`ParseError`].
pub fn read(root: &Path) -> Result<Option<Interfaces>, ParseError> {
    let path = root.join("etc/network/interfaces");
    match crate::conf_read::read_regular_text(&path) {
        Ok(text) => parse(root, &path, &text, &mut FsLoader).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ParseError::Read { path, source }),
    }
}

/// Parses `text`, the content of `path` (a file under `root`), with every file it sources
/// read through `loader`.
///
/// # Errors
/// [`ParseError::TooDeep`]; everything else ifupdown2 only logs is a [`Diagnostic`].
pub fn parse(
    root: &Path,
    path: &Path,
    text: &str,
    loader: &mut dyn Loader,
) -> Result<Interfaces, ParseError> {
    let mut p = Parser {
        root,
        loader,
        out: Interfaces::default(),
        auto: Vec::new(),
        auto_all: false,
        depth: 0,
    };
    p.file(path, text)?;
    Ok(p.out)
}

struct Parser<'a> {
    root: &'a Path,
    loader: &'a mut dyn Loader,
    out: Interfaces,
    /// Names of class `auto` so far (`auto`, `allow-auto`).
    auto: Vec<String>,
    auto_all: bool,
    depth: usize,
}

/// `networkInterfaces._is_keyword`.
fn is_keyword(w: &str) -> bool {
    matches!(w, "source" | "source-directory" | "auto" | "iface" | "vlan")
        || w.split('-').next() == Some("allow")
}

/// The text joined as `process_interfaces` does (`' '.join(d.strip() for d in
/// text.split('\\'))`), split into lines, each with the physical line it starts on.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut lines = Vec::new();
    let mut cur = String::new();
    let mut cur_line = 1;
    let mut phys = 1;
    for (i, chunk) in text.split('\\').enumerate() {
        let body = chunk.trim_start();
        phys += chunk[..chunk.len() - body.len()].matches('\n').count();
        let content = body.trim_end();
        if i == 0 {
            cur_line = phys;
        } else {
            cur.push(' ');
        }
        for (j, piece) in content.split('\n').enumerate() {
            if j > 0 {
                lines.push((cur_line, std::mem::take(&mut cur)));
                phys += 1;
                cur_line = phys;
            }
            cur.push_str(piece);
        }
        phys += body[content.len()..].matches('\n').count();
    }
    lines.push((cur_line, cur));
    lines
        .into_iter()
        .map(|(n, l)| (n, l.trim().to_string()))
        .collect()
}

impl Parser<'_> {
    fn diag(&mut self, file: &Path, line: usize, message: String) {
        self.out.diagnostics.push(Diagnostic {
            at: Location {
                file: file.to_path_buf(),
                line,
            },
            message,
        });
    }

    /// `networkInterfaces.process_interfaces` over one file.
    fn file(&mut self, path: &Path, text: &str) -> Result<(), ParseError> {
        let lines = logical_lines(text);
        let mut i = 0;
        while i < lines.len() {
            let (n, line) = &lines[i];
            let (n, line) = (*n, line.as_str());
            i += 1;
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            let kw = words[0];
            match kw {
                "source" | "source-directory" => {
                    let Some(target) = words.get(1) else {
                        self.diag(path, n, format!("unable to read {kw} line"));
                        continue;
                    };
                    if self.depth >= MAX_DEPTH {
                        return Err(ParseError::TooDeep {
                            at: Location {
                                file: path.to_path_buf(),
                                line: n,
                            },
                        });
                    }
                    let target = self.resolve(path, target);
                    self.depth += 1;
                    let r = if kw == "source" {
                        self.source(path, n, &target)
                    } else {
                        self.source_directory(path, n, &target)
                    };
                    self.depth -= 1;
                    r?;
                }
                "auto" => {
                    if words.len() < 2 {
                        self.diag(path, n, format!("invalid auto line '{line}'"));
                    }
                    self.add_auto(&words[1..]);
                }
                "iface" | "vlan" => {
                    i = self.stanza(path, n, &words, &lines, i);
                }
                w if is_keyword(w) => {
                    // process_allow: `allow-<class> <names>`; only class auto matters here.
                    let class = w.split('-').nth(1).unwrap_or("");
                    if class.is_empty() || words.len() < 2 {
                        self.diag(path, n, format!("invalid allow line {line}"));
                    } else if class == "auto" {
                        self.add_auto(&words[1..]);
                    }
                }
                _ => self.diag(path, n, format!("error processing line '{line}'")),
            }
        }
        Ok(())
    }

    /// `networkInterfaces._add_ifaces_to_class('auto', …)`.
    fn add_auto(&mut self, names: &[&str]) {
        if names.contains(&"all") {
            self.auto_all = true;
            return;
        }
        self.auto.extend(names.iter().map(|s| s.to_string()));
    }

    /// `networkInterfaces.parse_iface`: the stanza at `lines[start - 1]`; returns the index of
    /// the next line to process.
    fn stanza(
        &mut self,
        path: &Path,
        n: usize,
        words: &[&str],
        lines: &[(usize, String)],
        start: usize,
    ) -> usize {
        let Some(raw) = words.get(1) else {
            self.diag(path, n, format!("{} line without a name", words[0]));
            return start;
        };
        let name = raw.split(':').next().unwrap_or(raw).to_string();
        let mut options = Vec::new();
        let mut i = start;
        while i < lines.len() {
            let (ln, l) = (&lines[i].0, lines[i].1.as_str());
            if l.is_empty() || l.starts_with('#') {
                i += 1;
                continue;
            }
            let (key, value) = match l.split_once(char::is_whitespace) {
                Some((k, v)) => (k, Some(v.trim_start())),
                None => (l, None),
            };
            if is_keyword(key) {
                break;
            }
            i += 1;
            let Some(value) = value else {
                self.diag(path, *ln, format!("iface {raw}: invalid syntax '{l}'"));
                continue;
            };
            options.push(Opt {
                name: key.replace('_', "-"),
                value: value.replace("$IFACE", raw),
                line: *ln,
            });
        }
        self.out.stanzas.push(Stanza {
            auto: self.auto_all || self.auto.contains(&name),
            name,
            family: words.get(2).map(|s| s.to_string()),
            method: words.get(3).map(|s| s.to_string()),
            at: Location {
                file: path.to_path_buf(),
                line: n,
            },
            options,
        });
        i
    }

    /// A `source` / `source-directory` argument as a path: absolute ones under the root,
    /// relative ones against the sourcing file's directory (`process_source`).
    fn resolve(&self, from: &Path, target: &str) -> PathBuf {
        match target.strip_prefix('/') {
            Some(abs) => self.root.join(abs),
            None => from.parent().unwrap_or(Path::new("")).join(target),
        }
    }

    /// `networkInterfaces.process_source`: every match of the glob, sorted.
    fn source(&mut self, from: &Path, n: usize, target: &Path) -> Result<(), ParseError> {
        let pattern = target
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir = target.parent().unwrap_or(Path::new("/"));
        if has_wildcard(&dir.to_string_lossy()) {
            self.diag(
                from,
                n,
                format!(
                    "source {}: wildcards in directories are not read by op-agent",
                    target.display()
                ),
            );
            return Ok(());
        }
        let files: Vec<PathBuf> = if has_wildcard(&pattern) {
            let mut names: Vec<String> = match self.loader.list(dir) {
                Ok(entries) => entries
                    .into_iter()
                    .map(|(name, _)| name)
                    .filter(|name| glob_match(&pattern, name))
                    .collect(),
                Err(_) => Vec::new(),
            };
            names.sort();
            names.into_iter().map(|name| dir.join(name)).collect()
        } else {
            vec![target.to_path_buf()]
        };
        if files.is_empty() && !pattern.contains('*') {
            self.diag(
                from,
                n,
                format!("cannot find source file {}", target.display()),
            );
        }
        for f in files {
            self.read_file(from, n, &f)?;
        }
        Ok(())
    }

    /// `networkInterfaces.process_source_directory`: every entry of the directory.
    fn source_directory(&mut self, from: &Path, n: usize, dir: &Path) -> Result<(), ParseError> {
        let mut entries = match self.loader.list(dir) {
            Ok(e) => e,
            Err(_) => return Ok(()),
        };
        entries.sort();
        for (name, is_file) in entries {
            let f = dir.join(&name);
            if is_file {
                self.read_file(from, n, &f)?;
            } else {
                self.diag(
                    from,
                    n,
                    format!("error processing file {} (not a file)", f.display()),
                );
            }
        }
        Ok(())
    }

    /// `networkInterfaces.read_file`: an unreadable file is a warning.
    fn read_file(&mut self, from: &Path, n: usize, f: &Path) -> Result<(), ParseError> {
        match self.loader.read(f) {
            Ok(text) => self.file(f, &text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.diag(from, n, format!("cannot find source file {}", f.display()));
                Ok(())
            }
            Err(e) => {
                self.diag(
                    from,
                    n,
                    format!("error processing file {} ({e})", f.display()),
                );
                Ok(())
            }
        }
    }
}

fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Python `fnmatch` on one path component as `glob.glob` uses it: `*`, `?`, `[…]` (`[!…]`
/// negates; an unclosed `[` is literal), and a leading `.` only matched by a leading `.` in
/// the pattern. Linear backtracking to the last `*`: no blow-up on many stars.
pub(crate) fn glob_match(pattern: &str, name: &str) -> bool {
    if name.starts_with('.') && !pattern.starts_with('.') {
        return false;
    }
    let toks = glob_tokens(pattern);
    let s: Vec<char> = name.chars().collect();
    let (mut t, mut i) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        match toks.get(t) {
            Some(Tok::Star) => {
                star = Some((t, i));
                t += 1;
            }
            Some(tok) if tok.one(s[i]) => {
                t += 1;
                i += 1;
            }
            _ => match star {
                Some((st, si)) => {
                    t = st + 1;
                    i = si + 1;
                    star = Some((st, si + 1));
                }
                None => return false,
            },
        }
    }
    toks[t..].iter().all(|k| matches!(k, Tok::Star))
}

enum Tok {
    Star,
    Any,
    Lit(char),
    /// Ranges (a single char is `(c, c)`), negated.
    Class(Vec<(char, char)>, bool),
}

impl Tok {
    fn one(&self, c: char) -> bool {
        match self {
            Tok::Star => false,
            Tok::Any => true,
            Tok::Lit(l) => *l == c,
            Tok::Class(ranges, negate) => ranges.iter().any(|(a, b)| *a <= c && c <= *b) != *negate,
        }
    }
}

fn glob_tokens(pattern: &str) -> Vec<Tok> {
    let p: Vec<char> = pattern.chars().collect();
    let mut toks = Vec::new();
    let mut k = 0;
    while k < p.len() {
        match p[k] {
            '*' => toks.push(Tok::Star),
            '?' => toks.push(Tok::Any),
            '[' => {
                let mut j = k + 1;
                let negate = p.get(j) == Some(&'!');
                if negate {
                    j += 1;
                }
                let start = j;
                let mut ranges = Vec::new();
                while j < p.len() && (p[j] != ']' || j == start) {
                    if p.get(j + 1) == Some(&'-') && p.get(j + 2).is_some_and(|e| *e != ']') {
                        ranges.push((p[j], p[j + 2]));
                        j += 3;
                    } else {
                        ranges.push((p[j], p[j]));
                        j += 1;
                    }
                }
                if j >= p.len() {
                    toks.push(Tok::Lit('['));
                } else {
                    toks.push(Tok::Class(ranges, negate));
                    k = j;
                }
            }
            c => toks.push(Tok::Lit(c)),
        }
        k += 1;
    }
    toks
}
