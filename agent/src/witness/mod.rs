//! Cluster witnesses of the audit chain, through pmxcfs (`/etc/pve`, replicated by corosync
//! to every node of a Proxmox cluster).
//!
//! Each node's watch service publishes its chain head as `<dir>/<node>.json` ([`HeadFile`],
//! [`publish`]; `<dir>` is `/etc/pve/op-agent/heads` by default) and appends a **witness row**
//! to its own chain for each new head of another node it reads there ([`observe`],
//! [`service`]): `vmid` 0, `phase` [`PHASE`], detail `{"node","seq","hash","by",…}`. A node
//! that rewrites its own history is then contradicted by rows in every other node's chain,
//! which root on that one node cannot rewrite; `op-agent audit verify --witnesses` checks a
//! chain against them ([`check`]).
//!
//! The audit module knows nothing of this: witness rows are ordinary rows appended through
//! [`crate::audit::AuditLog::append`].

pub mod check;
pub mod observe;
pub mod service;

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::audit::{encoding, Head};
use crate::config::{is_node_name, AgentConfig};

/// `phase` of witness rows.
pub const PHASE: &str = "witness";
/// `step` of a witness row recording a new head of another node (outcome `ok`).
pub const STEP_HEAD: &str = "witness.head";
/// `step` of a witness row recording a head file that contradicts what was witnessed before
/// or cannot be read (outcome `failed`).
pub const STEP_CONTRADICTION: &str = "witness.contradiction";

/// Largest head file read, bytes (a valid one is about 200).
pub const MAX_HEAD_FILE: u64 = 4096;

/// One head file, `<dir>/<node>.json`:
/// `{"node":"pve1","seq":42,"hash":"<64 hex>","ts":1733212800000,"epoch":3}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadFile {
    /// The publishing node (must match the file name).
    pub node: String,
    /// `seq` of its chain head, at least 1.
    pub seq: i64,
    /// The head row's hash, 64 lowercase hex digits.
    pub hash: String,
    /// When it was published, UTC ms since the Unix epoch.
    pub ts: i64,
    /// Epoch of the last keyed checkpoint row in the chain (`null` without one).
    pub epoch: Option<u64>,
}

impl HeadFile {
    /// The chain position it names.
    ///
    /// # Errors
    /// The reason the `seq` or `hash` is not a chain position.
    pub fn head(&self) -> Result<Head, String> {
        format!("{}:{}", self.seq, self.hash)
            .parse::<Head>()
            .map_err(|e| e.to_string())
    }
}

/// A seen file, `<dir>/<node>.seen.json`: the last head of each other node that `node` recorded in a witness row, so
/// that `audit verify --witnesses` without peer exports finds each peer's latest witness of
/// it in pmxcfs: `{"node":"pve1","ts":…,"seen":{"pve2":{"seq":17,"hash":"…"}}}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeenFile {
    /// The witnessing node (must match the file name).
    pub node: String,
    /// When it was written, UTC ms since the Unix epoch.
    pub ts: i64,
    /// Per peer node: its last witnessed head.
    pub seen: std::collections::BTreeMap<String, SeenHead>,
}

/// One entry of [`SeenFile::seen`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeenHead {
    /// `seq` of the witnessed head.
    pub seq: i64,
    /// Its hash, 64 lowercase hex digits.
    pub hash: String,
}

/// Every seen file of `dir` but `me`'s: `(witnessing node, path, file)`; files that do not
/// parse or name another node than their file name are skipped.
pub fn read_seen_files(dir: &Path, me: &str) -> Vec<(String, PathBuf, SeenFile)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, PathBuf, SeenFile)> = rd
        .flatten()
        .take(10_000)
        .filter_map(|e| {
            let name = e.file_name();
            let node = name.to_str()?.strip_suffix(".seen.json")?.to_string();
            if !is_node_name(&node) || node == me {
                return None;
            }
            let f: SeenFile = serde_json::from_slice(&read_small(&e.path()).ok()?).ok()?;
            (f.node == node).then(|| (node, e.path(), f))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// This node's name in the head files: `[witness] node`, else the PVE node name
/// ([`crate::watch::conf::nodename`], as pve-common `PVE::INotify::nodename`).
pub fn node_name(cfg: &AgentConfig) -> String {
    cfg.toml
        .witness
        .node
        .clone()
        .unwrap_or_else(crate::watch::conf::nodename)
}

/// The head-file folder of `cfg` ([`crate::config::WitnessSection::heads_dir`]).
pub fn heads_dir(cfg: &AgentConfig) -> PathBuf {
    cfg.toml.witness.heads_dir(&cfg.toml.pve.root)
}

/// `<dir>/<node>.json`.
pub fn head_path(dir: &Path, node: &str) -> PathBuf {
    dir.join(format!("{node}.json"))
}

/// The JSON text of a head file for `head` of `node` (one line, newline-terminated).
pub fn render(node: &str, head: Head, ts: i64, epoch: Option<u64>) -> String {
    let f = HeadFile {
        node: node.to_string(),
        seq: head.seq,
        hash: encoding::hex(&head.hash),
        ts,
        epoch,
    };
    let mut s = serde_json::to_string(&f).unwrap_or_default();
    s.push('\n');
    s
}

/// Writes `text` as `<dir>/<node>.json` atomically: a temporary file `.<node>.json.tmp` in
/// `dir` (mode 0644), fsync, then `rename(2)` over the old file, as pmxcfs supports it (it
/// has no fsync or hard links, but renames within one folder). Creates `dir` when missing.
///
/// # Errors
/// The I/O error, naming the file.
pub fn publish(dir: &Path, node: &str, text: &str) -> Result<(), String> {
    write_atomic(dir, &format!("{node}.json"), text)
}

/// Writes `text` as `<dir>/<name>` as [`publish`] does (temporary file `.<name>.tmp`).
///
/// # Errors
/// The I/O error, naming the file.
pub fn write_atomic(dir: &Path, name: &str, text: &str) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    let r = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(text.as_bytes())?;
            // pmxcfs answers fsync with success; on a local folder it matters.
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, &path));
    r.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write {}: {e}", path.display())
    })
}

/// One file of the head folder as read: the node its name gives and its bytes (at most
/// [`MAX_HEAD_FILE`]; `Err` with the reason when it cannot be read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The node named by the file name `<node>.json`.
    pub node: String,
    /// The file's content, or why it could not be read.
    pub content: Result<Vec<u8>, String>,
}

/// Reads every `<node>.json` of `dir` whose node is not `me` (names that are not node names,
/// e.g. the temporary files of [`publish`], are skipped), sorted by node. A missing folder
/// has no files.
pub fn read_peers(dir: &Path, me: &str) -> Vec<Seen> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<Seen> = rd
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let node = name.to_str()?.strip_suffix(".json")?.to_string();
            (is_node_name(&node) && node != me).then(|| Seen {
                content: read_small(&e.path()),
                node,
            })
        })
        .take(10_000)
        .collect();
    out.sort_by(|a, b| a.node.cmp(&b.node));
    out
}

/// The bytes of `p`, at most [`MAX_HEAD_FILE`] (longer: `Err`).
pub fn read_small(p: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let f = std::fs::File::open(p).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    f.take(MAX_HEAD_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(|e| e.to_string())?;
    if buf.len() as u64 > MAX_HEAD_FILE {
        return Err(format!("longer than {MAX_HEAD_FILE} bytes"));
    }
    Ok(buf)
}

/// Parses a head file's bytes for the node `node` its file name gives.
///
/// # Errors
/// Why it is not a head file of `node`: not JSON of the [`HeadFile`] shape, another `node`,
/// `seq` below 1 or a hash that is not 64 hex digits.
pub fn parse(node: &str, bytes: &[u8]) -> Result<(HeadFile, Head), String> {
    let f: HeadFile = serde_json::from_slice(bytes).map_err(|e| format!("not a head file: {e}"))?;
    if f.node != node {
        return Err(format!("names node {:?} in the file of {node:?}", f.node));
    }
    let h = f.head()?;
    Ok((f, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_file_round_trips_and_bad_ones_are_named() {
        let h = Head {
            seq: 7,
            hash: [0xcd; 32],
        };
        let text = render("pve1", h, 1000, Some(2));
        let (f, back) = parse("pve1", text.as_bytes()).unwrap();
        assert_eq!((back, f.epoch, f.ts), (h, Some(2), 1000));
        assert!(parse("pve2", text.as_bytes()).unwrap_err().contains("pve1"));
        assert!(parse("pve1", b"{}")
            .unwrap_err()
            .contains("not a head file"));
        let zero = text.replace("\"seq\":7", "\"seq\":0");
        assert!(parse("pve1", zero.as_bytes()).is_err());
    }

    #[test]
    fn publish_replaces_the_file_and_read_peers_skips_me_and_temporaries() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("heads");
        publish(&dir, "a", "one\n").unwrap();
        publish(&dir, "a", "two\n").unwrap();
        publish(&dir, "b", "bee\n").unwrap();
        std::fs::write(dir.join(".b.json.tmp"), "x").unwrap();
        assert_eq!(
            std::fs::read_to_string(head_path(&dir, "a")).unwrap(),
            "two\n"
        );
        let peers = read_peers(&dir, "a");
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].node, "b");
        assert_eq!(peers[0].content.as_deref().unwrap(), b"bee\n");
    }
}
