//! Reading and writing command arguments: the cursor every `parse` reads
//! with, the [`ParseError`] it fails with (its text is the module's error
//! reply), and the small builders every `to_args` writes with.
//!
//! The cursor is generic over `AsRef<[u8]>`: the module reads Redis's own
//! strings, the gateway and the tests owned bytes or `&str`.

use std::borrow::Cow;

use thiserror::Error;

use crate::names::NameError;

/// One argument of a command as [`super::Command::to_args`] writes it:
/// borrowed from the command where it can be, owned for numbers.
pub type Arg<'a> = Cow<'a, [u8]>;

/// Why a command's arguments were refused. The text is exactly the module's
/// error reply (`docs/COMMANDS.md`): its first word is the code `ERR`.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ParseError {
    /// A required argument is missing, or one is left over.
    #[error("ERR wrong number of arguments: {0}")]
    Arity(String),
    /// An argument that is not valid (e.g. not UTF-8).
    #[error("ERR invalid {0}")]
    Invalid(String),
    /// Unknown option, missing option value, or a bad option value.
    #[error("ERR syntax error: {0}")]
    Syntax(String),
    /// An argument that should be an integer in range is not.
    #[error("ERR invalid {0}: expected an integer in range")]
    Integer(&'static str),
    /// An invalid name (room, namespace, user, conn, node, ip).
    #[error("ERR {0}")]
    Name(#[from] NameError),
}

/// A cursor over a command's arguments (after the command name) that turns
/// every bad argument into a [`ParseError`] instead of a panic.
pub(crate) struct Args<'a, A> {
    args: &'a [A],
    pos: usize,
    /// Set once an option keyword was read: a missing value from then on is
    /// a syntax error, not a wrong argument count.
    in_options: bool,
}

impl<'a, A: AsRef<[u8]>> Args<'a, A> {
    /// A cursor at the first argument after the command name.
    pub(crate) fn new(args: &'a [A]) -> Args<'a, A> {
        Args {
            args,
            pos: 0,
            in_options: false,
        }
    }

    /// True when every argument was read.
    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.args.len()
    }

    /// The next argument as bytes.
    pub(crate) fn bytes(&mut self, what: &str) -> Result<&'a [u8], ParseError> {
        let Some(arg) = self.args.get(self.pos) else {
            return Err(if self.in_options {
                ParseError::Syntax(format!("missing {what}"))
            } else {
                ParseError::Arity(format!("missing {what}"))
            });
        };
        self.pos += 1;
        Ok(arg.as_ref())
    }

    /// The next argument as UTF-8 text.
    pub(crate) fn str(&mut self, what: &'static str) -> Result<&'a str, ParseError> {
        let bytes = self.bytes(what)?;
        std::str::from_utf8(bytes).map_err(|_| ParseError::Invalid(format!("{what}: not UTF-8")))
    }

    /// The next argument as owned UTF-8 text.
    pub(crate) fn string(&mut self, what: &'static str) -> Result<String, ParseError> {
        Ok(self.str(what)?.to_string())
    }

    /// The next argument as text, checked by `validate` (a name rule).
    pub(crate) fn name(
        &mut self,
        what: &'static str,
        validate: fn(&str) -> Result<(), NameError>,
    ) -> Result<String, ParseError> {
        let text = self.str(what)?;
        validate(text)?;
        Ok(text.to_string())
    }

    /// The next argument as an unsigned integer.
    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, ParseError> {
        let s = self.str(what)?;
        s.parse::<u64>().map_err(|_| ParseError::Integer(what))
    }

    /// The next argument as an unsigned integer that fits in `u32`.
    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, ParseError> {
        u32::try_from(self.u64(what)?).map_err(|_| ParseError::Integer(what))
    }

    /// The next argument as a signed integer.
    pub(crate) fn i64(&mut self, what: &'static str) -> Result<i64, ParseError> {
        let s = self.str(what)?;
        s.parse::<i64>().map_err(|_| ParseError::Integer(what))
    }

    /// The next argument as an option keyword, upper-cased (borrowed when
    /// it was sent upper-case, as the gateway sends it).
    pub(crate) fn keyword(&mut self) -> Result<Keyword<'a>, ParseError> {
        self.in_options = true;
        let word = self.str("option")?;
        Ok(Keyword(if word.bytes().any(|b| b.is_ascii_lowercase()) {
            Cow::Owned(word.to_ascii_uppercase())
        } else {
            Cow::Borrowed(word)
        }))
    }

    /// Fails when arguments are left over (a command of fixed arity).
    pub(crate) fn done(&self) -> Result<(), ParseError> {
        match self.args.get(self.pos) {
            None => Ok(()),
            Some(extra) => Err(ParseError::Arity(format!(
                "unexpected argument '{}'",
                quoted(extra.as_ref())
            ))),
        }
    }
}

/// An option keyword, upper-cased ([`Args::keyword`]).
#[derive(Debug)]
pub(crate) struct Keyword<'a>(Cow<'a, str>);

impl Keyword<'_> {
    /// The keyword, upper-cased.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl PartialEq<&str> for Keyword<'_> {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// The unknown-option error for `keyword`.
pub(crate) fn unknown(keyword: &str) -> ParseError {
    // Quoted: the reply must stay printable ASCII whatever the client sent
    // (the error reply went out with one byte per character, cut to 8 bits).
    ParseError::Syntax(format!("unknown option '{}'", quoted(keyword.as_bytes())))
}

/// A client's argument for an error message: up to 32 bytes, printable
/// ASCII as is, every other byte as `\xNN`, so the reply stays valid text.
pub fn quoted(arg: &[u8]) -> String {
    let mut out = String::new();
    for &b in arg.iter().take(32) {
        if b.is_ascii_graphic() || b == b' ' {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// A text argument, borrowed.
pub(crate) fn text(s: &str) -> Arg<'_> {
    Cow::Borrowed(s.as_bytes())
}

/// A number argument, in decimal.
pub(crate) fn number(n: impl ToString) -> Arg<'static> {
    Cow::Owned(n.to_string().into_bytes())
}

/// Parses `args` with `parse`, then checks that they all were read.
#[cfg(test)]
pub(crate) fn round_trip<C: super::Command + PartialEq + std::fmt::Debug>(cmd: &C) {
    let args: Vec<Vec<u8>> = cmd.to_args().into_iter().map(Cow::into_owned).collect();
    assert_eq!(&C::parse(&args).unwrap(), cmd, "{}", C::NAME);
}
