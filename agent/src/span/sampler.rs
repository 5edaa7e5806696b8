//! Head sampling, per trace: the decision is a pure function of the trace
//! id (and of a caller's `traceparent` flag), so every span of a trace — on
//! this host and on any other kspan with the same settings — gets the same
//! one, whenever it is made. A trace is exported whole or not at all.

/// `OTEL_TRACES_SAMPLER` with `OTEL_TRACES_SAMPLER_ARG`, as the SDKs read
/// them. Caller decisions (`traceparent` flags) are always respected, as in
/// the `parentbased_*` samplers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampler {
    /// Fraction of new traces kept, 0.0..=1.0.
    ratio: f64,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SamplerError {
    #[error("OTEL_TRACES_SAMPLER={0:?} is not supported (always_on, always_off, traceidratio and their parentbased_ forms are)")]
    Unknown(String),
    #[error("OTEL_TRACES_SAMPLER_ARG={0:?} must be a number between 0 and 1")]
    Ratio(String),
}

impl Default for Sampler {
    fn default() -> Self {
        Self { ratio: 1.0 }
    }
}

impl Sampler {
    pub fn from_env() -> Result<Self, SamplerError> {
        Self::from_values(std::env::var("OTEL_TRACES_SAMPLER").ok().as_deref(), std::env::var("OTEL_TRACES_SAMPLER_ARG").ok().as_deref())
    }

    pub fn from_values(name: Option<&str>, arg: Option<&str>) -> Result<Self, SamplerError> {
        let name = name.map(str::trim).filter(|n| !n.is_empty()).unwrap_or("parentbased_always_on");
        let ratio = match name.strip_prefix("parentbased_").unwrap_or(name) {
            "always_on" => 1.0,
            "always_off" => 0.0,
            "traceidratio" => match arg.map(str::trim).filter(|a| !a.is_empty()) {
                None => 1.0,
                Some(a) => a.parse::<f64>().ok().filter(|r| (0.0..=1.0).contains(r)).ok_or_else(|| SamplerError::Ratio(a.to_owned()))?,
            },
            _ => return Err(SamplerError::Unknown(name.to_owned())),
        };
        Ok(Self { ratio })
    }

    /// Whether a trace kspan started (no caller decision) is kept: the
    /// lower 8 bytes of the id against the ratio, as TraceIdRatioBased does.
    pub fn keeps(&self, trace_id: &[u8; 16]) -> bool {
        if self.ratio >= 1.0 {
            return true;
        }
        let mut low = [0u8; 8];
        low.copy_from_slice(&trace_id[8..]);
        let threshold = (self.ratio * (1u64 << 63) as f64) as u64;
        (u64::from_be_bytes(low) >> 1) < threshold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_standard_variables() {
        assert_eq!(Sampler::from_values(None, None).unwrap(), Sampler { ratio: 1.0 });
        assert_eq!(Sampler::from_values(Some("always_off"), None).unwrap(), Sampler { ratio: 0.0 });
        assert_eq!(Sampler::from_values(Some("parentbased_traceidratio"), Some("0.25")).unwrap(), Sampler { ratio: 0.25 });
        assert!(matches!(Sampler::from_values(Some("jaeger_remote"), None), Err(SamplerError::Unknown(_))));
        assert!(matches!(Sampler::from_values(Some("traceidratio"), Some("2")), Err(SamplerError::Ratio(_))));
    }

    #[test]
    fn decision_depends_on_the_trace_id_only_and_matches_the_ratio() {
        let s = Sampler::from_values(Some("traceidratio"), Some("0.3")).unwrap();
        let mut kept = 0;
        let mut ids = crate::span::IdGenerator::new();
        for _ in 0..20000 {
            let id = ids.trace_id();
            assert_eq!(s.keeps(&id), s.keeps(&id));
            kept += usize::from(s.keeps(&id));
        }
        assert!((5400..6600).contains(&kept), "kept {kept} of 20000 at 0.3");
        assert!(!Sampler::from_values(Some("always_off"), None).unwrap().keeps(&[0xff; 16]));
    }
}
