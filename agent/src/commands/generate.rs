//! `op-agent generate man|bash|zsh <dir>` (hidden): the man page `op-agent.8` and the shell
//! completions, generated from the clap definitions (`Cli::command()` of [`crate::cli::Cli`],
//! passed in by the caller) with `clap_mangen` and `clap_complete`. `debian/rules` runs it at package build time.

use super::CliError;
use crate::exit::ExitCode;
use std::path::{Path, PathBuf};

/// What to generate.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Artifact {
    /// `op-agent.8` and one `op-agent-<subcommand>.8` per visible subcommand (roff, section 8),
    /// and `op-agent.toml.5`.
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

/// Renders the page of `cmd` as clap_mangen does, with `extra` (roff: EXIT STATUS, FILES,
/// ... from [`super::man_extra`]) after the subcommands and before the version.
fn render_page(cmd: &clap::Command, extra: &str, w: &mut Vec<u8>) -> std::io::Result<()> {
    let man = clap_mangen::Man::new(cmd.clone())
        .section("8")
        .manual("op-agent");
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    man.render_options_section(w)?;
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        man.render_subcommands_section(w)?;
    }
    w.extend_from_slice(extra.as_bytes());
    if cmd.get_version().is_some() {
        man.render_version_section(w)?;
    }
    Ok(())
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
    let subs: Vec<String> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        .map(|s| format!("{name}-{}", s.get_name()))
        .collect();
    let extra = if name == "op-agent" {
        super::man_extra::main_sections(&subs)
    } else {
        super::man_extra::sub_sections()
    };
    render_page(&cmd, &extra, &mut buf)
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

/// `cmd` and every subcommand without clap's `help` subcommand.
fn without_help_subcommand(cmd: clap::Command) -> clap::Command {
    cmd.disable_help_subcommand(true)
        .mut_subcommands(without_help_subcommand)
}

/// `op-agent`'s command tree `cmd` without its hidden subcommands (`generate`):
/// clap_complete offers hidden subcommands too. (clap cannot remove a subcommand: the tree is
/// rebuilt from its arguments and the visible subcommands.)
fn without_hidden(cmd: &clap::Command) -> clap::Command {
    let visible: Vec<clap::Command> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();
    clap::Command::new("op-agent")
        .version(crate::cli::VERSION)
        .args(cmd.get_arguments().cloned())
        .subcommands(visible)
}

/// Writes the artifact of the command tree `cmd` (`op-agent`'s, from `Cli::command()`) into
/// `dir`; returns the path written (for `man`, the main page; the subcommand pages are
/// written beside it).
///
/// # Errors
/// The I/O error, naming the path.
pub fn generate(cmd: clap::Command, what: Artifact, dir: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let (name, bytes) = match what {
        Artifact::Man => {
            // No `help` subcommand pages: `--help` is there on every page.
            let mut cmd = without_help_subcommand(cmd);
            cmd.build();
            let pages = man_pages(cmd, "op-agent", "op-agent", dir)?;
            let toml = dir.join(super::man_extra::TOML_PAGE);
            std::fs::write(
                &toml,
                super::man_extra::toml_page(env!("CARGO_PKG_VERSION")),
            )
            .map_err(|e| format!("cannot write {}: {e}", toml.display()))?;
            return pages
                .into_iter()
                .next()
                .ok_or_else(|| "no man page rendered".to_string());
        }
        Artifact::Bash => {
            let mut buf = Vec::new();
            let mut visible = without_hidden(&cmd);
            clap_complete::generate(
                clap_complete::Shell::Bash,
                &mut visible,
                "op-agent",
                &mut buf,
            );
            let script = String::from_utf8_lossy(&buf).into_owned();
            (
                "op-agent",
                super::bash_completion::finish(&script, "op-agent").into_bytes(),
            )
        }
        Artifact::Zsh => {
            let mut buf = Vec::new();
            let mut visible = without_hidden(&cmd);
            clap_complete::generate(
                clap_complete::Shell::Zsh,
                &mut visible,
                "op-agent",
                &mut buf,
            );
            ("_op-agent", buf)
        }
    };
    let path = dir.join(name);
    std::fs::write(&path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// Writes the artifact of `cmd` (`op-agent`'s command tree) and prints `wrote <path>`.
///
/// # Errors
/// `Failed` (1): the file could not be rendered or written.
pub fn run(args: &GenerateArgs, cmd: clap::Command) -> Result<(), CliError> {
    let p = generate(cmd, args.what, &args.dir).map_err(|e| CliError::new(ExitCode::Failed, e))?;
    println!("wrote {}", p.display());
    Ok(())
}
