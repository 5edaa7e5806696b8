//! Database spans from real servers and their own clients: PostgreSQL with
//! psql, MariaDB with its CLI and Redis with redis-cli, on loopback, as an
//! OTLP receiver got them; and a web app's queries through the drivers
//! apps use (psycopg2, redis-py, MySQL Connector/Python) under its request.

mod support;

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use support::*;

const WAIT: Duration = Duration::from_secs(30);
/// The database password: it must never appear in an exported span.
const DB_PASSWORD: &str = "kspan-secret-pw";

fn kspan_exporting(receiver: &Receiver, port: u16) -> Kspan {
    Kspan::exporting_to(receiver, &["--open-ports", &port.to_string()])
}

/// Runs a database client with `script` on its stdin; returns its pid.
fn run_client(mut cmd: Command, script: &str) -> u32 {
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("client starts");
    let pid = child.id();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), script.as_bytes()).unwrap();
    drop(child.stdin.take());
    child.wait().unwrap();
    pid
}

/// Every span received, once the CLIENT spans of `pid` include all of `names`.
fn wait_for_client_spans(receiver: &Receiver, kspan: &Kspan, pid: u32, names: &[&str]) -> Vec<ReceivedSpan> {
    receiver
        .wait_for(WAIT, |all| {
            let got: Vec<&str> = all.iter().filter(|s| is_client_of(s, pid)).map(|s| s.name.as_str()).collect();
            names.iter().all(|n| got.contains(n))
        })
        .unwrap_or_else(|e| panic!("{e}\nkspan log:\n{}", kspan.log()))
}

/// The first span of `kind` named `name`, once received.
fn wait_for_span(receiver: &Receiver, kspan: &Kspan, kind: &str, name: &str) -> ReceivedSpan {
    let spans = receiver
        .wait_for(WAIT, |all| all.iter().any(|s| s.kind == kind && s.name == name))
        .unwrap_or_else(|e| panic!("{e}\nkspan log:\n{}", kspan.log()));
    spans.into_iter().find(|s| s.kind == kind && s.name == name).unwrap()
}

fn is_client_of(s: &ReceivedSpan, pid: u32) -> bool {
    s.kind == "CLIENT" && s.resource_i64("process.pid") == Some(i64::from(pid))
}

fn postgres_bin(name: &str) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin").join(name))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found.pop()
}

/// A throw-away PostgreSQL cluster on `port`, owned by the `postgres` user
/// (the server refuses to run as root), with password auth over TCP.
struct Postgres {
    dir: TempDir,
    pg_ctl: PathBuf,
    port: u16,
}

impl Postgres {
    fn start(port: u16) -> Result<Postgres, String> {
        let initdb = postgres_bin("initdb").ok_or("initdb not found (Debian package postgresql)")?;
        let pg_ctl = postgres_bin("pg_ctl").ok_or("pg_ctl not found")?;
        let dir = TempDir::new().map_err(|e| e.to_string())?;
        let as_postgres = |cmd: String| {
            let out = Command::new("su").args(["postgres", "-s", "/bin/sh", "-c", &cmd]).output().map_err(|e| e.to_string())?;
            if out.status.success() { Ok(()) } else { Err(format!("{cmd}: {}", String::from_utf8_lossy(&out.stderr))) }
        };
        Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status().map_err(|e| e.to_string())?;
        let data = dir.join("data");
        as_postgres(format!("{} -D {} -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null", initdb.display(), data.display()))?;
        std::fs::write(data.join("pg_hba.conf"), "local all all trust\nhost all all 127.0.0.1/32 password\n")
            .map_err(|e| e.to_string())?;
        as_postgres(format!(
            "{} -D {} -l {} -o '-p {port} -k {} -c listen_addresses=127.0.0.1' -w start >/dev/null",
            pg_ctl.display(),
            data.display(),
            dir.join("log").display(),
            dir.path().display()
        ))?;
        let pg = Postgres { dir, pg_ctl, port };
        pg.psql_local(&format!("CREATE USER app PASSWORD '{DB_PASSWORD}'"))?;
        pg.psql_local("CREATE DATABASE shop OWNER app")?;
        Ok(pg)
    }

    /// Administration over the unix socket (not traced: TCP only).
    fn psql_local(&self, sql: &str) -> Result<(), String> {
        self.psql_local_in("postgres", sql)
    }

    fn psql_local_in(&self, database: &str, sql: &str) -> Result<(), String> {
        let out = Command::new("psql")
            .args(["-X", "-q", "-U", "postgres", "-d", database, "-h"])
            .arg(self.dir.path())
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-c", sql])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) }
    }

}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new("su")
            .args(["postgres", "-s", "/bin/sh", "-c"])
            .arg(format!("{} -D {} -m immediate -w stop", self.pg_ctl.display(), self.dir.join("data").display()))
            .output();
    }
}

#[test]
fn psql_queries_become_postgresql_client_spans() {
    if !(require_root() && require_bpf() && require_python()) || require_cmd("psql").is_none() {
        return;
    }
    let port = free_port();
    let Some(pg) = require("a PostgreSQL server", Postgres::start(port)) else { return };
    let receiver = Receiver::start().expect("receiver");
    let kspan = kspan_exporting(&receiver, port);

    // Over TCP with a password, so the startup and auth messages are captured.
    let script = "CREATE TABLE items (id int, name text);\n\
                  INSERT INTO items VALUES (1, 'secret-literal');\n\
                  SELECT name FROM items WHERE id = 1;\n\
                  SELECT * FROM missing_table;\n";
    let mut psql = Command::new("psql");
    psql.args(["-X", "-h", "127.0.0.1", "-p", &port.to_string(), "-U", "app", "-d", "shop"])
        .env("PGPASSWORD", DB_PASSWORD)
        .env("PGSSLMODE", "disable");
    let psql_pid = run_client(psql, script);
    let spans = wait_for_client_spans(&receiver, &kspan, psql_pid, &["CREATE items", "INSERT items", "SELECT items", "SELECT missing_table"]);
    let client: Vec<&ReceivedSpan> = spans.iter().filter(|s| is_client_of(s, psql_pid)).collect();
    let by_name = |n: &str| *client.iter().find(|s| s.name == n).unwrap();

    let select = by_name("SELECT items");
    assert_eq!(select.attr_str("db.system.name"), Some("postgresql"));
    assert_eq!(select.attr_str("db.namespace"), Some("shop"));
    assert_eq!(select.attr_str("db.operation.name"), Some("SELECT"));
    assert_eq!(select.attr_str("db.collection.name"), Some("items"));
    assert_eq!(select.attr_str("db.query.text"), Some("SELECT name FROM items WHERE id = ?;"));
    assert_eq!(select.attr_i64("db.response.returned_rows"), Some(1));
    assert_eq!(select.attr_i64("server.port"), Some(i64::from(port)));
    assert_eq!(select.status.code, "UNSET");
    assert_eq!(by_name("INSERT items").attr_str("db.query.text"), Some("INSERT INTO items VALUES (?, ?);"));

    let failed = by_name("SELECT missing_table");
    assert_eq!(failed.attr_str("db.response.status_code"), Some("42P01"));
    assert_eq!(failed.status.code, "ERROR");
    assert!(failed.status.message.contains("missing_table"), "{}", failed.pretty());

    // The server side is traced too (it listens on the port): its SERVER
    // span of the same query is the child of psql's CLIENT span.
    let server_select = wait_for_span(&receiver, &kspan, "SERVER", "SELECT items");
    assert_eq!(server_select.parent_span_id, select.span_id);
    assert_eq!(server_select.trace_id, select.trace_id);

    // Metadata, not data: neither the password nor a literal left kspan.
    for s in &spans {
        let text = format!("{s:?}");
        assert!(!text.contains(DB_PASSWORD) && !text.contains("secret-literal"), "leaked: {}", s.pretty());
    }
    drop(pg);
}

/// redis-server on `port`, no persistence.
fn redis_server(port: u16) -> Server {
    let mut cmd = Command::new("redis-server");
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
    Server::spawn(cmd, port).expect("redis-server")
}

#[test]
fn redis_cli_commands_become_redis_client_spans() {
    if !(require_root() && require_bpf() && require_python())
        || require_cmd("redis-server").is_none()
        || require_cmd("redis-cli").is_none()
    {
        return;
    }
    let port = free_port();
    let _server = redis_server(port);
    let receiver = Receiver::start().expect("receiver");
    let kspan = kspan_exporting(&receiver, port);

    // One connection, several commands (pipe mode keeps them on it).
    let mut cli = Command::new("redis-cli");
    cli.args(["-p", &port.to_string()]);
    let commands = "SET user:1 secret-value\nGET user:1\nINCR user:1\nSELECT 1\nHSET h field value\n";
    let cli_pid = run_client(cli, commands);
    let spans = wait_for_client_spans(&receiver, &kspan, cli_pid, &["SET", "GET", "INCR", "SELECT", "HSET"]);
    let client: Vec<&ReceivedSpan> = spans.iter().filter(|s| is_client_of(s, cli_pid)).collect();
    let by_name = |n: &str| *client.iter().find(|s| s.name == n).unwrap();

    let set = by_name("SET");
    assert_eq!(set.attr_str("db.system.name"), Some("redis"));
    assert_eq!(set.attr_str("db.operation.name"), Some("SET"));
    assert_eq!(set.attr_str("db.query.text"), Some("SET user:1 ?"));
    assert_eq!(set.attr_str("db.namespace"), Some("0"));
    assert_eq!(set.attr_i64("server.port"), Some(i64::from(port)));
    let incr = by_name("INCR");
    assert_eq!(incr.status.code, "ERROR", "INCR on a string fails: {}", incr.pretty());
    assert_eq!(incr.attr_str("db.response.status_code"), Some("ERR"));
    assert_eq!(by_name("HSET").attr_str("db.namespace"), Some("1"), "after SELECT 1");
    // Commands go out in order, one span each.
    let mut ordered: Vec<&&ReceivedSpan> = client.iter().collect();
    ordered.sort_by_key(|s| s.start);
    // redis-cli first asks the server for its command docs.
    let names: Vec<&str> = ordered.iter().map(|s| s.name.as_str()).filter(|n| *n != "COMMAND DOCS").collect();
    assert_eq!(names, ["SET", "GET", "INCR", "SELECT", "HSET"]);
    // The server is traced too; Debian's redis-server is a link to
    // redis-check-rdb, and the service is named by the link it was run as.
    let server_set = wait_for_span(&receiver, &kspan, "SERVER", "SET");
    assert_eq!(server_set.resource_str("service.name"), Some("redis-server"));
    assert_eq!(server_set.parent_span_id, set.span_id);
    for s in &spans {
        assert!(!format!("{s:?}").contains("secret-value"), "leaked: {}", s.pretty());
    }
}

/// A throw-away MariaDB server on `port` with a password user `app`.
struct Mariadb {
    dir: TempDir,
    server: Option<std::process::Child>,
}

impl Mariadb {
    fn start(port: u16) -> Result<Mariadb, String> {
        let dir = TempDir::new().map_err(|e| e.to_string())?;
        let data = dir.join("data");
        let out = Command::new("mariadb-install-db")
            .args(["--user=root", "--auth-root-authentication-method=normal", "--skip-test-db"])
            .arg(format!("--datadir={}", data.display()))
            .output()
            .map_err(|e| format!("mariadb-install-db: {e}"))?;
        if !out.status.success() {
            return Err(format!("mariadb-install-db: {}", String::from_utf8_lossy(&out.stderr)));
        }
        let socket = dir.join("mysqld.sock");
        let server = Command::new("mariadbd")
            .args(["--no-defaults", "--user=root", "--bind-address=127.0.0.1", "--skip-name-resolve"])
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--port={port}"))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--log-error={}", dir.join("err.log").display()))
            .arg(format!("--pid-file={}", dir.join("mysqld.pid").display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("mariadbd: {e}"))?;
        let db = Mariadb { dir, server: Some(server) };
        let up = wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
            db.admin("SELECT 1").is_ok()
        });
        if !up {
            return Err(format!("mariadbd did not come up: {}", read_log(&db.dir.join("err.log"))));
        }
        db.admin(&format!(
            "CREATE DATABASE shop; CREATE USER 'app'@'127.0.0.1' IDENTIFIED BY '{DB_PASSWORD}'; \
             GRANT ALL ON shop.* TO 'app'@'127.0.0.1';"
        ))?;
        Ok(db)
    }

    /// Administration over the unix socket (not traced: TCP only).
    fn admin(&self, sql: &str) -> Result<(), String> {
        let out = Command::new("mariadb")
            .args(["--no-defaults", "-u", "root", "-S"])
            .arg(self.dir.join("mysqld.sock"))
            .args(["-e", sql])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) }
    }
}

impl Drop for Mariadb {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.kill();
            let _ = server.wait();
        }
    }
}

#[test]
fn mariadb_client_queries_become_mysql_client_spans() {
    if !(require_root() && require_bpf() && require_python())
        || require_cmd("mariadbd").is_none()
        || require_cmd("mariadb").is_none()
    {
        return;
    }
    let port = free_port();
    let Some(db) = require("a MariaDB server", Mariadb::start(port)) else { return };
    let receiver = Receiver::start().expect("receiver");
    let kspan = kspan_exporting(&receiver, port);

    let script = "CREATE TABLE items (id INT, name TEXT);\n\
                  INSERT INTO items VALUES (1, 'secret-literal');\n\
                  SELECT name FROM items WHERE id = 1;\n\
                  SELECT * FROM missing_table;\n";
    let mut cli = Command::new("mariadb");
    cli.args(["--no-defaults", "--skip-ssl", "--force", "-h", "127.0.0.1", "-P", &port.to_string(), "-u", "app", "-D", "shop"])
        .arg(format!("-p{DB_PASSWORD}"));
    let cli_pid = run_client(cli, script);
    let spans = wait_for_client_spans(&receiver, &kspan, cli_pid, &["INSERT items", "SELECT items", "SELECT missing_table"]);
    let client: Vec<&ReceivedSpan> = spans.iter().filter(|s| is_client_of(s, cli_pid)).collect();
    let by_name = |n: &str| *client.iter().find(|s| s.name == n).unwrap();

    let select = by_name("SELECT items");
    assert_eq!(select.attr_str("db.system.name"), Some("mysql"));
    assert_eq!(select.attr_str("db.namespace"), Some("shop"));
    assert_eq!(select.attr_str("db.collection.name"), Some("items"));
    assert_eq!(select.attr_str("db.query.text"), Some("SELECT name FROM items WHERE id = ?"));
    assert_eq!(select.attr_i64("db.response.returned_rows"), Some(1));
    assert_eq!(select.attr_i64("server.port"), Some(i64::from(port)));
    let failed = by_name("SELECT missing_table");
    assert_eq!(failed.attr_str("db.response.status_code"), Some("1146"));
    assert_eq!(failed.status.code, "ERROR");
    for s in &spans {
        let text = format!("{s:?}");
        assert!(!text.contains(DB_PASSWORD) && !text.contains("secret-literal"), "leaked: {}", s.pretty());
    }
    drop(db);
}

/// What a trace waterfall is for: a request to a web app and the queries it
/// made, one trace, each query under the request's SERVER span and each
/// database's own SERVER span under the query. Requests run at once on
/// the app's threads, so a query joined to the wrong request shows.
#[test]
fn web_request_queries_are_children_of_its_server_span() {
    if !(require_root() && require_bpf() && require_python())
        || require_cmd("psql").is_none()
        || require_cmd("redis-server").is_none()
        || require_cmd("mariadbd").is_none()
    {
        return;
    }
    let (pg_port, redis_port, mysql_port, app_port) = (free_port(), free_port(), free_port(), free_port());
    let Some(pg) = require("a PostgreSQL server", Postgres::start(pg_port)) else { return };
    pg.psql_local_in("shop", "CREATE TABLE items (id int, name text); ALTER TABLE items OWNER TO app").expect("items table");
    let _redis = redis_server(redis_port);
    let Some(mysql) = require("a MariaDB server", Mariadb::start(mysql_port)) else { return };
    mysql.admin("CREATE TABLE shop.stock (id INT, name TEXT)").expect("stock table");
    let mut cmd = Command::new(python());
    cmd.arg(repo_root().join("tests/peers/db_app.py"));
    cmd.args([app_port, pg_port, redis_port, mysql_port].map(|p| p.to_string())).arg(DB_PASSWORD);
    let Some(app) = require("the Flask app with database drivers", Server::spawn(cmd, app_port)) else { return };
    let receiver = Receiver::start().expect("receiver");
    let ports = format!("{app_port},{pg_port},{redis_port},{mysql_port}");
    let kspan = Kspan::exporting_to(&receiver, &["--open-ports", &ports]);

    let orders: Vec<u32> = (1..=8).collect();
    let curls: Vec<_> = orders
        .iter()
        .map(|n| {
            Command::new("curl")
                .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", &format!("http://127.0.0.1:{app_port}/order/{n}")])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("curl starts")
        })
        .collect();
    for curl in curls {
        let out = curl.wait_with_output().expect("curl runs");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "{}\n{}", String::from_utf8_lossy(&out.stderr), app.log());
    }

    let app_pid = i64::from(app.pid());
    let of_app = |s: &ReceivedSpan| s.resource_i64("process.pid") == Some(app_pid);
    // Each request's queries and the databases' answers: 4 app CLIENT
    // spans (SELECT items, SET, GET, SELECT stock) and their SERVER spans.
    let spans = receiver
        .wait_for(WAIT, |all| {
            let queries = all.iter().filter(|s| s.kind == "CLIENT" && of_app(s) && is_order_query(s)).count();
            let answered = all.iter().filter(|s| s.kind == "SERVER" && !of_app(s) && is_order_query(s)).count();
            let requests = all.iter().filter(|s| s.kind == "SERVER" && of_app(s)).count();
            queries >= 4 * orders.len() && answered >= 4 * orders.len() && requests >= orders.len()
        })
        .unwrap_or_else(|e| panic!("{e}\nkspan log:\n{}\napp log:\n{}", kspan.log(), app.log()));

    for n in &orders {
        let path = format!("/order/{n}");
        let request: Vec<&ReceivedSpan> =
            spans.iter().filter(|s| s.kind == "SERVER" && of_app(s) && s.attr_str("url.path") == Some(&path)).collect();
        let [request] = request[..] else { panic!("one SERVER span for {path}, got {request:#?}") };
        let children: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.parent_span_id == request.span_id).collect();
        let named = |system: &str, name: &str| -> Vec<&ReceivedSpan> {
            children
                .iter()
                .copied()
                .filter(|s| s.kind == "CLIENT" && s.attr_str("db.system.name") == Some(system) && s.name == name)
                .collect()
        };
        let context = || format!("{path}: children {:#?}", children.iter().map(|s| s.pretty()).collect::<Vec<_>>());
        assert_eq!(named("postgresql", "SELECT items").len(), 1, "{}", context());
        assert_eq!(named("mysql", "SELECT stock").len(), 1, "{}", context());
        // Redis keeps the key (values are redacted): the request's own keys.
        for command in ["SET", "GET"] {
            let redis = named("redis", command);
            assert_eq!(redis.len(), 1, "{}", context());
            let text = redis[0].attr_str("db.query.text").unwrap_or_default();
            assert!(text.starts_with(&format!("{command} order:{n}")), "{command} of another request: {text}");
            assert!(!text.contains("pending"), "a value left kspan: {text}");
        }
        for query in children.iter().filter(|s| is_order_query(s)) {
            assert_eq!(query.trace_id, request.trace_id);
            let answer: Vec<&ReceivedSpan> =
                spans.iter().filter(|s| s.kind == "SERVER" && s.parent_span_id == query.span_id).collect();
            assert_eq!(answer.len(), 1, "the database's SERVER span of {}", query.pretty());
            assert_eq!(answer[0].trace_id, request.trace_id);
        }
    }
    for s in &spans {
        let text = format!("{s:?}");
        assert!(!text.contains(DB_PASSWORD), "leaked: {}", s.pretty());
    }
    drop((pg, mysql));
}

/// The queries `db_app.py` makes for an order, not its connection set-up.
fn is_order_query(s: &ReceivedSpan) -> bool {
    matches!(s.name.as_str(), "SELECT items" | "SELECT stock" | "SET" | "GET")
        && (s.name != "SET" || s.attr_str("db.system.name") == Some("redis"))
}
