//! `op-agent generate man|bash|zsh <dir>` (hidden): the man page `op-agent.8` and the shell
//! completions, generated with `clap_mangen` and `clap_complete` from the clap definitions
//! (`crate::cli::Cli`, whose `clap::Command` the dispatcher passes in, so this module does
//! not depend on `cli`). `debian/rules` runs it at package build time.

use crate::exit::ExitCode;
use std::path::{Path, PathBuf};

/// What to generate.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Artifact {
    /// `op-agent.8` and one `op-agent-<subcommand>.8` per visible subcommand (roff, section 8).
    Man,
    /// `op-agent` (bash-completion).
    Bash,
    /// `_op-agent` (zsh `#compdef`).
    Zsh,
}

/// Arguments of `op-agent generate`.
#[derive(Debug, Clone, clap::Args)]
pub struct GenerateArgs {
    /// man, bash or zsh.
    pub what: Artifact,
    /// Folder to write the file into (created when missing).
    pub dir: PathBuf,
}

/// Renders `cmd` (page `name`, e.g. `op-agent-audit-verify`, run as `bin`, e.g.
/// `op-agent audit verify`) and, recursively, each visible
/// subcommand as `<name>-<sub>.8` into `dir`; returns the paths written.
fn man_pages(
    cmd: clap::Command,
    name: &str,
    bin: &str,
    dir: &Path,
) -> Result<Vec<PathBuf>, String> {
    let cmd = cmd.display_name(name).bin_name(bin);
    let mut out = Vec::new();
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .section("8")
        .manual("op-agent")
        .render(&mut buf)
        .map_err(|e| format!("cannot render the man page of {name}: {e}"))?;
    let path = dir.join(format!("{name}.8"));
    std::fs::write(&path, buf).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    out.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        let sub_name = format!("{name}-{}", sub.get_name());
        let sub_bin = format!("{bin} {}", sub.get_name());
        out.extend(man_pages(sub.clone(), &sub_name, &sub_bin, dir)?);
    }
    Ok(out)
}

/// Writes the artifact for the command line `cmd` (`Cli::command()`) into `dir`; returns the
/// path written (for `man`, the main page; the subcommand pages are written beside it).
///
/// # Errors
/// The I/O error, naming the path.
pub fn generate(what: Artifact, mut cmd: clap::Command, dir: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let (name, bytes) = match what {
        Artifact::Man => {
            cmd.build();
            let pages = man_pages(cmd, "op-agent", "op-agent", dir)?;
            return pages
                .into_iter()
                .next()
                .ok_or_else(|| "no man page rendered".to_string());
        }
        Artifact::Bash => {
            let mut buf = Vec::new();
            clap_complete::generate(clap_complete::Shell::Bash, &mut cmd, "op-agent", &mut buf);
            ("op-agent", buf)
        }
        Artifact::Zsh => {
            let mut buf = Vec::new();
            clap_complete::generate(clap_complete::Shell::Zsh, &mut cmd, "op-agent", &mut buf);
            ("_op-agent", buf)
        }
    };
    let path = dir.join(name);
    std::fs::write(&path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// Runs the command for the command line `cmd` (`Cli::command()`); returns the process exit
/// code.
pub fn run(args: &GenerateArgs, cmd: clap::Command) -> i32 {
    match generate(args.what, cmd, &args.dir) {
        Ok(p) => {
            println!("wrote {}", p.display());
            ExitCode::Ok.code()
        }
        Err(e) => {
            eprintln!("op-agent generate: {e}");
            ExitCode::Failed.code()
        }
    }
}
