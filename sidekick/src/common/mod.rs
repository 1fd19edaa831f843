//! What both binaries share.
//!
//! Every item here is documented, private ones too (the lint below), so
//! that a reader learns why each field and helper exists.

#![warn(clippy::missing_docs_in_private_items)]

pub mod etcd_args;
pub mod exit;
pub mod logging;
pub mod metrics;
pub mod report;
pub mod signals;
pub mod time;

pub use etcd_args::EtcdArgs;
pub use exit::{UsageError, exit_code};
pub use logging::{LogArgs, LogFormat};
pub use report::report;
