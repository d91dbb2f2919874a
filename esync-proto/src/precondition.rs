//! The precondition language: vehicle-state conditions such as
//! `Vehicle.Speed == 0 && Vehicle.Powertrain.Transmission.CurrentGear == "P"`.
//!
//! This is the **only** precondition language of esync-rs. A package's
//! component precondition (written at package build, parsed again when the
//! signed description is received), an Agent's own install precondition and
//! consent condition, and the Client's checks all parse and evaluate with
//! [`Precondition`], so one text has one meaning and one verdict everywhere.
//! Values come as [`Signal`]s, the vehicle-signal values of the protocol.
//!
//! # Grammar
//!
//! Whitespace (ASCII) between tokens is ignored.
//!
//! ```text
//! expr     := or
//! or       := and ( "||" and )*
//! and      := unary ( "&&" unary )*
//! unary    := "!" negated | primary
//! negated  := "!" negated | "(" expr ")" | operand
//! primary  := "(" expr ")" | operand [ cmp-op operand ]
//! cmp-op   := "==" | "!=" | "<" | "<=" | ">" | ">="
//! operand  := signal | number | text | "true" | "false"
//! signal   := segment ( "." segment )*           at most MAX_SIGNAL_NAME_LEN bytes
//! segment  := [A-Za-z_] [A-Za-z0-9_]*
//! number   := "-"? [0-9]+ ( "." [0-9]+ )?          decimal, finite
//! text     := '"' (any character but '"', '\' and control characters)* '"'
//! ```
//!
//! `&&` binds tighter than `||`. Limits: at most [`MAX_LEN`] bytes (of the
//! source and of the canonical text), [`MAX_TOKENS`] tokens and [`MAX_DEPTH`]
//! nested groups and negations. The length is checked before anything is
//! read, the token count while reading, and the depth before each nested
//! level is entered, so parsing `((((…` or `!!!!…` neither allocates without
//! bound nor recurses deeper than the limit.
//!
//! # Meaning
//!
//! - **Signal names are [COVESA VSS] paths**: dotted, case-sensitive
//!   segments (`Vehicle.Speed`,
//!   `Vehicle.Powertrain.TractionBattery.StateOfCharge.Current`), so a host
//!   can feed values straight from a VSS data broker. Short names such as
//!   `speed` or `battery_soc` are one-segment paths. A name is matched
//!   exactly against [`Signal::name`]; the first signal of that name counts.
//! - **An identifier is always a signal.** Text must be quoted
//!   (`gear == "P"`); `true` and `false` are the booleans. `gear == P` names
//!   two signals and is refused (below), so a bare word can never silently
//!   mean text on one side and a signal on another.
//! - **A comparison has a signal on exactly one side** and a literal on the
//!   other (`speed == 0`, `-5 < speed`). Signal against signal is refused at
//!   parse: preconditions are checks of the vehicle's state against fixed,
//!   signed thresholds, and refusing it turns an unquoted text into an error
//!   at package build instead of a check that is never met. Literal against
//!   literal (a constant) is refused too.
//! - `<`, `<=`, `>`, `>=` need a number literal; text and booleans compare
//!   only with `==` and `!=`. A number literal matches integer and float
//!   signals (compared as `f64`), a text literal text signals, a boolean
//!   literal boolean signals.
//! - A bare operand used as a condition is a boolean signal or `true` /
//!   `false` (`!Vehicle.IsMoving`). `!` negates one operand, a group or
//!   another `!`: write `!(speed == 0)`; `!speed == 0` is refused because it
//!   reads two ways.
//! - Evaluation fails with an [`EvalError`] when a named signal is missing or
//!   its value has the wrong type (a byte signal, a non-finite float, text
//!   compared with a number…). Both sides of `&&` and `||` are evaluated, so
//!   such an error is never hidden by the other side. Callers treat an error
//!   as **"not met"** (fail safe).
//!
//! # Canonical text
//!
//! A [`Precondition`] keeps the parsed expression and its canonical text
//! ([`Precondition::as_str`], also its `Display`): single spaces around
//! binary operators, the signal on the left of each comparison (`-5 < speed`
//! becomes `speed > -5`), numbers in their shortest form, parentheses only
//! where they are needed. Parsing the canonical text gives the same
//! expression again. Serde writes the canonical text as a string and parses
//! it on the way in, so a malformed expression is refused both when a package
//! is built and when its description is received.
//!
//! ```
//! use esync_proto::message::{Signal, SignalValue};
//! use esync_proto::precondition::Precondition;
//!
//! let p = Precondition::parse(
//!     r#"Vehicle.Speed == 0 && gear == "P" && (battery_soc >= 40 || !Vehicle.IsMoving)"#,
//! )
//! .unwrap();
//! let signals = [
//!     Signal { name: "Vehicle.Speed".into(), value: SignalValue::Int(0) },
//!     Signal { name: "gear".into(), value: SignalValue::Text("P".into()) },
//!     Signal { name: "battery_soc".into(), value: SignalValue::Float(35.5) },
//!     Signal { name: "Vehicle.IsMoving".into(), value: SignalValue::Bool(false) },
//! ];
//! assert_eq!(p.eval(&signals), Ok(true));
//! // A missing signal is an error, which callers treat as "not met".
//! assert!(p.eval(&signals[..2]).is_err());
//! // Text is quoted; a bare word is a signal, and two signals do not compare.
//! assert!(Precondition::parse("gear == P").is_err());
//! ```
//!
//! [COVESA VSS]: https://covesa.github.io/vehicle_signal_specification/

use alloc::borrow::ToOwned;
use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::{self, Write as _};
use core::str::FromStr;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use crate::message::{Signal, SignalValue};

/// Longest accepted expression, in bytes (source text and canonical text).
pub const MAX_LEN: usize = 1024;
/// Most tokens in one expression.
pub const MAX_TOKENS: usize = 256;
/// Deepest nesting of parentheses and `!`, counted together.
pub const MAX_DEPTH: usize = 16;
/// Longest signal name (a VSS path), in bytes.
pub const MAX_SIGNAL_NAME_LEN: usize = 128;

/// An expression could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PreconditionError {
    /// The source, or its canonical text, is longer than [`MAX_LEN`] bytes.
    #[error("precondition is {len} bytes long, more than {MAX_LEN}")]
    TooLong {
        /// Length in bytes.
        len: usize,
    },
    /// More than [`MAX_TOKENS`] tokens.
    #[error("precondition has more than {MAX_TOKENS} tokens")]
    TooManyTokens,
    /// Parentheses and `!` nested deeper than [`MAX_DEPTH`].
    #[error("precondition nested deeper than {MAX_DEPTH} levels at byte {position}")]
    TooDeep {
        /// Byte offset of the group or `!` that is one level too deep.
        position: usize,
    },
    /// A signal name longer than [`MAX_SIGNAL_NAME_LEN`].
    #[error("signal name at byte {position} is longer than {MAX_SIGNAL_NAME_LEN} bytes")]
    SignalNameTooLong {
        /// Byte offset of the name.
        position: usize,
    },
    /// The text does not follow the grammar or its rules.
    #[error("precondition syntax error at byte {position}: {reason}")]
    Syntax {
        /// Byte offset.
        position: usize,
        /// What is wrong.
        reason: &'static str,
    },
}

/// An expression could not be evaluated against the signals given; callers
/// treat this as "precondition not met".
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EvalError {
    /// A signal the expression names is not among the signals.
    #[error("signal {0:?} not available")]
    MissingSignal(String),
    /// A signal's value has a type the expression cannot use.
    #[error("signal {signal:?}: {reason}")]
    Type {
        /// The signal.
        signal: String,
        /// What does not fit.
        reason: &'static str,
    },
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }

    /// The operator with its operands swapped: `a < b` is `b > a`.
    fn flipped(self) -> Self {
        match self {
            CmpOp::Eq => CmpOp::Eq,
            CmpOp::Ne => CmpOp::Ne,
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::Le => CmpOp::Ge,
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::Ge => CmpOp::Le,
        }
    }

    fn is_ordering(self) -> bool {
        !matches!(self, CmpOp::Eq | CmpOp::Ne)
    }
}

/// A literal in an expression.
#[derive(Clone, Debug, PartialEq)]
enum Literal {
    /// Always finite, never `-0.0`.
    Num(f64),
    /// Without `"`, `\` or control characters.
    Text(String),
    Bool(bool),
}

/// The parsed expression. `All` and `Any` hold at least two operands, none
/// of them of their own kind (nested groups are flattened).
#[derive(Clone, Debug, PartialEq)]
enum Node {
    Any(Vec<Node>),
    All(Vec<Node>),
    Not(Box<Node>),
    /// `signal op literal`.
    Cmp {
        signal: String,
        op: CmpOp,
        literal: Literal,
    },
    /// A bare signal, which must be a boolean.
    Signal(String),
    /// `true` or `false`.
    Const(bool),
}

/// A parsed, bounded precondition expression and its canonical text.
///
/// Equality, hashing, `Display` and serde use the canonical text.
#[derive(Clone)]
pub struct Precondition {
    root: Node,
    text: String,
}

impl Precondition {
    /// Parses an expression (see the [module documentation](self)).
    pub fn parse(src: &str) -> Result<Self, PreconditionError> {
        if src.len() > MAX_LEN {
            return Err(PreconditionError::TooLong { len: src.len() });
        }
        let mut p = Parser::new(src)?;
        let root = p.or(0)?;
        if p.tok != Tok::End {
            return Err(p.syntax("unexpected trailing input"));
        }
        let mut text = String::new();
        write_node(&root, &mut text).expect("writing to a String cannot fail");
        if text.len() > MAX_LEN {
            return Err(PreconditionError::TooLong { len: text.len() });
        }
        Ok(Precondition { root, text })
    }

    /// The canonical text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Evaluates the expression against `signals` (the first signal of each
    /// name counts). An error means "not met".
    pub fn eval(&self, signals: &[Signal]) -> Result<bool, EvalError> {
        eval_node(&self.root, signals)
    }
}

impl PartialEq for Precondition {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Precondition {}

impl core::hash::Hash for Precondition {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.text.hash(state);
    }
}

impl fmt::Debug for Precondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Precondition").field(&self.text).finish()
    }
}

impl fmt::Display for Precondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Precondition {
    type Err = PreconditionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Precondition {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Precondition {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;
        impl de::Visitor<'_> for Text {
            type Value = Precondition;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a precondition expression of at most {MAX_LEN} bytes")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Precondition, E> {
                Precondition::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Text)
    }
}

// ---------------------------------------------------------------------------
// Lexer

#[derive(Clone, Copy, Debug, PartialEq)]
enum Tok<'a> {
    Name(&'a str),
    Num(f64),
    Text(&'a str),
    Cmp(CmpOp),
    And,
    Or,
    Not,
    LParen,
    RParen,
    End,
}

fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    tokens: usize,
}

impl<'a> Lexer<'a> {
    fn syntax(position: usize, reason: &'static str) -> PreconditionError {
        PreconditionError::Syntax { position, reason }
    }

    /// The next token and its byte offset.
    fn next(&mut self) -> Result<(usize, Tok<'a>), PreconditionError> {
        let b = self.src.as_bytes();
        while b.get(self.pos).is_some_and(u8::is_ascii_whitespace) {
            self.pos += 1;
        }
        let start = self.pos;
        let Some(&c) = b.get(start) else {
            return Ok((start, Tok::End));
        };
        self.tokens += 1;
        if self.tokens > MAX_TOKENS {
            return Err(PreconditionError::TooManyTokens);
        }
        let two = b.get(start + 1).copied();
        let (len, tok) = match (c, two) {
            (b'&', Some(b'&')) => (2, Tok::And),
            (b'|', Some(b'|')) => (2, Tok::Or),
            (b'=', Some(b'=')) => (2, Tok::Cmp(CmpOp::Eq)),
            (b'!', Some(b'=')) => (2, Tok::Cmp(CmpOp::Ne)),
            (b'<', Some(b'=')) => (2, Tok::Cmp(CmpOp::Le)),
            (b'>', Some(b'=')) => (2, Tok::Cmp(CmpOp::Ge)),
            (b'<', _) => (1, Tok::Cmp(CmpOp::Lt)),
            (b'>', _) => (1, Tok::Cmp(CmpOp::Gt)),
            (b'!', _) => (1, Tok::Not),
            (b'(', _) => (1, Tok::LParen),
            (b')', _) => (1, Tok::RParen),
            (b'"', _) => return self.text(start),
            (c, _) if c.is_ascii_digit() || c == b'-' => return self.number(start),
            (c, _) if is_name_start(c) => return self.name(start),
            _ => return Err(Self::syntax(start, "unexpected character")),
        };
        self.pos += len;
        Ok((start, tok))
    }

    fn text(&mut self, start: usize) -> Result<(usize, Tok<'a>), PreconditionError> {
        let b = self.src.as_bytes();
        let mut i = start + 1;
        loop {
            match b.get(i) {
                None => return Err(Self::syntax(start, "unterminated text")),
                Some(b'"') => break,
                Some(b'\\') => {
                    return Err(Self::syntax(i, "escapes are not supported in text"));
                }
                Some(c) if c.is_ascii_control() => {
                    return Err(Self::syntax(
                        i,
                        "control characters are not allowed in text",
                    ));
                }
                Some(_) => i += 1,
            }
        }
        self.pos = i + 1;
        // `"` is ASCII, so both ends are character boundaries.
        Ok((start, Tok::Text(&self.src[start + 1..i])))
    }

    fn number(&mut self, start: usize) -> Result<(usize, Tok<'a>), PreconditionError> {
        let b = self.src.as_bytes();
        let digits = |mut i: usize| {
            let from = i;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            (i, i > from)
        };
        let mut i = start + usize::from(b[start] == b'-');
        let (end, any) = digits(i);
        if !any {
            return Err(Self::syntax(start, "malformed number"));
        }
        i = end;
        if b.get(i) == Some(&b'.') {
            let (end, any) = digits(i + 1);
            if !any {
                return Err(Self::syntax(start, "malformed number"));
            }
            i = end;
        }
        if b.get(i).is_some_and(|&c| is_name_char(c) || c == b'.') {
            return Err(Self::syntax(start, "malformed number"));
        }
        let n: f64 = self.src[start..i]
            .parse()
            .map_err(|_| Self::syntax(start, "malformed number"))?;
        if !n.is_finite() {
            return Err(Self::syntax(start, "number out of range"));
        }
        self.pos = i;
        // `-0` is `0`: one literal, one canonical text.
        Ok((start, Tok::Num(if n == 0.0 { 0.0 } else { n })))
    }

    fn name(&mut self, start: usize) -> Result<(usize, Tok<'a>), PreconditionError> {
        let b = self.src.as_bytes();
        let mut i = start;
        loop {
            // At the start of a segment, whose first byte is a name start.
            i += 1;
            while b.get(i).copied().is_some_and(is_name_char) {
                i += 1;
            }
            if b.get(i) != Some(&b'.') {
                break;
            }
            i += 1;
            if !b.get(i).copied().is_some_and(is_name_start) {
                return Err(Self::syntax(
                    i,
                    "a signal name segment starts with a letter or '_'",
                ));
            }
        }
        if i - start > MAX_SIGNAL_NAME_LEN {
            return Err(PreconditionError::SignalNameTooLong { position: start });
        }
        self.pos = i;
        Ok((start, Tok::Name(&self.src[start..i])))
    }
}

// ---------------------------------------------------------------------------
// Parser

enum Operand<'a> {
    Signal(&'a str),
    Lit(Literal),
}

struct Parser<'a> {
    lexer: Lexer<'a>,
    /// The current token and its offset.
    tok: Tok<'a>,
    at: usize,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Result<Self, PreconditionError> {
        let mut lexer = Lexer {
            src,
            pos: 0,
            tokens: 0,
        };
        let (at, tok) = lexer.next()?;
        Ok(Parser { lexer, tok, at })
    }

    fn advance(&mut self) -> Result<(), PreconditionError> {
        (self.at, self.tok) = self.lexer.next()?;
        Ok(())
    }

    fn syntax(&self, reason: &'static str) -> PreconditionError {
        PreconditionError::Syntax {
            position: self.at,
            reason,
        }
    }

    /// One level deeper than `depth`, if the limit allows.
    fn deeper(&self, depth: usize) -> Result<usize, PreconditionError> {
        if depth >= MAX_DEPTH {
            return Err(PreconditionError::TooDeep { position: self.at });
        }
        Ok(depth + 1)
    }

    fn or(&mut self, depth: usize) -> Result<Node, PreconditionError> {
        let first = self.and(depth)?;
        if self.tok != Tok::Or {
            return Ok(first);
        }
        let mut any = Vec::new();
        push_flat(&mut any, first, true);
        while self.tok == Tok::Or {
            self.advance()?;
            push_flat(&mut any, self.and(depth)?, true);
        }
        Ok(Node::Any(any))
    }

    fn and(&mut self, depth: usize) -> Result<Node, PreconditionError> {
        let first = self.unary(depth, false)?;
        if self.tok != Tok::And {
            return Ok(first);
        }
        let mut all = Vec::new();
        push_flat(&mut all, first, false);
        while self.tok == Tok::And {
            self.advance()?;
            push_flat(&mut all, self.unary(depth, false)?, false);
        }
        Ok(Node::All(all))
    }

    /// `unary` (`negated == false`) or `negated` of the grammar.
    fn unary(&mut self, depth: usize, negated: bool) -> Result<Node, PreconditionError> {
        match self.tok {
            Tok::Not => {
                let depth = self.deeper(depth)?;
                self.advance()?;
                Ok(Node::Not(Box::new(self.unary(depth, true)?)))
            }
            Tok::LParen => {
                let depth = self.deeper(depth)?;
                self.advance()?;
                let inner = self.or(depth)?;
                if self.tok != Tok::RParen {
                    return Err(self.syntax("expected ')'"));
                }
                self.advance()?;
                Ok(inner)
            }
            _ => {
                let left_at = self.at;
                let left = self.operand()?;
                match self.tok {
                    Tok::Cmp(_) if negated => {
                        Err(self.syntax("`!` negates one operand or a group: write `!(a == b)`"))
                    }
                    Tok::Cmp(op) => {
                        self.advance()?;
                        let right_at = self.at;
                        let right = self.operand()?;
                        compare(left, op, right, left_at, right_at)
                    }
                    _ => bare(left, left_at),
                }
            }
        }
    }

    fn operand(&mut self) -> Result<Operand<'a>, PreconditionError> {
        let operand = match self.tok {
            Tok::Name("true") => Operand::Lit(Literal::Bool(true)),
            Tok::Name("false") => Operand::Lit(Literal::Bool(false)),
            Tok::Name(name) => Operand::Signal(name),
            Tok::Num(n) => Operand::Lit(Literal::Num(n)),
            Tok::Text(t) => Operand::Lit(Literal::Text(t.to_owned())),
            _ => return Err(self.syntax("expected a signal name, number, text or boolean")),
        };
        self.advance()?;
        Ok(operand)
    }
}

/// Appends `node` to the operands of an `Any` (`any`) or `All`, merging a
/// nested group of the same kind.
fn push_flat(into: &mut Vec<Node>, node: Node, any: bool) {
    match node {
        Node::Any(v) if any => into.extend(v),
        Node::All(v) if !any => into.extend(v),
        n => into.push(n),
    }
}

fn compare(
    left: Operand<'_>,
    op: CmpOp,
    right: Operand<'_>,
    left_at: usize,
    right_at: usize,
) -> Result<Node, PreconditionError> {
    let (signal, op, literal, literal_at) = match (left, right) {
        (Operand::Signal(s), Operand::Lit(l)) => (s, op, l, right_at),
        (Operand::Lit(l), Operand::Signal(s)) => (s, op.flipped(), l, left_at),
        (Operand::Signal(_), Operand::Signal(_)) => {
            return Err(PreconditionError::Syntax {
                position: right_at,
                reason: "both sides are signals: quote text (`gear == \"P\"`)",
            })
        }
        (Operand::Lit(_), Operand::Lit(_)) => {
            return Err(PreconditionError::Syntax {
                position: left_at,
                reason: "a comparison needs a signal on one side",
            })
        }
    };
    if op.is_ordering() && !matches!(literal, Literal::Num(_)) {
        return Err(PreconditionError::Syntax {
            position: literal_at,
            reason: "`<`, `<=`, `>` and `>=` compare with a number",
        });
    }
    Ok(Node::Cmp {
        signal: signal.to_owned(),
        op,
        literal,
    })
}

fn bare(operand: Operand<'_>, at: usize) -> Result<Node, PreconditionError> {
    match operand {
        Operand::Signal(s) => Ok(Node::Signal(s.to_owned())),
        Operand::Lit(Literal::Bool(b)) => Ok(Node::Const(b)),
        Operand::Lit(_) => Err(PreconditionError::Syntax {
            position: at,
            reason: "a condition is a comparison, a boolean signal, `true` or `false`",
        }),
    }
}

// ---------------------------------------------------------------------------
// Canonical text

fn write_node(n: &Node, out: &mut String) -> fmt::Result {
    match n {
        Node::Any(v) => write_list(v, " || ", out),
        Node::All(v) => write_list(v, " && ", out),
        Node::Not(inner) => {
            out.push('!');
            match **inner {
                Node::Signal(_) | Node::Const(_) | Node::Not(_) => write_node(inner, out),
                _ => {
                    out.push('(');
                    write_node(inner, out)?;
                    out.push(')');
                    Ok(())
                }
            }
        }
        Node::Cmp {
            signal,
            op,
            literal,
        } => {
            write!(out, "{signal} {} ", op.as_str())?;
            match literal {
                Literal::Num(x) => write!(out, "{x}"),
                Literal::Text(t) => write!(out, "\"{t}\""),
                Literal::Bool(b) => write!(out, "{b}"),
            }
        }
        Node::Signal(s) => {
            out.push_str(s);
            Ok(())
        }
        Node::Const(b) => write!(out, "{b}"),
    }
}

fn write_list(v: &[Node], sep: &str, out: &mut String) -> fmt::Result {
    for (i, n) in v.iter().enumerate() {
        if i > 0 {
            out.push_str(sep);
        }
        // An `Any` inside an `All` is the only operand that needs parentheses
        // (`&&` binds tighter; groups of the same kind are flattened).
        if matches!(n, Node::Any(_)) {
            out.push('(');
            write_node(n, out)?;
            out.push(')');
        } else {
            write_node(n, out)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Evaluation

fn lookup<'s>(name: &str, signals: &'s [Signal]) -> Result<&'s SignalValue, EvalError> {
    signals
        .iter()
        .find(|s| s.name == name)
        .map(|s| &s.value)
        .ok_or_else(|| EvalError::MissingSignal(name.to_owned()))
}

fn type_error(signal: &str, reason: &'static str) -> EvalError {
    EvalError::Type {
        signal: signal.to_owned(),
        reason,
    }
}

fn eval_node(n: &Node, signals: &[Signal]) -> Result<bool, EvalError> {
    match n {
        // Every operand is evaluated, so that an error is never hidden by
        // another operand's value: preconditions fail safe.
        Node::Any(v) => v
            .iter()
            .try_fold(false, |acc, n| Ok(eval_node(n, signals)? || acc)),
        Node::All(v) => v
            .iter()
            .try_fold(true, |acc, n| Ok(eval_node(n, signals)? && acc)),
        Node::Not(inner) => Ok(!eval_node(inner, signals)?),
        Node::Const(b) => Ok(*b),
        Node::Signal(name) => match lookup(name, signals)? {
            SignalValue::Bool(b) => Ok(*b),
            _ => Err(type_error(name, "a bare signal must be a boolean")),
        },
        Node::Cmp {
            signal,
            op,
            literal,
        } => {
            let value = lookup(signal, signals)?;
            let ord = match (value, literal) {
                (SignalValue::Int(a), Literal::Num(b)) => (*a as f64).partial_cmp(b),
                (SignalValue::Float(a), Literal::Num(b)) if a.is_finite() => a.partial_cmp(b),
                (SignalValue::Float(_), Literal::Num(_)) => {
                    return Err(type_error(signal, "the value is not a finite number"))
                }
                (SignalValue::Text(a), Literal::Text(b)) => Some(a.as_str().cmp(b.as_str())),
                (SignalValue::Bool(a), Literal::Bool(b)) => Some(a.cmp(b)),
                (SignalValue::Bytes(_), _) => {
                    return Err(type_error(signal, "byte signals cannot be compared"))
                }
                (_, Literal::Num(_)) => {
                    return Err(type_error(signal, "the value is not a number"))
                }
                (_, Literal::Text(_)) => return Err(type_error(signal, "the value is not text")),
                (_, Literal::Bool(_)) => {
                    return Err(type_error(signal, "the value is not a boolean"))
                }
            };
            // Both operands are finite numbers, text or booleans: ordered.
            let ord = ord.ok_or_else(|| type_error(signal, "the values are not ordered"))?;
            Ok(match op {
                CmpOp::Eq => ord.is_eq(),
                CmpOp::Ne => ord.is_ne(),
                CmpOp::Lt => ord.is_lt(),
                CmpOp::Le => ord.is_le(),
                CmpOp::Gt => ord.is_gt(),
                CmpOp::Ge => ord.is_ge(),
            })
        }
    }
}

#[cfg(test)]
mod tests;
