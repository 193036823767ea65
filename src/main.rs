//! wva-metrics-server: parse the command line, set up logging, run the command.

use clap::Parser;
use wva_metrics_server::config::{Cli, Command};
use wva_metrics_server::error::Error;
use wva_metrics_server::telemetry;
use wva_metrics_server::{app, cli};

/// glibc gives every thread that allocates concurrently an arena of its own and keeps freed pages in
/// each. The scraper allocates and frees a page-sized body per pod on whichever worker runs it, so at
/// 10,000 pods glibc's default arenas held 68 MiB RSS where two held ~50 and one 44 (`benches/fleet.rs`).
/// Two rather than one keep the two runtime workers from contending on one lock.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // One of the product's two unsafe calls into libc, reviewed below.
fn limit_malloc_arenas() {
    // SAFETY: mallopt only changes allocator tuning; it is called before any other thread exists.
    // An operator's MALLOC_ARENA_MAX still wins: glibc reads it at first allocation, and we only act
    // when it is unset.
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

/// The scraper keeps a connection per pod, so 10,000 pods need 10,000 descriptors. Container runtimes
/// commonly start processes at a soft limit of 1,024 under a far higher hard one; like every Go program
/// (Prometheus included, since Go 1.19), raise the soft limit to the hard one. The scraper sizes its pool
/// of kept connections from whatever limit results (`sources::http1::capacity_for`).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)] // One of the product's two unsafe calls into libc, reviewed below.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct passed by pointer, which lives on this
    // stack frame for both calls; no other memory is touched. Failure leaves the limit as it was.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn raise_open_files_limit() {}

fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    raise_open_files_limit();
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
        Command::Serve(args) => telemetry::init_logging(args.log.log_format, &args.log.log_level)
            .map_err(Error::Config)
            .and_then(|_| runtime.block_on(app::serve(*args))),
        Command::Analyze { input } => cli::analyze::analyze(&input).map(|out| println!("{out}")),
        Command::Status(args) => runtime
            .block_on(cli::status::run(&args))
            .map(|out| print!("{out}")),
        Command::Scrape {
            source,
            timeout,
            ca_file,
            tls_server_name,
            bearer_token_file,
        } => runtime
            .block_on(cli::scrape::run(
                &source,
                timeout,
                &cli::scrape::ScrapeReach {
                    ca_file,
                    tls_server_name,
                    bearer_token_file,
                },
            ))
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
