//! `discover render` against a real etcd, a real nginx (Debian's, as a
//! non-daemon child with its own prefix in a temporary directory, on loopback
//! ports the harness reserves) and real HTTP backends that answer with their own port.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use harness::web::{backend, hits, wait_listening};
use harness::{Etcd, Port, Proc, eventually_async, unique_prefix};

/// One sample of discover's metrics (`name{labels}` exactly), 0 when absent.
async fn metric(port: &Port, series: &str) -> u64 {
    let (port, series) = (port.number(), series.to_owned());
    tokio::task::spawn_blocking(move || {
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return 0;
        };
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{series} ")))
            .map_or(0, |v| v.trim().parse().unwrap())
    })
    .await
    .unwrap()
}

/// Wait until a counter reaches at least `at_least`.
async fn wait_metric(port: &Port, series: &str, at_least: u64) {
    eventually_async(
        Duration::from_secs(30),
        format!("{series} to reach {at_least}"),
        || async { (metric(port, series).await >= at_least).then_some(()) },
    )
    .await;
}

const RELOADS_OK: &str = "discover_render_reloads_total{outcome=\"ok\"}";
const CHECK_FAILED: &str = "discover_render_templates_total{outcome=\"check_failed\"}";
const RENDER_FAILED: &str = "discover_render_templates_total{outcome=\"render_failed\"}";
const UNCHANGED: &str = "discover_render_templates_total{outcome=\"unchanged\"}";

/// How `discover render` reloads the nginx in front of the backends.
#[derive(Clone, Copy)]
enum Reload {
    /// `--reload-cmd "nginx -s reload …"`, as the example unit does.
    Command,
    /// `--reload-signal HUP --pid-file` with the pid file nginx writes.
    Signal,
}

/// nginx in front of `/…/web`, configured by `discover render` from the
/// example's own template, as examples/nginx-upstream/web-lb.service runs it.
struct Lb {
    dir: tempfile::TempDir,
    /// nginx's port.
    port: Port,
    /// render's `--metrics-addr` port.
    metrics: Port,
    render: Proc,
    nginx: Proc,
}

impl Lb {
    fn conf(&self) -> PathBuf {
        self.dir.path().join("nginx.conf")
    }

    fn nginx_args(dir: &Path) -> Vec<String> {
        let d = dir.display();
        vec![
            "-p".into(),
            format!("{d}/"),
            "-e".into(),
            format!("{d}/error.log"),
        ]
    }

    fn render_args(prefix: &str, dir: &Path) -> Vec<String> {
        let nginx = Self::nginx_args(dir).join(" ");
        let d = dir.display();
        vec![
            "render".into(),
            "--watch".into(),
            format!("web={prefix}/web"),
            "--config".into(),
            format!("{prefix}/lb"),
            "--template".into(),
            format!(
                "{}:{d}/nginx.conf:0644",
                harness::repo()
                    .join("examples/nginx-upstream/upstream.conf.j2")
                    .display()
            ),
            "--check-cmd".into(),
            format!("/usr/sbin/nginx -t -q {nginx} -c {{{{src}}}}"),
        ]
    }

    /// Render once, start nginx, then follow with `extra` flags, reloading
    /// nginx with `nginx -s reload`.
    async fn start(etcd: &Etcd, prefix: &str, extra: &[&str]) -> Lb {
        Self::start_with(etcd, prefix, Reload::Command, extra).await
    }

    /// Render once, start nginx, then follow with `extra` flags, reloading
    /// nginx as `how` says.
    async fn start_with(etcd: &Etcd, prefix: &str, how: Reload, extra: &[&str]) -> Lb {
        let dir = tempfile::tempdir().unwrap();
        let port = Port::reserve();
        let c = etcd.client().await;
        let d = dir.path().display().to_string();
        c.put(
            &format!("{prefix}/lb/listen"),
            format!("\"127.0.0.1:{port}\""),
        )
        .await
        .unwrap();
        c.put(&format!("{prefix}/lb/pid"), format!("\"{d}/nginx.pid\""))
            .await
            .unwrap();
        c.put(
            &format!("{prefix}/lb/error_log"),
            format!("\"{d}/error.log\""),
        )
        .await
        .unwrap();
        let args = Self::render_args(prefix, dir.path());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        // As the unit's ExecStartPre: the first config, checked.
        let mut once = Proc::spawn(harness::proc::discover(
            etcd,
            &[args.as_slice(), &["--once"]].concat(),
        ));
        let st = once.wait_exit(Duration::from_secs(30)).await;
        assert!(st.success(), "render --once: {st}\n{}", once.dump());
        let mut ng = Command::new("/usr/sbin/nginx");
        ng.args(Self::nginx_args(dir.path()))
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .args(["-g", "daemon off;"]);
        let nginx = Proc::spawn(ng);
        let metrics = Port::reserve();
        let reload = match how {
            Reload::Command => vec![
                "--reload-cmd".to_owned(),
                format!(
                    "/usr/sbin/nginx -s reload {} -c {d}/nginx.conf",
                    Self::nginx_args(dir.path()).join(" ")
                ),
            ],
            Reload::Signal => {
                // nginx writes its pid file once it has started; a reload
                // before that would fail on a missing file.
                let pid = dir.path().join("nginx.pid");
                eventually_async(Duration::from_secs(30), "nginx's pid file", || {
                    let pid = pid.clone();
                    async move { std::fs::metadata(&pid).ok().map(drop) }
                })
                .await;
                vec![
                    "--reload-signal".to_owned(),
                    "HUP".to_owned(),
                    "--pid-file".to_owned(),
                    format!("{d}/nginx.pid"),
                ]
            }
        };
        let reload: Vec<&str> = reload.iter().map(String::as_str).collect();
        let maddr = format!("127.0.0.1:{metrics}");
        let follow: Vec<&str> = [
            args.as_slice(),
            reload.as_slice(),
            &["--metrics-addr", &maddr],
            extra,
        ]
        .concat();
        let render = Proc::spawn(harness::proc::discover(etcd, &follow));
        render
            .wait_stderr(Duration::from_secs(30), "render to follow etcd", |l| {
                l.contains("rendering; following etcd")
            })
            .await;
        Lb {
            dir,
            port,
            metrics,
            render,
            nginx,
        }
    }

    /// Wait until `n` reloads succeeded in all, then check there were no
    /// more (nginx may serve the new config a moment before discover counts
    /// the reload: the reload command returns after the signal).
    async fn reloads_exactly(&self, n: u64, what: &str) {
        wait_metric(&self.metrics, RELOADS_OK, n).await;
        assert_eq!(
            metric(&self.metrics, RELOADS_OK).await,
            n,
            "{what}\n{}",
            self.dump()
        );
    }

    fn dump(&self) -> String {
        format!(
            "{}\n--- nginx.conf ---\n{}\n--- error.log ---\n{}",
            self.render.dump(),
            std::fs::read_to_string(self.conf()).unwrap_or_default(),
            std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
        )
    }

    /// Wait until `n` requests in a row reach exactly the backends `want`.
    async fn wait_serving(&self, want: &[u16], what: &str) {
        let want: BTreeSet<String> = want.iter().map(u16::to_string).collect();
        let n = want.len() * 3;
        eventually_async(
            Duration::from_secs(30),
            format!("{what}\n{}", self.dump()),
            || {
                let want = want.clone();
                async move {
                    let got: BTreeSet<String> =
                        hits(self.port.number(), n).await?.into_iter().collect();
                    (got == want).then_some(())
                }
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn nginx_follows_the_backends_with_one_reload_per_change() {
    let etcd = Etcd::single().await;
    let prefix = unique_prefix("render-lb");
    let c = etcd.client().await;
    let reserved = harness::ports::reserve(4);
    let ports = harness::ports::numbers(&reserved);
    let mut backends: Vec<Proc> = ports.iter().map(|p| backend(*p)).collect();
    for (b, p) in backends.iter().zip(&ports) {
        wait_listening(b, *p).await;
    }
    for (i, p) in ports[..3].iter().enumerate() {
        c.put(&format!("{prefix}/web/{}", i + 1), format!("127.0.0.1:{p}"))
            .await
            .unwrap();
    }
    let lb = Lb::start(&etcd, &prefix, &["--wait", "0"]).await;
    // Round robin over all three, each answering with its own port.
    lb.wait_serving(&ports[..3], "nginx to reach web 1..3")
        .await;
    let conf = std::fs::read_to_string(lb.conf()).unwrap();
    assert!(
        conf.contains(&format!("server 127.0.0.1:{};", ports[0])),
        "{conf}"
    );
    let base = metric(&lb.metrics, RELOADS_OK).await;

    // web/3 leaves etcd while its process still answers: only the reload
    // can take it out of nginx's rotation.
    c.delete(&format!("{prefix}/web/3")).await.unwrap();
    lb.wait_serving(&ports[..2], "nginx to stop sending to web/3")
        .await;
    lb.reloads_exactly(base + 1, "one reload for one change")
        .await;
    drop(backends.remove(2));

    // A fourth registers and gets traffic.
    c.put(
        &format!("{prefix}/web/4"),
        format!("127.0.0.1:{}", ports[3]),
    )
    .await
    .unwrap();
    lb.wait_serving(&[ports[0], ports[1], ports[3]], "web/4 to get traffic")
        .await;
    lb.reloads_exactly(base + 2, "one reload for the fourth")
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_signal_hups_nginx_through_its_pid_file() {
    let etcd = Etcd::single().await;
    let prefix = unique_prefix("render-hup");
    let c = etcd.client().await;
    let reserved = harness::ports::reserve(2);
    let ports = harness::ports::numbers(&reserved);
    let backends: Vec<Proc> = ports.iter().map(|p| backend(*p)).collect();
    for (b, p) in backends.iter().zip(&ports) {
        wait_listening(b, *p).await;
    }
    c.put(
        &format!("{prefix}/web/1"),
        format!("127.0.0.1:{}", ports[0]),
    )
    .await
    .unwrap();
    let lb = Lb::start_with(&etcd, &prefix, Reload::Signal, &["--wait", "0"]).await;
    lb.wait_serving(&ports[..1], "nginx to reach web/1").await;
    // The pid file names the nginx this test started (its master), so the
    // HUP below reaches the process that serves.
    let pid: i32 = std::fs::read_to_string(lb.dir.path().join("nginx.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(pid, lb.nginx.pid(), "{}", lb.dump());
    let base = metric(&lb.metrics, RELOADS_OK).await;

    // Only a reload can put web/2 into nginx's rotation.
    c.put(
        &format!("{prefix}/web/2"),
        format!("127.0.0.1:{}", ports[1]),
    )
    .await
    .unwrap();
    lb.wait_serving(&ports, "nginx, HUPed, to send to web/2 as well")
        .await;
    lb.reloads_exactly(base + 1, "one signal for one change")
        .await;
    // A reload reloads; it does not restart the master.
    assert_eq!(
        std::fs::read_to_string(lb.dir.path().join("nginx.pid"))
            .unwrap()
            .trim(),
        pid.to_string()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn owner_gives_dest_to_the_user_asked_for_and_a_rerender_keeps_it() {
    use std::os::unix::fs::MetadataExt;
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let nogroup = nix::unistd::Group::from_name("nogroup").unwrap().unwrap();
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test chowns files, as a root-run render does: run it as root"
    );
    let etcd = Etcd::single().await;
    let prefix = unique_prefix("render-owner");
    let c = etcd.client().await;
    c.put(&format!("{prefix}/web/a"), "10.0.0.1:3001")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    std::fs::write(
        dir.path().join("t.j2"),
        "{% for b in web %}{{ b.name }} {{ b.value }}\n{% endfor %}",
    )
    .unwrap();
    let out = dir.path().join("out");
    // `render --once`, which must succeed: DEST's metadata after it.
    let once = |owner: Option<&str>| {
        let mut args = vec![
            "render".to_owned(),
            "--watch".to_owned(),
            format!("{prefix}/web"),
            "--template".to_owned(),
            format!("{d}/t.j2:{d}/out:0640"),
            "--once".to_owned(),
        ];
        if let Some(o) = owner {
            args.extend(["--owner".to_owned(), o.to_owned()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut p = Proc::spawn(harness::proc::discover(&etcd, &args));
        let out = out.clone();
        async move {
            assert!(
                p.wait_exit(Duration::from_secs(30)).await.success(),
                "{}",
                p.dump()
            );
            (std::fs::metadata(&out).unwrap(), p.dump())
        }
    };

    let (m, log) = once(Some("nobody:nogroup")).await;
    assert_eq!(
        (m.uid(), m.gid(), m.mode() & 0o7777),
        (nobody.uid.as_raw(), nogroup.gid.as_raw(), 0o640),
        "{}",
        log
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "a 10.0.0.1:3001\n");

    // A new rendering without --owner replaces the file (a new inode) and
    // keeps the owner it had, as a root-run render must not hand a
    // service's file to root.
    let ino = m.ino();
    c.put(&format!("{prefix}/web/b"), "10.0.0.2:3002")
        .await
        .unwrap();
    let (m, log) = once(None).await;
    assert_ne!(m.ino(), ino, "the file was not replaced\n{}", log);
    assert_eq!(
        (m.uid(), m.gid()),
        (nobody.uid.as_raw(), nogroup.gid.as_raw()),
        "{}",
        log
    );
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "a 10.0.0.1:3001\nb 10.0.0.2:3002\n"
    );

    // A user without a group keeps DEST's group, as `chown USER` does.
    c.put(&format!("{prefix}/web/c"), "10.0.0.3:3003")
        .await
        .unwrap();
    let (m, log) = once(Some("root")).await;
    assert_eq!((m.uid(), m.gid()), (0, nogroup.gid.as_raw()), "{}", log);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rendering_nginx_refuses_keeps_the_old_file_and_nginx_serving() {
    let etcd = Etcd::single().await;
    let prefix = unique_prefix("render-check");
    let c = etcd.client().await;
    let reserved = Port::reserve();
    let port = reserved.number();
    let b = backend(port);
    wait_listening(&b, port).await;
    c.put(&format!("{prefix}/web/1"), format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    let lb = Lb::start(&etcd, &prefix, &["--wait", "0"]).await;
    lb.wait_serving(&[port], "nginx to reach web/1").await;
    let before = std::fs::read_to_string(lb.conf()).unwrap();
    let reloads = metric(&lb.metrics, RELOADS_OK).await;

    // Port 0 renders fine but `nginx -t` refuses it.
    c.put(&format!("{prefix}/web/2"), r#"{"ip":"127.0.0.1","port":0}"#)
        .await
        .unwrap();
    eventually_async(Duration::from_secs(30), "a check failure", || async {
        (metric(&lb.metrics, CHECK_FAILED).await >= 1).then_some(())
    })
    .await;
    lb.render
        .wait_stderr(
            Duration::from_secs(5),
            "the checker's output in the log",
            |l| l.contains("invalid port in upstream"),
        )
        .await;
    // A value without a port: `{{ b.port }}` fails, the old file stays.
    c.put(&format!("{prefix}/web/2"), "127.0.0.1")
        .await
        .unwrap();
    eventually_async(Duration::from_secs(30), "a render failure", || async {
        (metric(&lb.metrics, RENDER_FAILED).await >= 1).then_some(())
    })
    .await;
    assert_eq!(std::fs::read_to_string(lb.conf()).unwrap(), before);
    assert_eq!(
        metric(&lb.metrics, RELOADS_OK).await,
        reloads,
        "{}",
        lb.dump()
    );
    assert_eq!(
        hits(lb.port.number(), 3).await.unwrap(),
        vec![port.to_string(); 3]
    );
    let left: Vec<_> = std::fs::read_dir(lb.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");

    // The bad key goes: the rendering is the file again, nothing to do.
    let unchanged = metric(&lb.metrics, UNCHANGED).await;
    c.delete(&format!("{prefix}/web/2")).await.unwrap();
    eventually_async(
        Duration::from_secs(30),
        "an unchanged rendering",
        || async { (metric(&lb.metrics, UNCHANGED).await > unchanged).then_some(()) },
    )
    .await;
    assert_eq!(
        metric(&lb.metrics, RELOADS_OK).await,
        reloads,
        "{}",
        lb.dump()
    );
}

/// `discover render` with a plain template and a reload command that
/// appends a line to a file: how many reloads ran, exactly.
struct Plain {
    dir: tempfile::TempDir,
    /// render's `--metrics-addr` port.
    metrics: Port,
    render: Proc,
}

impl Plain {
    async fn start(etcd: &Etcd, prefix: &str, wait: &str) -> Plain {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        std::fs::write(
            dir.path().join("t.j2"),
            "{% for b in web %}\n{{ b.name }} {{ b.value }}\n{% endfor %}\n",
        )
        .unwrap();
        let metrics = Port::reserve();
        let render = Proc::spawn(harness::proc::discover(
            etcd,
            &[
                "render",
                "--watch",
                &format!("web={prefix}/web"),
                "--template",
                &format!("{d}/t.j2:{d}/out"),
                "--reload-cmd",
                &format!("sh -c 'echo reload >> {d}/reloads'"),
                "--wait",
                wait,
                "--metrics-addr",
                &format!("127.0.0.1:{metrics}"),
            ],
        ));
        render
            .wait_stderr(Duration::from_secs(30), "render to follow etcd", |l| {
                l.contains("rendering; following etcd")
            })
            .await;
        Plain {
            dir,
            metrics,
            render,
        }
    }

    fn out(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("out")).unwrap_or_default()
    }

    fn reloads(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("reloads"))
            .unwrap_or_default()
            .lines()
            .count()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_ten_changes_gives_one_reload() {
    let etcd = Etcd::single().await;
    let prefix = unique_prefix("render-burst");
    let c = etcd.client().await;
    let r = Plain::start(&etcd, &prefix, "3s:60s").await;
    let base = r.reloads();
    for i in 0..10 {
        c.put(&format!("{prefix}/web/{i}"), format!("10.0.0.{i}:80"))
            .await
            .unwrap();
    }
    eventually_async(
        Duration::from_secs(60),
        format!("all ten rendered and reloaded\n{}", r.render.dump()),
        || async { (r.out().lines().count() == 10 && r.reloads() > base).then_some(()) },
    )
    .await;
    assert_eq!(r.reloads(), base + 1, "{}\n{}", r.out(), r.render.dump());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unchanged_rendering_writes_nothing_and_reloads_nothing() {
    let etcd = Etcd::single().await;
    let prefix = unique_prefix("render-same");
    let c = etcd.client().await;
    c.put(&format!("{prefix}/web/1"), "10.0.0.1:80")
        .await
        .unwrap();
    let r = Plain::start(&etcd, &prefix, "0").await;
    assert_eq!(r.out(), "1 10.0.0.1:80\n");
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(r.dir.path().join("out")).unwrap().ino();
    let reloads = r.reloads();
    let unchanged = metric(&r.metrics, UNCHANGED).await;
    // The same value written again: an event, a new modifiedIndex, and the
    // same rendering.
    c.put(&format!("{prefix}/web/1"), "10.0.0.1:80")
        .await
        .unwrap();
    eventually_async(
        Duration::from_secs(30),
        "the re-put to be rendered",
        || async { (metric(&r.metrics, UNCHANGED).await > unchanged).then_some(()) },
    )
    .await;
    assert_eq!(r.reloads(), reloads, "{}", r.render.dump());
    assert_eq!(
        std::fs::metadata(r.dir.path().join("out")).unwrap().ino(),
        ino,
        "the file was replaced"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_syntax_error_exits_2_with_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("bad.j2");
    std::fs::write(
        &t,
        "upstream web {\n{% for b in web %}\n  server {{ b.ip }:{{ b.port }};\n{% endfor %}\n}\n",
    )
    .unwrap();
    let out = Proc::command("discover")
        // No etcd: the template is checked before any I/O.
        .env("ETCDCTL_ENDPOINTS", "http://127.0.0.1:9")
        .args(["render", "--watch", "/services/web", "--template"])
        .arg(format!("{}:{}/out", t.display(), dir.path().display()))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("{}:3:18: syntax error", t.display())),
        "{err}"
    );
    assert!(!dir.path().join("out").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn once_and_dry_run() {
    let etcd = Etcd::single().await;
    let prefix = unique_prefix("render-once");
    let c = etcd.client().await;
    c.put(
        &format!("{prefix}/web/b"),
        r#"{"ip":"10.0.0.2","port":3002,"host":"h2"}"#,
    )
    .await
    .unwrap();
    c.put(&format!("{prefix}/web/a"), "10.0.0.1:3001")
        .await
        .unwrap();
    c.put(&format!("{prefix}/cfg/name"), "lb").await.unwrap();
    c.put(&format!("{prefix}/cfg/port"), "8080").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    std::fs::write(
        dir.path().join("t.j2"),
        "{{ config.name }} {{ config.port + 1 }} r{{ revision > 0 }}\n\
         {% for b in web | sort(attribute='port', reverse=true) %}\n\
         {{ b.name }} {{ b.ip }} {{ b.port }} {{ b.json.host if b.json is defined else '-' }}\n\
         {% endfor %}\n",
    )
    .unwrap();
    let base = [
        "render".to_owned(),
        "--watch".to_owned(),
        format!("{prefix}/web"),
        "--config".to_owned(),
        format!("{prefix}/cfg"),
        "--template".to_owned(),
        format!("{d}/t.j2:{d}/out:0600"),
    ];
    let base: Vec<&str> = base.iter().map(String::as_str).collect();
    let want = "lb 8081 rTrue\nb 10.0.0.2 3002 h2\na 10.0.0.1 3001 -\n";
    // `discover render` with the arguments above and `extra`.
    let render = |extra: &[&str]| {
        Proc::spawn(harness::proc::discover(
            &etcd,
            &[base.as_slice(), extra].concat(),
        ))
    };

    let mut dry = render(&["--once", "--dry-run"]);
    assert!(
        dry.wait_exit(Duration::from_secs(30)).await.success(),
        "{}",
        dry.dump()
    );
    assert_eq!(dry.stdout_lines().join("\n") + "\n", want, "{}", dry.dump());
    assert!(!dir.path().join("out").exists(), "--dry-run wrote the file");

    let mut once = render(&["--once"]);
    assert!(
        once.wait_exit(Duration::from_secs(30)).await.success(),
        "{}",
        once.dump()
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out")).unwrap(),
        want
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("out"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // A check that fails: exit 1 with the reason, the file untouched.
    c.put(&format!("{prefix}/web/c"), "10.0.0.3:3003")
        .await
        .unwrap();
    let mut bad = render(&[
        "--once",
        "--check-cmd",
        "sh -c 'echo nope: $0 >&2; exit 3' {{src}}",
    ]);
    let st = bad.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(st.code(), Some(1), "{}", bad.dump());
    assert!(bad.stderr().contains("nope"), "{}", bad.dump());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out")).unwrap(),
        want
    );

    // A check that outlives --cmd-timeout is killed and counts as failed:
    // exit 1, the message names the flag, the file untouched.
    let mut slow = render(&[
        "--once",
        "--cmd-timeout",
        "1s",
        "--check-cmd",
        "sh -c 'sleep 600' {{src}}",
    ]);
    let st = slow.wait_exit(Duration::from_secs(60)).await;
    assert_eq!(st.code(), Some(1), "{}", slow.dump());
    assert!(
        slow.stderr()
            .contains("did not finish within 1s; it was killed")
            && slow.stderr().contains("--cmd-timeout"),
        "{}",
        slow.dump()
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out")).unwrap(),
        want
    );
}

#[test]
fn make_install_installs_the_example_and_its_units_verify() {
    let dest = tempfile::tempdir().unwrap();
    // A root systemd-analyze can verify against: systemd's units and the
    // real nginx the unit names.
    harness::install::install_root(dest.path(), "/usr/local", &["/usr/sbin/nginx"]);
    let root = dest.path();
    assert!(
        root.join("usr/local/share/sidekick/examples/nginx-upstream/upstream.conf.j2")
            .exists()
    );
    let units = ["web-lb.service", "web-lb-nginx.service"];
    for u in units {
        let text =
            std::fs::read_to_string(root.join("usr/local/lib/systemd/system").join(u)).unwrap();
        assert!(
            text.contains("--check-cmd \"/usr/sbin/nginx -t -q -c {{src}}\""),
            "{u}:\n{text}"
        );
    }
    let (ok, said) = harness::install::verify(root, &units.map(str::to_owned));
    assert!(
        ok && said.trim().is_empty(),
        "systemd-analyze verify {units:?}:\n{said}"
    );
}

#[test]
fn bad_input_exits_2_before_any_io() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    std::fs::write(dir.path().join("t.j2"), "x\n").unwrap();
    let t = format!("{d}/t.j2:{d}/out");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--template".into(), format!("{d}/none.j2:{d}/out")],
            "cannot read the template",
        ),
        (
            vec!["--template".into(), format!("{d}/t.j2:{d}/no/such/dir/out")],
            "does not exist",
        ),
        (
            vec!["--template".into(), format!("{t}:rw")],
            "not an octal mode",
        ),
        (
            vec![
                "--template".into(),
                t.clone(),
                "--check-cmd".into(),
                "nginx -t".into(),
            ],
            "does not name the new file",
        ),
        (
            vec![
                "--template".into(),
                t.clone(),
                "--reload-cmd".into(),
                "no-such-cmd-here x".into(),
            ],
            "not an executable file",
        ),
        (
            vec![
                "--template".into(),
                t.clone(),
                "--owner".into(),
                "no-such-user-here".into(),
            ],
            "there is no user",
        ),
        (
            vec![
                "--template".into(),
                t.clone(),
                "--wait".into(),
                "2s:1s".into(),
            ],
            "shorter than MIN",
        ),
        (
            vec![
                "--template".into(),
                t.clone(),
                "--watch".into(),
                "config=/x".into(),
            ],
            "taken by the template context",
        ),
    ];
    for (args, want) in cases {
        let mut all = vec!["render".to_owned()];
        if !args.iter().any(|a| a == "--watch") {
            all.extend(["--watch".to_owned(), "/services/web".to_owned()]);
        }
        all.extend(args);
        let out = Proc::command("discover")
            .env("ETCDCTL_ENDPOINTS", "http://127.0.0.1:9")
            .args(&all)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{all:?}: {err}");
        assert!(err.contains(want), "{all:?}: want {want:?} in {err}");
        assert!(!dir.path().join("out").exists());
    }
}
