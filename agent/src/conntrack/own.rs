//! Recognises the collector's end of kspan's own export connections.
//!
//! kspan never traces itself, but a collector on the same host is just
//! another process: without this, each export would come back as a
//! collector SERVER span, exported in the next batch, forever; and a user
//! counting their service's spans would find the collector's among them.
//! (Beyla excludes collector processes by name for the same reason; this
//! only skips kspan's own connections, so apps exporting to the same
//! collector are still traced.)

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use super::{Connection, canonical};

/// kspan's sockets are few; the bound only keeps a leak of them from
/// growing this list without limit.
const MAX_OWN_SOCKETS: usize = 1024;

pub struct OwnExport {
    /// The export endpoint's port: only connections accepted on it are
    /// looked at, so other traffic costs nothing.
    port: u16,
    /// kspan's network namespace: a loopback address names a socket only
    /// within one namespace.
    netns: u32,
    /// Local addresses of kspan's sockets, as of the last look.
    local_addrs: Vec<SocketAddr>,
}

impl OwnExport {
    pub fn new(port: u16) -> Self {
        Self { port, netns: own_netns().unwrap_or(0), local_addrs: Vec::new() }
    }

    /// Whether `conn` is a server connection whose client is one of kspan's
    /// own sockets. kspan's sockets are read again when the answer is not
    /// already known: a new export connection shows up here only after its
    /// connect() returned, so its address is there to be read.
    pub fn is_own(&mut self, conn: &Connection) -> bool {
        if conn.local.is_none_or(|local| local.port() != self.port) {
            return false;
        }
        // A dual-stack listener sees an IPv4 client as IPv4-mapped IPv6.
        let Some(remote) = conn.remote.map(canonical) else { return false };
        if remote.ip().is_loopback() && conn.netns != self.netns {
            return false;
        }
        if self.local_addrs.contains(&remote) {
            return true;
        }
        self.local_addrs = own_socket_addrs();
        self.local_addrs.contains(&remote)
    }
}

fn own_netns() -> Option<u32> {
    let link = std::fs::read_link("/proc/self/ns/net").ok()?;
    let text = link.to_str()?;
    text.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

/// Local addresses of kspan's IP sockets, from its open descriptors.
fn own_socket_addrs() -> Vec<SocketAddr> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return Vec::new() };
    dir.flatten()
        .filter_map(|entry| {
            let fd: i32 = entry.file_name().to_str()?.parse().ok()?;
            is_socket(&entry.path()).then(|| local_addr(fd)).flatten()
        })
        .take(MAX_OWN_SOCKETS)
        .collect()
}

fn is_socket(fd_link: &Path) -> bool {
    std::fs::read_link(fd_link).is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
}

/// The socket's bound address; `None` for non-IP sockets. The descriptor
/// may have been closed (even reused) since it was listed: the worst that
/// does is a wrong or missing address for one look.
fn local_addr(fd: i32) -> Option<SocketAddr> {
    // SAFETY: sockaddr_storage is plain data, large enough for any family,
    // and getsockname writes at most `len` bytes into it.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let rc = unsafe { libc::getsockname(fd, (&raw mut storage).cast(), &mut len) };
    if rc != 0 {
        return None;
    }
    let addr = match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin: libc::sockaddr_in = unsafe { std::ptr::read((&raw const storage).cast()) };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            SocketAddr::new(IpAddr::V4(ip), u16::from_be(sin.sin_port))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6: libc::sockaddr_in6 = unsafe { std::ptr::read((&raw const storage).cast()) };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            SocketAddr::new(IpAddr::V6(ip), u16::from_be(sin6.sin6_port))
        }
        _ => return None,
    };
    Some(canonical(addr))
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};

    use kspan_common::Role;

    use super::*;

    fn server_conn(local: SocketAddr, remote: SocketAddr, netns: u32) -> Connection {
        Connection {
            id: 1,
            pid: 2,
            fd: 3,
            role: Role::Server,
            local: Some(local),
            remote: Some(remote),
            netns,
            mid_stream: false,
            opened_ns: 0,
            tls: false,
            kspan_export: false,
        }
    }

    #[test]
    fn knows_its_own_client_sockets_and_nothing_else() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server_addr = listener.local_addr().unwrap();
        let mut own = OwnExport::new(server_addr.port());
        let client = TcpStream::connect(server_addr).unwrap();
        let (_accepted, client_addr) = listener.accept().unwrap();
        assert!(own.is_own(&server_conn(server_addr, client_addr, own.netns)));
        let mapped = |a: SocketAddr| match a.ip() {
            IpAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), a.port()),
            IpAddr::V6(_) => a,
        };
        assert!(own.is_own(&server_conn(mapped(server_addr), mapped(client_addr), own.netns)), "dual-stack listener");

        // Another process's client: an address none of our sockets has.
        let stranger = SocketAddr::new("127.0.0.2".parse().unwrap(), client_addr.port());
        assert!(!own.is_own(&server_conn(server_addr, stranger, own.netns)));
        // The same loopback address in another namespace is someone else.
        assert!(!own.is_own(&server_conn(server_addr, client_addr, own.netns.wrapping_add(1))));
        // Another port than the endpoint's is never looked at.
        let other_port: SocketAddr = format!("127.0.0.1:{}", server_addr.port().wrapping_add(1)).parse().unwrap();
        assert!(!own.is_own(&server_conn(other_port, client_addr, own.netns)));
        drop(client);
    }
}
