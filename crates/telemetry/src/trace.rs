//! W3C trace context (`traceparent`), carried from the HTTP request into the outbox row, the AMQP
//! message's headers and the consumers' log spans, and on to the messages they write in turn —
//! so one order can be followed across both services by its trace id.
//!
//! When traces are exported (see [`crate`]), each request's and each message's span
//! [`adopt`]s the context it arrived with as its parent, and what it sends on names that span
//! ([`TraceParent::of_current_span`]): the exported spans form one tree per order.

use axum::{extract::FromRequestParts, http::request::Parts};
use std::{convert::Infallible, fmt};

/// `00-<trace id>-<parent id>-<flags>`, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    trace_id: u128,
    parent_id: u64,
    flags: u8,
}

impl TraceParent {
    pub const HEADER: &'static str = "traceparent";

    /// A new trace, sampled.
    pub fn new() -> Self {
        let random = uuid::Uuid::new_v4().as_u128();
        Self {
            trace_id: random,
            parent_id: uuid::Uuid::new_v4().as_u64_pair().0,
            flags: 1,
        }
    }

    /// The same trace, a new span under it.
    pub fn child(&self) -> Self {
        Self {
            parent_id: uuid::Uuid::new_v4().as_u64_pair().0,
            ..*self
        }
    }

    /// Parses version `00`; anything malformed (or all-zero ids) is `None`.
    pub fn parse(raw: &str) -> Option<Self> {
        let mut parts = raw.trim().split('-');
        let (version, trace, parent, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version != "00"
            || parts.next().is_some()
            || trace.len() != 32
            || parent.len() != 16
            || flags.len() != 2
        {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok().filter(|id| *id != 0)?;
        let parent_id = u64::from_str_radix(parent, 16).ok().filter(|id| *id != 0)?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        Some(Self {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// The `traceparent` naming the current span, when spans are exported (else `None`).
    pub fn of_current_span() -> Option<Self> {
        use opentelemetry::trace::TraceContextExt as _;
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let context = tracing::Span::current().context();
        let span = context.span();
        let span = span.span_context();
        span.is_valid().then(|| Self {
            trace_id: u128::from_be_bytes(span.trace_id().to_bytes()),
            parent_id: u64::from_be_bytes(span.span_id().to_bytes()),
            flags: span.trace_flags().to_u8(),
        })
    }

    /// This context as OpenTelemetry's, for a span to adopt as its remote parent.
    fn remote_context(&self) -> opentelemetry::Context {
        use opentelemetry::trace::{
            SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
        };
        opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from_bytes(self.trace_id.to_be_bytes()),
            SpanId::from_bytes(self.parent_id.to_be_bytes()),
            TraceFlags::new(self.flags),
            true,
            TraceState::default(),
        ))
    }

    /// The trace id, as logs show it.
    pub fn trace_id(&self) -> String {
        format!("{:032x}", self.trace_id)
    }
}

/// Makes `span` a child of `parent` in the exported trace (nothing, when spans are not exported).
pub fn adopt(span: &tracing::Span, parent: &TraceParent) {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let _ = span.set_parent(parent.remote_context());
}

impl Default for TraceParent {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.parent_id, self.flags
        )
    }
}

/// In a handler: the request's trace context (the `traced` layer guarantees a valid header).
impl<S: Send + Sync> FromRequestParts<S> for TraceParent {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(parts
            .headers
            .get(Self::HEADER)
            .and_then(|value| value.to_str().ok())
            .and_then(Self::parse)
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_round_trips_and_a_child_keeps_the_trace() {
        let raw = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parent = TraceParent::parse(raw).unwrap();
        assert_eq!(parent.to_string(), raw);
        assert_eq!(
            parent.child().trace_id(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_ne!(parent.child(), parent);
    }

    #[test]
    fn malformed_traceparents_are_refused() {
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-0000-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
        ] {
            assert!(TraceParent::parse(bad).is_none(), "{bad}");
        }
    }
}
