//! `op-agent`: thin binary. Parses the command line and dispatches to the library; exit codes
//! are decided in [`op_agent::exit`].

use clap::Parser;
use op_agent::cli::Cli;
use op_agent::exit::ExitCode;

fn main() {
    // The hookscript's call, `op-agent hook <vmid> <phase>`, is parsed by hand: building
    // clap's whole command tree costs more than the rest of the no-op path for guests
    // op-agent does not manage (PVE runs the hookscript for every guest on every start).
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.len() == 4 && args[1] == "hook" {
        if let (Some(vmid), Some(phase)) = (args[2].to_str(), args[3].to_str()) {
            if !vmid.starts_with('-') && !phase.starts_with('-') {
                let cli = Cli {
                    config: None,
                    verbose: false,
                    output_format: Default::default(),
                    command: op_agent::cli::Command::Hook {
                        vmid: vmid.to_string(),
                        phase: phase.to_string(),
                        dry_run: false,
                        timings: false,
                    },
                };
                std::process::exit(op_agent::run(cli));
            }
        }
    }
    let cli = match Cli::try_parse() {
        Ok(c) if !matches!(c.command, op_agent::cli::Command::Hook { .. }) => {
            // Die quietly on a closed pipe (`op-agent status --json | head`), like other CLI
            // tools, instead of failing a print. Not for `hook`: SIGPIPE stays ignored there
            // (Rust's default), so a reader closing the PVE task log's pipe cannot kill a
            // pre-start after its work (and abort the container's start); its writes ignore
            // EPIPE ([`op_agent::logging::out_line`]).
            // SAFETY: restoring the default disposition of SIGPIPE before any thread exists.
            unsafe {
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            }
            c
        }
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                ExitCode::Usage.code()
            } else {
                0
            };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    std::process::exit(op_agent::run(cli));
}
