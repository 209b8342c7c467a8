//! Reading command arguments: a cursor over `argv` that turns every bad
//! argument into an [`Error`] instead of a panic.

use redis_module::RedisString;

use crate::error::{Error, Result};

/// A cursor over a command's arguments (after the command name).
pub struct Args<'a> {
    args: &'a [RedisString],
    pos: usize,
    /// Set once an option keyword was read: a missing value from then on is
    /// a syntax error, not a wrong argument count.
    in_options: bool,
}

impl<'a> Args<'a> {
    /// Skips the command name in `argv`.
    pub fn new(argv: &'a [RedisString]) -> Args<'a> {
        Args {
            args: argv,
            pos: 1.min(argv.len()),
            in_options: false,
        }
    }

    /// True when every argument was read.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.args.len()
    }

    /// The next argument as Redis gives it (for key names).
    pub fn raw(&mut self, what: &str) -> Result<&'a RedisString> {
        let Some(arg) = self.args.get(self.pos) else {
            return Err(if self.in_options {
                Error::Syntax(format!("missing {what}"))
            } else {
                Error::Arity(format!("missing {what}"))
            });
        };
        self.pos += 1;
        Ok(arg)
    }

    /// The next argument as bytes.
    pub fn bytes(&mut self, what: &str) -> Result<&'a [u8]> {
        Ok(self.raw(what)?.as_slice())
    }

    /// The next argument as UTF-8 text.
    pub fn str(&mut self, what: &'static str) -> Result<&'a str> {
        let bytes = self.bytes(what)?;
        std::str::from_utf8(bytes).map_err(|_| Error::Invalid(format!("{what}: not UTF-8")))
    }

    /// The next argument as an unsigned integer.
    pub fn u64(&mut self, what: &'static str) -> Result<u64> {
        let s = self.str(what)?;
        s.parse::<u64>().map_err(|_| Error::Integer(what))
    }

    /// The next argument as an unsigned integer that fits in `u32`.
    pub fn u32(&mut self, what: &'static str) -> Result<u32> {
        u32::try_from(self.u64(what)?).map_err(|_| Error::Integer(what))
    }

    /// The next argument as a signed integer.
    pub fn i64(&mut self, what: &'static str) -> Result<i64> {
        let s = self.str(what)?;
        s.parse::<i64>().map_err(|_| Error::Integer(what))
    }

    /// The next argument as an option keyword, upper-cased.
    pub fn keyword(&mut self) -> Result<String> {
        self.in_options = true;
        Ok(self.str("option")?.to_ascii_uppercase())
    }

    /// Fails when arguments are left over (a command of fixed arity).
    pub fn done(&self) -> Result<()> {
        match self.args.get(self.pos) {
            None => Ok(()),
            Some(extra) => Err(Error::Arity(format!(
                "unexpected argument '{}'",
                crate::error::quoted(extra.as_slice())
            ))),
        }
    }
}

/// Longest presence grace a command may ask for (one hour).
const MAX_GRACE_MS: u64 = 3_600_000;

/// Reads the trailing `[GRACE ms]` option of a command that ends
/// connections (or the `UNTIL ms` form it replicates as): the deadline, in
/// ms since the Unix epoch, until which a departed user lingers in its
/// rooms. `None` without the option or with `GRACE 0`.
pub fn linger_until(args: &mut Args<'_>, now_ms: u64) -> Result<Option<u64>> {
    let mut until = None;
    while !args.is_empty() {
        match args.keyword()?.as_str() {
            "GRACE" => {
                let ms = args.u64("GRACE ms")?;
                if ms > MAX_GRACE_MS {
                    return Err(Error::Integer("GRACE ms"));
                }
                until = (ms > 0).then(|| now_ms.saturating_add(ms));
            }
            "UNTIL" => until = Some(args.u64("UNTIL ms")?),
            other => return Err(unknown(other)),
        }
    }
    Ok(until)
}

/// The unknown-option error for `keyword`.
pub fn unknown(keyword: &str) -> Error {
    // Quoted: the reply must stay printable ASCII whatever the client sent
    // (the error reply went out with one byte per character, cut to 8 bits).
    Error::Syntax(format!(
        "unknown option '{}'",
        crate::error::quoted(keyword.as_bytes())
    ))
}
