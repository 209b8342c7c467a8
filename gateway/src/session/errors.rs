//! The one place that says how failures reach a client: a failed module
//! call as a WebSocket `err` frame ([`err_reply`]) or as an admin API
//! status ([`http_error`]), and a refused admission as an `auth` frame's
//! answer ([`auth_refusal`]) or as the upgrade's HTTP status
//! ([`upgrade_refusal`]). Pure: the callers count, log and wake the lease.

use broker::protocol::ErrorCode;
use hyper::StatusCode;

use super::admission::Refused;
use broker::command::Refusal;

use crate::store::{Rejection, StoreError};
use crate::ws::CloseReason;
use broker::protocol::CloseCode;

/// The content of an `err` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrReply {
    /// The error code.
    pub code: ErrorCode,
    /// The message.
    pub msg: String,
    /// When a retry may succeed, for `rate_limited`.
    pub retry_ms: Option<u64>,
}

impl ErrReply {
    fn new(code: ErrorCode, msg: &str) -> ErrReply {
        ErrReply {
            code,
            msg: msg.to_string(),
            retry_ms: None,
        }
    }
}

/// The `err` frame that answers a request whose module call failed.
/// Redis being unreachable, or this node re-registering, is `unavailable`
/// (the client retries); a refusal the client caused gets its own code;
/// anything else is `internal`.
pub fn err_reply(err: &StoreError) -> ErrReply {
    let StoreError::Refused {
        rejection, detail, ..
    } = err
    else {
        return match err {
            StoreError::Unavailable(_) => {
                ErrReply::new(ErrorCode::Unavailable, "service unavailable, retry")
            }
            _ => ErrReply::new(ErrorCode::Internal, "internal error"),
        };
    };
    let refusal = match rejection {
        Rejection::Refused(refusal) => refusal,
        Rejection::InvalidPayload => return ErrReply::new(ErrorCode::BadFrame, detail),
        Rejection::InvalidRoom => return ErrReply::new(ErrorCode::InvalidRoom, detail),
        Rejection::Other => return ErrReply::new(ErrorCode::Internal, "internal error"),
    };
    match refusal {
        Refusal::NotMember => ErrReply::new(ErrorCode::NotMember, "not a member of the room"),
        Refusal::RateLimited { retry_ms } => ErrReply {
            retry_ms: Some(*retry_ms),
            ..ErrReply::new(ErrorCode::RateLimited, "slow down")
        },
        Refusal::TooManyRooms => ErrReply::new(ErrorCode::TooManyRooms, "too many rooms"),
        Refusal::Forbidden => ErrReply::new(ErrorCode::Forbidden, "forbidden"),
        Refusal::NoLease => ErrReply::new(ErrorCode::Unavailable, "node re-registering, retry"),
        Refusal::Limit(_) | Refusal::Conflict => {
            ErrReply::new(ErrorCode::Internal, "internal error")
        }
    }
}

/// The status and error text an admin API request whose module call
/// failed is answered with: 503 when Redis is unreachable, 400 with the
/// module's words for a refusal, 500 for an unexpected reply.
pub fn http_error(err: &StoreError) -> (StatusCode, String) {
    match err {
        StoreError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable".into()),
        StoreError::Refused { .. } => (StatusCode::BAD_REQUEST, err.to_string()),
        StoreError::Reply(msg) => (StatusCode::INTERNAL_SERVER_ERROR, msg.clone()),
    }
}

/// How a refused `auth` frame is answered: the `err` frame sent first (if
/// any), and the close that follows.
pub fn auth_refusal(refused: &Refused) -> (Option<ErrReply>, CloseReason) {
    let close = |code, reason: &str| CloseReason {
        code,
        reason: reason.to_string(),
    };
    match refused {
        Refused::Token(err) => (
            Some(ErrReply::new(ErrorCode::Unauthorized, &err.to_string())),
            close(CloseCode::Token, "invalid token"),
        ),
        Refused::Limit => (None, close(CloseCode::ConnLimit, "connection limit")),
        Refused::Unavailable(_) => (
            Some(ErrReply::new(ErrorCode::Unavailable, "try again")),
            close(CloseCode::TryAgainLater, "unavailable"),
        ),
    }
}

/// How a refused upgrade (a token in the request) is answered: an HTTP
/// status and a plain-text body, before any WebSocket exists.
pub fn upgrade_refusal(refused: &Refused) -> (StatusCode, String) {
    match refused {
        Refused::Token(err) => (StatusCode::UNAUTHORIZED, format!("{err}\n")),
        Refused::Limit => (
            StatusCode::TOO_MANY_REQUESTS,
            "connection limit reached\n".into(),
        ),
        Refused::Unavailable(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable, retry\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AuthError;

    fn refused(text: &str) -> StoreError {
        let (code, detail) = text.split_once(' ').unwrap_or((text, ""));
        StoreError::refused(code, detail)
    }

    fn reply(err: &StoreError) -> (ErrorCode, String, Option<u64>) {
        let r = err_reply(err);
        (r.code, r.msg, r.retry_ms)
    }

    #[test]
    fn module_refusals_become_err_frames() {
        for (text, code, msg, retry) in [
            (
                "NOTMEMBER connection is not a member of the room",
                ErrorCode::NotMember,
                "not a member of the room",
                None,
            ),
            (
                "RATELIMITED 250",
                ErrorCode::RateLimited,
                "slow down",
                Some(250),
            ),
            (
                "RATELIMITED",
                ErrorCode::RateLimited,
                "slow down",
                Some(1000),
            ),
            (
                "TOOMANYROOMS connection is in too many rooms",
                ErrorCode::TooManyRooms,
                "too many rooms",
                None,
            ),
            (
                "FORBIDDEN personal room of another user",
                ErrorCode::Forbidden,
                "forbidden",
                None,
            ),
            (
                "NOLEASE node has no live lease",
                ErrorCode::Unavailable,
                "node re-registering, retry",
                None,
            ),
            (
                "ERR invalid payload: not valid JSON",
                ErrorCode::BadFrame,
                "invalid payload: not valid JSON",
                None,
            ),
            (
                "ERR invalid room name",
                ErrorCode::InvalidRoom,
                "invalid room name",
                None,
            ),
            ("LIMIT user", ErrorCode::Internal, "internal error", None),
            (
                "ERR syntax error: x",
                ErrorCode::Internal,
                "internal error",
                None,
            ),
        ] {
            assert_eq!(
                reply(&refused(text)),
                (code, msg.to_string(), retry),
                "{text}"
            );
        }
    }

    #[test]
    fn unreachable_redis_and_odd_replies() {
        assert_eq!(
            reply(&StoreError::Unavailable("timed out".into())),
            (
                ErrorCode::Unavailable,
                "service unavailable, retry".into(),
                None
            )
        );
        assert_eq!(
            reply(&StoreError::Reply("missing field seq".into())),
            (ErrorCode::Internal, "internal error".into(), None)
        );
    }

    #[test]
    fn admin_api_statuses() {
        assert_eq!(
            http_error(&StoreError::Unavailable("down".into())),
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable".into())
        );
        assert_eq!(
            http_error(&refused("ERR invalid room name")),
            (StatusCode::BAD_REQUEST, "ERR invalid room name".into())
        );
        assert_eq!(
            http_error(&StoreError::Reply("odd".into())),
            (StatusCode::INTERNAL_SERVER_ERROR, "odd".into())
        );
    }

    #[test]
    fn refused_admissions() {
        let token = Refused::Token(AuthError::Expired);
        let (err, close) = auth_refusal(&token);
        assert_eq!(err.map(|e| e.code), Some(ErrorCode::Unauthorized));
        assert_eq!(
            (close.code.code(), close.reason.as_str()),
            (4001, "invalid token")
        );
        assert_eq!(upgrade_refusal(&token).0, StatusCode::UNAUTHORIZED);

        let (err, close) = auth_refusal(&Refused::Limit);
        assert_eq!(err, None, "a limit closes without an err frame");
        assert_eq!(
            (close.code.code(), close.reason.as_str()),
            (4029, "connection limit")
        );
        assert_eq!(
            upgrade_refusal(&Refused::Limit),
            (
                StatusCode::TOO_MANY_REQUESTS,
                "connection limit reached\n".into()
            )
        );

        let down = Refused::Unavailable(StoreError::Unavailable("down".into()));
        let (err, close) = auth_refusal(&down);
        assert_eq!(
            err.map(|e| (e.code, e.msg)),
            Some((ErrorCode::Unavailable, "try again".into()))
        );
        assert_eq!(
            (close.code.code(), close.reason.as_str()),
            (1013, "unavailable")
        );
        assert_eq!(
            upgrade_refusal(&down),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable, retry\n".into()
            )
        );
    }
}
