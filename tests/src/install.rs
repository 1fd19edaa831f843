//! `make install` into a scratch root that `systemd-analyze verify --root`
//! can check: the tree as installed, systemd's own units, and the real
//! programs the units name.

use std::path::Path;
use std::process::Command;

/// `make install DESTDIR=dest PREFIX=prefix` with the debug binaries.
pub fn make_install(dest: &Path, prefix: &str) {
    let out = Command::new("make")
        .arg("-C")
        .arg(crate::repo())
        .args(["-s", "install", "PROFILE=debug"])
        .arg(format!("DESTDIR={}", dest.display()))
        .arg(format!("PREFIX={prefix}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "make install: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// [`make_install`], then systemd's units and each of `programs`
/// (absolute paths, linked or copied to the same place under `dest`).
pub fn install_root(dest: &Path, prefix: &str, programs: &[&str]) {
    make_install(dest, prefix);
    std::fs::create_dir_all(dest.join("lib/systemd")).unwrap();
    let cp = Command::new("cp")
        .args(["-a", "/lib/systemd/system"])
        .arg(dest.join("lib/systemd/"))
        .status()
        .unwrap();
    assert!(cp.success());
    for program in programs {
        let src = Path::new(program);
        assert!(src.exists(), "{program} is needed to verify the units");
        let dst = dest.join(program.trim_start_matches('/'));
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        if std::fs::hard_link(src, &dst).is_err() {
            std::fs::copy(src, &dst).unwrap();
        }
    }
}

/// `systemd-analyze verify --root=root units…`: whether it passed, and
/// what it said. It exits 0 on unknown keys and bad values (it only
/// warns), so a clean pass is success with nothing said.
pub fn verify(root: &Path, units: &[String]) -> (bool, String) {
    // verify runs `man` for each `Documentation=man:…`: point it at the
    // pages `make install` put under `root`, then the system's (the
    // trailing colon), so a page the install forgot is an error here.
    let mut manpath: Vec<String> = man_dirs(root, 0)
        .iter()
        .map(|d| d.display().to_string())
        .collect();
    manpath.push(String::new());
    let out = Command::new("systemd-analyze")
        .env("MANPATH", manpath.join(":"))
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .args(units)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// Every `share/man` directory under `dir`, a few levels down.
fn man_dirs(dir: &Path, depth: usize) -> Vec<std::path::PathBuf> {
    if dir.ends_with("share/man") {
        return vec![dir.to_owned()];
    }
    if depth > 5 {
        return Vec::new();
    }
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .flat_map(|e| man_dirs(&e.path(), depth + 1))
        .collect()
}
