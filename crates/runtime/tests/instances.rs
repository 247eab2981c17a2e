//! Real example apps as supervised processes.

use std::path::PathBuf;
use std::time::Duration;

use runtime::{Confinement, Instance, InstanceError, InstanceSpec, Manifest, Sandbox};

fn app(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/apps")).join(name)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Confinement as the platform has it, for a platform whose data is in
/// `realm`: these tests run as root, as the platform does, and fail where
/// the machine cannot confine (never skip).
fn confined(realm: &std::path::Path) -> Confinement {
    Confinement::Confined(std::sync::Arc::new(Sandbox::detect(realm).expect("this machine confines apps")))
}

/// An instance of the example app `name`, confined, in `dir` (a
/// platform's data directory).
fn spec(name: &str, dir: &std::path::Path) -> InstanceSpec {
    InstanceSpec {
        site: name.to_owned(),
        manifest: Manifest::load(&app(name).join("commons.toml")).unwrap(),
        source: app(name),
        dir: dir.join(name),
        port: free_port(),
        env: vec![],
        confinement: confined(dir),
        state_dir: None,
    }
}

async fn get(instance: &Instance, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = netns::connect(instance.namespace().map(|n| &**n), instance.addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

#[tokio::test]
async fn an_app_runs_is_metered_restarts_after_a_crash_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let instance = Instance::start(spec("search", dir.path())).await.unwrap();
    assert!(instance.is_healthy());
    let answer = get(&instance, "/?q=open+source").await;
    assert!(answer.starts_with("HTTP/1.1 200") && answer.contains("digital commons"), "{answer}");
    for _ in 0..30 {
        get(&instance, "/?q=web").await;
    }
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let used = instance.take_usage();
    assert!(used.cpu_ms > 0 && used.memory_mib_s > 0, "{used:?}");

    // Killed from outside: started again, on the same port.
    let pid = instance.pid();
    // SAFETY: kill(2) on the instance's own process.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    let mut waited = 0;
    while (instance.restarts() == 0 || !instance.is_healthy()) && waited < 100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    assert_eq!(instance.restarts(), 1);
    assert_ne!(instance.pid(), pid);
    assert!(get(&instance, "/healthz").await.starts_with("HTTP/1.1 200"));

    let (addr, namespace) = (instance.addr, instance.namespace().cloned());
    instance.stop().await;
    assert!(netns::connect(namespace.as_deref(), addr).await.is_err(), "stopped");
}

#[tokio::test]
async fn an_app_that_never_becomes_healthy_fails_with_the_end_of_its_log() {
    let dir = tempfile::tempdir().unwrap();
    match Instance::start(spec("broken", dir.path())).await {
        Err(InstanceError::Unhealthy { tail, .. }) => {
            assert!(tail.contains("error: cannot open database"), "{tail}")
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a broken app started"),
    }
}

#[tokio::test]
async fn a_failing_install_step_fails_the_deploy_with_its_output() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec("search", dir.path());
    spec.manifest.install = vec!["echo fetching; echo 'no such package: nope==9' >&2; false".into()];
    match Instance::start(spec).await {
        Err(InstanceError::Install { step, tail, .. }) => {
            assert!(step.contains("fetching") && tail.contains("no such package"), "{tail}")
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("installed"),
    }
}

/// The platform's environment (database URLs, credentials, its own
/// settings) is not an app's: its install steps and its process see only
/// `runtime::INHERITED_ENV` (and its prefixes), `PORT`, `COMMONS_SITE` and what they are given.
#[tokio::test]
async fn an_app_and_its_install_steps_never_see_the_platforms_environment_nor_gain_privileges() {
    // SAFETY: set before any instance of this test runs; other tests in this
    // binary read nothing of these names.
    unsafe {
        std::env::set_var("COMMONS_TEST_DATABASE_URL", "postgres://platform:secret@127.0.0.1/commons");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "platform-secret");
        // The package managers' settings pass, never their credentials.
        std::env::set_var("PIP_INDEX_URL", "https://platform:secret@pypi.example/simple");
        std::env::set_var("npm_config__authToken", "secret");
        std::env::set_var("PIP_RETRIES", "7");
    }
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec("search", dir.path());
    spec.manifest.install =
        vec!["env > ../install-env.txt; grep NoNewPrivs /proc/self/status > ../install-nnp.txt".into()];
    spec.manifest.run =
        format!("env > ../run-env.txt; grep NoNewPrivs /proc/self/status > ../run-nnp.txt; {}", spec.manifest.run);
    spec.env = vec![("COMMONS_INTERNAL_URL".into(), "http://127.0.0.1:9".into())];
    let instance = Instance::start(spec).await.unwrap();
    for file in ["install-env.txt", "run-env.txt"] {
        let env = std::fs::read_to_string(dir.path().join("search").join(file)).unwrap();
        let names: Vec<&str> = env.lines().filter_map(|l| l.split_once('=')).map(|(name, _)| name).collect();
        assert!(!env.contains("secret"), "{file}: {env}");
        for name in &names {
            let expected = runtime::INHERITED_ENV.contains(name)
                || runtime::INHERITED_ENV_PREFIXES.iter().any(|prefix| name.starts_with(prefix))
                || ["PORT", "COMMONS_SITE", "COMMONS_INTERNAL_URL", "PWD", "SHLVL", "_", "OLDPWD"].contains(name);
            assert!(expected, "{file}: {name} is not an app's");
        }
        assert!(names.contains(&"PATH") && names.contains(&"COMMONS_INTERNAL_URL"), "{file}: {env}");
        assert!(names.contains(&"PIP_RETRIES") && !names.contains(&"PIP_INDEX_URL"), "{file}: {env}");
    }
    // And no setuid program gives them more than they have.
    for file in ["install-nnp.txt", "run-nnp.txt"] {
        let nnp = std::fs::read_to_string(dir.path().join("search").join(file)).unwrap();
        assert_eq!(nnp.split_whitespace().collect::<Vec<_>>(), ["NoNewPrivs:", "1"], "{file}");
    }
    instance.stop().await;
}

/// An app and its install steps cannot trace, mount or make namespaces
/// (the seccomp filter of `runtime::DENIED_SYSCALLS` answers EPERM), and
/// still run: everything else is allowed.
#[tokio::test]
async fn an_app_cannot_trace_mount_or_enter_namespaces() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec("search", dir.path());
    let attempts = r#"unshare -U true 2>&1; echo "unshare $?"; mkdir -p m; mount -t tmpfs none m 2>&1; echo "mount $?"; python3 -c 'import ctypes; c = ctypes.CDLL(None, use_errno=True); print("ptrace", c.ptrace(0, 0, 0, 0), ctypes.get_errno())'"#;
    spec.manifest.install = vec![format!("({attempts}) > ../install-attempts.txt")];
    spec.manifest.run = format!("({attempts}) > ../run-attempts.txt; {}", spec.manifest.run);
    let instance = Instance::start(spec).await.unwrap();
    for file in ["install-attempts.txt", "run-attempts.txt"] {
        let said = std::fs::read_to_string(dir.path().join("search").join(file)).unwrap();
        assert!(said.contains("unshare 1") && said.contains("mount 32"), "{file}: {said}");
        assert!(said.contains("ptrace -1 1"), "{file}: EPERM for ptrace: {said}");
        assert!(said.contains("Operation not permitted"), "{file}: {said}");
    }
    assert!(get(&instance, "/healthz").await.starts_with("HTTP/1.1 200"), "and it serves");
    instance.stop().await;
}

/// A running instance that stops answering its health path is restarted
/// after `health.failures` failed probes in a row, and its log says so.
#[tokio::test]
async fn an_instance_failing_its_health_probes_in_a_row_is_restarted_and_its_log_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec("search", dir.path());
    // Healthy until a file `sick` appears beside it.
    spec.manifest.run = r#"exec python3 -c '
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(500 if os.path.exists("sick") else 200)
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
'"#
    .into();
    spec.manifest.health.interval_ms = 100;
    spec.manifest.health.failures = 2;
    let app = spec.dir.join("app");
    let instance = Instance::start(spec).await.unwrap();
    let pid = instance.pid();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(instance.restarts(), 0, "healthy: not restarted");
    std::fs::write(app.join("sick"), "").unwrap();
    let mut waited = 0;
    while instance.restarts() == 0 && waited < 100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    std::fs::remove_file(app.join("sick")).unwrap();
    assert_eq!(instance.restarts(), 1);
    assert_ne!(instance.pid(), pid);
    let log = std::fs::read_to_string(instance.log_path()).unwrap();
    assert!(
        log.contains("commons: the instance is started again: 2 health probes of /healthz failed in a row"),
        "{log}"
    );
    assert_eq!(instance.take_events(), ["restarted: 2 health probes of /healthz failed in a row"]);
    instance.stop().await;
}

/// Unconfined (an instance confined has a network of its own).
#[tokio::test]
async fn a_port_already_taken_fails_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut spec = spec("search", dir.path());
    spec.confinement = Confinement::Unconfined;
    spec.port = taken.local_addr().unwrap().port();
    spec.manifest.health.timeout_ms = 3000;
    match Instance::start(spec).await {
        Err(InstanceError::Unhealthy { tail, .. }) => assert!(tail.contains("Address already in use"), "{tail}"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("started on a taken port"),
    }
}

#[tokio::test]
#[ignore = "installs from PyPI: needs the network (cargo test -p runtime -- --ignored)"]
async fn catalog_apps_install_from_their_registries_and_serve() {
    let catalog = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../catalog"));
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&catalog).unwrap().flatten().filter(|e| e.path().is_dir()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let manifest = Manifest::load(&entry.path().join("commons.toml")).unwrap();
        let spec = InstanceSpec {
            site: name.clone(),
            manifest,
            source: entry.path(),
            dir: dir.path().join(&name),
            port: free_port(),
            env: vec![],
            confinement: confined(dir.path()),
            state_dir: None,
        };
        let instance = Instance::start(spec).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        let answer = get(&instance, "/").await;
        let status = answer.get(9..12).unwrap_or("");
        assert!(status == "200" || status.starts_with("30"), "{name}: {answer}");
        instance.stop().await;
    }
}

/// A Python server on `$PORT` whose `GET /hog` holds `hog_mib` MiB of
/// resident memory, and whose every other path answers 200.
fn hog_server(hog_mib: u32) -> String {
    format!(
        r#"exec python3 -c '
import http.server, os
held = []
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/hog":
            held.append(bytearray({hog_mib} << 20))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
'"#
    )
}

/// Node.js reserves gigabytes of address space and holds a few dozen MiB:
/// the limit is on resident memory (the control group's), so 256 MiB is
/// plenty (an address-space limit of 256 MiB kills it at start).
#[tokio::test]
async fn a_nodejs_app_runs_confined_with_a_256_mib_memory_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec("search", dir.path());
    spec.manifest.run =
        r#"exec node -e "require('http').createServer((q, s) => s.end('ok')).listen(+process.env.PORT, '127.0.0.1')""#
            .into();
    spec.manifest.health.path = "/".into();
    spec.manifest.resources.memory_mb = 256;
    let instance = Instance::start(spec).await.unwrap();
    assert!(get(&instance, "/").await.starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let used = instance.take_usage();
    assert!(used.memory_mib_s > 0 && used.memory_mib_s < 256 * 2, "{used:?}");
    instance.stop().await;
}

/// Over its memory limit, the kernel kills it (the control group's OOM
/// killer): it is started again, and its log and events say why.
#[tokio::test]
async fn an_app_over_its_memory_limit_is_killed_and_started_again_and_says_it_ran_out_of_memory() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec("search", dir.path());
    spec.manifest.run = hog_server(200);
    spec.manifest.resources.memory_mb = 64;
    let instance = Instance::start(spec).await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(10), get(&instance, "/hog")).await;
    let mut waited = 0;
    while (instance.restarts() == 0 || !instance.is_healthy()) && waited < 100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    assert_eq!(instance.restarts(), 1);
    let why = "the kernel killed it for using more than its memory limit of 64 MiB (out of memory)";
    assert_eq!(instance.take_events(), [format!("restarted: {why}")]);
    let log = std::fs::read_to_string(instance.log_path()).unwrap();
    assert!(log.contains(&format!("commons: the instance is started again: {why}")), "{log}");
    // Under the limit, it is left alone.
    let answer = get(&instance, "/healthz").await;
    assert!(answer.starts_with("HTTP/1.") && answer[9..].starts_with("200"), "{answer}");
    instance.stop().await;
}

/// CPU time is the control group's: every process the app ever ran,
/// those that left its process group for a session of their own and
/// exited included (a /proc scan of the process group misses them).
#[tokio::test]
async fn cpu_of_a_child_that_left_for_a_session_of_its_own_is_metered() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec("search", dir.path());
    let burn = r#"setsid python3 -c '
import time
while time.process_time() < 1.5: pass
open("../burned.txt", "w").write(str(int(time.process_time() * 1000)))
' &"#;
    spec.manifest.run = format!("{burn} {}", spec.manifest.run);
    let burned = dir.path().join("search").join("burned.txt");
    let instance = Instance::start(spec).await.unwrap();
    let mut waited = 0;
    while !burned.exists() && waited < 100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let burned: u64 = std::fs::read_to_string(&burned).unwrap().trim().parse().unwrap();
    let metered = instance.take_usage().cpu_ms;
    // What the child burned, and no more than a second for the server's start.
    assert!(metered >= burned * 97 / 100 && metered <= burned + 1000, "metered {metered} ms, burned {burned} ms");
    instance.stop().await;
}

/// Confined, an app's only ways out are its own loopback's listeners: it
/// reaches neither the host's listeners (the platform's, other apps') nor
/// any address directly, and its install steps' egress proxy refuses the
/// host and is gone once they are done.
#[tokio::test]
async fn an_app_reaches_nothing_directly_and_its_install_steps_only_the_outside_through_the_proxy() {
    let host = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = host.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec("search", dir.path());
    let tries = format!(
        r#"python3 -c '
import os, socket
for where in [("127.0.0.1", {port}), ("203.0.113.80", 443), ("192.0.2.1", 80)]:
    try:
        socket.create_connection(where, timeout=2); print("direct", where, "reached")
    except OSError as e: print("direct", where, "refused", e.errno)
print("proxy", os.environ.get("HTTPS_PROXY", "none"))
if "HTTPS_PROXY" in os.environ:
    proxy = socket.create_connection(("127.0.0.1", int(os.environ["HTTPS_PROXY"].rsplit(":", 1)[1])), timeout=5)
    proxy.sendall(b"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: x\r\n\r\n")
    print("via proxy", proxy.recv(200).split(b"\r\n")[0].decode())
'"#
    );
    spec.manifest.install = vec![format!("{tries} > ../install-net.txt")];
    spec.manifest.run = format!("{tries} > ../run-net.txt; {}", spec.manifest.run);
    let instance = Instance::start(spec).await.unwrap();
    let install = std::fs::read_to_string(dir.path().join("search/install-net.txt")).unwrap();
    let run = std::fs::read_to_string(dir.path().join("search/run-net.txt")).unwrap();
    for said in [&install, &run] {
        // Its own loopback has nothing on that port; nothing else has a route.
        assert!(said.contains(&format!("direct ('127.0.0.1', {port}) refused 111")), "{said}");
        assert_eq!(said.matches("refused 101").count(), 2, "no route elsewhere: {said}");
        assert!(!said.contains("reached"), "{said}");
    }
    assert!(install.contains("proxy http://127.0.0.1:") && install.contains("via proxy HTTP/1.1 403"), "{install}");
    assert!(run.contains("proxy none"), "the app itself has no way out: {run}");
    instance.stop().await;
}

/// A directory an earlier start of the same generation left holds what its
/// app put there: the next start makes it anew and never follows what the
/// app planted (here, its `app` made a link to a directory of the
/// platform's, which root would have copied into and given to the app).
#[tokio::test]
async fn a_start_never_follows_links_an_earlier_start_of_its_directory_planted() {
    let dir = tempfile::tempdir().unwrap();
    let platforms = dir.path().join("platforms-own");
    std::fs::create_dir_all(&platforms).unwrap();
    std::fs::write(platforms.join("keep.txt"), "the platform's").unwrap();
    let mut planted = spec("search", dir.path());
    planted.manifest.install = vec![format!("cd .. && mv app app.old && ln -s {} app", platforms.display())];
    let first = Instance::start(planted).await;
    if let Ok(instance) = first {
        instance.stop().await;
    }
    let second = Instance::start(spec("search", dir.path())).await.unwrap();
    assert!(get(&second, "/healthz").await.starts_with("HTTP/1.1 200"));
    second.stop().await;
    let left: Vec<_> = std::fs::read_dir(&platforms).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(left, ["keep.txt"], "the start copied into the planted link");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&platforms).unwrap().uid(), 0, "the start gave the platform's directory away");
}

/// `$COMMONS_STATE_DIR` is the site's, not an instance's: what one
/// instance writes there the next (a new version, in a new directory)
/// finds, and only the site's own user may open it.
#[tokio::test]
async fn what_an_app_keeps_in_its_state_directory_outlives_its_instance() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state").join("search");
    let mut first = spec("search", dir.path());
    first.state_dir = Some(state.clone());
    first.manifest.run = format!(r#"echo kept > "$COMMONS_STATE_DIR/note.txt"; {}"#, first.manifest.run);
    let instance = Instance::start(first).await.unwrap();
    instance.stop().await;
    let mut second = spec("search", dir.path());
    second.dir = dir.path().join("search-1.1.0");
    second.state_dir = Some(state.clone());
    second.manifest.run = format!(r#"cat "$COMMONS_STATE_DIR/note.txt" > ../found.txt; {}"#, second.manifest.run);
    let instance = Instance::start(second).await.unwrap();
    assert_eq!(std::fs::read_to_string(dir.path().join("search-1.1.0/found.txt")).unwrap(), "kept\n");
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(&state).unwrap();
    assert!(meta.uid() >= runtime::SITE_UID_BASE && meta.permissions().mode() & 0o077 == 0, "{meta:?}");
    instance.stop().await;
}

/// An instance dropped without `stop` (its start given up, say) is
/// stopped all the same: nothing of it runs on unseen and unmetered.
#[tokio::test]
async fn a_dropped_instance_stops() {
    let dir = tempfile::tempdir().unwrap();
    let instance = Instance::start(spec("search", dir.path())).await.unwrap();
    let (addr, namespace, pid) = (instance.addr, instance.namespace().cloned(), instance.pid());
    drop(instance);
    let gone = || std::fs::metadata(format!("/proc/{pid}")).is_err();
    let mut waited = 0;
    while !gone() && waited < 100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    assert!(gone(), "the dropped instance's process {pid} still runs");
    assert!(netns::connect(namespace.as_deref(), addr).await.is_err(), "and nothing answers at its address");
}

/// bwrap itself, which runs before the sandbox exists, gets no
/// environment of the app's (an `LD_PRELOAD` there would run the app's code
/// outside its sandbox) and no value on its command line: they reach the
/// app through bwrap's `--args` file, inside.
#[tokio::test]
async fn the_sandboxs_own_process_gets_none_of_the_apps_environment() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec("search", dir.path());
    spec.env = vec![("LD_PRELOAD".into(), "/nonexistent/preload.so".into()), ("APP_SECRET".into(), "s3cr3t".into())];
    spec.manifest.run = format!("echo \"$APP_SECRET\" > ../seen.txt; unset LD_PRELOAD; {}", spec.manifest.run);
    let instance = Instance::start(spec).await.unwrap();
    let pid = instance.pid();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let cmdline = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap()).into_owned();
    assert!(environ.is_empty(), "bwrap's environment: {:?}", String::from_utf8_lossy(&environ));
    assert!(cmdline.contains("bwrap") && !cmdline.contains("s3cr3t") && !cmdline.contains("preload"), "{cmdline}");
    assert_eq!(std::fs::read_to_string(dir.path().join("search/seen.txt")).unwrap(), "s3cr3t\n", "the app has it");
    instance.stop().await;
}

/// An app that needs an interpreter this node lacks, or a later version
/// of it, fails at once, saying which and what the node has; one it has
/// starts.
#[tokio::test]
async fn an_app_needing_an_interpreter_this_node_lacks_fails_at_once_saying_so() {
    use runtime::Interpreter;
    let dir = tempfile::tempdir().unwrap();
    let mut needs = spec("search", dir.path());
    needs.manifest.requires = vec![(Interpreter::Python, (3, 0)), (Interpreter::Node, (99, 0))];
    let started = std::time::Instant::now();
    match Instance::start(needs).await {
        Err(InstanceError::Requires { detail, .. }) => {
            assert!(detail.starts_with("it needs Node.js 99.0 or later; this node has v"), "{detail}")
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("started without the interpreter it needs"),
    }
    assert!(started.elapsed() < Duration::from_secs(5), "not at once");
    assert!(!dir.path().join("search").exists(), "nothing was installed");
    let mut has = spec("search", dir.path());
    has.manifest.requires = vec![(Interpreter::Python, (3, 0))];
    Instance::start(has).await.unwrap().stop().await;
}
