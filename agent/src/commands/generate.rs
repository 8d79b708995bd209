//! `op-agent generate man|bash|zsh <dir>` (hidden): the man page `op-agent.8` and the shell
//! completions, generated from the clap definitions in [`crate::cli::Cli`] with `clap_mangen`
//! and `clap_complete`. `debian/rules` runs it at package build time.

use crate::exit::ExitCode;
use clap::CommandFactory;
use std::path::{Path, PathBuf};

/// What to generate.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Artifact {
    /// `op-agent.8` (roff, section 8).
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

/// Writes the artifact into `dir`; returns the path written.
///
/// # Errors
/// The I/O error, naming the path.
pub fn generate(what: Artifact, dir: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut cmd = crate::cli::Cli::command();
    let (name, bytes) = match what {
        Artifact::Man => {
            let mut buf = Vec::new();
            clap_mangen::Man::new(cmd)
                .section("8")
                .manual("op-agent")
                .render(&mut buf)
                .map_err(|e| format!("cannot render the man page: {e}"))?;
            ("op-agent.8", buf)
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

/// Runs the command; returns the process exit code.
pub fn run(args: &GenerateArgs, _config: Option<&Path>) -> i32 {
    match generate(args.what, &args.dir) {
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
