//! Timers for `select!` loops: the library's, so that both tools and the
//! library wait on an optional deadline the same way.

pub use discovery::sleep_until_opt;
