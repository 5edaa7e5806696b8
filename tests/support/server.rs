//! Peer servers the tests talk to, and port readiness checks.

// Each integration test compiles its own copy of the harness and uses a
// subset of it; without this every test binary would warn about the rest.
#![allow(dead_code, unused_imports)]

use super::*;

/// How [`Server::spawn_with`] decides a peer is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// A TCP socket in LISTEN on the port, seen in /proc/<child>/net/tcp{,6}
    /// (the child's own network namespace). Sends no packet, so a kspan that
    /// is already running traces no probe connection. The default.
    Listening,
    /// A TCP connect to 127.0.0.1:port succeeds. Generates a connection that
    /// kspan would see if running; use for servers that listen before they
    /// can really serve.
    Connect,
    /// A UDP socket bound to the port (/proc/<child>/net/udp{,6}).
    UdpBound,
}

/// A peer server process, killed (with its descendants) on Drop.
pub struct Server {
    child: Child,
    port: u16,
    log: PathBuf,
    dir: TempDir,
}

impl Server {
    /// Spawns `cmd` (its stdout/stderr are redirected to a log file) and
    /// waits until something in its network namespace listens on TCP `port`.
    pub fn spawn(cmd: Command, port: u16) -> Result<Server> {
        Self::spawn_with(cmd, port, Probe::Listening, SERVER_READY_TIMEOUT)
    }

    pub fn spawn_with(
        mut cmd: Command,
        port: u16,
        probe: Probe,
        timeout: Duration,
    ) -> Result<Server> {
        let dir = TempDir::new()?;
        let log = dir.join("server.log");
        let (so, se) = log_stdio(&log)?;
        let desc = format!("{cmd:?}");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(so)
            .stderr(se)
            .spawn()
            .with_context(|| format!("spawning peer server {desc}"))?;
        let pid = child.id();
        let mut exited = None;
        let up = wait_until(timeout, POLL, || {
            let ok = match probe {
                Probe::Listening => proc_has_socket(pid, &["tcp", "tcp6"], port, Some("0A")),
                Probe::UdpBound => proc_has_socket(pid, &["udp", "udp6"], port, None),
                Probe::Connect => connectable(port),
            };
            if !ok {
                exited = child.try_wait().ok().flatten();
            }
            ok || exited.is_some()
        });
        if up && exited.is_none() {
            return Ok(Server {
                child,
                port,
                log,
                dir,
            });
        }
        let why = match exited {
            Some(st) => format!("exited with {st}"),
            None => {
                terminate(&mut child, Duration::ZERO);
                format!("was not up ({probe:?}) within {timeout:?}")
            }
        };
        bail!(
            "peer server {desc} on port {port} {why}; its output:\n{}",
            read_log(&log)
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    /// The server's stdout+stderr so far.
    pub fn log(&self) -> String {
        read_log(&self.log)
    }
    /// Still running?
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            signal_tree(self.child.id(), libc::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// Waits until TCP `port` is in LISTEN in this process's network namespace.
/// Sends no packets (see [`Probe::Listening`]).
pub fn wait_listening(port: u16, timeout: Duration) -> bool {
    wait_until(timeout, POLL, || {
        proc_has_socket(std::process::id(), &["tcp", "tcp6"], port, Some("0A"))
    })
}

/// Waits until a TCP connect to 127.0.0.1:`port` succeeds.
pub fn wait_connectable(port: u16, timeout: Duration) -> bool {
    wait_until(timeout, POLL, || connectable(port))
}

fn connectable(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// Is there a socket with local port `port` (and state `state`, hex as in
/// /proc/net/tcp: "0A" = LISTEN) in /proc/<pid>/net/<table>?
fn proc_has_socket(pid: u32, tables: &[&str], port: u16, state: Option<&str>) -> bool {
    let want_port = format!("{port:04X}");
    tables.iter().any(|t| {
        let Ok(text) = fs::read_to_string(format!("/proc/{pid}/net/{t}")) else {
            return false;
        };
        text.lines().skip(1).any(|line| {
            // "  sl  local_address rem_address   st ..." ; local is ADDR:PORT in hex.
            let mut f = line.split_whitespace();
            let (Some(_sl), Some(local), Some(_rem), Some(st)) =
                (f.next(), f.next(), f.next(), f.next())
            else {
                return false;
            };
            local.rsplit(':').next() == Some(want_port.as_str()) && state.is_none_or(|s| st == s)
        })
    })
}

/// A foreground, one-worker nginx configuration with every temp path in
/// `dir`: `http_extra` goes into the `http` block (directives, `upstream`s),
/// `server` is the `server` block's body.
pub fn nginx_config(dir: &Path, http_extra: &str, server: &str) -> String {
    format!(
        "daemon off; worker_processes 1; pid {d}/nginx.pid; error_log stderr;\n\
         events {{}}\n\
         http {{ access_log off; client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
           fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
           {http_extra}\n\
           server {{ {server} }} }}\n",
        d = dir.display()
    )
}

/// nginx running [`nginx_config`], written to `dir`, once it listens on `port`.
pub fn start_nginx(dir: &Path, http_extra: &str, server: &str, port: u16) -> Result<Server> {
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, nginx_config(dir, http_extra, server))?;
    let mut nginx = Command::new("nginx");
    nginx.arg("-c").arg(&conf);
    Server::spawn(nginx, port)
}
