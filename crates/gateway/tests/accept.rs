//! A worker that cannot accept (out of file descriptors) pauses instead of
//! spinning, and serves again once descriptors are back.
//!
//! In a test binary of its own: it lowers the process's file limit, which
//! any other test running beside it would feel.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use gateway::{Gateway, GatewayConfig, ManualClock, Routes};

/// The CPU time (user and system, in clock ticks) of the thread whose
/// `stat` file is `stat`.
fn cpu_ticks(stat: &std::fs::File) -> u64 {
    let mut text = vec![0u8; 1024];
    let n = stat.read_at(&mut text, 0).expect("the thread's stat");
    let text = String::from_utf8_lossy(&text[..n]).into_owned();
    // Fields after the command name, which ends with the last ')'.
    let fields: Vec<&str> = text[text.rfind(')').expect("a stat line") + 2..].split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// The `stat` file of the thread named `name`, open.
fn thread_stat(name: &str) -> std::fs::File {
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let path = task.unwrap().path();
        if std::fs::read_to_string(path.join("comm")).unwrap_or_default().trim() == name {
            return std::fs::File::open(path.join("stat")).unwrap();
        }
    }
    panic!("no thread {name}");
}

fn file_limit() -> libc::rlimit {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit to the valid pointer it is given.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
    limit
}

fn set_file_limit(limit: libc::rlimit) {
    // SAFETY: setrlimit reads one rlimit from the valid pointer it is given.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
}

#[test]
fn a_worker_out_of_file_descriptors_pauses_then_serves_again() {
    let routes = Routes::new("commons.localhost");
    let gateway = Gateway::new(GatewayConfig::default(), routes, None, Arc::new(ManualClock::new(1_795_000_000_000)));
    let running = gateway.serve("127.0.0.1:0".parse().unwrap(), 1).unwrap();
    let stat = thread_stat("gateway-0");

    // Leave the process exactly one free descriptor, and have a client
    // take it: the gateway's accept then fails with EMFILE.
    let before = file_limit();
    let probe = std::fs::File::open("/dev/null").unwrap();
    let lowest = probe.as_raw_fd() as libc::rlim_t;
    set_file_limit(libc::rlimit { rlim_cur: lowest + 1, rlim_max: before.rlim_max });
    drop(probe);
    let client = std::net::TcpStream::connect(running.addr);
    std::thread::sleep(Duration::from_millis(300));
    let ticks = cpu_ticks(&stat);
    std::thread::sleep(Duration::from_secs(1));
    let spent = cpu_ticks(&stat) - ticks;
    set_file_limit(before);
    let mut client = client.expect("the kernel completes the connection");

    // A worker retrying at once would have spent most of that second.
    // SAFETY: sysconf has no memory preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    assert!(spent < per_second / 10, "the worker spent {spent} ticks of {per_second} trying to accept");

    // With descriptors back, the waiting connection is served.
    client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    client.write_all(b"GET / HTTP/1.1\r\nHost: nowhere.commons.localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = client.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer:?}");
}
