//! Engine.IO request errors, mapped in one place to the HTTP status and the
//! `{"code":N,"message":"..."}` body the protocol defines.

use bytes::Bytes;

use super::request::EngineResponse;

/// Why an Engine.IO HTTP request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("Transport unknown")]
    UnknownTransport,
    #[error("Session ID unknown")]
    UnknownSid,
    #[error("Bad handshake method")]
    BadHandshakeMethod,
    #[error("Bad request: {0}")]
    BadRequest(&'static str),
    #[error("Forbidden")]
    Forbidden,
    #[error("Unsupported protocol version")]
    UnsupportedProtocolVersion,
    #[error("Payload too large")]
    PayloadTooLarge,
    #[error("Server is shutting down")]
    ShuttingDown,
    /// The node holds `max_sessions` sessions already: try again later, or another node.
    #[error("Too many sessions")]
    TooManySessions,
    /// The client's address holds `max_sessions_per_address` sessions already.
    #[error("Too many sessions from this address")]
    TooManySessionsFromAddress,
    /// The request body did not arrive in full within the body timeout.
    #[error("Request body timeout")]
    BodyTimeout,
}

impl EngineError {
    /// The Engine.IO error code, as the reference server numbers them.
    pub fn code(&self) -> u8 {
        match self {
            Self::UnknownTransport => 0,
            Self::UnknownSid => 1,
            Self::BadHandshakeMethod => 2,
            Self::BadRequest(_)
            | Self::PayloadTooLarge
            | Self::ShuttingDown
            | Self::TooManySessions
            | Self::TooManySessionsFromAddress
            | Self::BodyTimeout => 3,
            Self::Forbidden => 4,
            Self::UnsupportedProtocolVersion => 5,
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            Self::Forbidden => 403,
            Self::PayloadTooLarge => 413,
            Self::ShuttingDown | Self::TooManySessions => 503,
            Self::TooManySessionsFromAddress => 429,
            Self::BodyTimeout => 408,
            _ => 400,
        }
    }

    /// The message in the error body: the reference server's wording for each code.
    pub fn message(&self) -> &'static str {
        match self {
            Self::UnknownTransport => "Transport unknown",
            Self::UnknownSid => "Session ID unknown",
            Self::BadHandshakeMethod => "Bad handshake method",
            Self::BadRequest(_) => "Bad request",
            Self::Forbidden => "Forbidden",
            Self::UnsupportedProtocolVersion => "Unsupported protocol version",
            Self::PayloadTooLarge => "Payload too large",
            Self::ShuttingDown => "Server is shutting down",
            Self::TooManySessions => "Too many sessions",
            Self::TooManySessionsFromAddress => "Too many sessions from this address",
            Self::BodyTimeout => "Request body timeout",
        }
    }

    pub fn into_response(self) -> EngineResponse {
        let body = serde_json::json!({ "code": self.code(), "message": self.message() }).to_string();
        EngineResponse {
            status: self.status(),
            content_type: super::request::ContentType::Json,
            body: Bytes::from(body),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_match_the_spec() {
        let r = EngineError::UnknownSid.into_response();
        assert_eq!(r.status, 400);
        assert_eq!(&r.body[..], br#"{"code":1,"message":"Session ID unknown"}"#);
        let r = EngineError::UnknownTransport.into_response();
        assert_eq!(&r.body[..], br#"{"code":0,"message":"Transport unknown"}"#);
        assert_eq!(EngineError::BadHandshakeMethod.code(), 2);
        assert_eq!(EngineError::BadRequest("x").code(), 3);
        assert_eq!(EngineError::UnsupportedProtocolVersion.code(), 5);
        assert_eq!(EngineError::PayloadTooLarge.status(), 413);
        let r = EngineError::TooManySessions.into_response();
        assert_eq!(r.status, 503);
        assert_eq!(&r.body[..], br#"{"code":3,"message":"Too many sessions"}"#);
    }
}
