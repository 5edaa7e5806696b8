//! Many concurrent streams interleaved on one connection.

use super::*;

const N: u32 = 50;

fn status_of(i: u32) -> u16 {
    [200, 404, 500, 201][(i % 4) as usize]
}

/// Client bytes: every request HEADERS first (sharing dynamic entries),
/// then first halves of the bodies in reverse order, then second halves.
fn requests() -> Vec<u8> {
    let mut out = [PREFACE.to_vec(), settings(&[])].concat();
    for i in 0..N {
        let post = i % 2 == 1;
        let mut b = Hb::new().idx(if post { 3 } else { 2 }).idx(6).lit_i(4, &format!("/item/{i}"), i % 3 == 0);
        // The first request indexes the authority; the rest reference it.
        b = if i == 0 { b.inc_i(1, "api.example", true) } else { b.idx(62) };
        out.extend(headers(2 * i + 1, if post { 0 } else { END_STREAM }, b.bytes()));
    }
    for i in (0..N).rev().filter(|i| i % 2 == 1) {
        out.extend(data(2 * i + 1, 0, i as usize));
    }
    for i in (0..N).filter(|i| i % 2 == 1) {
        out.extend(data(2 * i + 1, END_STREAM, 2 * i as usize));
    }
    out
}

/// Server bytes: HEADERS in one random order, bodies in another, so
/// streams complete out of order. Returns the completion order too.
fn responses(rng: &mut Rng) -> (Vec<u8>, Vec<u32>) {
    let mut out = [settings(&[]), settings_ack()].concat();
    let mut order: Vec<u32> = (0..N).collect();
    rng.shuffle(&mut order);
    for &i in &order {
        out.extend(headers(2 * i + 1, 0, &status_block(status_of(i), Some("application/json"))));
    }
    rng.shuffle(&mut order);
    for &i in &order {
        out.extend([data(2 * i + 1, 0, 5), ping(), data(2 * i + 1, END_STREAM, 7 * i as usize)].concat());
    }
    (out, order)
}

#[test]
fn fifty_interleaved_streams_complete_out_of_order() {
    for seed in 1..=20u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let req = requests();
        let (resp, order) = responses(&mut rng);
        let mut w = Wire::new(false);
        for c in rng.chunks(&req, 700) {
            w.client(c);
        }
        assert_eq!(w.started_streams().len(), N as usize, "seed {seed}");
        for c in rng.chunks(&resp, 700) {
            w.server(c);
        }
        assert!(!w.s.is_broken());
        let xs = w.exchanges();
        assert_eq!(xs.len(), N as usize, "seed {seed}");
        assert_eq!(xs.iter().map(|x| (x.stream_id - 1) / 2).collect::<Vec<_>>(), order, "seed {seed}");
        for x in &xs {
            let i = (x.stream_id - 1) / 2;
            let label = format!("seed {seed} stream {}", x.stream_id);
            assert_eq!(x.request.path, Some(format!("/item/{i}")), "{label}");
            assert_eq!(x.request.authority.as_deref(), Some("api.example"), "{label}");
            assert_eq!(x.request.method.as_deref(), Some(if i % 2 == 1 { "POST" } else { "GET" }));
            assert_eq!(x.status, Some(status_of(i)), "{label}");
            let body = if i % 2 == 1 { 3 * u64::from(i) } else { 0 };
            assert_eq!((x.request_body_size, x.response_body_size), (body, 5 + 7 * u64::from(i)), "{label}");
            assert_eq!((x.error, x.partial), (None, false), "{label}");
        }
        assert_eq!(w.s.open_streams(), 0);
    }
}
