//! The audit log through the library and the `op-agent audit` commands: tampering of every kind
//! detected (`tamper`), error paths with typed errors and exit codes (`errors`), and many
//! writers at once or killed mid-way (`concurrency`). One binary; `common` holds the shared
//! helpers (a temp database, filling it, an "attacker" connection).

mod common;
mod concurrency;
mod errors;
mod log_filters;
mod tamper;

/// The libtest name of test `name` in module `module_path` (`audit::<module>`), for
/// re-executing this binary with `--exact`.
fn test_name(module_path: &str, name: &str) -> String {
    let module = module_path.split_once("::").map_or("", |(_, m)| m);
    format!("{module}::{name}")
}
