//! `op-agent`: thin binary. Parses the command line and dispatches to the library; exit codes
//! are decided in [`op_agent::exit`].

use clap::Parser;
use op_agent::cli::Cli;
use op_agent::exit::ExitCode;

fn main() {
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
