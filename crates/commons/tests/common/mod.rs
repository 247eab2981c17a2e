//! What the tests of `commons` share: running it, an upstream, HTTP by hand.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn commons() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_commons"));
    command.env_remove("COMMONS_DATA").env_remove("COMMONS_DATABASE").env("COMMONS_LOG", "warn");
    command
}

pub fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// A minimal keep-alive HTTP/1.1 upstream answering `ok` to everything.
pub fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut stream = stream;
                loop {
                    let mut line = String::new();
                    let mut content_length = 0usize;
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            content_length = v.trim().parse().unwrap_or(0);
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0; content_length];
                    if reader.read_exact(&mut body).is_err()
                        || stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// The fingerprint of the control plane's CA in `data`, once it is there.
pub fn control_pin(data: &std::path::Path) -> agent::tls::Pin {
    let path = data.join("control-ca").join("ca.der");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(der) = std::fs::read(&path) {
            return agent::tls::Pin::of(&der);
        }
        assert!(Instant::now() < deadline, "no CA at {}", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One request to the control listener at `control` over TLS, pinned to
/// `pin`: the status and body, or why there was none.
pub fn control_request(
    control: SocketAddr,
    pin: agent::tls::Pin,
    method: &str,
    path: &str,
    bearer: &str,
    body: Option<&str>,
) -> Result<(u16, String), String> {
    let client = agent::client::Client::new(&format!("https://{control}"), pin).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let method = hyper::Method::from_bytes(method.as_bytes()).unwrap();
    let body = body.map(|b| b.as_bytes().to_vec());
    let answer = runtime.block_on(client.send(method, path, bearer, body, 1 << 20)).map_err(|e| e.to_string())?;
    Ok((answer.status, String::from_utf8_lossy(&answer.body).into_owned()))
}

pub fn wait_healthy(data: &std::path::Path, control: SocketAddr, child: &mut Child) {
    if let Err(why) = healthy(data, control, child) {
        panic!("{why}");
    }
}

/// Waits until `commons up` answers on `control`, or says why not.
fn healthy(data: &std::path::Path, control: SocketAddr, child: &mut Child) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            let said = std::fs::read_to_string(up_log(data)).unwrap_or_default();
            return Err(format!("commons up exited early: {status}; it said:\n{said}"));
        }
        if data.join("control-ca").join("ca.der").exists()
            && matches!(control_request(control, control_pin(data), "GET", "/healthz", "", None), Ok((200, _)))
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err("commons up did not become healthy".into())
}

/// Where `up_with` keeps what `commons up` says (beside the data directory).
fn up_log(data: &std::path::Path) -> std::path::PathBuf {
    data.with_extension("up.log")
}

pub fn up(data: &std::path::Path) -> (Child, SocketAddr) {
    let (child, listen, _) = up_with_control(data);
    (child, listen)
}

/// [`up`], also giving the control listener's address.
pub fn up_with_control(data: &std::path::Path) -> (Child, SocketAddr, SocketAddr) {
    up_with(data, "127.0.0.1:0", &[])
}

/// `commons up` with its internal listener on `internal` and `args` more,
/// once healthy: the process, the public and the control listener.
pub fn up_with(data: &std::path::Path, internal: &str, args: &[&str]) -> (Child, SocketAddr, SocketAddr) {
    // A port picked free a moment ago can be taken meanwhile (by an
    // instance another test started): then it is picked again.
    for _ in 0..3 {
        let (listen, control) = (free_port(), free_port());
        let _ = std::fs::remove_file(up_log(data));
        let mut child = commons()
            .arg("--data")
            .arg(data)
            .args(["up", "--listen", &listen.to_string(), "--control-listen", &control.to_string()])
            .args(["--internal-listen", internal])
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::OpenOptions::new().create(true).append(true).open(up_log(data)).unwrap())
            .spawn()
            .unwrap();
        match healthy(data, control, &mut child) {
            Ok(()) => return (child, listen, control),
            Err(why) if why.contains("cannot listen on") => continue,
            Err(why) => panic!("{why}"),
        }
    }
    panic!("commons up found its ports taken three times");
}

/// An answer read by [`http`].
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The value a `Set-Cookie` header gives cookie `name`.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
            .filter_map(|(_, v)| v.split(';').next()?.split_once('='))
            .find_map(|(k, v)| (k == name).then(|| v.to_owned()))
    }
}

/// One HTTP/1.1 request on its own connection.
pub fn http(addr: SocketAddr, method: &str, host: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let mut stream = TcpStream::connect(addr).unwrap();
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let mut lines = head.lines();
    let status = lines.next().unwrap_or("").split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned())).collect();
    Answer { status, headers, body: body.to_owned() }
}

/// The processes running in a directory under `dir`.
pub fn processes_under(dir: &std::path::Path) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let cwd = std::fs::read_link(e.path().join("cwd")).ok()?;
            // Not the sandbox's own first process (bwrap, as init).
            let sandbox = std::fs::read_to_string(e.path().join("comm")).ok()?.trim() == "bwrap";
            (cwd.starts_with(dir) && !sandbox).then_some(pid)
        })
        .collect()
}
