//! Network namespaces: a [`Namespace`] of its own for each app instance,
//! holding nothing but loopback, and sockets made inside one.
//!
//! A socket belongs, for its whole life, to the namespace of the thread
//! that created it. So the platform reaches an instance that listens on
//! `127.0.0.1:PORT` *inside* its namespace by creating the socket there
//! ([`Namespace::enter`], then connecting from anywhere), and gives the
//! instance its ways out (the internal listener, the egress proxy) as
//! listeners made inside the namespace and served from the host. Nothing
//! else can reach the instance: no route leads into the namespace, and
//! the app, whose user namespace does not own it, cannot add one.
//!
//! # Invariants
//! - A thread that entered a namespace is back in the host's before
//!   [`Namespace::enter`] returns; if it cannot be moved back the process
//!   aborts, rather than make a later socket in an app's namespace.
//! - Creating a namespace never moves a thread of the caller: it is done
//!   on a short-lived thread of its own.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;

/// A network namespace, alive as long as this handle or a process in it.
#[derive(Debug)]
pub struct Namespace {
    fd: OwnedFd,
}

impl Namespace {
    /// A new network namespace with its loopback interface up (and no
    /// other). Needs CAP_SYS_ADMIN (root).
    pub fn create() -> io::Result<Namespace> {
        // unshare(CLONE_NEWNET) moves the calling thread: a thread of its
        // own, which ends once the namespace is held by a descriptor.
        std::thread::Builder::new()
            .name("netns-create".into())
            .spawn(|| {
                // SAFETY: unshare(2) with a flag; affects this thread only.
                check(unsafe { libc::unshare(libc::CLONE_NEWNET) })?;
                loopback_up()?;
                let fd = open_cloexec(c"/proc/thread-self/ns/net")?;
                Ok(Namespace { fd })
            })?
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the thread creating a network namespace panicked")))
    }

    /// The descriptor, for `setns(2)` in a child between fork and exec.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Runs `f` on this thread inside the namespace, then moves the thread
    /// back to the host's namespace: the sockets `f` creates stay in this
    /// one. `f` must not block or await: nothing else runs on the thread
    /// meanwhile, but nor should anything else see it in the namespace.
    pub fn enter<T>(&self, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        let host = host()?;
        // SAFETY: setns(2) on descriptors we own; affects this thread only.
        check(unsafe { libc::setns(self.fd.as_raw_fd(), libc::CLONE_NEWNET) })?;
        let result = f();
        // SAFETY: as above.
        if unsafe { libc::setns(host.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            // A thread left in an app's namespace would make the next
            // socket of whatever runs on it there: never go on.
            eprintln!("netns: cannot return a thread to the host's network namespace: {}", io::Error::last_os_error());
            std::process::abort();
        }
        result
    }

    /// A TCP connection to `addr` as seen from inside the namespace.
    pub async fn connect(&self, addr: SocketAddr) -> io::Result<tokio::net::TcpStream> {
        let socket = self.enter(|| stream_socket(addr))?;
        tokio::net::TcpSocket::from_std_stream(socket).connect(addr).await
    }

    /// A listener on `addr` inside the namespace (non-blocking, ready for
    /// Tokio), served from wherever the caller likes.
    pub fn listen(&self, addr: SocketAddr) -> io::Result<std::net::TcpListener> {
        let listener = self.enter(|| std::net::TcpListener::bind(addr))?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    }
}

/// A TCP connection to `addr`, inside `namespace` when there is one.
pub async fn connect(namespace: Option<&Namespace>, addr: SocketAddr) -> io::Result<tokio::net::TcpStream> {
    match namespace {
        Some(namespace) => namespace.connect(addr).await,
        None => tokio::net::TcpStream::connect(addr).await,
    }
}

/// Whether this process may create network namespaces, or why not.
pub fn available() -> Result<(), String> {
    Namespace::create().map(drop).map_err(|e| format!("cannot create a network namespace: {e}"))
}

/// The host's network namespace: the process's, as its first thread has it.
fn host() -> io::Result<&'static OwnedFd> {
    static HOST: OnceLock<Result<OwnedFd, String>> = OnceLock::new();
    HOST.get_or_init(|| open_cloexec(c"/proc/self/ns/net").map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| io::Error::other(format!("the host's network namespace: {e}")))
}

/// An unconnected, non-blocking TCP socket for `addr`'s family.
fn stream_socket(addr: SocketAddr) -> io::Result<std::net::TcpStream> {
    let family = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: socket(2) returns a new descriptor or -1.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    check(fd)?;
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    Ok(std::net::TcpStream::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Sets the loopback interface of this thread's namespace up.
fn loopback_up() -> io::Result<()> {
    // SAFETY: socket(2); the descriptor is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    check(fd)?;
    // SAFETY: a new descriptor nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *slot = *byte as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq given.
    unsafe {
        check(libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request))?;
        request.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        check(libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request))?;
    }
    Ok(())
}

fn open_cloexec(path: &std::ffi::CStr) -> io::Result<OwnedFd> {
    // SAFETY: open(2) of a NUL-terminated path.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    check(fd)?;
    // SAFETY: a new descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn check(result: libc::c_int) -> io::Result<()> {
    if result < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Which instance addresses are inside which namespace: the platform's
/// table, for whoever connects to instances (the gateway, health checks).
///
/// An address once inside a namespace stays marked when it is removed, so
/// that a connection to it fails rather than reach whatever listens on
/// the same port of the host's loopback.
#[derive(Debug, Default)]
pub struct Directory {
    addresses: std::sync::RwLock<std::collections::HashMap<SocketAddr, Option<std::sync::Arc<Namespace>>>>,
}

impl Directory {
    /// `addr` is now reached inside `namespace`.
    pub fn insert(&self, addr: SocketAddr, namespace: std::sync::Arc<Namespace>) {
        self.addresses.write().unwrap_or_else(|e| e.into_inner()).insert(addr, Some(namespace));
    }

    /// The instance at `addr` in `namespace` is gone: connections to it
    /// fail (unless another instance took the address meanwhile).
    pub fn remove(&self, addr: SocketAddr, namespace: &std::sync::Arc<Namespace>) {
        if let Some(entry) = self.addresses.write().unwrap_or_else(|e| e.into_inner()).get_mut(&addr)
            && entry.as_ref().is_some_and(|n| std::sync::Arc::ptr_eq(n, namespace))
        {
            *entry = None;
        }
    }

    /// A TCP connection to `addr`: inside its namespace when it is an
    /// instance's; refused when that instance is gone; else the host's.
    pub async fn connect(&self, addr: SocketAddr) -> io::Result<tokio::net::TcpStream> {
        let entry = self.addresses.read().unwrap_or_else(|e| e.into_inner()).get(&addr).cloned();
        match entry {
            None => tokio::net::TcpStream::connect(addr).await,
            Some(Some(namespace)) => namespace.connect(addr).await,
            Some(None) => {
                Err(io::Error::new(io::ErrorKind::ConnectionRefused, format!("the instance at {addr} is gone")))
            }
        }
    }
}

/// A loopback port of the host's, held (bound, never listening) so that
/// no other instance on this machine is given it while one uses it inside
/// its namespace: the port names the instance in a [`Directory`].
#[derive(Debug)]
pub struct PortHold {
    _socket: OwnedFd,
    pub port: u16,
}

impl PortHold {
    pub fn new() -> io::Result<PortHold> {
        let socket = stream_socket(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let socket = OwnedFd::from(socket);
        // SAFETY: sockaddr_in is plain data; all zeroes is a valid value.
        let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: bind(2) and getsockname(2) with a sockaddr_in of the size given.
        unsafe {
            check(libc::bind(socket.as_raw_fd(), (&raw const addr).cast(), len))?;
            check(libc::getsockname(socket.as_raw_fd(), (&raw mut addr).cast(), &mut len))?;
        }
        Ok(PortHold { _socket: socket, port: u16::from_be(addr.sin_port) })
    }
}

/// Forwards each connection accepted on `listener` to `to` (inside
/// `namespace` when there is one), at most `max` at once (more wait in
/// the listener's backlog), until the listener fails.
pub async fn forward(
    listener: tokio::net::TcpListener,
    to: SocketAddr,
    namespace: Option<std::sync::Arc<Namespace>>,
    max: usize,
) {
    let open = std::sync::Arc::new(tokio::sync::Semaphore::new(max));
    loop {
        let Ok(permit) = open.clone().acquire_owned().await else { return };
        let Ok((mut accepted, _)) = listener.accept().await else { return };
        let namespace = namespace.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Ok(mut upstream) = connect(namespace.as_deref(), to).await {
                let _ = accepted.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut accepted, &mut upstream).await;
            }
        });
    }
}
