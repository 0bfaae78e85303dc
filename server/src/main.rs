//! `transcribe-server`: parses flags, validates them, binds, and runs the server until
//! SIGINT or SIGTERM. Exit codes: 0 ok, 64 bad usage, 2 runtime error.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use tracing_subscriber::EnvFilter;
use transcribe_models::FetchOptions;
use transcribe_server::{ServerArgs, WhisperLoader, run};

fn main() -> ExitCode {
    let args = ServerArgs::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // Validate everything before binding or loading.
    let config = match args.validate() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("transcribe-server: {error}");
            return ExitCode::from(64);
        }
    };
    let loader = match WhisperLoader::from_config(&config, FetchOptions::default()) {
        Ok(loader) => loader,
        Err(error) => {
            eprintln!("transcribe-server: {error}");
            return ExitCode::from(64);
        }
    };
    match serve(config, loader) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("transcribe-server: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn serve(config: transcribe_server::ServerConfig, loader: WhisperLoader) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("transcribe-io")
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        run(listener, config, Box::new(loader), shutdown_signal()).await?;
        Ok(())
    });
    // The drain is over; a blocking task still running (a capture device read) must not
    // hold the exit.
    runtime.shutdown_timeout(RUNTIME_STOP);
    result
}

/// How long exit waits for blocking tasks after the server has stopped.
const RUNTIME_STOP: std::time::Duration = std::time::Duration::from_millis(500);

/// Resolves on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!(message = "Shutdown signal received.");
}
