//! The trace linker: decides each span's trace and parent, so a request that
//! crosses threads and processes on this host becomes one trace even when
//! nobody sends `traceparent`.
//!
//! Rules, in order of precedence:
//! 1. A valid `traceparent` on an incoming request makes the SERVER span its
//!    child. On an outgoing request (the application propagates itself) the
//!    CLIENT span takes the header's trace id and uses its parent-id as its
//!    own span id, so the callee links to it.
//! 2. In-process: an outgoing request is the child of the incoming request
//!    in flight on the same thread, but only if exactly one is in flight
//!    there. A thread created while its creator served exactly one request
//!    inherits that request. A thread serving none (an I/O thread that does
//!    another thread's calls: Java's `HttpClient`, Go's `net/http`
//!    goroutines) takes the process's one incoming request in flight,
//!    if exactly one is. Event loops and processes serving several requests
//!    at once get no link: an unlinked span is better than a wrongly linked
//!    one. In a Go process threads stand for nothing (goroutines move
//!    between them at every blocking call): only the process-wide rule
//!    applies there.
//! 3. Same host: when both ends of a connection are traced, the SERVER span
//!    is the child of the CLIENT span with the same TCP tuple and the same
//!    position in the connection's request order.
//!
//! 4. With `--propagate headers` the kernel injects `traceparent` itself: the
//!    CLIENT span takes the injected ids, and a SERVER span takes the trace
//!    id the kernel chose for its thread, so both hosts agree.
//!
//! Contexts are allocated when a request *starts*, before either span is
//! complete, and trace ids live in union-find groups: a link discovered late
//! (the callee's read was seen before the caller's write) re-roots every span
//! already hanging off the callee.

use std::{
    cell::RefCell,
    collections::VecDeque,
    net::SocketAddr,
    rc::Rc,
};

use kspan_common::Role;
use rustc_hash::{FxHashMap, FxHashSet};

use super::{
    IdGenerator,
    model::{SpanId, TraceId},
    tracecontext::{TraceParent, valid_tracestate},
};
use crate::conntrack::{Connection, canonical};

/// What a request carried that ties it to others, whatever its protocol:
/// its W3C headers, and the request line a proxy forwards.
#[derive(Debug, Clone, Copy, Default)]
pub struct Propagation<'a> {
    pub traceparent: Option<&'a str>,
    pub tracestate: Option<&'a str>,
    /// HTTP method and request target (`:method`, `:path` for HTTP/2).
    pub request_line: Option<(&'a str, &'a str)>,
}

impl Propagation<'_> {
    /// Identifies the request line as a proxy forwards it: a target in
    /// absolute form (`http://host/p`) is compared by its path. `None` for
    /// a request without one (a database command).
    fn forwarding_key(&self) -> Option<u64> {
        let (method, target) = self.request_line?;
        let path = match target.split_once("://") {
            Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
            None => target,
        };
        let mut hasher = rustc_hash::FxHasher::default();
        std::hash::Hash::hash(&(method, path), &mut hasher);
        Some(std::hash::Hasher::finish(&hasher))
    }
}

/// What the span builder needs to stamp a span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceCtx {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent_span_id: Option<SpanId>,
    pub parent_is_remote: bool,
    pub trace_state: String,
    pub sampled: bool,
}

struct Group {
    trace_id: TraceId,
    trace_state: String,
    sampled: bool,
    /// The trace id came from outside (a header): never changed.
    pinned: bool,
    /// A span of this trace went out: its trace id can no longer change.
    exported: bool,
    merged_into: Option<GroupRef>,
}
type GroupRef = Rc<RefCell<Group>>;

fn root(group: &GroupRef) -> GroupRef {
    let mut g = group.clone();
    loop {
        let next = g.borrow().merged_into.clone();
        match next {
            Some(n) => g = n,
            None => return g,
        }
    }
}

struct Node {
    group: GroupRef,
    span_id: SpanId,
    parent: Option<SpanId>,
    parent_is_remote: bool,
    /// Set by a `traceparent` header: never re-parented.
    pinned: bool,
    /// Monotonic ns when the request started (first byte written or read).
    started_ns: u64,
    done: bool,
    /// (pid, tid) of the thread that read an incoming request: its
    /// `inflight` list.
    reader: Option<(u32, u32)>,
    /// The kernel's trace id for this incoming request was applied.
    kernel_trace: bool,
    /// An incoming request's [`Propagation::forwarding_key`].
    forwarding_key: Option<u64>,
    /// A call of the same thread was taken for this request's forwarding.
    forwarded: bool,
}
type NodeRef = Rc<RefCell<Node>>;

impl Node {
    /// A request with no known parent yet.
    fn unlinked(group: GroupRef, span_id: SpanId, started_ns: u64) -> Self {
        Self {
            group,
            span_id,
            parent: None,
            parent_is_remote: false,
            pinned: false,
            started_ns,
            done: false,
            reader: None,
            kernel_trace: false,
            forwarding_key: None,
            forwarded: false,
        }
    }
}

/// What `Linker::finish_or_wait` decided.
pub enum Finished {
    Now(TraceCtx),
    AwaitingPeer(AwaitingPeer),
}

/// A finished server request whose client has not shown up yet.
pub struct AwaitingPeer(NodeRef);

/// (client endpoint, server endpoint, request order on the connection).
type PeerKey = (SocketAddr, SocketAddr, u64);

/// How long a request waits for its other end to show up.
const PEER_WINDOW_NS: u64 = 30_000_000_000;
const PEER_CAPACITY: usize = 65536;
/// Go processes remembered; past it the set starts over (they are marked
/// again at their next connection).
const THREAD_AGNOSTIC_CAPACITY: usize = 65536;

/// How far apart the two ends of a request may have started for a pair
/// whose request order disagrees to be joined (see `Waiting::take_peer`).
const DRIFT_WINDOW_NS: u64 = 1_000_000_000;

/// Waiting entries, evicted by age and bounded in number.
#[derive(Default)]
struct Waiting {
    map: FxHashMap<PeerKey, NodeRef>,
    order: VecDeque<(u64, PeerKey)>,
    /// The order of the request that last began to wait, per connection
    /// (client endpoint, server endpoint), while it still waits.
    latest: FxHashMap<(SocketAddr, SocketAddr), u64>,
}

impl Waiting {
    fn insert(&mut self, key: PeerKey, node: NodeRef, now_ns: u64) {
        while let Some((t, k)) = self.order.front().copied() {
            if self.order.len() < PEER_CAPACITY && now_ns.saturating_sub(t) < PEER_WINDOW_NS {
                break;
            }
            self.order.pop_front();
            self.remove(&k);
        }
        self.order.push_back((now_ns, key));
        self.map.insert(key, node);
        self.latest.insert((key.0, key.1), key.2);
    }

    /// The other end's request for `key`: the one waiting under the same
    /// key, else the one that last began to wait on the same connection if
    /// it started within `DRIFT_WINDOW_NS` of `started_ns`; either only if
    /// `plausible` (a server cannot read a request before its client began
    /// to write it). Both ends number the requests they see, and one
    /// request missed by one end only (a kspan restart with a request in
    /// flight, a TLS call before its library was attached, a full ring
    /// buffer) shifts the numbering for the rest of a kept-alive
    /// connection, whose requests would otherwise never be joined again.
    fn take_peer(&mut self, key: &PeerKey, started_ns: u64, plausible: impl Fn(u64) -> bool) -> Option<NodeRef> {
        if let Some(exact) = self.map.get(key) {
            let exact_ok = plausible(exact.borrow().started_ns);
            // Implausible: a request whose other end was never seen, and
            // whose number a later request of the other end now carries.
            let exact = self.remove(key);
            if exact_ok {
                return exact;
            }
        }
        let seq = *self.latest.get(&(key.0, key.1))?;
        let candidate = (key.0, key.1, seq);
        let theirs = self.map.get(&candidate)?.borrow().started_ns;
        if theirs.abs_diff(started_ns) <= DRIFT_WINDOW_NS && plausible(theirs) { self.remove(&candidate) } else { None }
    }

    fn remove(&mut self, key: &PeerKey) -> Option<NodeRef> {
        let node = self.map.remove(key)?;
        let pair = (key.0, key.1);
        if self.latest.get(&pair) == Some(&key.2) {
            self.latest.remove(&pair);
        }
        Some(node)
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct LinkStats {
    /// Calls given a parent in their own process, by any rule: the two
    /// below are counted here too.
    pub linked_in_process: u64,
    pub linked_same_host: u64,
    /// Calls by a thread serving nothing, given the process's one request in
    /// flight as parent.
    pub linked_process_wide: u64,
    /// Calls of a thread serving several requests, given the one whose
    /// request line they repeat (a proxy's event loop).
    pub linked_by_forwarding: u64,
    pub ambiguous_threads: u64,
}

#[derive(Default)]
pub struct Linker {
    ids: IdGenerator,
    /// Requests whose span is not built yet, by connection and sequence.
    requests: FxHashMap<u64, FxHashMap<u64, NodeRef>>,
    /// Incoming requests in flight, by (pid, tid) of the thread that read them.
    inflight: FxHashMap<(u32, u32), Vec<NodeRef>>,
    /// How many of `inflight`'s requests each process has, and the one
    /// that started last.
    inflight_per_pid: FxHashMap<u32, (usize, NodeRef)>,
    /// Threads created while their creator served exactly one request.
    inherited: FxHashMap<(u32, u32), NodeRef>,
    /// Processes whose threads do not stand for requests (Go).
    thread_agnostic: FxHashSet<u32>,
    /// Size of `inherited` at which finished entries are next swept out.
    inherited_sweep_at: usize,
    outbound: Waiting,
    inbound: Waiting,
    /// Ids the kernel injected, by (pid, local, remote), oldest first.
    injected: FxHashMap<(u32, SocketAddr, SocketAddr), VecDeque<(TraceId, SpanId)>>,
    /// Trace ids the kernel gave requests whose head was still being read,
    /// by connection.
    thread_traces: FxHashMap<u64, TraceId>,
    sampler: super::sampler::Sampler,
    pub stats: LinkStats,
}

/// Smallest size of `inherited` at which finished entries are swept out.
const INHERITED_SWEEP: usize = 1024;

/// Per-key backlog of kernel hints kept while their requests are parsed.
const HINT_BACKLOG: usize = 64;
/// Keys of kernel hints kept at most.
const HINT_KEYS: usize = 16384;

/// Keeps a hint map within `HINT_KEYS` before `key` is added.
fn make_room<K: std::hash::Hash + Eq, V>(map: &mut FxHashMap<K, V>, key: &K) {
    if map.len() >= HINT_KEYS && !map.contains_key(key) {
        // Bounded: hints whose request never came are the first to go.
        map.clear();
    }
}

fn push_hint<K: std::hash::Hash + Eq, V>(map: &mut FxHashMap<K, VecDeque<V>>, key: K, value: V) {
    make_room(map, &key);
    let queue = map.entry(key).or_default();
    if queue.len() >= HINT_BACKLOG {
        queue.pop_front();
    }
    queue.push_back(value);
}

fn pop_hint<K: std::hash::Hash + Eq, V>(map: &mut FxHashMap<K, VecDeque<V>>, key: &K) -> Option<V> {
    let queue = map.get_mut(key)?;
    let value = queue.pop_front();
    if queue.is_empty() {
        map.remove(key);
    }
    value
}

impl Linker {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_sampler(sampler: super::sampler::Sampler) -> Self {
        Self { sampler, ..Self::default() }
    }

    fn new_group(&mut self) -> GroupRef {
        Rc::new(RefCell::new(Group {
            trace_id: self.ids.trace_id(),
            trace_state: String::new(),
            sampled: true,
            pinned: false,
            exported: false,
            merged_into: None,
        }))
    }

    fn from_header(head: &Propagation) -> Option<(TraceParent, String)> {
        let tp = TraceParent::parse(head.traceparent?)?;
        let state = head.tracestate.filter(|s| valid_tracestate(s)).unwrap_or_default().to_owned();
        Some((tp, state))
    }

    fn pinned_group(tp: &TraceParent, state: String) -> GroupRef {
        Rc::new(RefCell::new(Group {
            trace_id: tp.trace_id,
            trace_state: state,
            sampled: tp.sampled(),
            pinned: true,
            exported: false,
            merged_into: None,
        }))
    }

    /// [`Self::request_started_with_peer`] with the peer assumed traced: the
    /// linker tests build both ends by hand.
    #[cfg(test)]
    pub fn request_started(
        &mut self,
        conn: &Connection,
        role: Role,
        seq: u64,
        head: &Propagation,
        started_ns: u64,
        tid: u32,
    ) {
        self.request_started_with_peer(conn, role, seq, head, started_ns, tid, true);
    }

    /// A request's head was parsed on `conn` (its first byte at
    /// `started_ns`), by thread `tid`; `peer_traced` tells whether the other
    /// end of `conn` is a traced process on this host. A server request whose client is not
    /// traced has no CLIENT span to wait for: parking it for the peer window
    /// cost a table insert per request and kept every such request's context
    /// alive for 30 s.
    #[allow(clippy::too_many_arguments)]
    pub fn request_started_with_peer(
        &mut self,
        conn: &Connection,
        role: Role,
        seq: u64,
        head: &Propagation,
        started_ns: u64,
        tid: u32,
        peer_traced: bool,
    ) {
        let node = match role {
            Role::Server => self.server_started(conn, seq, head, started_ns, tid, peer_traced),
            _ => self.client_started(conn, seq, head, started_ns, tid),
        };
        self.requests.entry(conn.id).or_default().insert(seq, node);
    }

    fn server_started(
        &mut self,
        conn: &Connection,
        seq: u64,
        head: &Propagation,
        started_ns: u64,
        tid: u32,
        peer_traced: bool,
    ) -> NodeRef {
        // Taken whether or not it is used: it belongs to this request.
        let kernel_trace = self.thread_traces.remove(&conn.id);
        let node = match Self::from_header(head) {
            Some((tp, state)) => Node {
                parent: Some(tp.parent_id),
                parent_is_remote: true,
                pinned: true,
                kernel_trace: true,
                ..Node::unlinked(Self::pinned_group(&tp, state), self.ids.span_id(), started_ns)
            },
            None => {
                let group = self.new_group();
                let mut node = Node::unlinked(group, self.ids.span_id(), started_ns);
                if let Some(trace_id) = kernel_trace {
                    node.group.borrow_mut().trace_id = trace_id;
                    node.kernel_trace = true;
                }
                node
            }
        };
        let pinned = node.pinned;
        let node = Rc::new(RefCell::new(Node {
            reader: Some((conn.pid, tid)),
            forwarding_key: head.forwarding_key(),
            ..node
        }));
        if let (false, Some(local), Some(remote)) = (pinned, conn.local, conn.remote) {
            let key = (canonical(remote), canonical(local), seq);
            match self.outbound.take_peer(&key, started_ns, |client| client <= started_ns) {
                Some(client) => self.adopt_peer(&node, &client),
                None if peer_traced => self.inbound.insert(key, node.clone(), started_ns),
                None => {}
            }
        }
        self.inflight.entry((conn.pid, tid)).or_default().push(node.clone());
        let per_pid = self.inflight_per_pid.entry(conn.pid).or_insert_with(|| (0, node.clone()));
        *per_pid = (per_pid.0 + 1, node.clone());
        node
    }

    fn inflight_ended(&mut self, pid: u32, count: usize) {
        if let Some((n, _)) = self.inflight_per_pid.get_mut(&pid) {
            *n = n.saturating_sub(count);
            if *n == 0 {
                self.inflight_per_pid.remove(&pid);
            }
        }
    }

    fn client_started(&mut self, conn: &Connection, seq: u64, head: &Propagation, started_ns: u64, tid: u32) -> NodeRef {
        let parent = self.in_process_parent(conn.pid, tid).or_else(|| self.forwarded_request(conn.pid, tid, head));
        let header = Self::from_header(head).filter(|(tp, _)| {
            // A proxy forwarding the incoming header unchanged does not make
            // the caller's span id ours: that would duplicate it.
            parent.as_ref().is_none_or(|p| p.borrow().parent != Some(tp.parent_id))
        });
        let node = match (header, parent) {
            (Some((tp, state)), parent) => Node {
                parent: parent.filter(|p| root(&p.borrow().group).borrow().trace_id == tp.trace_id).map(|p| p.borrow().span_id),
                pinned: true,
                ..Node::unlinked(Self::pinned_group(&tp, state), tp.parent_id, started_ns)
            },
            (None, Some(parent)) => {
                self.stats.linked_in_process += 1;
                let p = parent.borrow();
                Node { parent: Some(p.span_id), ..Node::unlinked(p.group.clone(), self.ids.span_id(), started_ns) }
            }
            (None, None) => Node::unlinked(self.new_group(), self.ids.span_id(), started_ns),
        };
        let node = Rc::new(RefCell::new(node));
        if let (Some(local), Some(remote)) = (conn.local, conn.remote) {
            let hint_key = (conn.pid, canonical(local), canonical(remote));
            if let Some((trace_id, span_id)) = pop_hint(&mut self.injected, &hint_key) {
                self.take_injected(&node, trace_id, span_id);
            }
            let key = (canonical(local), canonical(remote), seq);
            match self.inbound.take_peer(&key, started_ns, |server| server >= started_ns) {
                Some(server) => self.adopt_peer(&server, &node),
                None => self.outbound.insert(key, node.clone(), started_ns),
            }
        }
        node
    }

    /// The request went out with kernel-chosen ids: the span must use them,
    /// and its trace must be the injected one so both hosts agree.
    fn take_injected(&mut self, node: &NodeRef, trace_id: TraceId, span_id: SpanId) {
        let mut n = node.borrow_mut();
        n.span_id = span_id;
        let group = root(&n.group);
        let mut g = group.borrow_mut();
        if g.trace_id == trace_id {
            return;
        }
        if !g.pinned && !g.exported {
            g.trace_id = trace_id;
            return;
        }
        // Too late to move the local trace: the remote side follows the
        // injected one, so this span does too and loses its local parent.
        drop(g);
        n.group = Rc::new(RefCell::new(Group {
            trace_id,
            trace_state: String::new(),
            sampled: true,
            pinned: true,
            exported: false,
            merged_into: None,
        }));
        n.parent = None;
    }

    /// sk_msg injected `traceparent` with these ids into a request of `rec`'s
    /// connection; its RequestStarted follows.
    pub fn injected(&mut self, rec: &crate::capture::decode::InjectRecord) {
        if let (Some(local), Some(remote)) = (rec.local, rec.remote) {
            push_hint(&mut self.injected, (rec.tgid, canonical(local), canonical(remote)), (rec.trace_id, rec.span_id));
        }
    }

    /// The kernel gave the request being read on `conn_id` this trace id:
    /// what the thread injects downstream carries it. Its record follows the
    /// read that began the request, so that request is either in flight
    /// already or (head cut over several reads) not started yet. `update`:
    /// a later read of the same head brought the caller's `traceparent`.
    pub fn thread_trace(&mut self, conn_id: u64, trace_id: TraceId, update: bool) {
        let latest = self.requests.get(&conn_id).and_then(|m| {
            m.iter()
                .filter(|(_, n)| {
                    let n = n.borrow();
                    n.reader.is_some() && (update || !n.kernel_trace)
                })
                .max_by_key(|(seq, _)| **seq)
                .map(|(_, n)| n.clone())
        });
        let Some(node) = latest else {
            make_room(&mut self.thread_traces, &conn_id);
            self.thread_traces.insert(conn_id, trace_id);
            return;
        };
        let mut n = node.borrow_mut();
        n.kernel_trace = true;
        if n.pinned {
            return;
        }
        let group = root(&n.group);
        let mut g = group.borrow_mut();
        if !g.pinned && !g.exported {
            g.trace_id = trace_id;
        }
    }

    /// `pid` schedules its work on threads that stand for no request (Go's
    /// goroutines): its calls are linked by the process-wide rule alone.
    pub fn threads_do_not_follow_requests(&mut self, pid: u32) {
        if self.thread_agnostic.len() >= THREAD_AGNOSTIC_CAPACITY {
            self.thread_agnostic.clear();
        }
        self.thread_agnostic.insert(pid);
    }

    /// The one incoming request the thread is serving, if exactly one; for
    /// a thread serving none, what it inherited or else the process's one.
    fn in_process_parent(&mut self, pid: u32, tid: u32) -> Option<NodeRef> {
        if self.thread_agnostic.contains(&pid) {
            return self.process_wide_parent(pid);
        }
        if let Some(list) = self.inflight.get(&(pid, tid)) {
            match list.as_slice() {
                [one] => return Some(one.clone()),
                [] => {}
                _ => {
                    self.stats.ambiguous_threads += 1;
                    return None;
                }
            }
        }
        if let Some(node) = self.inherited.get(&(pid, tid)).filter(|n| !n.borrow().done) {
            return Some(node.clone());
        }
        self.process_wide_parent(pid)
    }

    /// For a thread serving several requests at once (the event loop of
    /// nginx, Envoy, HAProxy, Node.js), the one a call forwards: the only
    /// request in flight on the thread, not forwarded yet, with the same
    /// method and target. A proxy repeats the request line upstream; two
    /// such requests at once stay unlinked rather than risk a swap. In Go
    /// (Traefik, Caddy) a goroutine may forward on any thread, so the
    /// match must be the only one in the whole process.
    fn forwarded_request(&mut self, pid: u32, tid: u32, head: &Propagation) -> Option<NodeRef> {
        let key = head.forwarding_key()?;
        let forwards = |n: &&NodeRef| {
            let n = n.borrow();
            !n.done && !n.forwarded && n.forwarding_key == Some(key)
        };
        let mut same: Box<dyn Iterator<Item = &NodeRef>> = if self.thread_agnostic.contains(&pid) {
            Box::new(self.inflight.iter().filter(|((p, _), _)| *p == pid).flat_map(|(_, list)| list).filter(forwards))
        } else {
            Box::new(self.inflight.get(&(pid, tid))?.iter().filter(forwards))
        };
        let node = same.next()?.clone();
        if same.next().is_some() {
            return None;
        }
        node.borrow_mut().forwarded = true;
        self.stats.linked_by_forwarding += 1;
        Some(node)
    }

    /// The process's one request in flight, if exactly one is.
    fn process_wide_parent(&mut self, pid: u32) -> Option<NodeRef> {
        let node = match self.inflight_per_pid.get(&pid) {
            Some((1, last)) if !last.borrow().done => last.clone(),
            // The last to start ended first: the one left is found by a scan
            // of every thread's list, which this rarely needs.
            Some((1, _)) => {
                let only = self.inflight.iter().find(|((p, _), list)| *p == pid && !list.is_empty());
                only.and_then(|(_, list)| list.first().cloned())?
            }
            _ => return None,
        };
        self.stats.linked_process_wide += 1;
        Some(node)
    }

    /// `server` is the callee side of `client`'s request on this host.
    fn adopt_peer(&mut self, server: &NodeRef, client: &NodeRef) {
        let (client_started, client_span, client_group) = {
            let c = client.borrow();
            (c.started_ns, c.span_id, c.group.clone())
        };
        let mut s = server.borrow_mut();
        // The server cannot have read a request before the client began to
        // write it: otherwise the pairing is wrong (e.g. misaligned order on
        // a connection both sides joined mid-stream).
        if s.pinned || s.started_ns < client_started {
            return;
        }
        let (from, to) = (root(&s.group), root(&client_group));
        if !Rc::ptr_eq(&from, &to) {
            // The trace whose id no span has carried out yet takes the
            // other's id. A server held back for its client may have had
            // its own calls' spans exported already; when both trace ids
            // are out, the pair stays apart rather than split a trace.
            if !from.borrow().exported {
                from.borrow_mut().merged_into = Some(to);
            } else if !to.borrow().exported && !to.borrow().pinned {
                to.borrow_mut().merged_into = Some(from);
            } else {
                return;
            }
        }
        s.parent = Some(client_span);
        self.stats.linked_same_host += 1;
    }

    /// Thread `child` was created by thread `tid` of `pid`.
    pub fn thread_created(&mut self, pid: u32, tid: u32, child: u32) {
        let serving = match self.inflight.get(&(pid, tid)).map(Vec::as_slice) {
            Some([one]) => Some(one.clone()),
            _ => None,
        };
        match serving {
            Some(node) => {
                self.inherited.insert((pid, child), node);
            }
            None => {
                self.inherited.remove(&(pid, child));
            }
        }
    }

    /// The context for the span of request `seq` on `conn`; a fresh root
    /// when the request's start was not seen.
    pub fn finish(&mut self, conn_id: u64, seq: u64) -> TraceCtx {
        let node = self.take_request(conn_id, seq);
        self.context_of(node)
    }

    /// Like `finish`, unless `conn`'s request `seq` is a server's that still
    /// waits for its client on this host: its span then waits too, or it
    /// would go out as a root just before its parent shows up. That happens
    /// when the client's record reaches the ring after the server's whole
    /// exchange: a TLS library's plaintext is reported when its call
    /// returns, and on loopback the woken server often runs first.
    pub fn finish_or_wait(&mut self, conn: &Connection, seq: u64) -> Finished {
        let waiting = match (conn.local, conn.remote) {
            (Some(local), Some(remote)) => self.inbound.map.contains_key(&(canonical(remote), canonical(local), seq)),
            _ => false,
        };
        match self.take_request(conn.id, seq) {
            Some(node) if waiting => Finished::AwaitingPeer(AwaitingPeer(node)),
            node => Finished::Now(self.context_of(node)),
        }
    }

    /// The context of a request `finish_or_wait` held back, linked to its
    /// client if that has shown up since.
    pub fn finish_awaited(&mut self, awaiting: AwaitingPeer) -> TraceCtx {
        self.context_of(Some(awaiting.0))
    }

    /// Takes request `seq` of `conn_id` out of the tables of requests in
    /// flight.
    fn take_request(&mut self, conn_id: u64, seq: u64) -> Option<NodeRef> {
        let node = self.requests.get_mut(&conn_id).and_then(|m| m.remove(&seq))?;
        node.borrow_mut().done = true;
        let reader = node.borrow().reader;
        if let Some(reader) = reader
            && let Some(list) = self.inflight.get_mut(&reader)
        {
            let before = list.len();
            list.retain(|n| !Rc::ptr_eq(n, &node));
            let ended = before - list.len();
            if list.is_empty() {
                self.inflight.remove(&reader);
            }
            self.inflight_ended(reader.0, ended);
        }
        // Lookups skip finished entries, so they are swept out only once the
        // map has doubled since the last sweep: with many live entries (a
        // thread per connection) a sweep per span would cost as much as
        // there are threads.
        if self.inherited.len() >= self.inherited_sweep_at.max(INHERITED_SWEEP) {
            self.inherited.retain(|_, n| !n.borrow().done);
            self.inherited_sweep_at = 2 * self.inherited.len();
        }
        Some(node)
    }

    fn context_of(&mut self, node: Option<NodeRef>) -> TraceCtx {
        let Some(node) = node else {
            let trace_id = self.ids.trace_id();
            return TraceCtx {
                trace_id,
                span_id: self.ids.span_id(),
                parent_span_id: None,
                parent_is_remote: false,
                trace_state: String::new(),
                sampled: self.sampler.keeps(&trace_id),
            };
        };
        let n = node.borrow();
        let group = root(&n.group);
        group.borrow_mut().exported = true;
        let g = group.borrow();
        // A caller's decision stands; kspan's own traces by trace id, so
        // the whole trace shares one decision wherever it is made.
        let sampled = if g.pinned { g.sampled } else { self.sampler.keeps(&g.trace_id) };
        TraceCtx {
            trace_id: g.trace_id,
            span_id: n.span_id,
            parent_span_id: n.parent,
            parent_is_remote: n.parent_is_remote,
            trace_state: g.trace_state.clone(),
            sampled,
        }
    }

    /// Requests of a finished connection that never produced an exchange.
    pub fn connection_closed(&mut self, conn_id: u64) {
        self.thread_traces.remove(&conn_id);
        if let Some(left) = self.requests.remove(&conn_id) {
            for node in left.values() {
                node.borrow_mut().done = true;
            }
            let mut ended = Vec::new();
            for (&(pid, _), list) in self.inflight.iter_mut() {
                let before = list.len();
                list.retain(|n| !n.borrow().done);
                if list.len() < before {
                    ended.push((pid, before - list.len()));
                }
            }
            self.inflight.retain(|_, l| !l.is_empty());
            for (pid, count) in ended {
                self.inflight_ended(pid, count);
            }
        }
    }

    pub fn process_exited(&mut self, pid: u32) {
        self.thread_agnostic.remove(&pid);
        self.inflight.retain(|(p, _), _| *p != pid);
        self.inflight_per_pid.remove(&pid);
        self.inherited.retain(|(p, _), _| *p != pid);
    }

    /// Requests and threads currently tracked (for self-metrics).
    pub fn len(&self) -> usize {
        self.requests.values().map(FxHashMap::len).sum::<usize>() + self.inflight.len() + self.inherited.len()
    }
}

#[cfg(test)]
#[path = "linker_tests.rs"]
mod tests;
