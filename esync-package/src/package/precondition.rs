//! Vehicle-state precondition expressions, e.g.
//! `speed == 0 && gear == "P" && battery_soc >= 40`.
//!
//! Grammar (whitespace between tokens is ignored):
//!
//! ```text
//! expr    := and ( "||" and )*
//! and     := atom ( "&&" atom )*
//! atom    := "(" expr ")" | signal op value
//! signal  := [a-z_][a-z0-9_.]*          (at most 64 bytes)
//! op      := "==" | "!=" | "<" | "<=" | ">" | ">="
//! value   := number | "quoted text" | bare word ([A-Za-z0-9_]+, taken as text)
//! ```
//!
//! At most [`MAX_PRECONDITION_LEN`] bytes and [`MAX_DEPTH`] nested groups.
//! Parsing produces a [`Precondition`]; its JSON form is its canonical text.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Longest accepted expression, in bytes.
pub const MAX_PRECONDITION_LEN: usize = 1024;
/// Deepest accepted nesting of parentheses.
pub const MAX_DEPTH: usize = 16;

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
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
}

/// A signal value (in an expression, or from the vehicle-state provider).
#[derive(Clone, Debug, PartialEq)]
pub enum SignalValue {
    /// A number.
    Number(f64),
    /// Text (gear positions, ignition states...).
    Text(String),
}

/// A parsed expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// Every operand holds.
    All(Vec<Expr>),
    /// At least one operand holds.
    Any(Vec<Expr>),
    /// `signal op value`.
    Compare {
        /// Signal name.
        signal: String,
        /// Operator.
        op: CmpOp,
        /// Literal.
        value: SignalValue,
    },
}

/// A validated precondition expression.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Precondition {
    expr: Expr,
}

/// An expression could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("precondition invalid at byte {position}: {reason}")]
pub struct PreconditionError {
    /// Byte offset.
    pub position: usize,
    /// What is wrong.
    pub reason: &'static str,
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn err(&self, reason: &'static str) -> PreconditionError {
        PreconditionError {
            position: self.pos,
            reason,
        }
    }

    fn ws(&mut self) {
        while self
            .s
            .get(self.pos)
            .is_some_and(|b| b.is_ascii_whitespace())
        {
            self.pos += 1;
        }
    }

    fn eat(&mut self, tok: &str) -> bool {
        self.ws();
        if self.s[self.pos..].starts_with(tok.as_bytes()) {
            self.pos += tok.len();
            true
        } else {
            false
        }
    }

    fn expr(&mut self, depth: usize) -> Result<Expr, PreconditionError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        let mut any = vec![self.and(depth)?];
        while self.eat("||") {
            any.push(self.and(depth)?);
        }
        Ok(if any.len() == 1 {
            any.remove(0)
        } else {
            Expr::Any(any)
        })
    }

    fn and(&mut self, depth: usize) -> Result<Expr, PreconditionError> {
        let mut all = vec![self.atom(depth)?];
        while self.eat("&&") {
            all.push(self.atom(depth)?);
        }
        Ok(if all.len() == 1 {
            all.remove(0)
        } else {
            Expr::All(all)
        })
    }

    fn atom(&mut self, depth: usize) -> Result<Expr, PreconditionError> {
        if self.eat("(") {
            let e = self.expr(depth + 1)?;
            if !self.eat(")") {
                return Err(self.err("expected ')'"));
            }
            return Ok(e);
        }
        self.ws();
        let start = self.pos;
        while self.s.get(self.pos).is_some_and(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'.'
        }) {
            self.pos += 1;
        }
        let signal = &self.s[start..self.pos];
        if signal.is_empty() || signal[0].is_ascii_digit() || signal[0] == b'.' || signal.len() > 64
        {
            self.pos = start;
            return Err(self.err("expected a signal name"));
        }
        let signal = String::from_utf8_lossy(signal).into_owned();
        let op = [
            ("==", CmpOp::Eq),
            ("!=", CmpOp::Ne),
            ("<=", CmpOp::Le),
            (">=", CmpOp::Ge),
            ("<", CmpOp::Lt),
            (">", CmpOp::Gt),
        ]
        .into_iter()
        .find(|(t, _)| self.eat(t))
        .map(|(_, o)| o)
        .ok_or_else(|| self.err("expected a comparison operator"))?;
        let value = self.value()?;
        Ok(Expr::Compare { signal, op, value })
    }

    fn value(&mut self) -> Result<SignalValue, PreconditionError> {
        self.ws();
        if self.s.get(self.pos) == Some(&b'"') {
            self.pos += 1;
            let start = self.pos;
            while let Some(&b) = self.s.get(self.pos) {
                if b == b'"' {
                    let t = String::from_utf8_lossy(&self.s[start..self.pos]).into_owned();
                    self.pos += 1;
                    return Ok(SignalValue::Text(t));
                }
                if b == b'\\' || b.is_ascii_control() {
                    return Err(self.err("escapes and control characters are not allowed in text"));
                }
                self.pos += 1;
            }
            return Err(self.err("unterminated text"));
        }
        let start = self.pos;
        while self
            .s
            .get(self.pos)
            .is_some_and(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'+'))
        {
            self.pos += 1;
        }
        let w = std::str::from_utf8(&self.s[start..self.pos]).map_err(|_| self.err("bad value"))?;
        if w.is_empty() {
            return Err(self.err("expected a value"));
        }
        let first = w.as_bytes()[0];
        if first.is_ascii_digit() || first == b'-' || first == b'+' {
            let n: f64 = w.parse().map_err(|_| self.err("bad number"))?;
            if !n.is_finite() {
                return Err(self.err("bad number"));
            }
            return Ok(SignalValue::Number(n));
        }
        if !w.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(self.err("bare words are [A-Za-z0-9_]; quote other text"));
        }
        Ok(SignalValue::Text(w.to_owned()))
    }
}

impl Precondition {
    /// Parses an expression.
    pub fn parse(s: &str) -> Result<Self, PreconditionError> {
        if s.len() > MAX_PRECONDITION_LEN {
            return Err(PreconditionError {
                position: MAX_PRECONDITION_LEN,
                reason: "expression too long",
            });
        }
        let mut p = Parser {
            s: s.as_bytes(),
            pos: 0,
        };
        let expr = p.expr(0)?;
        p.ws();
        if p.pos != s.len() {
            return Err(p.err("unexpected trailing input"));
        }
        Ok(Self { expr })
    }

    /// The parsed expression.
    pub fn expr(&self) -> &Expr {
        &self.expr
    }

    /// Evaluates the expression; `signal` returns the current value of a
    /// signal, or `None` when it is unknown (any comparison with an unknown
    /// signal, or between a number and text, is false).
    pub fn evaluate(&self, signal: &dyn Fn(&str) -> Option<SignalValue>) -> bool {
        fn eval(e: &Expr, f: &dyn Fn(&str) -> Option<SignalValue>) -> bool {
            match e {
                Expr::All(v) => v.iter().all(|e| eval(e, f)),
                Expr::Any(v) => v.iter().any(|e| eval(e, f)),
                Expr::Compare { signal, op, value } => {
                    let ord = match (f(signal), value) {
                        (Some(SignalValue::Number(a)), SignalValue::Number(b)) => a.partial_cmp(b),
                        (Some(SignalValue::Text(a)), SignalValue::Text(b)) => {
                            Some(a.as_str().cmp(b))
                        }
                        _ => None,
                    };
                    let Some(o) = ord else { return false };
                    match op {
                        CmpOp::Eq => o.is_eq(),
                        CmpOp::Ne => o.is_ne(),
                        CmpOp::Lt => o.is_lt(),
                        CmpOp::Le => o.is_le(),
                        CmpOp::Gt => o.is_gt(),
                        CmpOp::Ge => o.is_ge(),
                    }
                }
            }
        }
        eval(&self.expr, signal)
    }
}

impl fmt::Display for Precondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn w(e: &Expr, f: &mut fmt::Formatter<'_>, top: bool) -> fmt::Result {
            match e {
                Expr::All(v) | Expr::Any(v) => {
                    let sep = if matches!(e, Expr::All(_)) {
                        " && "
                    } else {
                        " || "
                    };
                    if !top {
                        f.write_str("(")?;
                    }
                    for (i, x) in v.iter().enumerate() {
                        if i > 0 {
                            f.write_str(sep)?;
                        }
                        w(x, f, false)?;
                    }
                    if !top {
                        f.write_str(")")?;
                    }
                    Ok(())
                }
                Expr::Compare { signal, op, value } => {
                    write!(f, "{signal} {} ", op.as_str())?;
                    match value {
                        SignalValue::Number(n) => write!(f, "{n}"),
                        SignalValue::Text(t) => write!(f, "\"{t}\""),
                    }
                }
            }
        }
        w(&self.expr, f, true)
    }
}

impl FromStr for Precondition {
    type Err = PreconditionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for Precondition {
    type Error = PreconditionError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Precondition> for String {
    fn from(p: Precondition) -> String {
        p.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_evaluate_roundtrip() {
        let p = Precondition::parse(r#"speed == 0 && gear == "P" && battery_soc >= 40"#).unwrap();
        let state = |s: &str| match s {
            "speed" => Some(SignalValue::Number(0.0)),
            "gear" => Some(SignalValue::Text("P".into())),
            "battery_soc" => Some(SignalValue::Number(55.0)),
            _ => None,
        };
        assert!(p.evaluate(&state));
        let low = |s: &str| match s {
            "battery_soc" => Some(SignalValue::Number(39.0)),
            o => state(o),
        };
        assert!(!p.evaluate(&low));
        assert_eq!(Precondition::parse(&p.to_string()).unwrap(), p);
        let q = Precondition::parse("(ignition == off || speed < 1.5) && gear == P").unwrap();
        assert_eq!(
            q.to_string(),
            r#"(ignition == "off" || speed < 1.5) && gear == "P""#
        );
        assert_eq!(Precondition::parse(&q.to_string()).unwrap(), q);
        assert!(!q.evaluate(&|_| None));
    }

    #[test]
    fn refuses_bad_input() {
        for bad in [
            "",
            "speed",
            "speed ==",
            "== 0",
            "speed = 0",
            "speed == 0 &&",
            "(speed == 0",
            "speed == 0)",
            "Speed == 0",
            "gear == \"P",
            "speed == 1e999",
            "a == b c",
        ] {
            assert!(
                Precondition::parse(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
        let deep = format!("{}a == 1{}", "(".repeat(20), ")".repeat(20));
        assert!(Precondition::parse(&deep).is_err());
    }
}
