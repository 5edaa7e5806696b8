//! Recognises the collector's end of kspan's own export connections.
//!
//! kspan never traces itself, but a collector on the same host is just
//! another process: without this, each export would come back as a
//! collector SERVER span, exported in the next batch, forever; and a user
//! counting their service's spans would find the collector's among them.
//! (Beyla excludes collector processes by name for the same reason; this
//! only skips kspan's own connections, so apps exporting to the same
//! collector are still traced.)

use std::mem::ManuallyDrop;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{FromRawFd, RawFd};
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
        let netns = crate::process::netns_inode(Path::new("/proc"), std::process::id());
        Self { port, netns: netns.and_then(|n| u32::try_from(n).ok()).unwrap_or(0), local_addrs: Vec::new() }
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

/// Local addresses of kspan's IP sockets, from its open descriptors.
fn own_socket_addrs() -> Vec<SocketAddr> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return Vec::new() };
    dir.flatten()
        .filter_map(|entry| local_addr(entry.file_name().to_str()?.parse().ok()?))
        .take(MAX_OWN_SOCKETS)
        .collect()
}

/// The socket's bound address; `None` for a descriptor that is not an IP
/// socket (getsockname fails, or names another family). The descriptor may
/// have been closed (even reused) since it was listed: the worst that does
/// is a wrong or missing address for one look.
fn local_addr(fd: RawFd) -> Option<SocketAddr> {
    // SAFETY: the stream is never dropped, so the descriptor, which kspan
    // does not own here, is not closed; it is only asked its address.
    let socket = ManuallyDrop::new(unsafe { TcpStream::from_raw_fd(fd) });
    socket.local_addr().ok().map(canonical)
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, TcpListener};

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
