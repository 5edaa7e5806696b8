use kspan_common::Call;

use super::*;
use crate::protocol::recording;

const MYSQL_CLI: &[u8] = include_bytes!("../../../tests/recordings/mysql-cli.rec");
const POSTGRES: &[u8] = include_bytes!("../../../tests/recordings/postgres-simple.rec");

fn client_conn() -> Connection {
    Connection {
        id: 1,
        pid: 10,
        fd: 3,
        role: Role::Client,
        local: None,
        remote: None,
        netns: 1,
        mid_stream: false,
        opened_ns: 0,
        tls: false,
        kspan_export: false,
    }
}

/// The client's records of a recorded conversation, each server message
/// read the way `read_server_piece` cuts it.
fn client_records(rec: &[u8], read_server_piece: impl Fn(&[u8]) -> Vec<&[u8]>) -> Vec<(Direction, Vec<u8>)> {
    let mut records = Vec::new();
    for piece in recording::parse(rec).unwrap() {
        if piece.from_client {
            records.push((Direction::Egress, piece.data.to_vec()));
        } else {
            records.extend(read_server_piece(piece.data).into_iter().map(|part| (Direction::Ingress, part.to_vec())));
        }
    }
    records
}

/// Database exchanges the records make, and the session count by kind.
fn run(conn: &Connection, records: &[(Direction, Vec<u8>)], capture: usize) -> (usize, StreamStats) {
    let mut streams = Streams::new(16);
    let mut out = Vec::new();
    for (i, (direction, bytes)) in records.iter().enumerate() {
        let ts = 100 * (i as u64 + 1);
        let captured = &bytes[..bytes.len().min(capture)];
        let rec = DataRecord {
            tgid: conn.pid,
            tid: conn.pid,
            fd: conn.fd,
            conn_id: conn.id,
            direction: *direction,
            source: Source::Syscall,
            call: if *direction == Direction::Egress { Call::Write } else { Call::Read },
            enter_ns: ts,
            exit_ns: ts + 1,
            size: bytes.len() as u64,
            truncated: captured.len() < bytes.len(),
            payload: captured,
        };
        streams.on_data(conn, &rec, &mut out);
    }
    let exchanges = out.iter().filter(|e| matches!(e.event, AppEvent::Db(_, DbEvent::Exchange(_)))).count();
    (exchanges, streams.stats)
}

/// MySQL Connector/Python reads a packet's 4-byte header, then its body: no
/// single read holds the server's greeting.
fn header_then_body(piece: &[u8]) -> Vec<&[u8]> {
    let (header, body) = piece.split_at(4.min(piece.len()));
    vec![header, body]
}

#[test]
fn a_greeting_read_in_two_parts_is_recognised() {
    let whole = client_records(MYSQL_CLI, |p| vec![p]);
    let (expected, _) = run(&client_conn(), &whole, usize::MAX);
    assert!(expected >= 10, "the recording's exchanges, read whole: {expected}");

    let split = client_records(MYSQL_CLI, header_then_body);
    let (exchanges, stats) = run(&client_conn(), &split, usize::MAX);
    assert_eq!(stats.sessions_db, 1);
    assert_eq!(exchanges, expected, "every exchange, the first included");
}

#[test]
fn records_with_a_gap_are_never_joined() {
    // The header's record lost its tail (a capture limit): joined to the
    // next, the bytes would not be the stream's, so nothing is recognised.
    let split = client_records(MYSQL_CLI, header_then_body);
    let (exchanges, stats) = run(&client_conn(), &split, 2);
    assert_eq!((exchanges, stats.sessions_db), (0, 0));
}

#[test]
fn a_run_is_of_one_direction() {
    // A postgres startup message cut in two, with a server byte between:
    // the halves are not contiguous bytes of one direction.
    let pieces = recording::parse(POSTGRES).unwrap();
    let startup = pieces.iter().find(|p| p.from_client).unwrap().data;
    let (a, b) = startup.split_at(3);
    let interleaved =
        vec![(Direction::Egress, a.to_vec()), (Direction::Ingress, b"N".to_vec()), (Direction::Egress, b.to_vec())];
    assert_eq!(run(&client_conn(), &interleaved, usize::MAX).1.sessions_db, 0);
    let contiguous = vec![(Direction::Egress, a.to_vec()), (Direction::Egress, b.to_vec())];
    assert_eq!(run(&client_conn(), &contiguous, usize::MAX).1.sessions_db, 1);
}
