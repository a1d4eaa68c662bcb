//! The `lenet` command line: a thin layer over the library.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        // Stopped by Ctrl-C or SIGTERM, having saved where it was and said so: the shell's
        // code for SIGINT.
        Err(e) if e.is::<lenet::trainer::Interrupted>() || e.is::<lenet::internal::sweep::SweepStopped>() => {
            ExitCode::from(lenet::internal::sweep::launch::EXIT_INTERRUPTED as u8)
        }
        // A sweep's trial failed on its own account (recorded): a scheduler should not retry it.
        Err(e) if e.is::<lenet::internal::sweep::TrialFailed>() => {
            eprintln!("error: {e:#}");
            ExitCode::from(lenet::internal::sweep::launch::EXIT_TRIAL_FAILED as u8)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
