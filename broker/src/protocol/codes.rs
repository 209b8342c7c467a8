//! The codes of the protocol: [`ErrorCode`], the `code` of an `err` frame,
//! and [`CloseCode`], the code of a WebSocket close frame (the broker's own
//! 4xxx codes and the RFC 6455 codes the gateway uses).

/// Error codes of the contract: the `code` of an `err` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The message is not a valid frame (not a map, unknown `t`, a missing or
    /// mistyped field, a text message...).
    BadFrame,
    /// No valid token (wrong `auth`/`refresh` token, or a request before
    /// `auth`).
    Unauthorized,
    /// Authenticated, but not allowed (namespace policy, another user's
    /// personal room).
    Forbidden,
    /// The room name is not `namespace:name` with valid parts.
    InvalidRoom,
    /// The request needs membership of the room (`pub`, `leave`).
    NotMember,
    /// Over the namespace's publish rate; `retry_ms` says when to retry.
    RateLimited,
    /// The connection is already in `limits.max_rooms_per_conn` rooms.
    TooManyRooms,
    /// `data` larger than the namespace's `max_payload`.
    PayloadTooLarge,
    /// Redis is unreachable or the node is re-registering; retry later.
    Unavailable,
    /// A server bug.
    Internal,
    /// An `rpc` got no answer before `rpc.timeout_ms`.
    Timeout,
    /// The backend answered an `rpc` with an error (`BROKER.RPC.ERROR`);
    /// the `err` frame also carries the backend's `rpc_code`.
    RpcError,
}

impl ErrorCode {
    /// Every code, in the contract's order.
    pub const ALL: [ErrorCode; 12] = [
        ErrorCode::BadFrame,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::InvalidRoom,
        ErrorCode::NotMember,
        ErrorCode::RateLimited,
        ErrorCode::TooManyRooms,
        ErrorCode::PayloadTooLarge,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
        ErrorCode::Timeout,
        ErrorCode::RpcError,
    ];

    /// The code as it appears on the wire, e.g. `"bad_frame"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::InvalidRoom => "invalid_room",
            ErrorCode::NotMember => "not_member",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooManyRooms => "too_many_rooms",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::Timeout => "timeout",
            ErrorCode::RpcError => "rpc_error",
        }
    }

    /// The code named `s` (exactly as [`ErrorCode::as_str`] writes it).
    pub fn parse(s: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|code| code.as_str() == s)
    }
}

/// The code of a WebSocket close frame: the broker's application codes
/// (4001, 4003, 4008, 4029; `docs/PROTOCOL.md` §6) and the RFC 6455 codes the
/// gateway sends or reads. Any other number is kept as [`CloseCode::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// 1000: a deliberate, normal close.
    Normal,
    /// 1001: the peer is going away (a page reload, a closing tab).
    GoingAway,
    /// 1002: the peer broke the WebSocket protocol (bad fragmentation,
    /// unmasked frame, malformed close).
    ProtocolError,
    /// 1006: the connection was lost without a close frame. Never sent on
    /// the wire: it only names what happened.
    Abnormal,
    /// 1007: a close reason (or text message) that is not UTF-8.
    InvalidData,
    /// 1009: a message larger than `limits.max_frame_bytes`.
    TooLarge,
    /// 1011: internal server error.
    Internal,
    /// 1012: the server is restarting: reconnect, possibly elsewhere.
    Restart,
    /// 1013: try again later (Redis unavailable during admission).
    TryAgainLater,
    /// 4001: the token is missing, invalid or expired (also: no `auth` frame
    /// in time).
    Token,
    /// 4003: forbidden, e.g. the user was kicked.
    Forbidden,
    /// 4008: policy: slow consumer, repeated bad frames, idle timeout.
    Policy,
    /// 4029: too many connections for the user or the IP.
    ConnLimit,
    /// Any other code.
    Other(u16),
}

impl CloseCode {
    /// Every named code (all but [`CloseCode::Other`]).
    pub const NAMED: [CloseCode; 13] = [
        CloseCode::Normal,
        CloseCode::GoingAway,
        CloseCode::ProtocolError,
        CloseCode::Abnormal,
        CloseCode::InvalidData,
        CloseCode::TooLarge,
        CloseCode::Internal,
        CloseCode::Restart,
        CloseCode::TryAgainLater,
        CloseCode::Token,
        CloseCode::Forbidden,
        CloseCode::Policy,
        CloseCode::ConnLimit,
    ];

    /// The number in the close frame.
    pub fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::GoingAway => 1001,
            CloseCode::ProtocolError => 1002,
            CloseCode::Abnormal => 1006,
            CloseCode::InvalidData => 1007,
            CloseCode::TooLarge => 1009,
            CloseCode::Internal => 1011,
            CloseCode::Restart => 1012,
            CloseCode::TryAgainLater => 1013,
            CloseCode::Token => 4001,
            CloseCode::Forbidden => 4003,
            CloseCode::Policy => 4008,
            CloseCode::ConnLimit => 4029,
            CloseCode::Other(code) => code,
        }
    }

    /// True for a code a peer may put in a close frame (RFC 6455 §7.4):
    /// 1000-1003, 1007-1014 and the application range 3000-4999. 1004-1006
    /// and 1015 are reserved and never sent.
    pub fn allowed_on_wire(self) -> bool {
        matches!(self.code(), 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl From<u16> for CloseCode {
    fn from(code: u16) -> CloseCode {
        CloseCode::NAMED
            .into_iter()
            .find(|named| named.code() == code)
            .unwrap_or(CloseCode::Other(code))
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> u16 {
        code.code()
    }
}
