//! wva-metrics-server: parse the command line, set up logging, run the command.

use clap::Parser;
use wva_metrics_server::app;
use wva_metrics_server::config::{Cli, Command};
use wva_metrics_server::telemetry;

fn main() -> std::process::ExitCode {
    // One crypto provider for every rustls user in the process (kube, reqwest, our server).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve(args) => telemetry::init_logging(args.log_format, &args.log_level)
            .and_then(|_| runtime.block_on(app::serve(*args))),
        Command::Analyze { input } => app::analyze(&input).map(|out| println!("{out}")),
        Command::Scrape { source, timeout } => runtime
            .block_on(app::scrape(&source, timeout))
            .map(|out| println!("{out}")),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
