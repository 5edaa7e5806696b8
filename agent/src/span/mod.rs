//! From protocol exchanges to spans: ids, clock, attributes, trace context.

pub mod builder;
pub mod linker;
pub mod model;
pub mod route;
pub mod sampler;
pub mod tracecontext;
pub mod url;

/// Converts the kernel's CLOCK_MONOTONIC stamps to wall time with one offset
/// taken at start-up, so every span shares one clock and parent/child
/// intervals nest exactly as they happened.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    offset_ns: i128,
}

impl Clock {
    pub fn now() -> Self {
        let mono = clock_ns(libc::CLOCK_MONOTONIC);
        let real = clock_ns(libc::CLOCK_REALTIME);
        Self { offset_ns: real - mono }
    }

    pub fn to_unix_nanos(self, mono_ns: u64) -> u64 {
        (i128::from(mono_ns) + self.offset_ns).clamp(0, i128::from(u64::MAX)) as u64
    }
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid clock id and out-pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// Random trace and span ids (never all-zero, which W3C forbids).
pub struct IdGenerator {
    rng: rand::rngs::SmallRng,
}

impl Default for IdGenerator {
    fn default() -> Self {
        Self::new()
    }
}

impl IdGenerator {
    pub fn new() -> Self {
        use rand::SeedableRng;
        Self { rng: rand::rngs::SmallRng::from_os_rng() }
    }

    pub fn trace_id(&mut self) -> [u8; 16] {
        use rand::Rng;
        loop {
            let id: [u8; 16] = self.rng.random();
            if id != [0; 16] {
                return id;
            }
        }
    }

    pub fn span_id(&mut self) -> [u8; 8] {
        use rand::Rng;
        loop {
            let id: [u8; 8] = self.rng.random();
            if id != [0; 8] {
                return id;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_maps_monotonic_to_now() {
        let clock = Clock::now();
        let mono = clock_ns(libc::CLOCK_MONOTONIC) as u64;
        let real = clock_ns(libc::CLOCK_REALTIME) as u64;
        let mapped = clock.to_unix_nanos(mono);
        assert!(mapped.abs_diff(real) < 50_000_000, "{mapped} vs {real}");
        assert_eq!(clock.to_unix_nanos(mono + 1000) - mapped, 1000);
    }

    #[test]
    fn ids_are_random_and_valid() {
        let mut ids = IdGenerator::new();
        let (a, b) = (ids.trace_id(), ids.trace_id());
        assert_ne!(a, b);
        assert_ne!(ids.span_id(), [0; 8]);
    }
}
