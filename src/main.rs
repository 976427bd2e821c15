//! The `strongbox` command-line tool.
//!
//! Every subcommand exits 0 on success and 1 with a one-line error on stderr otherwise;
//! warnings (for example a key file readable by others) also go to stderr.

#![forbid(unsafe_code)]

mod cli;

fn main() {
    std::process::exit(cli::run());
}
