//! The fuzz targets of `fuzz/` (cargo fuzz, nightly) replayed on stable in `make test`: every
//! file of `fuzz/corpus/<target>/` and `MUTATIONS` deterministic mutations of them (bit flips,
//! byte insertions of JSON/TOML/conf punctuation, truncations, splices of two files) go through
//! the same `op_agent::fuzz` entry point. A panic is reported with the input as hex and written
//! to `target/fuzz-findings/<target>-<n>` so it can be turned into a unit test.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// Mutated inputs per target (on top of replaying every corpus file once).
const MUTATIONS: usize = 20_000;

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const INTERESTING: &[&[u8]] = &[
    b"\"",
    b"\\",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"=",
    b"\n",
    b"\r",
    b"\0",
    b"\xff",
    b"\xc3",
    b"\\u0000",
    b"\\ud800",
    b"[[nic]]\n",
    b"net0: ",
    b"99999999999999999999",
    b"-1",
    b"1e999",
    b"\"set\"",
    b"\"map\"",
    b"\"uuid\"",
    b"#",
    b"[pve:pending]\n",
    b"=",
    b"tag=",
    b",trunks=1;2;",
    b"name=",
    b"\xe2\x80\xae",
];

fn mutate(rng: &mut Rng, a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut v = a.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(6) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(v.len() + 1);
                let ins = INTERESTING[rng.below(INTERESTING.len())];
                v.splice(i..i, ins.iter().copied());
            }
            2 if !v.is_empty() => {
                let i = rng.below(v.len());
                v.truncate(i);
            }
            3 if !v.is_empty() => {
                let i = rng.below(v.len());
                let n = rng.below(v.len() - i + 1);
                v.drain(i..i + n);
            }
            4 if !b.is_empty() => {
                let i = rng.below(v.len() + 1);
                let j = rng.below(b.len());
                v.truncate(i);
                v.extend_from_slice(&b[j..]);
            }
            _ if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            _ => v.push(rng.next() as u8),
        }
    }
    v
}

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let d = std::fs::read(&p).unwrap();
            (p, d)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus {}", dir.display());
    files
}

fn replay(target: &str, f: fn(&[u8])) {
    let files = corpus(target);
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut findings = Vec::new();
    let mut run = |input: Vec<u8>, what: String| {
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(&input))) {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            findings.push((what, msg, input));
        }
    };
    for (p, d) in &files {
        run(d.clone(), p.display().to_string());
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ target.len() as u64);
    for i in 0..MUTATIONS {
        let a = &files[rng.below(files.len())].1;
        let b = &files[rng.below(files.len())].1;
        let m = mutate(&mut rng, a, b);
        run(m, format!("mutation {i}"));
    }
    std::panic::set_hook(prev);
    if !findings.is_empty() {
        let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-findings");
        let _ = std::fs::create_dir_all(&out);
        for (n, (_, _, input)) in findings.iter().enumerate() {
            let _ = std::fs::write(out.join(format!("{target}-{n}")), input);
        }
        let (what, msg, input) = &findings[0];
        let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
        panic!(
            "{target}: {} inputs panicked; first: {what}: {msg}\ninput hex: {hex}",
            findings.len()
        );
    }
}

#[test]
fn pve_conf_corpus_and_mutations() {
    replay("pve_conf", op_agent::fuzz::pve_conf);
}

#[test]
fn config_toml_corpus_and_mutations() {
    replay("config_toml", op_agent::fuzz::config_toml);
}

#[test]
fn ovsdb_stream_corpus_and_mutations() {
    replay("ovsdb_stream", op_agent::fuzz::ovsdb_stream);
}

#[test]
fn audit_export_corpus_and_mutations() {
    replay("audit_export", op_agent::fuzz::audit_export);
}
