use super::*;

const TP_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const TP_PARENT: &str = "00f067aa0ba902b7";

fn conn(id: u64, pid: u32, local: &str, remote: &str, role: Role) -> Connection {
    Connection {
        id,
        pid,
        fd: id as i32,
        role,
        local: Some(local.parse().unwrap()),
        remote: Some(remote.parse().unwrap()),
        netns: 1,
        mid_stream: false,
        opened_ns: 0,
        tls: false,
        kspan_export: false,
    }
}

fn head(traceparent: Option<String>) -> Propagation<'static> {
    Propagation { traceparent: traceparent.map(|t| &*Box::leak(t.into_boxed_str())), tracestate: None, request_line: None }
}

fn request(method: &'static str, target: &'static str) -> Propagation<'static> {
    Propagation { request_line: Some((method, target)), ..Propagation::default() }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// curl -> A (server conn 1, client conn 2 on the same thread) -> B (conn 3).
#[test]
fn chain_on_one_host_is_one_trace() {
    let mut l = Linker::new();
    let curl = conn(10, 100, "127.0.0.1:40000", "127.0.0.1:8000", Role::Client);
    let a_in = conn(1, 200, "127.0.0.1:8000", "127.0.0.1:40000", Role::Server);
    let a_out = conn(2, 200, "127.0.0.1:40001", "127.0.0.1:9000", Role::Client);
    let b_in = conn(3, 300, "127.0.0.1:9000", "127.0.0.1:40001", Role::Server);
    l.request_started(&curl, Role::Client, 0, &head(None), 10, 100);
    l.request_started(&a_in, Role::Server, 0, &head(None), 20, 201);
    l.request_started(&a_out, Role::Client, 0, &head(None), 30, 201);
    l.request_started(&b_in, Role::Server, 0, &head(None), 40, 301);
    let b = l.finish(3, 0);
    let a_client = l.finish(2, 0);
    let a = l.finish(1, 0);
    let c = l.finish(10, 0);
    assert_eq!(c.parent_span_id, None);
    assert_eq!(a.parent_span_id, Some(c.span_id));
    assert_eq!(a_client.parent_span_id, Some(a.span_id));
    assert_eq!(b.parent_span_id, Some(a_client.span_id));
    for ctx in [&a, &a_client, &b] {
        assert_eq!(ctx.trace_id, c.trace_id);
    }
    assert_eq!((l.stats.linked_same_host, l.stats.linked_in_process), (2, 1));
}

/// The callee's read is seen before the caller's write (ring-buffer race),
/// and the callee already made its own call: everything re-roots.
#[test]
fn late_caller_reroots_the_callee_subtree() {
    let mut l = Linker::new();
    let a_in = conn(1, 200, "127.0.0.1:8000", "127.0.0.1:40000", Role::Server);
    let a_out = conn(2, 200, "127.0.0.1:40001", "127.0.0.1:9000", Role::Client);
    let curl = conn(10, 100, "127.0.0.1:40000", "127.0.0.1:8000", Role::Client);
    l.request_started(&a_in, Role::Server, 0, &head(None), 20, 201);
    l.request_started(&a_out, Role::Client, 0, &head(None), 30, 201);
    l.request_started(&curl, Role::Client, 0, &head(None), 10, 100);
    let a_client = l.finish(2, 0);
    let a = l.finish(1, 0);
    let c = l.finish(10, 0);
    assert_eq!(a.parent_span_id, Some(c.span_id));
    assert_eq!(a.trace_id, c.trace_id);
    assert_eq!(a_client.trace_id, c.trace_id, "child created before the link follows it");
}

#[test]
fn event_loop_with_two_requests_in_flight_links_nothing() {
    let mut l = Linker::new();
    let in1 = conn(1, 200, "127.0.0.1:8000", "127.0.0.1:40000", Role::Server);
    let in2 = conn(2, 200, "127.0.0.1:8000", "127.0.0.1:40002", Role::Server);
    let out = conn(3, 200, "127.0.0.1:40003", "10.0.0.1:80", Role::Client);
    l.request_started(&in1, Role::Server, 0, &head(None), 10, 200);
    l.request_started(&in2, Role::Server, 0, &head(None), 11, 200);
    l.request_started(&out, Role::Client, 0, &head(None), 12, 200);
    let o = l.finish(3, 0);
    let (a, b) = (l.finish(1, 0), l.finish(2, 0));
    assert_eq!(o.parent_span_id, None);
    assert!(o.trace_id != a.trace_id && o.trace_id != b.trace_id);
    assert_eq!(l.stats.ambiguous_threads, 1);
    // Once one request is done, the loop serves one: the next call links.
    l.request_started(&in1, Role::Server, 1, &head(None), 20, 200);
    l.request_started(&out, Role::Client, 1, &head(None), 21, 200);
    let o = l.finish(3, 1);
    let a = l.finish(1, 1);
    assert_eq!(o.parent_span_id, Some(a.span_id));
}

/// nginx's one worker thread serves three requests at once and forwards
/// each upstream in another order: each call repeats one request line.
#[test]
fn event_loop_proxy_links_each_call_to_the_request_it_forwards() {
    let mut l = Linker::new();
    let paths = ["/users/1", "/users/2?x=1", "/orders"];
    for (i, path) in paths.iter().enumerate() {
        let inbound = conn(1 + i as u64, 200, "127.0.0.1:8000", &format!("127.0.0.1:{}", 40000 + i), Role::Server);
        l.request_started(&inbound, Role::Server, 0, &request("GET", path), 10 + i as u64, 200);
    }
    // One kept-alive upstream connection, requests in another order; the
    // second is in absolute form, as a forward proxy may send it.
    let upstream = conn(9, 200, "127.0.0.1:41000", "127.0.0.1:9000", Role::Client);
    l.request_started(&upstream, Role::Client, 0, &request("GET", "/orders"), 20, 200);
    l.request_started(&upstream, Role::Client, 1, &request("GET", "http://app:9000/users/1"), 21, 200);
    l.request_started(&upstream, Role::Client, 2, &request("GET", "/users/2?x=1"), 22, 200);
    let calls: Vec<TraceCtx> = (0..3).map(|seq| l.finish(9, seq)).collect();
    let served: Vec<TraceCtx> = (0..3).map(|i| l.finish(1 + i, 0)).collect();
    for (call, by) in [(0, 2), (1, 0), (2, 1)] {
        assert_eq!(calls[call].parent_span_id, Some(served[by].span_id), "call {call}");
        assert_eq!(calls[call].trace_id, served[by].trace_id);
    }
    assert_eq!(l.stats.linked_by_forwarding, 3);
}

#[test]
fn forwarding_links_only_a_single_unforwarded_match() {
    let mut l = Linker::new();
    let in1 = conn(1, 200, "127.0.0.1:8000", "127.0.0.1:40000", Role::Server);
    let in2 = conn(2, 200, "127.0.0.1:8000", "127.0.0.1:40001", Role::Server);
    let in3 = conn(3, 200, "127.0.0.1:8000", "127.0.0.1:40002", Role::Server);
    let out = conn(9, 200, "127.0.0.1:41000", "127.0.0.1:9000", Role::Client);
    l.request_started(&in1, Role::Server, 0, &request("GET", "/same"), 10, 200);
    l.request_started(&in2, Role::Server, 0, &request("GET", "/same"), 11, 200);
    l.request_started(&in3, Role::Server, 0, &request("GET", "/once"), 12, 200);
    // Two requests it could forward: which one is unknown, so neither.
    l.request_started(&out, Role::Client, 0, &request("GET", "/same"), 20, 200);
    // Another method, or a target no request has: not a forwarding.
    l.request_started(&out, Role::Client, 1, &request("POST", "/once"), 21, 200);
    l.request_started(&out, Role::Client, 2, &request("GET", "/elsewhere"), 22, 200);
    // The first repeat of /once is its forwarding; a second is not.
    l.request_started(&out, Role::Client, 3, &request("GET", "/once"), 23, 200);
    l.request_started(&out, Role::Client, 4, &request("GET", "/once"), 24, 200);
    let calls: Vec<TraceCtx> = (0..5).map(|seq| l.finish(9, seq)).collect();
    let once = l.finish(3, 0);
    for seq in [0, 1, 2, 4] {
        assert_eq!(calls[seq].parent_span_id, None, "call {seq}");
    }
    assert_eq!(calls[3].parent_span_id, Some(once.span_id));
    assert_eq!(l.stats.linked_by_forwarding, 1);
}

#[test]
fn go_forwarding_is_matched_across_the_whole_process() {
    let mut l = Linker::new();
    l.threads_do_not_follow_requests(200);
    let in1 = conn(1, 200, "127.0.0.1:8000", "127.0.0.1:40000", Role::Server);
    let in2 = conn(2, 200, "127.0.0.1:8000", "127.0.0.1:40001", Role::Server);
    let in3 = conn(3, 200, "127.0.0.1:8000", "127.0.0.1:40002", Role::Server);
    let out = conn(9, 200, "127.0.0.1:41000", "127.0.0.1:9000", Role::Client);
    // Read on three threads; the goroutines forward from others.
    l.request_started(&in1, Role::Server, 0, &request("GET", "/a"), 10, 201);
    l.request_started(&in2, Role::Server, 0, &request("GET", "/b"), 11, 202);
    l.request_started(&in3, Role::Server, 0, &request("GET", "/b"), 12, 203);
    l.request_started(&out, Role::Client, 0, &request("GET", "/a"), 20, 202);
    // Two /b requests in the process: which one this is, is unknown, even
    // though only one of them was read on the forwarding thread.
    l.request_started(&out, Role::Client, 1, &request("GET", "/b"), 21, 202);
    let calls = (l.finish(9, 0), l.finish(9, 1));
    let a = l.finish(1, 0);
    assert_eq!(calls.0.parent_span_id, Some(a.span_id));
    assert_eq!(calls.1.parent_span_id, None);
    assert_eq!(l.stats.linked_by_forwarding, 1);
}

#[test]
fn worker_thread_inherits_its_creators_request() {
    let mut l = Linker::new();
    let a_in = conn(1, 200, "127.0.0.1:8000", "127.0.0.1:40000", Role::Server);
    let a_out = conn(2, 200, "127.0.0.1:40001", "10.0.0.1:80", Role::Client);
    l.request_started(&a_in, Role::Server, 0, &head(None), 10, 201);
    l.thread_created(200, 201, 205);
    l.request_started(&a_out, Role::Client, 0, &head(None), 12, 205);
    let out = l.finish(2, 0);
    let a = l.finish(1, 0);
    assert_eq!(out.parent_span_id, Some(a.span_id));
    assert_eq!(out.trace_id, a.trace_id);
    // The request is over: a later call on that thread is not its child.
    l.request_started(&a_out, Role::Client, 1, &head(None), 30, 205);
    assert_eq!(l.finish(2, 1).parent_span_id, None);
}

#[test]
fn traceparent_wins_over_same_host_linking() {
    let mut l = Linker::new();
    let caller = conn(10, 100, "127.0.0.1:40000", "127.0.0.1:8000", Role::Client);
    let callee = conn(1, 200, "127.0.0.1:8000", "127.0.0.1:40000", Role::Server);
    let tp = format!("00-{TP_TRACE}-{TP_PARENT}-01");
    l.request_started(&caller, Role::Client, 0, &head(Some(tp.clone())), 10, 100);
    l.request_started(&callee, Role::Server, 0, &head(Some(tp)), 20, 201);
    let s = l.finish(1, 0);
    let c = l.finish(10, 0);
    assert_eq!(hex(&s.trace_id), TP_TRACE);
    assert_eq!(s.parent_span_id.map(|p| hex(&p)).as_deref(), Some(TP_PARENT));
    assert!(s.parent_is_remote);
    assert_eq!(hex(&c.span_id), TP_PARENT, "the propagating client span is the header's parent");
    assert_eq!(c.trace_id, s.trace_id);
}

#[test]
fn sampled_out_trace_is_sampled_out_everywhere() {
    let mut l = Linker::new();
    let a_in = conn(1, 200, "127.0.0.1:8000", "127.0.0.1:40000", Role::Server);
    let a_out = conn(2, 200, "127.0.0.1:40001", "127.0.0.1:9000", Role::Client);
    let b_in = conn(3, 300, "127.0.0.1:9000", "127.0.0.1:40001", Role::Server);
    l.request_started(&a_in, Role::Server, 0, &head(Some(format!("00-{TP_TRACE}-{TP_PARENT}-00"))), 10, 201);
    l.request_started(&a_out, Role::Client, 0, &head(None), 20, 201);
    l.request_started(&b_in, Role::Server, 0, &head(None), 30, 301);
    assert!(!l.finish(3, 0).sampled, "same-host callee");
    assert!(!l.finish(2, 0).sampled, "in-process child");
    assert!(!l.finish(1, 0).sampled);
}

#[test]
fn forwarded_header_does_not_duplicate_the_callers_span() {
    let mut l = Linker::new();
    let tp = format!("00-{TP_TRACE}-{TP_PARENT}-01");
    let a_in = conn(1, 200, "127.0.0.1:8000", "127.0.0.1:40000", Role::Server);
    let a_out = conn(2, 200, "127.0.0.1:40001", "10.0.0.1:80", Role::Client);
    l.request_started(&a_in, Role::Server, 0, &head(Some(tp.clone())), 10, 201);
    l.request_started(&a_out, Role::Client, 0, &head(Some(tp)), 20, 201);
    let out = l.finish(2, 0);
    let a = l.finish(1, 0);
    assert_ne!(hex(&out.span_id), TP_PARENT);
    assert_eq!(out.parent_span_id, Some(a.span_id));
    assert_eq!(out.trace_id, a.trace_id);
}

#[test]
fn impossible_order_is_not_linked() {
    let mut l = Linker::new();
    let caller = conn(10, 100, "127.0.0.1:40000", "127.0.0.1:8000", Role::Client);
    let callee = conn(1, 200, "127.0.0.1:8000", "127.0.0.1:40000", Role::Server);
    l.request_started(&callee, Role::Server, 0, &head(None), 5, 201);
    l.request_started(&caller, Role::Client, 0, &head(None), 10, 100);
    assert_eq!(l.finish(1, 0).parent_span_id, None, "read before the write began");
}

#[test]
fn unseen_start_gets_a_fresh_root_and_state_is_released() {
    let mut l = Linker::new();
    let ctx = l.finish(99, 0);
    assert_eq!(ctx.parent_span_id, None);
    let a_in = conn(1, 200, "127.0.0.1:8000", "127.0.0.1:40000", Role::Server);
    l.request_started(&a_in, Role::Server, 0, &head(None), 10, 201);
    l.thread_created(200, 201, 202);
    assert!(l.len() > 0);
    l.connection_closed(1);
    l.process_exited(200);
    assert_eq!(l.len(), 0);
}

/// `--propagate headers`: the kernel chose the server's trace id and the
/// injected client ids; the spans follow them exactly.
#[test]
fn kernel_injected_ids_are_used() {
    let mut l = Linker::new();
    let a_in = conn(1, 200, "10.0.0.1:8000", "10.0.0.9:40000", Role::Server);
    let a_out = conn(2, 200, "10.0.0.1:40001", "10.0.0.2:9000", Role::Client);
    let kernel_trace = [7u8; 16];
    l.thread_trace(1, kernel_trace, false);
    l.request_started(&a_in, Role::Server, 0, &head(None), 10, 201);
    l.injected(&crate::capture::decode::InjectRecord {
        tgid: 200,
        tid: 201,
        local: a_out.local,
        remote: a_out.remote,
        trace_id: kernel_trace,
        span_id: [9; 8],
    });
    l.request_started(&a_out, Role::Client, 0, &head(None), 20, 201);
    let out = l.finish(2, 0);
    let a = l.finish(1, 0);
    assert_eq!(a.trace_id, kernel_trace);
    assert_eq!(out.span_id, [9; 8]);
    assert_eq!((out.trace_id, out.parent_span_id), (kernel_trace, Some(a.span_id)));
}

/// The kernel did not know the thread's request (e.g. handed to a worker):
/// the still-unexported local trace moves to the injected trace id.
#[test]
fn injected_trace_id_wins_while_nothing_was_exported() {
    let mut l = Linker::new();
    let a_in = conn(1, 200, "10.0.0.1:8000", "10.0.0.9:40000", Role::Server);
    let a_out = conn(2, 200, "10.0.0.1:40001", "10.0.0.2:9000", Role::Client);
    l.request_started(&a_in, Role::Server, 0, &head(None), 10, 201);
    l.injected(&crate::capture::decode::InjectRecord {
        tgid: 200,
        tid: 201,
        local: a_out.local,
        remote: a_out.remote,
        trace_id: [3; 16],
        span_id: [4; 8],
    });
    l.request_started(&a_out, Role::Client, 0, &head(None), 20, 201);
    let out = l.finish(2, 0);
    let a = l.finish(1, 0);
    assert_eq!((out.trace_id, a.trace_id), ([3; 16], [3; 16]));
    assert_eq!(out.parent_span_id, Some(a.span_id));
}

/// The kernel's record of a request's trace follows the read that began
/// it. On a keep-alive connection each request must get its own, never the
/// one of the request before (two unrelated requests in one trace).
#[test]
fn kernel_trace_follows_its_own_request_on_keep_alive() {
    let mut l = Linker::new();
    let a_in = conn(1, 200, "10.0.0.1:8000", "10.0.0.9:40000", Role::Server);
    l.request_started(&a_in, Role::Server, 0, &head(None), 10, 201);
    l.thread_trace(1, [1; 16], false);
    let first = l.finish(1, 0);
    l.request_started(&a_in, Role::Server, 1, &head(None), 20, 201);
    l.thread_trace(1, [2; 16], false);
    let second = l.finish(1, 1);
    assert_eq!((first.trace_id, second.trace_id), ([1; 16], [2; 16]));
}

/// A head read in two parts, its `traceparent` in the second: the kernel
/// first gave the thread a fresh trace, then the caller's. The request
/// follows its header, and neither id is left over for the next request.
#[test]
fn head_split_over_reads_leaves_no_stale_kernel_trace() {
    let mut l = Linker::new();
    let a_in = conn(1, 200, "10.0.0.1:8000", "10.0.0.9:40000", Role::Server);
    let caller = format!("00-{TP_TRACE}-{TP_PARENT}-01");
    l.thread_trace(1, [5; 16], false);
    l.request_started(&a_in, Role::Server, 0, &head(Some(caller)), 10, 201);
    let mut tp_trace = [0u8; 16];
    for (i, b) in tp_trace.iter_mut().enumerate() {
        *b = u8::from_str_radix(&TP_TRACE[2 * i..2 * i + 2], 16).unwrap();
    }
    l.thread_trace(1, tp_trace, true);
    assert_eq!(hex(&l.finish(1, 0).trace_id), TP_TRACE);
    l.request_started(&a_in, Role::Server, 1, &head(None), 20, 201);
    let next = l.finish(1, 1);
    assert!(next.trace_id != [5; 16] && next.trace_id != tp_trace, "a new request starts a new trace");
}

#[test]
fn ratio_sampling_keeps_or_drops_whole_traces() {
    let sampler = crate::span::sampler::Sampler::from_values(Some("traceidratio"), Some("0.5")).unwrap();
    let mut l = Linker::with_sampler(sampler);
    let (mut kept, mut dropped) = (0, 0);
    for i in 0..200u64 {
        let a_in = conn(1000 + i, 200, "127.0.0.1:8000", "127.0.0.1:40000", Role::Server);
        let a_out = conn(5000 + i, 200, "127.0.0.1:40001", "127.0.0.1:9000", Role::Client);
        let b_in = conn(9000 + i, 300, "127.0.0.1:9000", "127.0.0.1:40001", Role::Server);
        l.request_started(&a_in, Role::Server, 0, &head(None), 10, 201);
        l.request_started(&a_out, Role::Client, 0, &head(None), 20, 201);
        l.request_started(&b_in, Role::Server, 0, &head(None), 30, 301);
        let decisions = [l.finish(9000 + i, 0).sampled, l.finish(5000 + i, 0).sampled, l.finish(1000 + i, 0).sampled];
        assert!(decisions.iter().all(|d| *d == decisions[0]), "one decision per trace: {decisions:?}");
        if decisions[0] { kept += 1 } else { dropped += 1 }
    }
    assert!(kept > 50 && dropped > 50, "kept {kept}, dropped {dropped}");
}

/// Java's HttpClient, a Go client, a tokio runtime: the handler thread
/// waits while an I/O thread that serves nothing writes its call.
#[test]
fn io_thread_call_links_to_the_processes_one_request() {
    let mut l = Linker::new();
    let a_in = conn(1, 200, "127.0.0.1:8000", "127.0.0.1:40000", Role::Server);
    let a_out = conn(2, 200, "127.0.0.1:40001", "10.0.0.1:80", Role::Client);
    l.request_started(&a_in, Role::Server, 0, &head(None), 10, 201);
    l.request_started(&a_out, Role::Client, 0, &head(None), 12, 250);
    let out = l.finish(2, 0);
    let a = l.finish(1, 0);
    assert_eq!(out.parent_span_id, Some(a.span_id));
    assert_eq!(out.trace_id, a.trace_id);
    assert_eq!(l.stats.linked_process_wide, 1);
    // Nothing in flight: a background call is a root.
    l.request_started(&a_out, Role::Client, 1, &head(None), 20, 250);
    assert_eq!(l.finish(2, 1).parent_span_id, None);
}

#[test]
fn io_thread_call_links_nothing_while_the_process_serves_two() {
    let mut l = Linker::new();
    let in1 = conn(1, 200, "127.0.0.1:8000", "127.0.0.1:40000", Role::Server);
    let in2 = conn(2, 200, "127.0.0.1:8000", "127.0.0.1:40002", Role::Server);
    let out = conn(3, 200, "127.0.0.1:40003", "10.0.0.1:80", Role::Client);
    l.request_started(&in1, Role::Server, 0, &head(None), 10, 201);
    l.request_started(&in2, Role::Server, 0, &head(None), 11, 202);
    l.request_started(&out, Role::Client, 0, &head(None), 12, 250);
    assert_eq!(l.finish(3, 0).parent_span_id, None);
    // One ends (its connection closes unanswered): the other is the one.
    l.connection_closed(1);
    l.request_started(&out, Role::Client, 1, &head(None), 20, 250);
    let o = l.finish(3, 1);
    let b = l.finish(2, 0);
    assert_eq!(o.parent_span_id, Some(b.span_id));
    // Another process's request is never a parent.
    let other = conn(4, 300, "127.0.0.1:9000", "127.0.0.1:40004", Role::Server);
    l.request_started(&other, Role::Server, 0, &head(None), 30, 301);
    l.request_started(&out, Role::Client, 2, &head(None), 31, 250);
    assert_eq!(l.finish(3, 2).parent_span_id, None);
    assert_eq!(l.stats.linked_process_wide, 1);
}

/// The later of two overlapping requests ends first: the earlier is the one.
#[test]
fn io_thread_call_finds_the_earlier_request_when_the_later_ended() {
    let mut l = Linker::new();
    let in1 = conn(1, 200, "127.0.0.1:8000", "127.0.0.1:40000", Role::Server);
    let in2 = conn(2, 200, "127.0.0.1:8000", "127.0.0.1:40002", Role::Server);
    let out = conn(3, 200, "127.0.0.1:40003", "10.0.0.1:80", Role::Client);
    l.request_started(&in1, Role::Server, 0, &head(None), 10, 201);
    l.request_started(&in2, Role::Server, 0, &head(None), 11, 202);
    l.finish(2, 0);
    l.request_started(&out, Role::Client, 0, &head(None), 12, 250);
    let o = l.finish(3, 0);
    assert_eq!(o.parent_span_id, Some(l.finish(1, 0).span_id));
}

/// The server's whole exchange is seen before its client's start (a TLS
/// client's plaintext is reported when its call returns): the server's
/// span waits, then joins its client's trace. Its own call's span went out
/// meanwhile, so the client's trace takes the server's id, not the reverse.
#[test]
fn server_finished_before_its_client_waits_and_links() {
    let mut l = Linker::new();
    let a_in = conn(1, 200, "127.0.0.1:8000", "127.0.0.1:40000", Role::Server);
    let a_out = conn(2, 200, "127.0.0.1:40001", "10.0.0.1:80", Role::Client);
    let curl = conn(10, 100, "127.0.0.1:40000", "127.0.0.1:8000", Role::Client);
    l.request_started(&a_in, Role::Server, 0, &head(None), 20, 201);
    l.request_started(&a_out, Role::Client, 0, &head(None), 30, 201);
    let a_client = l.finish(2, 0);
    let Finished::AwaitingPeer(held) = l.finish_or_wait(&a_in, 0) else {
        panic!("a server whose traced client has not shown up waits");
    };
    l.request_started(&curl, Role::Client, 0, &head(None), 10, 100);
    let a = l.finish_awaited(held);
    let c = l.finish(10, 0);
    assert_eq!(a.parent_span_id, Some(c.span_id));
    assert_eq!(a_client.parent_span_id, Some(a.span_id));
    assert_eq!((a.trace_id, c.trace_id), (a_client.trace_id, a_client.trace_id), "one trace, under the id already out");
}

#[test]
fn server_whose_client_was_seen_first_does_not_wait() {
    let mut l = Linker::new();
    let curl = conn(10, 100, "127.0.0.1:40000", "127.0.0.1:8000", Role::Client);
    let a_in = conn(1, 200, "127.0.0.1:8000", "127.0.0.1:40000", Role::Server);
    l.request_started(&curl, Role::Client, 0, &head(None), 10, 100);
    l.request_started(&a_in, Role::Server, 0, &head(None), 20, 201);
    let Finished::Now(a) = l.finish_or_wait(&a_in, 0) else {
        panic!("already linked: nothing to wait for");
    };
    assert_eq!(a.parent_span_id, Some(l.finish(10, 0).span_id));
}

/// Go: goroutines move between threads, so the request a thread read last
/// says nothing about the call it writes next.
#[test]
fn go_process_links_by_the_process_wide_rule_only() {
    let mut l = Linker::new();
    l.threads_do_not_follow_requests(200);
    let in1 = conn(1, 200, "127.0.0.1:8000", "127.0.0.1:40000", Role::Server);
    let in2 = conn(2, 200, "127.0.0.1:8000", "127.0.0.1:40002", Role::Server);
    let out = conn(3, 200, "127.0.0.1:40003", "10.0.0.1:80", Role::Client);
    l.request_started(&in1, Role::Server, 0, &head(None), 10, 201);
    l.request_started(&in2, Role::Server, 0, &head(None), 20, 202);
    // Thread 202 read request 2, but this call may be request 1's goroutine.
    l.request_started(&out, Role::Client, 0, &head(None), 30, 202);
    assert_eq!(l.finish(3, 0).parent_span_id, None, "two requests in flight: no link");
    let second = l.finish(2, 0);
    // One request left in flight: the process-wide rule links, whatever the thread.
    l.request_started(&out, Role::Client, 1, &head(None), 40, 202);
    let first = l.finish(1, 0);
    let call = l.finish(3, 1);
    assert_eq!(call.parent_span_id, Some(first.span_id));
    assert_ne!(call.parent_span_id, Some(second.span_id));
}

/// The client's end missed the connection's first request (say kspan
/// started while it was in flight): the two ends number the same request
/// differently from then on, and each request is still joined to its own
/// client, whichever end shows up first.
#[test]
fn request_order_drift_on_a_kept_alive_connection_still_links() {
    let mut l = Linker::new();
    let curl = conn(10, 100, "127.0.0.1:40000", "127.0.0.1:8000", Role::Client);
    let a_in = conn(1, 200, "127.0.0.1:8000", "127.0.0.1:40000", Role::Server);
    // Only the server saw request 0.
    l.request_started(&a_in, Role::Server, 0, &head(None), 1_000, 201);
    assert_eq!(l.finish(1, 0).parent_span_id, None);
    // Client first: its 0 is the server's 1.
    l.request_started(&curl, Role::Client, 0, &head(None), 2_000, 100);
    l.request_started(&a_in, Role::Server, 1, &head(None), 2_100, 201);
    let server = l.finish(1, 1);
    assert_eq!(server.parent_span_id, Some(l.finish(10, 0).span_id), "client first");
    // Server first (it waits for its traced client): its 2 is the client's 1.
    l.request_started(&a_in, Role::Server, 2, &head(None), 3_100, 201);
    l.request_started(&curl, Role::Client, 1, &head(None), 3_000, 100);
    let server = l.finish(1, 2);
    let client = l.finish(10, 1);
    assert_eq!(server.parent_span_id, Some(client.span_id), "server first");
    assert_eq!(server.trace_id, client.trace_id);
}

/// A request left waiting long ago is not taken for a new one whose
/// numbers disagree: only a near start joins a drifted pair.
#[test]
fn drifted_pair_is_joined_only_when_the_starts_are_near() {
    let mut l = Linker::new();
    let curl = conn(10, 100, "127.0.0.1:40000", "127.0.0.1:8000", Role::Client);
    let a_in = conn(1, 200, "127.0.0.1:8000", "127.0.0.1:40000", Role::Server);
    l.request_started(&curl, Role::Client, 0, &head(None), 1_000, 100);
    l.finish(10, 0);
    l.request_started(&a_in, Role::Server, 5, &head(None), 1_000 + 2 * DRIFT_WINDOW_NS, 201);
    assert_eq!(l.finish(1, 5).parent_span_id, None);
    assert_eq!(l.stats.linked_same_host, 0);
}

/// Exact numbers still decide when both ends agree: with two requests of
/// one connection waiting, each joins its own.
#[test]
fn agreeing_order_is_matched_exactly() {
    let mut l = Linker::new();
    let curl = conn(10, 100, "127.0.0.1:40000", "127.0.0.1:8000", Role::Client);
    let a_in = conn(1, 200, "127.0.0.1:8000", "127.0.0.1:40000", Role::Server);
    // Pipelined: both requests written before the server reads either.
    l.request_started(&curl, Role::Client, 0, &head(None), 1_000, 100);
    l.request_started(&curl, Role::Client, 1, &head(None), 1_010, 100);
    l.request_started(&a_in, Role::Server, 0, &head(None), 1_100, 201);
    l.request_started(&a_in, Role::Server, 1, &head(None), 1_200, 201);
    let (s0, s1) = (l.finish(1, 0), l.finish(1, 1));
    let (c0, c1) = (l.finish(10, 0), l.finish(10, 1));
    assert_eq!(s0.parent_span_id, Some(c0.span_id));
    assert_eq!(s1.parent_span_id, Some(c1.span_id));
}
