//! What both binaries share.

pub mod etcd_args;
pub mod exit;
pub mod logging;
pub mod metrics;
pub mod signals;
pub mod time;

pub use etcd_args::EtcdArgs;
pub use exit::{UsageError, exit_code, report};
pub use logging::{LogArgs, LogFormat};
