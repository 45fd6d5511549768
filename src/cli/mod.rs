//! The `edgehead` command line: parses the arguments ([`args`]), sets up logging,
//! and runs the daemon or one of the tool subcommands ([`commands`]). Exit codes:
//! 0 success, 1 failure while running, 2 bad configuration or a start-up problem.

pub mod args;
mod bundles;
mod commands;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

use crate::config::{self, LogFormat, Settings, Sources};
use args::{Cli, Command};

/// A task failed or the shutdown grace period ran out.
pub const EXIT_RUNTIME: u8 = 1;
/// Bad configuration, or a start-up problem (model, state directory, broker address).
pub const EXIT_STARTUP: u8 = 2;

/// Allocations from this size up are mapped from the system and returned to it
/// when freed (glibc's `M_MMAP_THRESHOLD`, fixed here instead of the threshold
/// glibc raises as large blocks are freed). Without it, freed buffers (model
/// loading, the console login's 19 MiB of Argon2 memory) stay in the heaps of
/// the threads that used them: `tools/console_load.py` measured the daemon at
/// 76–84 MiB resident with no page open and 92–106 MiB after a login and a live
/// view; with 1 MiB, 60 and 61–63 MiB, its CPU within 0.3 points of a core. A
/// 640×480 frame (0.9 MB) stays below it: smaller thresholds map and unmap every
/// decoded frame (512 KiB cost a point of a core at 10 frames a second).
const MMAP_THRESHOLD: i32 = 1 << 20;

/// Set [`MMAP_THRESHOLD`] (glibc only; `MALLOC_MMAP_THRESHOLD_` in the
/// environment wins), before any thread starts.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        // SAFETY: mallopt sets one parameter of glibc's allocator; called at the
        // start of main, before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        }
    }
}

/// Parse the command line and run it.
pub fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    let command = cli.command.clone().unwrap_or(Command::Run);
    let sources = Sources {
        file: cli.config.clone(),
        env: None,
    };
    match command {
        Command::PrintConfig => return commands::print_config(&sources),
        Command::Devices => return commands::devices(),
        _ => {}
    }
    let settings = match config::load_settings(&sources) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("edgehead: {e}");
            return ExitCode::from(EXIT_STARTUP);
        }
    };
    init_logging(&settings);
    let result = match command {
        Command::Run => return commands::run(settings),
        Command::CheckConfig => commands::check_config(&settings),
        Command::Embed { images } => commands::embed(&settings, &images),
        Command::Predict(a) => commands::predict(&settings, &a),
        Command::Eval(a) => commands::eval(&settings, &a),
        Command::Bench(a) => commands::bench(&settings, &sources, &a),
        Command::BenchScene(a) => commands::bench_scene(&settings, &a),
        Command::BenchGate(a) => commands::bench_gate(&settings, &a),
        Command::BenchSource(a) => commands::bench_source(&settings, &a),
        Command::SetPassword(a) => commands::set_password(&settings, &a),
        Command::Export(a) => bundles::export(&settings, &a),
        Command::Import(a) => bundles::import(&settings, &a),
        Command::PrintConfig | Command::Devices => Ok(()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edgehead: {e:#}");
            ExitCode::from(EXIT_STARTUP)
        }
    }
}

/// Log to stderr in `log.format` at `log.level` (`RUST_LOG` wins).
fn init_logging(settings: &Settings) {
    // The embedded broker (rumqttd) logs routine disconnects as errors: silent unless
    // asked for (log.level = "info,rumqttd=info"). Its failure to run is still caught.
    let filter =
        std::env::var("RUST_LOG").unwrap_or_else(|_| format!("rumqttd=off,{}", settings.log.level));
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match settings.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}
