//! The installed units, read for the man pages' FILES sections: which
//! units run which tool, and which environment files they read.

use std::path::Path;

use anyhow::Context;

/// One unit file, as far as FILES needs it.
#[derive(Debug)]
pub struct Unit {
    /// The file name, such as `memcached-sidekick@.service`.
    pub name: String,
    /// Its `Description=` (systemd's `%i` shown as INSTANCE).
    pub description: String,
    /// The programs its `ExecStart=` lines run (the first word of each).
    pub programs: Vec<String>,
    /// Its `EnvironmentFile=` paths (`%i` shown as INSTANCE, no leading `-`).
    pub env_files: Vec<String>,
}

impl Unit {
    /// Whether an `ExecStart=` runs the tool `bin` (`sidekick`, `discover`).
    pub fn runs(&self, bin: &str) -> bool {
        self.programs
            .iter()
            .any(|p| Path::new(p).file_name().is_some_and(|f| f == bin))
    }
}

fn instance(s: &str) -> String {
    s.replace("%i", "INSTANCE").replace("%I", "INSTANCE")
}

/// Every `*.service` in `dir`, sorted by name.
pub fn read(dir: &Path) -> anyhow::Result<Vec<Unit>> {
    let mut units = Vec::new();
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for e in entries {
        let path = e?.path();
        let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        if !name.ends_with(".service") {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        units.push(parse(name, &text));
    }
    units.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(units)
}

/// The keys FILES needs, from a unit's text (continuation lines joined).
fn parse(name: String, text: &str) -> Unit {
    let mut unit = Unit {
        name,
        description: String::new(),
        programs: Vec::new(),
        env_files: Vec::new(),
    };
    let joined = text.replace("\\\n", " ");
    for line in joined.lines().map(str::trim) {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "Description" => unit.description = instance(value),
            "ExecStart" => {
                // Prefixes such as `-`, `@`, `+`, `!` come before the path.
                let cmd = value.trim_start_matches(['-', '@', '+', '!', ':']);
                if let Some(p) = cmd.split_whitespace().next() {
                    unit.programs.push(p.to_owned());
                }
            }
            "EnvironmentFile" => unit.env_files.push(instance(value.trim_start_matches('-'))),
            _ => {}
        }
    }
    unit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_files_needs() {
        let u = parse(
            "memcached-sidekick@.service".into(),
            "[Unit]\nDescription=Register memcached %i in etcd\n[Service]\n\
             EnvironmentFile=-/etc/default/sidekick\nEnvironmentFile=-/etc/default/sidekick-%i\n\
             ExecStart=/usr/bin/sidekick --key /services/memcached/%i \\\n  --port 11211\n",
        );
        assert_eq!(u.description, "Register memcached INSTANCE in etcd");
        assert_eq!(
            u.env_files,
            ["/etc/default/sidekick", "/etc/default/sidekick-INSTANCE"]
        );
        assert!(u.runs("sidekick") && !u.runs("discover"));
        let d = parse(
            "x.service".into(),
            "ExecStartPre=-/usr/bin/docker rm x\nExecStart=-/usr/bin/discover watch /s\n",
        );
        assert!(d.runs("discover") && !d.runs("docker"));
    }
}
