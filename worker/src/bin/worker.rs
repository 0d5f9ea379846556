//! The `worker` binary. `worker check FILE...` needs no cluster.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use worker::scan::ScanConfig;

#[derive(Parser, Debug)]
#[command(
    name = "worker",
    version,
    about = "Prime-pipeline worker and one-shot prime checker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the distinct primes of FILEs (ascending, one per line) on stdout, and a summary
    /// of each file (lines, numbers, invalid lines with reasons) on stderr. No cluster needed.
    ///
    /// Exit status: 0 if every file was read, 1 if some file could not be read, 2 on bad usage.
    Check {
        /// Input files: one integer per line (see README, "Input format").
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Largest accepted integer, in bits; longer numbers are invalid lines.
        #[arg(long, env = "PRIMES_MAX_BITS", default_value_t = worker::parse::DEFAULT_MAX_BITS)]
        max_bits: u64,
        /// Worker threads for testing (default: one per core).
        #[arg(long, env = "PRIMES_THREADS")]
        threads: Option<usize>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check {
            files,
            max_bits,
            threads,
        } => {
            if let Some(t) = threads {
                if let Err(e) = rayon::ThreadPoolBuilder::new()
                    .num_threads(t)
                    .build_global()
                {
                    eprintln!("error: cannot start {t} threads: {e}");
                    return ExitCode::from(2);
                }
            }
            let cfg = ScanConfig {
                max_bits,
                ..ScanConfig::default()
            };
            let stdout = std::io::stdout();
            let stderr = std::io::stderr();
            match worker::check::run_check(&files, &cfg, &mut stdout.lock(), &mut stderr.lock()) {
                Ok(o) if o.failed_files == 0 => ExitCode::SUCCESS,
                Ok(_) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
