//! Network namespaces, for real (this needs root, as the platform does).

use std::io::{Read, Write};
use std::net::SocketAddr;

use netns::Namespace;

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[tokio::test]
async fn a_listener_inside_a_namespace_is_reached_only_through_that_namespace() {
    let namespace = Namespace::create().expect("root can create network namespaces");
    let inside = namespace.listen(loopback(0)).unwrap();
    let port = inside.local_addr().unwrap().port();
    // From the host, 127.0.0.1:port is another machine's loopback.
    assert!(std::net::TcpStream::connect(loopback(port)).is_err(), "the host reached a listener inside a namespace");
    // From inside, it answers.
    let server = std::thread::spawn(move || {
        inside.set_nonblocking(false).unwrap();
        let (mut conn, _) = inside.accept().unwrap();
        conn.write_all(b"inside").unwrap();
    });
    let mut conn = namespace.connect(loopback(port)).await.unwrap().into_std().unwrap();
    conn.set_nonblocking(false).unwrap();
    let mut got = String::new();
    conn.read_to_string(&mut got).unwrap();
    assert_eq!(got, "inside");
    server.join().unwrap();
}

#[tokio::test]
async fn a_namespace_cannot_reach_the_hosts_loopback_nor_another_namespace() {
    let host = std::net::TcpListener::bind(loopback(0)).unwrap();
    let (a, b) = (Namespace::create().unwrap(), Namespace::create().unwrap());
    let in_b = b.listen(loopback(0)).unwrap();
    for (what, port) in
        [("the host's", host.local_addr().unwrap().port()), ("another namespace's", in_b.local_addr().unwrap().port())]
    {
        assert!(a.connect(loopback(port)).await.is_err(), "a namespace reached {what} loopback");
    }
}

#[test]
fn entering_a_namespace_leaves_the_thread_in_the_hosts_afterwards() {
    let host = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
    let namespace = Namespace::create().unwrap();
    let inside = namespace.enter(|| std::fs::read_link("/proc/thread-self/ns/net")).unwrap();
    assert_ne!(inside, host);
    assert_eq!(std::fs::read_link("/proc/thread-self/ns/net").unwrap(), host);
    // Also when what ran inside failed.
    assert!(namespace.enter(|| Err::<(), _>(std::io::Error::other("no"))).is_err());
    assert_eq!(std::fs::read_link("/proc/thread-self/ns/net").unwrap(), host);
}

#[tokio::test]
async fn a_directory_reaches_an_instance_inside_its_namespace_and_never_the_host_once_it_is_gone() {
    let namespace = std::sync::Arc::new(Namespace::create().unwrap());
    let inside = namespace.listen(loopback(0)).unwrap();
    let addr = inside.local_addr().unwrap();
    let directory = netns::Directory::default();
    directory.insert(addr, namespace.clone());
    assert!(directory.connect(addr).await.is_ok(), "inside");
    drop(inside);
    // The same port on the host's loopback, taken by someone else.
    let host = std::net::TcpListener::bind(addr).unwrap();
    directory.remove(addr, &namespace);
    assert!(directory.connect(addr).await.is_err(), "a gone instance's address reached the host");
    // Addresses never inside a namespace are the host's.
    let other = std::net::TcpListener::bind(loopback(0)).unwrap();
    assert!(directory.connect(other.local_addr().unwrap()).await.is_ok());
    drop(host);
}
