//! `make install` into a scratch root that `systemd-analyze verify --root`
//! can check: the tree as installed, systemd's own units, and the real
//! programs the units name.

use std::path::Path;
use std::process::Command;

/// `make install DESTDIR=dest PREFIX=prefix` (debug binaries), then
/// systemd's units and each of `programs` (absolute paths, linked or
/// copied to the same place under `dest`).
pub fn install_root(dest: &Path, prefix: &str, programs: &[&str]) {
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
    let out = Command::new("systemd-analyze")
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
