//! The Debian copyright file (machine-readable format 1.0). The binaries
//! are statically linked with their Rust dependencies, so besides our own
//! licence it lists each crate linked in, with its licence, from
//! `cargo metadata --filter-platform TRIPLE` (which leaves out other
//! platforms' dependencies): the crates reached from `sidekick` through
//! normal dependencies. Build scripts' and proc-macros' dependencies run
//! at build time only and are not linked in.

use std::collections::{BTreeSet, HashMap};

use anyhow::{Context, bail};
use serde_json::Value;

/// The file's text.
/// `years` is the span of the project's commits, such as `2026`.
pub fn render(metadata: &Value, years: &str) -> anyhow::Result<String> {
    let crates = linked_crates(metadata)?;
    let mut s = String::from(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
         Upstream-Name: sidekick\n\
         Comment: sidekick and discover are statically linked with these Rust crates\n \
         (name, version, licence as the crate declares it):\n",
    );
    for (name, version, license) in &crates {
        s.push_str(&format!(" {name} {version}: {license}\n"));
    }
    s.push_str(&format!(
        "\nFiles: *\nCopyright: {years} the sidekick authors\n"
    ));
    s.push_str(
        "License: Apache-2.0\n\
         \n\
         License: Apache-2.0\n \
         On Debian systems, the full text of the Apache License, Version 2.0\n \
         can be found in the file '/usr/share/common-licenses/Apache-2.0'.\n",
    );
    Ok(s)
}

/// (name, version, licence) of every registry crate linked into `sidekick`.
fn linked_crates(metadata: &Value) -> anyhow::Result<BTreeSet<(String, String, String)>> {
    let packages = metadata["packages"]
        .as_array()
        .context("cargo metadata has no packages")?;
    let by_id: HashMap<&str, &Value> = packages
        .iter()
        .filter_map(|p| Some((p["id"].as_str()?, p)))
        .collect();
    let nodes: HashMap<&str, &Value> = metadata["resolve"]["nodes"]
        .as_array()
        .context("cargo metadata has no resolve graph (run it without --no-deps)")?
        .iter()
        .filter_map(|n| Some((n["id"].as_str()?, n)))
        .collect();
    let Some(root) = packages
        .iter()
        .find(|p| p["name"] == "sidekick" && p["source"].is_null())
        .and_then(|p| p["id"].as_str())
    else {
        bail!("cargo metadata does not hold the sidekick package");
    };
    let is_proc_macro = |p: &Value| {
        p["targets"].as_array().is_some_and(|ts| {
            ts.iter().any(|t| {
                t["kind"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == "proc-macro"))
            })
        })
    };
    // A normal dependency (not dev, not build).
    let linked_dep = |d: &Value| {
        d["dep_kinds"]
            .as_array()
            .is_some_and(|ks| ks.iter().any(|k| k["kind"].is_null()))
    };
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    let mut todo = vec![root];
    let mut out = BTreeSet::new();
    while let Some(id) = todo.pop() {
        if !seen.insert(id) {
            continue;
        }
        let Some(pkg) = by_id.get(id) else { continue };
        if id != root && is_proc_macro(pkg) {
            continue;
        }
        if !pkg["source"].is_null() {
            out.insert((
                pkg["name"].as_str().unwrap_or_default().to_owned(),
                pkg["version"].as_str().unwrap_or_default().to_owned(),
                pkg["license"]
                    .as_str()
                    .unwrap_or("(no licence declared; see the crate)")
                    .to_owned(),
            ));
        }
        if let Some(deps) = nodes.get(id).and_then(|n| n["deps"].as_array()) {
            todo.extend(
                deps.iter()
                    .filter(|d| linked_dep(d))
                    .filter_map(|d| d["pkg"].as_str()),
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_normal_non_macro_dependencies_are_listed() {
        let m = serde_json::json!({
            "packages": [
                {"id": "sk", "name": "sidekick", "version": "0.1.0", "source": null, "license": "Apache-2.0", "targets": []},
                {"id": "a", "name": "a", "version": "1.0.0", "source": "registry", "license": "MIT", "targets": [{"kind": ["lib"]}]},
                {"id": "m", "name": "m", "version": "1.0.0", "source": "registry", "license": "MIT", "targets": [{"kind": ["proc-macro"]}]},
                {"id": "b", "name": "b", "version": "2.0.0", "source": "registry", "license": "ISC", "targets": [{"kind": ["lib"]}]},
                {"id": "t", "name": "t", "version": "1.0.0", "source": "registry", "license": "Zlib", "targets": [{"kind": ["lib"]}]}
            ],
            "resolve": {"nodes": [
                {"id": "sk", "deps": [
                    {"pkg": "a", "dep_kinds": [{"kind": null, "target": null}]},
                    {"pkg": "m", "dep_kinds": [{"kind": null, "target": null}]},
                    {"pkg": "t", "dep_kinds": [{"kind": "dev", "target": null}]}
                ]},
                {"id": "a", "deps": [{"pkg": "b", "dep_kinds": [{"kind": "build", "target": null}, {"kind": null, "target": "cfg(unix)"}]}]},
                {"id": "m", "deps": [{"pkg": "t", "dep_kinds": [{"kind": null, "target": null}]}]}
            ]}
        });
        let s = render(&m, "2026").unwrap();
        assert!(s.contains("Copyright: 2026 the sidekick authors\n"), "{s}");
        assert!(
            s.contains(" a 1.0.0: MIT\n") && s.contains(" b 2.0.0: ISC\n"),
            "{s}"
        );
        assert!(!s.contains(" m ") && !s.contains(" t "), "{s}");
    }
}
