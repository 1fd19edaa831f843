//! The `sidekick` and `discover` binaries' code. The binaries themselves
//! (`src/bin/`) only parse arguments, set up logging and signals, call into
//! here and map errors to exit codes.
//!
//! * [`common`]: what both share: etcd connection flags, logging, signals,
//!   exit codes, metrics.
//! * [`agent`]: the sidekick: follow a container through the Docker API and
//!   keep its address registered in etcd.
//! * [`discover`]: JSON lines over stdout, and a supervisor for `--exec`.
//! * [`cli`]: both command lines as shipped (what the binaries parse, and
//!   what the man pages and completions are generated from).

pub mod agent;
pub mod cli;
pub mod common;
pub mod discover;
