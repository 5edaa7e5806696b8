//! TCP sockets as procfs shows them: for connections that existed before
//! kspan started, or whose accept/connect kspan did not see.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use crate::process::{ProcError, netns_inode};

/// Kernel TCP state (`st` column, `include/net/tcp_states.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TcpState {
    Established,
    SynSent,
    SynRecv,
    FinWait1,
    FinWait2,
    TimeWait,
    Close,
    CloseWait,
    LastAck,
    Listen,
    Closing,
    NewSynRecv,
    /// A state newer kernels may add.
    Unknown(u8),
}

impl TcpState {
    fn from_code(code: u8) -> Self {
        use TcpState::*;
        match code {
            1 => Established,
            2 => SynSent,
            3 => SynRecv,
            4 => FinWait1,
            5 => FinWait2,
            6 => TimeWait,
            7 => Close,
            8 => CloseWait,
            9 => LastAck,
            10 => Listen,
            11 => Closing,
            12 => NewSynRecv,
            other => Unknown(other),
        }
    }
}

/// One row of `/proc/PID/net/tcp` or `tcp6`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketEntry {
    /// This end, as bound (`0.0.0.0`/`::` for wildcard listeners).
    pub local: SocketAddr,
    /// `0.0.0.0:0` / `[::]:0` for a listening socket.
    pub remote: SocketAddr,
    pub state: TcpState,
    /// Socket inode, as in the `socket:[N]` fd link; 0 for TIME_WAIT and
    /// other sockets no longer owned by a file.
    pub inode: u64,
}

/// Parses the text of `/proc/PID/net/tcp` (`v6 == false`) or `tcp6`.
/// Header and malformed lines are skipped. IPv4-mapped addresses in `tcp6`
/// stay IPv6 (`::ffff:127.0.0.1`), as the kernel has them.
pub fn parse_proc_net_tcp(text: &str, v6: bool) -> Vec<SocketEntry> {
    text.lines().filter_map(|line| parse_line(line, v6)).collect()
}

fn parse_line(line: &str, v6: bool) -> Option<SocketEntry> {
    let mut f = line.split_ascii_whitespace();
    // The header's first column is "sl"; rows start with "N:".
    f.next()?.strip_suffix(':')?.parse::<u32>().ok()?;
    let local = parse_addr(f.next()?, v6)?;
    let remote = parse_addr(f.next()?, v6)?;
    let state = TcpState::from_code(u8::try_from(hex(f.next()?)?).ok()?);
    // Skip tx:rx queue, tr:when, retrnsmt, uid, timeout.
    let inode = f.nth(5)?.parse().ok()?;
    Some(SocketEntry { local, remote, state, inode })
}

/// `u32::from_str_radix` alone would accept a leading `+`.
fn hex(s: &str) -> Option<u32> {
    let ok = !s.is_empty() && s.len() <= 8 && s.bytes().all(|b| b.is_ascii_hexdigit());
    ok.then(|| u32::from_str_radix(s, 16).ok()).flatten()
}

/// The kernel prints each 32-bit word of the address as a host-order
/// integer (`%08X` of a `__be32`), so the word's native bytes are the
/// address bytes in network order. The port is printed as a plain number.
fn parse_addr(s: &str, v6: bool) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::try_from(hex(port)?).ok()?;
    let ip = if v6 {
        if ip.len() != 32 {
            return None;
        }
        let mut bytes = [0u8; 16];
        for (i, chunk) in bytes.chunks_exact_mut(4).enumerate() {
            chunk.copy_from_slice(&hex(ip.get(i * 8..i * 8 + 8)?)?.to_ne_bytes());
        }
        IpAddr::V6(Ipv6Addr::from(bytes))
    } else {
        if ip.len() != 8 {
            return None;
        }
        IpAddr::V4(Ipv4Addr::from(hex(ip)?.to_ne_bytes()))
    };
    Some(SocketAddr::new(ip, port))
}

/// Inode of the socket behind fd `fd` of `pid` (readlink gives
/// `socket:[N]`); `None` for non-sockets, closed fds, vanished processes.
pub fn socket_inode_of_fd(proc_root: &Path, pid: u32, fd: i32) -> Option<u64> {
    let link = fs::read_link(proc_root.join(pid.to_string()).join("fd").join(fd.to_string())).ok()?;
    socket_link_inode(link.to_str()?)
}

fn socket_link_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// Reads `/proc/PID/net/tcp` then `tcp6` (the tables of the process's own
/// netns), stopping early once `want` accepts an entry.
fn scan_tables(proc_root: &Path, pid: u32, mut want: impl FnMut(&SocketEntry) -> bool) -> Result<(), ProcError> {
    let net = proc_root.join(pid.to_string()).join("net");
    for (name, v6) in [("tcp", false), ("tcp6", true)] {
        let path = net.join(name);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            // No tcp6 at all when IPv6 is disabled; tcp was there, so the
            // process is still alive.
            Err(e) if v6 && e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(ProcError::from_io(pid, &path, e)),
        };
        if text.lines().filter_map(|l| parse_line(l, v6)).any(|e| want(&e)) {
            return Ok(());
        }
    }
    Ok(())
}

/// The TCP socket with inode `inode`, looked up in `pid`'s netns.
/// `Ok(None)` if it is not a TCP socket (or is already gone).
pub fn find_socket(proc_root: &Path, pid: u32, inode: u64) -> Result<Option<SocketEntry>, ProcError> {
    let mut found = None;
    if inode != 0 {
        scan_tables(proc_root, pid, |e| {
            let hit = e.inode == inode;
            if hit {
                found = Some(*e);
            }
            hit
        })?;
    }
    Ok(found)
}

/// Addresses with a LISTEN socket in `pid`'s netns. A connection whose local
/// port is among them is most likely the server side. Wildcard listeners
/// appear as `0.0.0.0` / `::`, so callers matching a connection should also
/// try the unspecified address.
pub fn listening_ports(proc_root: &Path, pid: u32) -> Result<HashSet<(IpAddr, u16)>, ProcError> {
    let mut out = HashSet::new();
    scan_tables(proc_root, pid, |e| {
        if e.state == TcpState::Listen {
            out.insert((e.local.ip(), e.local.port()));
        }
        false
    })?;
    Ok(out)
}

/// Pids (sorted) holding a socket fd that listens on a port in `ports` or
/// is an established connection to a remote port in `ports`.
///
/// Processes kspan may not inspect are skipped quietly. The tcp tables are
/// read once per network namespace, not once per pid; the fd walk is only
/// done for pids whose netns has a matching socket at all.
/// `roots` and every process descending from them, from each process's
/// parent in `/proc/<pid>/stat`.
pub fn with_descendants(proc_root: &Path, roots: &[u32]) -> Vec<u32> {
    let mut out: Vec<u32> = roots.to_vec();
    if roots.is_empty() {
        return out;
    }
    let parents: Vec<(u32, u32)> = crate::process::pids(proc_root)
        .into_iter()
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
            let (_, ppid, _) = crate::process::parse_stat(&stat)?;
            Some((pid, ppid))
        })
        .collect();
    // Breadth-first over generations; `out` doubles as the visited set.
    let mut frontier = 0;
    while frontier < out.len() {
        let parent = out[frontier];
        frontier += 1;
        for &(pid, ppid) in &parents {
            if ppid == parent && !out.contains(&pid) {
                out.push(pid);
            }
        }
    }
    out
}

pub fn pids_listening_or_connected_on(proc_root: &Path, ports: &PortSet) -> Vec<u32> {
    let dir = match fs::read_dir(proc_root) {
        Ok(dir) => dir,
        Err(e) => {
            tracing::warn!(path = %proc_root.display(), error = %e, "cannot list processes");
            return Vec::new();
        }
    };
    let mut all: Vec<u32> = dir.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect();
    all.sort_unstable();
    let mut by_netns: HashMap<u64, HashSet<u64>> = HashMap::new();
    let mut pids = Vec::new();
    for pid in all {
        // ns/net and fd need the same ptrace access, so without the one we
        // would not get the other either.
        let Some(ns) = netns_inode(proc_root, pid) else {
            continue;
        };
        let matching = match by_netns.entry(ns) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let mut set = HashSet::new();
                let scanned = scan_tables(proc_root, pid, |e| {
                    let hit = (e.state == TcpState::Listen && ports.contains(e.local.port()))
                        || (e.state == TcpState::Established && ports.contains(e.remote.port()));
                    if hit && e.inode != 0 {
                        set.insert(e.inode);
                    }
                    false
                });
                if scanned.is_err() {
                    continue;
                }
                v.insert(set)
            }
        };
        if !matching.is_empty() && socket_inodes(proc_root, pid).any(|i| matching.contains(&i)) {
            pids.push(pid);
        }
    }
    pids
}

fn socket_inodes(proc_root: &Path, pid: u32) -> impl Iterator<Item = u64> {
    let fd_dir = proc_root.join(pid.to_string()).join("fd");
    fs::read_dir(fd_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|fd| socket_link_inode(fs::read_link(fd.path()).ok()?.to_str()?))
}

/// A set of TCP ports, e.g. from `--open-ports 80,443,8000-8999`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSet {
    /// Sorted, non-overlapping, non-adjacent inclusive ranges.
    ranges: Vec<(u16, u16)>,
}

/// Why a port list did not parse; each names the offending entry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PortSetError {
    #[error("empty port list")]
    Empty,
    #[error("empty entry in port list {0:?}")]
    EmptyEntry(String),
    #[error("{0:?} is not a port number or range (like 80 or 8000-8999)")]
    Syntax(String),
    #[error("port 0 in {0:?} is not a valid port")]
    Zero(String),
    #[error("port in {0:?} is larger than 65535")]
    TooLarge(String),
    #[error("range {0:?} is reversed (start greater than end)")]
    Reversed(String),
}

impl PortSet {
    /// Parses comma-separated ports and inclusive `a-b` ranges; whitespace
    /// around entries is allowed.
    pub fn parse(spec: &str) -> Result<Self, PortSetError> {
        if spec.trim().is_empty() {
            return Err(PortSetError::Empty);
        }
        let mut ranges = Vec::new();
        for raw in spec.split(',') {
            let entry = raw.trim();
            if entry.is_empty() {
                return Err(PortSetError::EmptyEntry(spec.to_owned()));
            }
            let port = |s: &str| -> Result<u16, PortSetError> {
                let s = s.trim();
                if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(PortSetError::Syntax(entry.to_owned()));
                }
                match s.parse::<u16>() {
                    Ok(0) => Err(PortSetError::Zero(entry.to_owned())),
                    Ok(p) => Ok(p),
                    Err(_) => Err(PortSetError::TooLarge(entry.to_owned())),
                }
            };
            let (lo, hi) = match entry.split_once('-') {
                Some((a, b)) => (port(a)?, port(b)?),
                None => (port(entry)?, port(entry)?),
            };
            if lo > hi {
                return Err(PortSetError::Reversed(entry.to_owned()));
            }
            ranges.push((lo, hi));
        }
        ranges.sort_unstable();
        let mut merged: Vec<(u16, u16)> = Vec::with_capacity(ranges.len());
        for (lo, hi) in ranges {
            match merged.last_mut() {
                Some(last) if u32::from(lo) <= u32::from(last.1) + 1 => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        Ok(Self { ranges: merged })
    }

    /// Whether `port` is in the set.
    pub fn contains(&self, port: u16) -> bool {
        let i = self.ranges.partition_point(|&(_, hi)| hi < port);
        self.ranges.get(i).is_some_and(|&(lo, _)| lo <= port)
    }

    /// Every port in the set, ascending.
    pub fn iter_ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.ranges.iter().flat_map(|&(lo, hi)| lo..=hi)
    }
}

impl fmt::Display for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, &(lo, hi)) in self.ranges.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            if lo == hi { write!(f, "{sep}{lo}")? } else { write!(f, "{sep}{lo}-{hi}")? }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descendants_of_a_root_span_generations_and_odd_comms() {
        let dir = std::env::temp_dir().join(format!("kspan-desc-{}", std::process::id()));
        // 10 -> 11 -> 12; 20 unrelated; comm with ") (" must not confuse.
        for (pid, ppid, comm) in [(10, 1, "nginx"), (11, 10, "nginx: worker ) 3"), (12, 11, "sh"), (20, 1, "x")] {
            std::fs::create_dir_all(dir.join(pid.to_string())).unwrap();
            let stat = format!("{pid} ({comm}) S {ppid} 1 1 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 4242 1 2 3");
            std::fs::write(dir.join(format!("{pid}/stat")), stat).unwrap();
        }
        let mut got = with_descendants(&dir, &[10]);
        got.sort();
        assert_eq!(got, vec![10, 11, 12]);
        assert!(with_descendants(&dir, &[]).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::symlink;
    use std::path::PathBuf;

    // Captured from /proc/net/tcp{,6} on x86_64 (python http.servers on
    // 8765/8766 plus clients), so the address layout is the little-endian one.
    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1677 1 00000000608fee1b 100 0 0 10 0
   1: 0100007F:223E 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 16822 1 000000004eb4871f 100 0 0 10 0
   2: 0100007F:223E 0100007F:D9BE 01 00000000:00000000 00:00000000 00000000     0        0 16844 1 0000000015b5e79f 20 0 0 10 -1
   3: 0100007F:A704 0100007F:223D 01 00000000:00000000 00:00000000 00000000     0        0 16843 2 0000000096dda7f8 20 0 0 10 -1
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:223D 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 15732 1 000000009fd687ee 100 0 0 10 0
   1: 00000000000000000000000001000000:854E 00000000000000000000000001000000:223D 01 00000000:00000000 00:00000000 00000000     0        0 16842 2 000000003d8267c9 20 0 0 10 -1
   3: 0000000000000000FFFF00000100007F:223D 0000000000000000FFFF00000100007F:A704 01 00000000:00000000 00:00000000 00000000     0        0 15748 1 00000000d9dc64d5 20 0 0 10 -1
";

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn parses_real_tables() {
        let v4 = parse_proc_net_tcp(TCP, false);
        assert_eq!(v4.len(), 4);
        assert_eq!(
            v4[0],
            SocketEntry { local: sa("0.0.0.0:2024"), remote: sa("0.0.0.0:0"), state: TcpState::Listen, inode: 1677 }
        );
        assert_eq!(
            v4[2],
            SocketEntry {
                local: sa("127.0.0.1:8766"),
                remote: sa("127.0.0.1:55742"),
                state: TcpState::Established,
                inode: 16844,
            }
        );
        let v6 = parse_proc_net_tcp(TCP6, true);
        assert_eq!(v6.len(), 3);
        assert_eq!((v6[0].local, v6[0].state), (sa("[::]:8765"), TcpState::Listen));
        assert_eq!((v6[1].local, v6[1].remote, v6[1].inode), (sa("[::1]:34126"), sa("[::1]:8765"), 16842));
        assert_eq!(v6[2].local, sa("[::ffff:127.0.0.1]:8765"));
        assert_eq!(v6[2].remote, sa("[::ffff:127.0.0.1]:42756"));
    }

    #[test]
    fn skips_garbage() {
        let good = "   9: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  0  0 77 1";
        let text = format!(
            "\ngarbage\n   0: 0100007F:1F90\n   1: 0100007F:1F90 00000000:0000 0A\n   2: +100007F:1F90 00000000:0000 0A 0 0 0 0 0 5\n   \
             3: 0100007F:1F90 00000000:0000 ZZ 0 0 0 0 0 5\n   4: 0100007F:11F90 00000000:0000 0A 0 0 0 0 0 5\n   \
             5: 0100007F:1F90 00000000:0000 0A 0 0 0 0 0 x\n   x: 0100007F:1F90 00000000:0000 0A 0 0 0 0 0 5\n{good}\n\u{0}\u{ff}"
        );
        let entries = parse_proc_net_tcp(&text, false);
        assert_eq!(entries.len(), 1);
        assert_eq!((entries[0].inode, entries[0].local.port()), (77, 8080));
        assert!(parse_proc_net_tcp(&text, true).is_empty(), "v4 rows are not v6 rows");
        assert!(parse_proc_net_tcp(TCP6, false).is_empty());
        assert_eq!(TcpState::from_code(0x0C), TcpState::NewSynRecv);
        assert_eq!(TcpState::from_code(0x42), TcpState::Unknown(0x42));
    }

    #[test]
    fn port_sets() {
        let set = PortSet::parse(" 8000-8999, 80,443 ,8443-8443,8999-9001, 79").unwrap();
        assert_eq!(set.to_string(), "79-80,443,8000-9001");
        assert!(set.contains(79) && set.contains(80) && set.contains(8500) && set.contains(9001));
        assert!(!set.contains(81) && !set.contains(1) && !set.contains(9002) && !set.contains(65535));
        assert_eq!(set.iter_ports().count(), 2 + 1 + 1002);
        assert_eq!(PortSet::parse("65535").unwrap().iter_ports().collect::<Vec<_>>(), [65535]);
        assert_eq!(PortSet::parse("1-65535").unwrap().iter_ports().count(), 65535);
        use PortSetError::*;
        let errs = [
            ("", Empty),
            (" ", Empty),
            ("80,,443", EmptyEntry("80,,443".into())),
            ("80,", EmptyEntry("80,".into())),
            ("http", Syntax("http".into())),
            ("+80", Syntax("+80".into())),
            ("-5", Syntax("-5".into())),
            ("1-2-3", Syntax("1-2-3".into())),
            ("0", Zero("0".into())),
            ("0-10", Zero("0-10".into())),
            ("65536", TooLarge("65536".into())),
            ("1-99999999999999999999999", TooLarge("1-99999999999999999999999".into())),
            ("9000-8000", Reversed("9000-8000".into())),
        ];
        for (spec, want) in errs {
            assert_eq!(PortSet::parse(spec), Err(want), "{spec:?}");
        }
        assert_eq!(
            Reversed("9000-8000".into()).to_string(),
            "range \"9000-8000\" is reversed (start greater than end)"
        );
    }

    #[test]
    fn live_sockets_of_this_process() {
        let proc = Path::new("/proc");
        let pid = std::process::id();
        let mut addrs = vec!["127.0.0.1:0"];
        if TcpListener::bind("[::1]:0").is_ok() {
            addrs.push("[::1]:0");
        }
        for addr in addrs {
            let listener = TcpListener::bind(addr).unwrap();
            let server = listener.local_addr().unwrap();
            let client = TcpStream::connect(server).unwrap();
            let (_accepted, _) = listener.accept().unwrap();

            let l_inode = socket_inode_of_fd(proc, pid, listener.as_raw_fd()).unwrap();
            let l = find_socket(proc, pid, l_inode).unwrap().unwrap();
            assert_eq!((l.local, l.state), (server, TcpState::Listen));

            let c_inode = socket_inode_of_fd(proc, pid, client.as_raw_fd()).unwrap();
            let c = find_socket(proc, pid, c_inode).unwrap().unwrap();
            assert_eq!((c.local, c.remote, c.state), (client.local_addr().unwrap(), server, TcpState::Established));

            assert!(listening_ports(proc, pid).unwrap().contains(&(server.ip(), server.port())));
            let ports = PortSet::parse(&server.port().to_string()).unwrap();
            assert!(pids_listening_or_connected_on(proc, &ports).contains(&pid), "{addr}");
        }
        assert_eq!(socket_inode_of_fd(proc, pid, 99_999), None);
        assert_eq!(find_socket(proc, pid, 0).unwrap(), None);
        assert_eq!(find_socket(proc, pid, u64::MAX).unwrap(), None);
    }

    struct Fixture(PathBuf);
    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
    impl Fixture {
        fn put(&self, rel: &str, content: &str) {
            let path = self.0.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, content).unwrap();
        }
        fn link(&self, rel: &str, target: &str) {
            let path = self.0.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            symlink(target, path).unwrap();
        }
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn finds_pids_in_fixture_tree() {
        let fx = Fixture(std::env::temp_dir().join(format!("kspan-conntrack-{}", std::process::id())));
        let _ = fs::remove_dir_all(&fx.0);
        // pid 10: the 8766 listener (inode 16822). pid 11, same netns, holds
        // the client of 8765 (16843) but has no net/ of its own: finding it
        // proves the tables were read once per netns. pid 12 only holds a
        // socket that matches nothing; pid 13 is in a netns whose tcp6
        // holds the 8765 listener (15732); pid 14 has no readable ns.
        for (pid, ns, fds) in
            [(10, 1, &[16822, 1677][..]), (11, 1, &[16843]), (12, 1, &[5]), (13, 2, &[15732]), (14, 0, &[16822])]
        {
            if ns != 0 {
                fx.link(&format!("{pid}/ns/net"), &format!("net:[{ns}]"));
            }
            for (fd, inode) in fds.iter().enumerate() {
                fx.link(&format!("{pid}/fd/{}", fd + 3), &format!("socket:[{inode}]"));
            }
            fx.link(&format!("{pid}/fd/0"), "/dev/null");
        }
        for pid in [10, 14] {
            fx.put(&format!("{pid}/net/tcp"), TCP);
        }
        fx.put("13/net/tcp", "");
        fx.put("13/net/tcp6", TCP6);
        fx.put("self/net/tcp", TCP);
        fs::create_dir_all(fx.0.join("99")).unwrap();

        let found = |spec: &str| pids_listening_or_connected_on(&fx.0, &PortSet::parse(spec).unwrap());
        assert_eq!(found("8765"), [11, 13]);
        assert_eq!(found("8766"), [10]);
        assert_eq!(found("2024,8765-8766"), [10, 11, 13]);
        assert!(found("55742").is_empty(), "ESTABLISHED only matches on the remote port");
        assert!(found("1-7").is_empty());

        assert_eq!(socket_inode_of_fd(&fx.0, 10, 3), Some(16822));
        assert_eq!(socket_inode_of_fd(&fx.0, 10, 0), None);
        assert_eq!(find_socket(&fx.0, 13, 15732).unwrap().map(|e| e.local), Some(sa("[::]:8765")));
        // tcp6 missing (IPv6 disabled) is not an error.
        assert_eq!(find_socket(&fx.0, 10, 15732).unwrap(), None);
        let listening = listening_ports(&fx.0, 10).unwrap();
        assert_eq!(listening, HashSet::from([(sa("0.0.0.0:0").ip(), 2024), (sa("127.0.0.1:0").ip(), 8766)]));
        assert!(find_socket(&fx.0, 77, 1).unwrap_err().is_gone());
        assert!(listening_ports(&fx.0, 11).unwrap_err().is_gone());
    }
}
