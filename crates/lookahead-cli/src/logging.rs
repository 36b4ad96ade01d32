//! Tracing set-up, once for the whole binary (`main` calls [`init`] for the subcommands that log).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// When log lines carry ANSI colours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Colour {
    /// Only when stderr is a terminal (the servers: their logs usually go to files or collectors).
    IfTerminal,
    /// tracing-subscriber's default: on unless `NO_COLOR` is set (operator, train).
    Default,
}

/// Logs to stderr at `RUST_LOG`'s filter, `info` when unset or invalid. A second call (tests,
/// a library that set one up first) keeps the subscriber already installed.
pub fn init(colour: Colour) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match colour {
        Colour::IfTerminal => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        Colour::Default => builder.try_init(),
    };
}
