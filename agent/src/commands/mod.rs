//! One module per subcommand besides `hook` and `audit`: each defines its clap `Args` and a
//! `run(&Args, config: Option<&Path>) -> i32` that returns the exit code.

pub mod apply;
pub mod check;
pub mod config_check;
pub mod enroll;
pub mod gc;
pub mod generate;
pub mod import_state;
pub mod mesh;
pub mod query;
pub mod status;
pub mod watch;
