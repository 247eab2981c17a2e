//! `commons`: the one binary of OneCommons. Thin glue: each subcommand
//! parses its arguments, calls into the domain crates and prints.
//!
//! Exit codes: 0 success, 1 failure of the machine or the platform, 2 bad
//! input (arguments, scenario files), with the error on stderr.

mod settle;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "commons", version, about = "OneCommons: a free and open cloud")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Settle a period: divide each subscriber's fee by their own usage
    Settle(settle::Args),
}

/// An error that is the input's fault: reported, exit code 2.
#[derive(Debug)]
pub struct BadInput(pub String);

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Settle(args) => settle::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            if error.downcast_ref::<BadInput>().is_some() { ExitCode::from(2) } else { ExitCode::FAILURE }
        }
    }
}
