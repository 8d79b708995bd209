//! `op-agent`: thin binary. Parses the command line and dispatches to the library; exit codes
//! are decided in [`op_agent::exit`].

use clap::Parser;
use op_agent::cli::Cli;
use op_agent::exit::ExitCode;

fn main() {
    // Die quietly on a closed pipe (`op-agent status --json | head`), like other CLI tools,
    // instead of failing a print.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = match Cli::try_parse() {
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
