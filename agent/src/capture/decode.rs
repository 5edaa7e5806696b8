//! Turns raw ring-buffer records into typed events. Records come from our
//! own programs, but a version skew or a bug must give an error, not UB.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use kspan_common::{
    Call, ConnEvent, DATA_EVENT_SIZE, DataEvent, Direction, EventKind, FLAG_TRUNCATED, InjectEvent, ProcEvent, Role,
    Source, ThreadCtxEvent,
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("empty record")]
    Empty,
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    #[error("{kind:?} record of {len} bytes is shorter than its header")]
    Short { kind: EventKind, len: usize },
    #[error("data record claims {claimed} payload bytes but carries {present}")]
    PayloadLength { claimed: usize, present: usize },
    #[error("invalid {field} value {value}")]
    Field { field: &'static str, value: u8 },
}

/// A payload record, borrowing its bytes from the ring buffer: decoding
/// copies nothing.
#[derive(Debug, Clone)]
pub struct DataRecord<'a> {
    pub tgid: u32,
    pub tid: u32,
    pub fd: i32,
    pub conn_id: u64,
    pub direction: Direction,
    pub source: Source,
    pub call: Call,
    pub enter_ns: u64,
    pub exit_ns: u64,
    /// Bytes the syscall moved; `payload.len()` may be less.
    pub size: u64,
    pub truncated: bool,
    pub payload: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnRecord {
    pub tgid: u32,
    pub tid: u32,
    pub fd: i32,
    pub conn_id: u64,
    pub role: Role,
    pub call: Call,
    pub ts_ns: u64,
    pub inode: u64,
    pub netns: u32,
    /// `None` when the kernel could not read the socket's addresses.
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
    /// Task command name (empty on close records).
    pub comm: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcRecord {
    Exec { tgid: u32, ts_ns: u64 },
    Exit { tgid: u32, ts_ns: u64 },
    Fork { tgid: u32, tid: u32, child: u32, ts_ns: u64 },
}

/// `traceparent` ids injected into one outgoing request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectRecord {
    pub tgid: u32,
    pub tid: u32,
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
}

#[derive(Debug, Clone)]
pub enum Event<'a> {
    Data(DataRecord<'a>),
    ConnOpen(ConnRecord),
    ConnClose(ConnRecord),
    Proc(ProcRecord),
    Injected(InjectRecord),
    /// The kernel's trace id for the request a thread began serving.
    ThreadCtx { tgid: u32, tid: u32, conn_id: u64, trace_id: [u8; 16], update: bool },
}

fn read_struct<T: Copy>(bytes: &[u8], kind: EventKind) -> Result<T, DecodeError> {
    if bytes.len() < std::mem::size_of::<T>() {
        return Err(DecodeError::Short { kind, len: bytes.len() });
    }
    // SAFETY: length checked; T is a plain #[repr(C)] type valid for any
    // bit pattern; read_unaligned copes with ring-buffer alignment.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

pub fn decode(bytes: &[u8]) -> Result<Event<'_>, DecodeError> {
    let first = *bytes.first().ok_or(DecodeError::Empty)?;
    let kind = EventKind::from_u8(first).ok_or(DecodeError::UnknownKind(first))?;
    match kind {
        EventKind::Data => decode_data(bytes).map(Event::Data),
        EventKind::ConnOpen => decode_conn(read_struct(bytes, kind)?).map(Event::ConnOpen),
        EventKind::ConnClose => decode_conn(read_struct(bytes, kind)?).map(Event::ConnClose),
        EventKind::Injected => {
            let i: InjectEvent = read_struct(bytes, kind)?;
            Ok(Event::Injected(InjectRecord {
                tgid: i.tgid,
                tid: i.tid,
                local: socket_addr(i.family, i.local_addr, i.local_port),
                remote: socket_addr(i.family, i.remote_addr, i.remote_port),
                trace_id: i.trace_id,
                span_id: i.span_id,
            }))
        }
        EventKind::ThreadCtx => {
            let t: ThreadCtxEvent = read_struct(bytes, kind)?;
            Ok(Event::ThreadCtx { tgid: t.tgid, tid: t.tid, conn_id: t.conn_id, trace_id: t.trace_id, update: t.update != 0 })
        }
        EventKind::ProcExec | EventKind::ProcExit | EventKind::ProcFork => {
            let p: ProcEvent = read_struct(bytes, kind)?;
            Ok(Event::Proc(match kind {
                EventKind::ProcExec => ProcRecord::Exec { tgid: p.tgid, ts_ns: p.ts_ns },
                EventKind::ProcExit => ProcRecord::Exit { tgid: p.tgid, ts_ns: p.ts_ns },
                _ => ProcRecord::Fork { tgid: p.tgid, tid: p.tid, child: p.child, ts_ns: p.ts_ns },
            }))
        }
    }
}

fn decode_data(bytes: &[u8]) -> Result<DataRecord<'_>, DecodeError> {
    let h: DataEvent = read_struct(bytes, EventKind::Data)?;
    let claimed = h.captured as usize;
    let present = bytes.len() - DATA_EVENT_SIZE;
    if claimed > present {
        return Err(DecodeError::PayloadLength { claimed, present });
    }
    let call = call_from(h.call)?;
    let direction = match h.direction {
        1 => Direction::Egress,
        2 => Direction::Ingress,
        v => return Err(DecodeError::Field { field: "direction", value: v }),
    };
    let source = match h.source {
        1 => Source::Syscall,
        2 => Source::Tls,
        v => return Err(DecodeError::Field { field: "source", value: v }),
    };
    Ok(DataRecord {
        tgid: h.tgid,
        tid: h.tid,
        fd: h.fd,
        conn_id: h.conn_id,
        direction,
        source,
        call,
        enter_ns: h.enter_ns,
        exit_ns: h.exit_ns,
        size: h.size,
        truncated: h.flags & FLAG_TRUNCATED != 0,
        payload: &bytes[DATA_EVENT_SIZE..DATA_EVENT_SIZE + claimed],
    })
}

fn decode_conn(c: ConnEvent) -> Result<ConnRecord, DecodeError> {
    let role = match c.role {
        0 => Role::Unknown,
        1 => Role::Client,
        2 => Role::Server,
        v => return Err(DecodeError::Field { field: "role", value: v }),
    };
    let addr = |bytes: [u8; 16], port: u16| socket_addr(c.family, bytes, port);
    Ok(ConnRecord {
        tgid: c.tgid,
        tid: c.tid,
        fd: c.fd,
        conn_id: c.conn_id,
        role,
        call: call_from(c.call)?,
        ts_ns: c.ts_ns,
        inode: c.inode,
        netns: c.netns,
        local: addr(c.local_addr, c.local_port),
        remote: addr(c.remote_addr, c.remote_port),
        comm: {
            let end = c.comm.iter().position(|b| *b == 0).unwrap_or(c.comm.len());
            String::from_utf8_lossy(&c.comm[..end]).into_owned()
        },
    })
}

fn socket_addr(family: u8, bytes: [u8; 16], port: u16) -> Option<SocketAddr> {
    let ip = match family {
        2 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        10 => IpAddr::V6(Ipv6Addr::from(bytes)),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

fn call_from(v: u8) -> Result<Call, DecodeError> {
    Call::from_u8(v).ok_or(DecodeError::Field { field: "call", value: v })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn as_bytes<T>(v: &T) -> Vec<u8> {
        // SAFETY: test-only view of a plain repr(C) value.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }.to_vec()
    }

    fn data_header(captured: u32) -> DataEvent {
        DataEvent {
            kind: EventKind::Data as u8,
            direction: Direction::Egress as u8,
            source: Source::Syscall as u8,
            call: Call::Writev as u8,
            flags: FLAG_TRUNCATED,
            _pad: [0; 3],
            tgid: 10,
            tid: 11,
            fd: 3,
            captured,
            conn_id: 99,
            enter_ns: 1,
            exit_ns: 2,
            size: 5000,
        }
    }

    #[test]
    fn decodes_data_with_payload() {
        let mut raw = as_bytes(&data_header(3));
        raw.extend_from_slice(b"abc");
        let Event::Data(d) = decode(&raw).unwrap() else { panic!("not data") };
        assert_eq!((d.tgid, d.tid, d.fd, d.conn_id, d.size), (10, 11, 3, 99, 5000));
        assert_eq!((d.direction, d.call, d.truncated), (Direction::Egress, Call::Writev, true));
        assert_eq!(&d.payload[..], b"abc");
    }

    #[test]
    fn rejects_lying_lengths_and_garbage() {
        let raw = as_bytes(&data_header(10));
        assert_eq!(decode(&raw).unwrap_err(), DecodeError::PayloadLength { claimed: 10, present: 0 });
        assert_eq!(decode(&[]).unwrap_err(), DecodeError::Empty);
        assert_eq!(decode(&[77, 1, 2]).unwrap_err(), DecodeError::UnknownKind(77));
        assert!(matches!(decode(&[1, 2, 3]).unwrap_err(), DecodeError::Short { .. }));
        let mut bad = as_bytes(&data_header(0));
        bad[1] = 9;
        assert!(matches!(decode(&bad).unwrap_err(), DecodeError::Field { field: "direction", .. }));
    }

    #[test]
    fn decodes_ipv4_and_ipv6_connections() {
        let mut c = ConnEvent {
            kind: EventKind::ConnOpen as u8,
            role: Role::Client as u8,
            call: Call::Connect as u8,
            family: 2,
            tgid: 1,
            tid: 1,
            fd: 4,
            conn_id: 7,
            ts_ns: 5,
            inode: 123,
            netns: 4026531840,
            local_port: 40000,
            remote_port: 8080,
            local_addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            remote_addr: [127, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            comm: *b"curl\0\0\0\0\0\0\0\0\0\0\0\0",
        };
        let Event::ConnOpen(r) = decode(&as_bytes(&c)).unwrap() else { panic!() };
        assert_eq!(r.remote, Some("127.0.0.2:8080".parse().unwrap()));
        assert_eq!(r.role, Role::Client);
        assert_eq!(r.comm, "curl");
        c.family = 10;
        c.remote_addr = Ipv6Addr::LOCALHOST.octets();
        let Event::ConnOpen(r) = decode(&as_bytes(&c)).unwrap() else { panic!() };
        assert_eq!(r.remote, Some("[::1]:8080".parse().unwrap()));
        c.family = 0;
        let Event::ConnOpen(r) = decode(&as_bytes(&c)).unwrap() else { panic!() };
        assert_eq!((r.local, r.remote), (None, None));
    }
}
