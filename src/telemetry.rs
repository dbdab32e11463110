//! Logging setup: human or JSON lines, filter from config (RUST_LOG wins).
//! Logs go to stderr; colour only when stderr is a terminal and `NO_COLOR`
//! is unset, so a redirected log (a file, a pipe, journald) holds no escape
//! codes.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(quiet_actix(&settings.level)))
        .unwrap_or_else(|_| EnvFilter::new(quiet_actix("info")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").is_some(),
        ));
    let _ = match settings.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Human => builder.try_init(),
    };
}

/// actix-server's start and stop chatter (workers started, "listening on"
/// before ours, idle workers shut down) at warn, unless `log.level` names
/// `actix_server` itself; `RUST_LOG` is used as it is.
fn quiet_actix(level: &str) -> String {
    if level.contains("actix_server") {
        level.to_string()
    } else {
        format!("{level},actix_server=warn")
    }
}

/// <https://no-color.org>: any value of `NO_COLOR` turns colour off.
fn colour(terminal: bool, no_color: bool) -> bool {
    terminal && !no_color
}

#[cfg(test)]
mod tests {
    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(super::colour(true, false));
        assert!(!super::colour(false, false));
        assert!(!super::colour(true, true));
    }

    #[test]
    fn actix_server_chatter_is_quiet_unless_asked_for() {
        assert_eq!(super::quiet_actix("info"), "info,actix_server=warn");
        assert_eq!(
            super::quiet_actix("actix_server=debug"),
            "actix_server=debug"
        );
    }
}
