//! drctl: the reference command-line tool of dr. Argument parsing and output only; every
//! action is a call into the `dr` library.

mod args;
mod bench;
mod cli;
mod commands;
#[cfg(feature = "demo")]
mod demo;
mod diff;
mod drill;
mod files;
mod key;
mod lock;
mod malloc;
mod monitor;
mod output;
mod replicate;
mod repo;
mod report;
mod retention;
mod run;
#[cfg(feature = "demo")]
mod sample;
mod status;
mod storage;
mod wal;

use clap::Parser;

fn main() {
    malloc::fix_mmap_threshold();
    output::end_quietly_when_stdout_closes();
    let args = cli::Cli::parse();
    output::init_tracing(args.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("drctl: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    // The output is chosen here, once; commands print through it.
    let out = output::Output::from_flag(args.json);
    let result = runtime.block_on(commands::run(args.command, out));
    // Give pipeline threads a moment to notice a cancelled stream, then leave.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    if let Err(e) = result {
        eprintln!("drctl: {}", e.report());
        std::process::exit(output::exit_code(&e));
    }
}
