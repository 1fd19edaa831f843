//! The one line a binary prints when it fails, and the exit code that goes
//! with it.

use super::etcd_args::flags_for;
use super::exit::exit_code;
use super::logging::error_prefix;

/// Print `err` once, as `tool: {err:#}`, and return its exit code. An
/// error about connection settings ends with the flags that set them (the
/// library names only etcdctl's environment).
pub fn report(tool: &str, err: &anyhow::Error) -> i32 {
    let flags = err
        .chain()
        .find_map(|c| c.downcast_ref::<discovery::Error>())
        .map(|e| flags_for(e.settings()))
        .unwrap_or_default();
    let prefix = error_prefix();
    if flags.is_empty() {
        eprintln!("{prefix}{tool}: {err:#}");
    } else {
        eprintln!("{prefix}{tool}: {err:#} (on the command line: {flags})");
    }
    exit_code(err)
}
