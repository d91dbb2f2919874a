//! Vehicle-state precondition expressions, evaluated by the Agent itself.
//!
//! Grammar (bounded: at most [`MAX_EXPR_LEN`] bytes and [`MAX_DEPTH`] levels
//! of nesting):
//!
//! ```text
//! expr    := or
//! or      := and ( "||" and )*
//! and     := unary ( "&&" unary )*
//! unary   := "!" unary | primary
//! primary := "(" expr ")" | compare | operand
//! compare := operand ( "==" | "!=" | "<" | "<=" | ">" | ">=" ) operand
//! operand := signal-name | number | "string" | true | false
//! ```
//!
//! A bare operand used as a condition must be a boolean. Numbers compare
//! numerically across integer and float signals; strings compare only with
//! `==` and `!=`. A missing signal or a type mismatch is an error, which the
//! Agent treats as "precondition not met" (fail safe).
//!
//! ```
//! use esync_agent::expr::Expr;
//! use esync_proto::message::{Signal, SignalValue};
//! let e = Expr::parse(r#"speed == 0 && gear == "P" && battery_soc >= 40"#).unwrap();
//! let signals = vec![
//!     Signal { name: "speed".into(), value: SignalValue::Int(0) },
//!     Signal { name: "gear".into(), value: SignalValue::Text("P".into()) },
//!     Signal { name: "battery_soc".into(), value: SignalValue::Float(55.5) },
//! ];
//! assert!(e.eval(&signals).unwrap());
//! ```

use core::fmt;

use esync_proto::message::{Signal, SignalValue};
use thiserror::Error;

/// Maximum length of an expression's source text, in bytes.
pub const MAX_EXPR_LEN: usize = 1024;
/// Maximum nesting depth (parentheses and `!`).
pub const MAX_DEPTH: usize = 32;
/// Maximum number of tokens.
pub const MAX_TOKENS: usize = 256;

/// An expression could not be parsed or evaluated.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ExprError {
    /// The source is longer than [`MAX_EXPR_LEN`] or has more than [`MAX_TOKENS`] tokens.
    #[error("precondition expression too long ({0} bytes or tokens)")]
    TooLong(usize),
    /// Nesting deeper than [`MAX_DEPTH`].
    #[error("precondition expression nested deeper than {MAX_DEPTH}")]
    TooDeep,
    /// A syntax error at a byte offset.
    #[error("precondition syntax error at byte {position}: {reason}")]
    Syntax {
        /// Byte offset.
        position: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// A signal the expression names is not available.
    #[error("signal {0:?} not available")]
    MissingSignal(String),
    /// Operands of incompatible types.
    #[error("type mismatch: {0}")]
    Type(&'static str),
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Num(f64),
    Str(String),
    Op(CmpOp),
    And,
    Or,
    Not,
    LParen,
    RParen,
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

#[derive(Clone, Debug, PartialEq)]
enum Operand {
    Signal(String),
    Num(f64),
    Str(String),
    Bool(bool),
}

#[derive(Clone, Debug, PartialEq)]
enum Node {
    Or(Box<Node>, Box<Node>),
    And(Box<Node>, Box<Node>),
    Not(Box<Node>),
    Cmp(Operand, CmpOp, Operand),
    Truth(Operand),
}

/// A parsed precondition expression.
#[derive(Clone, PartialEq)]
pub struct Expr {
    source: String,
    root: Node,
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Expr({:?})", self.source)
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn tokenize(src: &str) -> Result<Vec<(usize, Tok)>, ExprError> {
    let b = src.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if out.len() >= MAX_TOKENS {
            return Err(ExprError::TooLong(out.len()));
        }
        let start = i;
        let two = b.get(i + 1).copied();
        let tok = match (c, two) {
            (b'&', Some(b'&')) => {
                i += 2;
                Tok::And
            }
            (b'|', Some(b'|')) => {
                i += 2;
                Tok::Or
            }
            (b'=', Some(b'=')) => {
                i += 2;
                Tok::Op(CmpOp::Eq)
            }
            (b'!', Some(b'=')) => {
                i += 2;
                Tok::Op(CmpOp::Ne)
            }
            (b'<', Some(b'=')) => {
                i += 2;
                Tok::Op(CmpOp::Le)
            }
            (b'>', Some(b'=')) => {
                i += 2;
                Tok::Op(CmpOp::Ge)
            }
            (b'<', _) => {
                i += 1;
                Tok::Op(CmpOp::Lt)
            }
            (b'>', _) => {
                i += 1;
                Tok::Op(CmpOp::Gt)
            }
            (b'!', _) => {
                i += 1;
                Tok::Not
            }
            (b'(', _) => {
                i += 1;
                Tok::LParen
            }
            (b')', _) => {
                i += 1;
                Tok::RParen
            }
            (b'"', _) => {
                i += 1;
                let s = i;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        return Err(ExprError::Syntax {
                            position: i,
                            reason: "escapes are not supported in strings",
                        });
                    }
                    i += 1;
                }
                if i >= b.len() {
                    return Err(ExprError::Syntax {
                        position: start,
                        reason: "unterminated string",
                    });
                }
                let text = src[s..i].to_string();
                i += 1;
                Tok::Str(text)
            }
            (c, _) if c.is_ascii_digit() || c == b'-' || c == b'.' => {
                i += 1;
                while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
                    i += 1;
                }
                let n: f64 = src[start..i].parse().map_err(|_| ExprError::Syntax {
                    position: start,
                    reason: "malformed number",
                })?;
                if !n.is_finite() {
                    return Err(ExprError::Syntax {
                        position: start,
                        reason: "number out of range",
                    });
                }
                Tok::Num(n)
            }
            (c, _) if c.is_ascii_alphabetic() || c == b'_' => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || matches!(b[i], b'_' | b'.')) {
                    i += 1;
                }
                Tok::Ident(src[start..i].to_string())
            }
            _ => {
                return Err(ExprError::Syntax {
                    position: start,
                    reason: "unexpected character",
                })
            }
        };
        out.push((start, tok));
    }
    Ok(out)
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(_, t)| t)
    }

    fn at(&self) -> usize {
        self.toks.get(self.pos).map_or(self.end, |(p, _)| *p)
    }

    fn or(&mut self, depth: usize) -> Result<Node, ExprError> {
        let mut left = self.and(depth)?;
        while self.peek() == Some(&Tok::Or) {
            self.pos += 1;
            let right = self.and(depth)?;
            left = Node::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self, depth: usize) -> Result<Node, ExprError> {
        let mut left = self.unary(depth)?;
        while self.peek() == Some(&Tok::And) {
            self.pos += 1;
            let right = self.unary(depth)?;
            left = Node::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self, depth: usize) -> Result<Node, ExprError> {
        if depth > MAX_DEPTH {
            return Err(ExprError::TooDeep);
        }
        match self.peek() {
            Some(Tok::Not) => {
                self.pos += 1;
                Ok(Node::Not(Box::new(self.unary(depth + 1)?)))
            }
            Some(Tok::LParen) => {
                self.pos += 1;
                let inner = self.or(depth + 1)?;
                if self.peek() != Some(&Tok::RParen) {
                    return Err(ExprError::Syntax {
                        position: self.at(),
                        reason: "expected ')'",
                    });
                }
                self.pos += 1;
                Ok(inner)
            }
            _ => {
                let left = self.operand()?;
                if let Some(Tok::Op(op)) = self.peek() {
                    let op = *op;
                    self.pos += 1;
                    let right = self.operand()?;
                    Ok(Node::Cmp(left, op, right))
                } else {
                    Ok(Node::Truth(left))
                }
            }
        }
    }

    fn operand(&mut self) -> Result<Operand, ExprError> {
        let position = self.at();
        let tok = self.toks.get(self.pos).map(|(_, t)| t.clone());
        self.pos += 1;
        match tok {
            Some(Tok::Ident(s)) if s == "true" => Ok(Operand::Bool(true)),
            Some(Tok::Ident(s)) if s == "false" => Ok(Operand::Bool(false)),
            Some(Tok::Ident(s)) => Ok(Operand::Signal(s)),
            Some(Tok::Num(n)) => Ok(Operand::Num(n)),
            Some(Tok::Str(s)) => Ok(Operand::Str(s)),
            _ => Err(ExprError::Syntax {
                position,
                reason: "expected a signal name, number, string or boolean",
            }),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Val<'a> {
    Num(f64),
    Str(&'a str),
    Bool(bool),
}

fn resolve<'a>(o: &'a Operand, signals: &'a [Signal]) -> Result<Val<'a>, ExprError> {
    match o {
        Operand::Num(n) => Ok(Val::Num(*n)),
        Operand::Str(s) => Ok(Val::Str(s)),
        Operand::Bool(b) => Ok(Val::Bool(*b)),
        Operand::Signal(name) => {
            let s = signals
                .iter()
                .find(|s| &s.name == name)
                .ok_or_else(|| ExprError::MissingSignal(name.clone()))?;
            match &s.value {
                SignalValue::Bool(b) => Ok(Val::Bool(*b)),
                SignalValue::Int(i) => Ok(Val::Num(*i as f64)),
                SignalValue::Float(f) if f.is_finite() => Ok(Val::Num(*f)),
                SignalValue::Float(_) => Err(ExprError::Type("signal is not a finite number")),
                SignalValue::Text(t) => Ok(Val::Str(t)),
                SignalValue::Bytes(_) => Err(ExprError::Type("byte signals cannot be compared")),
            }
        }
    }
}

fn eval_node(n: &Node, signals: &[Signal]) -> Result<bool, ExprError> {
    match n {
        // Both sides are evaluated so that a missing signal is never hidden
        // by short-circuiting: preconditions fail safe.
        Node::Or(a, b) => {
            let (a, b) = (eval_node(a, signals)?, eval_node(b, signals)?);
            Ok(a || b)
        }
        Node::And(a, b) => {
            let (a, b) = (eval_node(a, signals)?, eval_node(b, signals)?);
            Ok(a && b)
        }
        Node::Not(a) => Ok(!eval_node(a, signals)?),
        Node::Truth(o) => match resolve(o, signals)? {
            Val::Bool(b) => Ok(b),
            _ => Err(ExprError::Type("a bare operand must be a boolean")),
        },
        Node::Cmp(l, op, r) => {
            let (l, r) = (resolve(l, signals)?, resolve(r, signals)?);
            match (l, r) {
                (Val::Num(a), Val::Num(b)) => Ok(match op {
                    CmpOp::Eq => a == b,
                    CmpOp::Ne => a != b,
                    CmpOp::Lt => a < b,
                    CmpOp::Le => a <= b,
                    CmpOp::Gt => a > b,
                    CmpOp::Ge => a >= b,
                }),
                (Val::Str(a), Val::Str(b)) => match op {
                    CmpOp::Eq => Ok(a == b),
                    CmpOp::Ne => Ok(a != b),
                    _ => Err(ExprError::Type("strings compare only with == and !=")),
                },
                (Val::Bool(a), Val::Bool(b)) => match op {
                    CmpOp::Eq => Ok(a == b),
                    CmpOp::Ne => Ok(a != b),
                    _ => Err(ExprError::Type("booleans compare only with == and !=")),
                },
                _ => Err(ExprError::Type("operands of different types")),
            }
        }
    }
}

impl Expr {
    /// Parses an expression.
    pub fn parse(src: &str) -> Result<Self, ExprError> {
        if src.len() > MAX_EXPR_LEN {
            return Err(ExprError::TooLong(src.len()));
        }
        let toks = tokenize(src)?;
        let mut p = Parser {
            toks,
            pos: 0,
            end: src.len(),
        };
        let root = p.or(0)?;
        if p.pos != p.toks.len() {
            return Err(ExprError::Syntax {
                position: p.at(),
                reason: "unexpected trailing input",
            });
        }
        Ok(Expr {
            source: src.to_string(),
            root,
        })
    }

    /// The source text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates against signal values.
    pub fn eval(&self, signals: &[Signal]) -> Result<bool, ExprError> {
        eval_node(&self.root, signals)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(name: &str, v: SignalValue) -> Signal {
        Signal {
            name: name.into(),
            value: v,
        }
    }

    fn parked() -> Vec<Signal> {
        vec![
            sig("speed", SignalValue::Int(0)),
            sig("gear", SignalValue::Text("P".into())),
            sig("battery_soc", SignalValue::Float(40.0)),
            sig("ignition", SignalValue::Bool(false)),
        ]
    }

    #[test]
    fn operators_and_precedence() {
        let s = parked();
        let t = |src: &str| Expr::parse(src).unwrap().eval(&s).unwrap();
        assert!(t(r#"speed == 0 && gear == "P" && battery_soc >= 40"#));
        assert!(!t("battery_soc > 40"));
        assert!(t("battery_soc <= 40 && battery_soc < 40.5"));
        assert!(t("speed != 1"));
        assert!(t("!ignition"));
        assert!(t("ignition || speed == 0"));
        assert!(!t("!(speed == 0)"));
        // && binds tighter than ||.
        assert!(t("speed == 1 && speed == 2 || speed == 0"));
        assert!(!t("speed == 1 && (speed == 2 || speed == 0)"));
        assert!(t("-5 < speed"));
        assert!(t("ignition == false"));
    }

    #[test]
    fn fails_safe_on_missing_or_mistyped() {
        let s = parked();
        let e = Expr::parse("speed == 0 || odometer > 5").unwrap();
        assert_eq!(e.eval(&s), Err(ExprError::MissingSignal("odometer".into())));
        assert!(matches!(
            Expr::parse(r#"gear < "P""#).unwrap().eval(&s),
            Err(ExprError::Type(_))
        ));
        assert!(matches!(
            Expr::parse("speed").unwrap().eval(&s),
            Err(ExprError::Type(_))
        ));
        assert!(matches!(
            Expr::parse(r#"speed == "0""#).unwrap().eval(&s),
            Err(ExprError::Type(_))
        ));
    }

    #[test]
    fn bounded_input() {
        assert!(matches!(
            Expr::parse(&"(".repeat(40)),
            Err(ExprError::TooDeep)
        ));
        assert!(matches!(
            Expr::parse(&"!".repeat(40)),
            Err(ExprError::TooDeep)
        ));
        assert!(matches!(
            Expr::parse(&"a".repeat(2000)),
            Err(ExprError::TooLong(_))
        ));
        let many = vec!["speed == 0"; 100].join(" && ");
        assert!(matches!(Expr::parse(&many), Err(ExprError::TooLong(_))));
        for bad in [
            "",
            "speed ==",
            "speed == 0 &&",
            "(speed == 0",
            "speed = 0",
            "\"abc",
            "speed == 0 )",
            "1..2 == 1",
        ] {
            assert!(Expr::parse(bad).is_err(), "{bad}");
        }
    }
}
