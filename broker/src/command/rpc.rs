//! Answers to clients' `rpc` requests: `RPC.REPLY` and `RPC.ERROR`. Both
//! change no state (nothing to replicate); the module delivers one
//! envelope to the node of the connection ([`crate::names::conn_node`]).

use super::args::{number, text, Arg, Args, ParseError};
use super::{Command, Keys};
use crate::names;
use crate::payload::Format;

/// Longest `code` of `BROKER.RPC.ERROR`, in bytes.
pub const MAX_RPC_CODE_LEN: usize = 64;

/// Longest `message` of `BROKER.RPC.ERROR`, in bytes.
pub const MAX_RPC_MESSAGE_LEN: usize = 1024;

/// `BROKER.RPC.REPLY conn id payload [FORMAT msgpack|json|string]`: the
/// client's `rpc` `id` is answered `ack {data: <payload>}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcReply {
    /// The connection that sent the `rpc` (the key).
    pub conn: String,
    /// The `rpc`'s request id.
    pub id: i64,
    /// The answer, in `format`.
    pub payload: Vec<u8>,
    /// How to read the payload.
    pub format: Format,
}

impl RpcReply {
    /// A reply of `payload` (MessagePack) to `conn`'s request `id`.
    pub fn new(conn: &str, id: i64, payload: &[u8]) -> RpcReply {
        RpcReply {
            conn: conn.to_string(),
            id,
            payload: payload.to_vec(),
            format: Format::Msgpack,
        }
    }

    /// The same reply with `FORMAT format`.
    pub fn format(self, format: Format) -> RpcReply {
        RpcReply { format, ..self }
    }
}

impl Command for RpcReply {
    const NAME: &'static str = "BROKER.RPC.REPLY";
    const KEYS: Keys = Keys::FIRST;

    fn parse<A: AsRef<[u8]>>(args: &[A]) -> Result<RpcReply, ParseError> {
        let mut args = Args::new(args);
        let conn = args.name("conn", names::validate_conn)?;
        let id = args.i64("id")?;
        let mut reply = RpcReply::new(&conn, id, args.bytes("payload")?);
        while !args.is_empty() {
            match args.keyword()?.as_str() {
                "FORMAT" => reply.format = super::publish::format_option(&mut args)?,
                other => return Err(super::args::unknown(other)),
            }
        }
        Ok(reply)
    }

    fn to_args(&self) -> Vec<Arg<'_>> {
        vec![
            text(&self.conn),
            number(self.id),
            Arg::Borrowed(&self.payload),
            text("FORMAT"),
            text(self.format.as_str()),
        ]
    }
}

/// `BROKER.RPC.ERROR conn id code message`: the client's `rpc` `id` is
/// answered `err {code: "rpc_error", rpc_code: code, msg: message}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    /// The connection that sent the `rpc` (the key).
    pub conn: String,
    /// The `rpc`'s request id.
    pub id: i64,
    /// The backend's code: 1 to [`MAX_RPC_CODE_LEN`] bytes of printable
    /// ASCII without spaces.
    pub code: String,
    /// Human-readable detail: UTF-8, at most [`MAX_RPC_MESSAGE_LEN`] bytes.
    pub message: String,
}

impl RpcError {
    /// An error answer to `conn`'s request `id`.
    pub fn new(conn: &str, id: i64, code: &str, message: &str) -> RpcError {
        RpcError {
            conn: conn.to_string(),
            id,
            code: code.to_string(),
            message: message.to_string(),
        }
    }
}

impl Command for RpcError {
    const NAME: &'static str = "BROKER.RPC.ERROR";
    const KEYS: Keys = Keys::FIRST;

    fn parse<A: AsRef<[u8]>>(args: &[A]) -> Result<RpcError, ParseError> {
        let mut args = Args::new(args);
        let conn = args.name("conn", names::validate_conn)?;
        let id = args.i64("id")?;
        let code = args.string("code")?;
        if code.is_empty()
            || code.len() > MAX_RPC_CODE_LEN
            || !code.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(ParseError::Invalid(format!(
                "code: 1 to {MAX_RPC_CODE_LEN} printable ASCII characters without spaces"
            )));
        }
        let message = args.string("message")?;
        if message.len() > MAX_RPC_MESSAGE_LEN {
            return Err(ParseError::Invalid(format!(
                "message: at most {MAX_RPC_MESSAGE_LEN} bytes"
            )));
        }
        args.done()?;
        Ok(RpcError {
            conn,
            id,
            code,
            message,
        })
    }

    fn to_args(&self) -> Vec<Arg<'_>> {
        vec![
            text(&self.conn),
            number(self.id),
            text(&self.code),
            text(&self.message),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::super::args::round_trip;
    use super::*;

    #[test]
    fn rpc_reply_reads_and_writes_back() {
        let reply = RpcReply::parse(&["n1.i.3", "-7", "{\"a\":1}", "format", "json"]).unwrap();
        assert_eq!(
            reply,
            RpcReply::new("n1.i.3", -7, b"{\"a\":1}").format(Format::Json)
        );
        round_trip(&reply);
        round_trip(&RpcReply::new("c", i64::MAX, b"\x90"));
        round_trip(&RpcReply::new("c", 0, b"hi").format(Format::String));
        let words: Vec<&[u8]> = vec![b"c", b"5", b"x", b"FORMAT", b"string"];
        assert_eq!(
            RpcReply::new("c", 5, b"x").format(Format::String).to_args(),
            words
        );
    }

    #[test]
    fn rpc_error_reads_and_writes_back() {
        let err = RpcError::parse(&["n1.i.3", "9", "not_found", "no such order"]).unwrap();
        assert_eq!(
            err,
            RpcError::new("n1.i.3", 9, "not_found", "no such order")
        );
        round_trip(&err);
        round_trip(&RpcError::new("c", -1, "E", ""));
    }

    #[test]
    fn rpc_errors_are_the_module_replies() {
        let long_code = "c".repeat(MAX_RPC_CODE_LEN + 1);
        let long_msg = "m".repeat(MAX_RPC_MESSAGE_LEN + 1);
        let cases: [(&[&str], &str); 9] = [
            (
                &["c", "1"],
                "ERR wrong number of arguments: missing payload",
            ),
            (&["a b", "1", "p"], "ERR invalid connection id"),
            (
                &["c", "x", "p"],
                "ERR invalid id: expected an integer in range",
            ),
            (
                &["c", "1", "p", "FORMAT", "xml"],
                "ERR syntax error: unknown format 'xml'",
            ),
            (
                &["c", "1", "p", "LOUD"],
                "ERR syntax error: unknown option 'LOUD'",
            ),
            (
                &["c", "99999999999999999999", "p"],
                "ERR invalid id: expected an integer in range",
            ),
            (
                &["c", "1", "", "m"],
                "ERR invalid code: 1 to 64 printable ASCII characters without spaces",
            ),
            (
                &["c", "1", "a b", "m"],
                "ERR invalid code: 1 to 64 printable ASCII characters without spaces",
            ),
            (
                &["c", "1", "e", "m", "more"],
                "ERR wrong number of arguments: unexpected argument 'more'",
            ),
        ];
        for (i, (args, reply)) in cases.into_iter().enumerate() {
            let got = if i < 6 {
                RpcReply::parse(args).unwrap_err().to_string()
            } else {
                RpcError::parse(args).unwrap_err().to_string()
            };
            assert_eq!(got, reply, "{args:?}");
        }
        assert_eq!(
            RpcError::parse(&["c", "1", long_code.as_str(), "m"])
                .unwrap_err()
                .to_string(),
            "ERR invalid code: 1 to 64 printable ASCII characters without spaces"
        );
        assert_eq!(
            RpcError::parse(&["c", "1", "e", long_msg.as_str()])
                .unwrap_err()
                .to_string(),
            "ERR invalid message: at most 1024 bytes"
        );
        assert_eq!(
            RpcError::parse(&["c", "1", "e"]).unwrap_err().to_string(),
            "ERR wrong number of arguments: missing message"
        );
    }
}
