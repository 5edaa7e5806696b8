//! The user-space connection table: (pid, fd) -> connection, fed by the
//! kernel's open/close records. Connections the kernel met mid-life (no
//! connect/accept seen) get their role and, if needed, their addresses from
//! procfs.

mod own;
pub mod procfs;

use std::{
    collections::HashSet,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
};

use kspan_common::{Call, Role};
use rustc_hash::FxHashMap;

use crate::capture::decode::ConnRecord;

/// One TCP connection as one process sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub id: u64,
    pub pid: u32,
    pub fd: i32,
    pub role: Role,
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
    pub netns: u32,
    /// The connection predates kspan (or its accept/connect was missed).
    pub mid_stream: bool,
    pub opened_ns: u64,
    /// Its bytes come decrypted from a TLS library: what the socket itself
    /// carries is ciphertext.
    pub tls: bool,
    /// A collector's end of kspan's own export connection: not traced.
    pub kspan_export: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConnStats {
    pub opened: u64,
    pub closed: u64,
    /// Opens that replaced a still-open entry on the same (pid, fd): a close
    /// we never saw.
    pub replaced: u64,
    pub evicted: u64,
    pub resolved_from_procfs: u64,
    /// Connections first met after their socket was torn down.
    pub dead_on_arrival: u64,
}

pub struct ConnTable {
    by_id: FxHashMap<u64, Connection>,
    by_fd: FxHashMap<(u32, i32), u64>,
    /// (local, remote) of every connection with both addresses known, to
    /// tell whether a connection's other end is traced here too.
    by_tuple: FxHashMap<(SocketAddr, SocketAddr), u64>,
    capacity: usize,
    proc_root: PathBuf,
    /// LISTEN sockets per network namespace when kspan started. A
    /// connection that predates kspan was accepted from a listener that
    /// existed then, even if it is closed by the time we resolve it.
    startup_listeners: FxHashMap<u64, HashSet<(IpAddr, u16)>>,
    own_export: Option<own::OwnExport>,
    pub stats: ConnStats,
}

impl ConnTable {
    /// `capacity` bounds memory: past it the oldest connection is evicted.
    pub fn new(capacity: usize, proc_root: &Path) -> Self {
        Self {
            by_id: FxHashMap::default(),
            by_fd: FxHashMap::default(),
            by_tuple: FxHashMap::default(),
            capacity: capacity.max(1),
            proc_root: proc_root.to_owned(),
            startup_listeners: FxHashMap::default(),
            own_export: None,
            stats: ConnStats::default(),
        }
    }

    /// kspan exports to a collector listening on `port`: that collector's
    /// end of kspan's own connections will be marked `kspan_export`.
    pub fn recognise_own_export(&mut self, port: u16) {
        self.own_export = Some(own::OwnExport::new(port));
    }

    /// Records the listeners of every network namespace (one procfs read
    /// per namespace).
    pub fn snapshot_listeners(&mut self) {
        for pid in crate::process::pids(&self.proc_root) {
            let Some(netns) = crate::process::netns_inode(&self.proc_root, pid) else { continue };
            if self.startup_listeners.contains_key(&netns) {
                continue;
            }
            if let Ok(listening) = procfs::listening_ports(&self.proc_root, pid) {
                self.startup_listeners.insert(netns, listening);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn get(&self, id: u64) -> Option<&Connection> {
        self.by_id.get(&id)
    }

    /// Plaintext from a TLS library arrived for connection `id`.
    pub fn mark_tls(&mut self, id: u64) {
        if let Some(conn) = self.by_id.get_mut(&id) {
            conn.tls = true;
        }
    }

    /// Whether the other end of `conn` is a connection kspan also tracks:
    /// both ends are traced processes on this host.
    pub fn peer_tracked(&self, conn: &Connection) -> bool {
        match tuple_of(conn) {
            Some((local, remote)) => self.by_tuple.contains_key(&(remote, local)),
            // Addresses unknown: assume it may be, as before.
            None => true,
        }
    }

    pub fn by_fd(&self, pid: u32, fd: i32) -> Option<&Connection> {
        self.by_fd.get(&(pid, fd)).and_then(|id| self.by_id.get(id))
    }

    /// Records a connection. Returns the connection that was displaced from
    /// the same (pid, fd), if any: the caller must finish its streams, which
    /// can never be mixed with the new one's.
    pub fn open(&mut self, rec: &ConnRecord) -> Option<Connection> {
        let mut conn = Connection {
            id: rec.conn_id,
            pid: rec.tgid,
            fd: rec.fd,
            role: rec.role,
            local: rec.local,
            remote: rec.remote,
            netns: rec.netns,
            mid_stream: rec.call == Call::FirstData,
            opened_ns: rec.ts_ns,
            tls: false,
            kspan_export: false,
        };
        if conn.role == Role::Unknown || conn.local.is_none() {
            self.resolve_from_procfs(&mut conn, rec.inode);
        }
        if conn.role == Role::Server
            && let Some(own) = &mut self.own_export
        {
            conn.kspan_export = own.is_own(&conn);
        }
        let displaced = self.by_fd.insert((conn.pid, conn.fd), conn.id).and_then(|old| {
            if old == conn.id {
                return None;
            }
            self.stats.replaced += 1;
            self.by_id.remove(&old)
        });
        if self.by_id.len() >= self.capacity {
            self.evict_oldest();
        }
        self.stats.opened += 1;
        if let Some(tuple) = tuple_of(&conn) {
            self.by_tuple.insert(tuple, conn.id);
        }
        self.by_id.insert(conn.id, conn);
        displaced
    }

    pub fn close(&mut self, conn_id: u64) -> Option<Connection> {
        let conn = self.by_id.remove(&conn_id)?;
        if self.by_fd.get(&(conn.pid, conn.fd)) == Some(&conn_id) {
            self.by_fd.remove(&(conn.pid, conn.fd));
        }
        if let Some(tuple) = tuple_of(&conn)
            && self.by_tuple.get(&tuple) == Some(&conn_id)
        {
            self.by_tuple.remove(&tuple);
        }
        self.stats.closed += 1;
        Some(conn)
    }

    /// Drops every connection of an exited process.
    pub fn remove_process(&mut self, pid: u32) -> Vec<Connection> {
        let ids: Vec<u64> = self.by_id.values().filter(|c| c.pid == pid).map(|c| c.id).collect();
        ids.into_iter().filter_map(|id| self.close(id)).collect()
    }

    fn evict_oldest(&mut self) {
        if let Some(oldest) = self.by_id.values().min_by_key(|c| c.opened_ns).map(|c| c.id) {
            self.close(oldest);
            self.stats.evicted += 1;
        }
    }

    /// A connection already established when we met it: its addresses come
    /// from the socket inode, its role from whether its local port listens.
    fn resolve_from_procfs(&mut self, conn: &mut Connection, inode: u64) {
        // A socket the kernel already unhashed (reset, or closed by the
        // peer and torn down) shows local port 0. It is in no procfs table,
        // and reading those tables costs milliseconds: a burst of resets
        // must not turn into a burst of full table scans.
        if conn.local.is_some_and(|a| a.port() == 0) {
            self.stats.dead_on_arrival += 1;
            return;
        }
        if conn.local.is_none() && inode != 0 {
            if let Ok(Some(entry)) = procfs::find_socket(&self.proc_root, conn.pid, inode) {
                conn.local = Some(entry.local);
                conn.remote = Some(entry.remote);
                self.stats.resolved_from_procfs += 1;
            }
        }
        if conn.role == Role::Unknown {
            if let Some(local) = conn.local {
                let serves = |set: &HashSet<(IpAddr, u16)>| {
                    set.iter().any(|(ip, port)| *port == local.port() && (ip.is_unspecified() || *ip == local.ip()))
                };
                let at_startup = self.startup_listeners.get(&u64::from(conn.netns)).is_some_and(serves);
                let now = procfs::listening_ports(&self.proc_root, conn.pid).is_ok_and(|set| serves(&set));
                conn.role = if at_startup || now { Role::Server } else { Role::Client };
                self.stats.resolved_from_procfs += 1;
            }
        }
    }
}

/// An address with IPv4-mapped IPv6 shown as IPv4, so the two ends of a
/// connection (one socket dual-stack, the other not) name it alike.
pub fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// A connection's canonical (local, remote).
fn tuple_of(conn: &Connection) -> Option<(SocketAddr, SocketAddr)> {
    Some((canonical(conn.local?), canonical(conn.remote?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(conn_id: u64, pid: u32, fd: i32, role: Role, remote: &str) -> ConnRecord {
        ConnRecord {
            tgid: pid,
            tid: pid,
            fd,
            conn_id,
            role,
            call: if role == Role::Client { Call::Connect } else { Call::Accept },
            ts_ns: conn_id,
            inode: 0,
            netns: 1,
            local: Some("127.0.0.1:5000".parse().unwrap()),
            remote: Some(remote.parse().unwrap()),
            comm: String::new(),
        }
    }

    #[test]
    fn fd_reuse_never_mixes_connections() {
        let mut t = ConnTable::new(16, Path::new("/proc"));
        assert!(t.open(&rec(1, 10, 4, Role::Client, "10.0.0.1:80")).is_none());
        // close was missed; the fd now names another connection
        let displaced = t.open(&rec(2, 10, 4, Role::Server, "[::1]:9000")).expect("old one displaced");
        assert_eq!(displaced.id, 1);
        assert_eq!(t.by_fd(10, 4).map(|c| c.id), Some(2));
        assert!(t.get(1).is_none());
        assert_eq!(t.stats.replaced, 1);
        // a late close of the old id must not unlink the new one
        assert!(t.close(1).is_none());
        assert_eq!(t.by_fd(10, 4).map(|c| c.id), Some(2));
        assert_eq!(t.close(2).map(|c| c.remote), Some(Some("[::1]:9000".parse().unwrap())));
        assert!(t.by_fd(10, 4).is_none());
    }

    #[test]
    fn ipv6_addresses_kept() {
        let mut t = ConnTable::new(16, Path::new("/proc"));
        let mut r = rec(5, 1, 3, Role::Client, "[2001:db8::1]:443");
        r.local = Some("[fe80::2]:50000".parse().unwrap());
        t.open(&r);
        let c = t.get(5).unwrap();
        assert!(c.remote.unwrap().is_ipv6() && c.local.unwrap().is_ipv6());
    }

    #[test]
    fn bounded_by_evicting_oldest() {
        let mut t = ConnTable::new(3, Path::new("/proc"));
        for id in 1..=5 {
            t.open(&rec(id, 1, id as i32, Role::Client, "10.0.0.1:80"));
        }
        assert_eq!(t.len(), 3);
        assert!(t.get(1).is_none() && t.get(2).is_none() && t.get(5).is_some());
        assert_eq!(t.stats.evicted, 2);
    }

    #[test]
    fn process_exit_drops_its_connections() {
        let mut t = ConnTable::new(16, Path::new("/proc"));
        t.open(&rec(1, 7, 3, Role::Client, "10.0.0.1:80"));
        t.open(&rec(2, 7, 4, Role::Client, "10.0.0.1:80"));
        t.open(&rec(3, 8, 3, Role::Client, "10.0.0.1:80"));
        assert_eq!(t.remove_process(7).len(), 2);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn knows_when_both_ends_are_tracked() {
        let mut t = ConnTable::new(16, Path::new("/nonexistent-proc"));
        let mut server = rec(1, 10, 3, Role::Server, "127.0.0.1:5000");
        server.local = Some("[::ffff:127.0.0.1]:80".parse().unwrap());
        t.open(&server);
        assert!(!t.peer_tracked(t.get(1).unwrap()), "client not traced");
        let mut client = rec(2, 20, 4, Role::Client, "127.0.0.1:80");
        client.local = Some("127.0.0.1:5000".parse().unwrap());
        t.open(&client);
        assert!(t.peer_tracked(t.get(1).unwrap()));
        assert!(t.peer_tracked(t.get(2).unwrap()));
        t.close(2);
        assert!(!t.peer_tracked(t.get(1).unwrap()));
    }

    #[test]
    fn torn_down_socket_is_not_looked_up_in_procfs() {
        let mut t = ConnTable::new(16, Path::new("/nonexistent-proc"));
        let mut r = rec(1, 10, 3, Role::Unknown, "127.0.0.1:5000");
        r.call = Call::FirstData;
        r.local = Some("127.0.0.1:0".parse().unwrap());
        t.open(&r);
        assert_eq!(t.stats.dead_on_arrival, 1);
        assert_eq!(t.stats.resolved_from_procfs, 0);
        assert_eq!(t.get(1).unwrap().role, Role::Unknown);
    }

    /// A real pre-existing connection in this test process: role and
    /// addresses come from procfs.
    #[test]
    fn resolves_mid_stream_connection_from_procfs() {
        use std::os::fd::AsRawFd;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = std::net::TcpStream::connect(addr).unwrap();
        let (server, _) = listener.accept().unwrap();
        let pid = std::process::id();
        let netns = crate::process::netns_inode(Path::new("/proc"), pid).unwrap() as u32;
        let mut t = ConnTable::new(16, Path::new("/proc"));
        t.snapshot_listeners();
        // The listener is gone by the time the connection is resolved (a
        // short-lived server); the start-up snapshot still names it.
        drop(listener);
        for (id, stream, want) in [(1, &server, Role::Server), (2, &client, Role::Client)] {
            let fd = stream.as_raw_fd();
            let inode = procfs::socket_inode_of_fd(Path::new("/proc"), pid, fd).unwrap();
            let r = ConnRecord {
                tgid: pid,
                tid: pid,
                fd,
                conn_id: id,
                role: Role::Unknown,
                call: Call::FirstData,
                ts_ns: 1,
                inode,
                netns,
                local: None,
                remote: None,
                comm: String::new(),
            };
            t.open(&r);
            let c = t.get(id).unwrap();
            assert_eq!(c.role, want);
            assert_eq!(c.local, Some(stream.local_addr().unwrap()));
            assert_eq!(c.remote, Some(stream.peer_addr().unwrap()));
            assert!(c.mid_stream);
        }
    }
}
