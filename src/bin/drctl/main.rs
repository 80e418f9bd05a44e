//! drctl: the reference command-line tool of dr. Argument parsing and output only; every
//! action is a call into the `dr` library.

mod bench;
mod cli;
mod commands;
mod demo;
mod drill;
mod key;
mod lock;
mod output;
mod replicate;
mod repo;
mod retention;
mod run;
mod storage;

use clap::Parser;

fn main() {
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
    let result = runtime.block_on(commands::run(args));
    // Give pipeline threads a moment to notice a cancelled stream, then leave.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    if let Err(e) = result {
        eprintln!("drctl: {}", e.report());
        std::process::exit(output::exit_code(&e));
    }
}
