//! Atomic, checked writes: a temporary file in DEST's directory, fsynced,
//! checked by `--check-cmd` with `{{src}}` set to its path, then renamed
//! over DEST with the mode and owner asked for. An unchanged rendering
//! writes nothing.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use nix::unistd::{Gid, Uid};

use super::reload::run_argv;

/// Where one template goes.
#[derive(Debug, Clone)]
pub struct Target {
    /// The template file.
    pub src: PathBuf,
    /// The file it renders to.
    pub dest: PathBuf,
    /// The mode DEST gets; `None`: DEST's current mode, or 0644 for a new file.
    pub mode: Option<u32>,
}

/// `--owner USER[:GROUP]`, resolved at start.
#[derive(Debug, Clone, Copy, Default)]
pub struct Owner {
    /// The user to chown to.
    pub uid: Option<Uid>,
    /// The group to chown to.
    pub gid: Option<Gid>,
}

/// `--check-cmd`: argv with `{{src}}` (or `{{ src }}`) in any word.
#[derive(Debug, Clone)]
pub struct Check {
    /// The words, before substitution.
    pub argv: Vec<String>,
    /// How long the checker may run.
    pub timeout: Duration,
}

/// What happened to one rendering.
#[derive(Debug)]
pub enum Outcome {
    /// DEST already holds exactly this: nothing written.
    Unchanged,
    /// DEST was replaced.
    Written,
    /// The checker refused the rendering; DEST is untouched. Its output.
    CheckFailed(String),
}

impl Outcome {
    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Unchanged => "unchanged",
            Outcome::Written => "written",
            Outcome::CheckFailed(_) => "check_failed",
        }
    }
}

/// The directory a file lives in (`.` for a bare name).
pub fn dir_of(p: &Path) -> &Path {
    p.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Install `text` at `t.dest`, checked, unless DEST already holds it.
pub async fn install(
    t: &Target,
    owner: Owner,
    text: &str,
    check: Option<&Check>,
) -> anyhow::Result<Outcome> {
    let old = std::fs::metadata(&t.dest).ok();
    if old.is_some() {
        match std::fs::read(&t.dest) {
            Ok(current) if current == text.as_bytes() => return Ok(Outcome::Unchanged),
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(dest = %t.dest.display(), error = %e, "cannot read DEST to compare; writing it")
            }
        }
    }
    let dir = dir_of(&t.dest);
    let name = t
        .dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    let mode = t
        .mode
        .or_else(|| old.as_ref().map(|m| m.permissions().mode() & 0o7777))
        .unwrap_or(0o644);
    let f = tmp.as_file_mut();
    f.write_all(text.as_bytes())
        .and_then(|()| f.set_permissions(std::fs::Permissions::from_mode(mode)))
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", tmp.path().display()))?;
    // The owner asked for, or DEST's current one (a root-run render keeps
    // a file owned by nginx owned by nginx); a USER without a GROUP keeps
    // DEST's group, as `chown USER` does.
    let (uid, gid) = match (&old, owner) {
        (Some(m), Owner { uid, gid }) => (
            uid.or(Some(Uid::from_raw(m.uid()))),
            gid.or(Some(Gid::from_raw(m.gid()))),
        ),
        (None, Owner { uid, gid }) => (uid, gid),
    };
    let mine = (Uid::effective(), Gid::effective());
    if uid.is_some_and(|u| u != mine.0) || gid.is_some_and(|g| g != mine.1) {
        nix::unistd::fchown(tmp.as_file(), uid, gid).with_context(|| {
            format!(
                "cannot give {} to uid {uid:?} gid {gid:?}",
                t.dest.display()
            )
        })?;
    }
    if let Some(c) = check {
        let src = tmp.path().to_string_lossy().into_owned();
        let argv: Vec<String> = c
            .argv
            .iter()
            .map(|w| w.replace("{{src}}", &src).replace("{{ src }}", &src))
            .collect();
        if let Err(e) = run_argv(&argv, c.timeout).await {
            // The temporary file is removed on drop.
            return Ok(Outcome::CheckFailed(format!("{e:#}")));
        }
    }
    tmp.persist(&t.dest)
        .with_context(|| format!("cannot rename the new file over {}", t.dest.display()))?;
    // The rename is durable once the directory is.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(Outcome::Written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unchanged_writes_nothing_and_a_failed_check_keeps_the_old_file() {
        let d = tempfile::tempdir().unwrap();
        let t = Target {
            src: "t.j2".into(),
            dest: d.path().join("out.conf"),
            mode: Some(0o640),
        };
        let o = install(&t, Owner::default(), "a\n", None).await.unwrap();
        assert!(matches!(o, Outcome::Written), "{o:?}");
        let m = std::fs::metadata(&t.dest).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o640);
        let ino = m.ino();
        let o = install(&t, Owner::default(), "a\n", None).await.unwrap();
        assert!(matches!(o, Outcome::Unchanged), "{o:?}");
        assert_eq!(std::fs::metadata(&t.dest).unwrap().ino(), ino);
        // A checker that reads the candidate and refuses it.
        let check = Check {
            argv: vec![
                "sh".into(),
                "-c".into(),
                "grep -q good \"$0\" || { echo refused >&2; exit 1; }".into(),
                "{{src}}".into(),
            ],
            timeout: Duration::from_secs(30),
        };
        let o = install(&t, Owner::default(), "bad\n", Some(&check))
            .await
            .unwrap();
        match o {
            Outcome::CheckFailed(out) => assert!(out.contains("refused"), "{out}"),
            o => panic!("{o:?}"),
        }
        assert_eq!(std::fs::read_to_string(&t.dest).unwrap(), "a\n");
        let o = install(&t, Owner::default(), "good\n", Some(&check))
            .await
            .unwrap();
        assert!(matches!(o, Outcome::Written), "{o:?}");
        assert_eq!(std::fs::read_to_string(&t.dest).unwrap(), "good\n");
        // No temporary file is left behind.
        let left: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("out.conf")]);
    }
}
