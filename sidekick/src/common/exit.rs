//! Exit codes, as ripgrep has them: 0 success, 1 a runtime failure that
//! retrying did not fix, 2 bad usage or configuration.
//!
//! A leaf: every module that refuses bad input ([`usage`]) imports it, and it
//! imports none of them. Printing the error is [`report`](super::report::report)'s.

use std::fmt;

/// A mistake in the command line or configuration: exit code 2.
#[derive(Debug)]
pub struct UsageError(
    /// What is wrong, why, and what to do: the whole message.
    pub String,
);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Shorthand for an `anyhow` error that exits 2.
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(msg.into()))
}

/// The exit code for an error: 2 for usage and configuration mistakes
/// (including ones the library found in options), 1 otherwise.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    for cause in err.chain() {
        if cause.is::<UsageError>() {
            return 2;
        }
        if let Some(e) = cause.downcast_ref::<discovery::Error>() {
            return match e {
                discovery::Error::InvalidKey { .. }
                | discovery::Error::InvalidPrefix { .. }
                | discovery::Error::InvalidEndpoint { .. }
                | discovery::Error::InvalidOption(_)
                | discovery::Error::Incomplete { .. }
                | discovery::Error::ReadFile { .. }
                | discovery::Error::Tls { .. }
                | discovery::Error::Authentication { .. }
                | discovery::Error::PermissionDenied { .. } => 2,
                _ => 1,
            };
        }
    }
    1
}
