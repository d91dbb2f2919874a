//! Property tests of the precondition language: random expressions, written
//! with random spacing, grouping and operand order, parse; their canonical
//! text parses to the same expression; and both evaluate as an independent
//! reference evaluator says they should.

use std::cmp::Ordering;

use esync_proto::message::{Signal, SignalValue};
use esync_proto::precondition::{EvalError, Precondition, PreconditionError};
use proptest::prelude::*;

const NAMES: &[&str] = &[
    "speed",
    "gear",
    "ignition",
    "Vehicle.Speed",
    "Vehicle.IsMoving",
    "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current",
];

/// Number literals: value and a way to write it.
const NUMBERS: &[(f64, &str)] = &[
    (0.0, "0"),
    (0.0, "-0"),
    (-5.0, "-5"),
    (0.5, "0.5"),
    (1.5, "1.500"),
    (7.0, "007"),
    (30.0, "30"),
    (40.0, "40.0"),
    (1e-7, "0.0000001"),
    (100.0, "100"),
];

const TEXTS: &[&str] = &["P", "D", "off", "Ünï", ""];

const OPS: &[&str] = &["==", "!=", "<", "<=", ">", ">="];

#[derive(Clone, Debug)]
enum Lit {
    Num(usize),
    Text(usize),
    Bool(bool),
}

/// The reference expression: how it is written and what it means.
#[derive(Clone, Debug)]
enum T {
    Cmp {
        signal: usize,
        op: usize,
        lit: Lit,
        literal_left: bool,
        spaced: bool,
    },
    Bare(usize),
    Const(bool),
    Not(Box<T>),
    And(Box<T>, Box<T>, bool),
    Or(Box<T>, Box<T>, bool),
    Group(Box<T>),
}

fn write_lit(l: &Lit) -> String {
    match l {
        Lit::Num(i) => NUMBERS[*i].1.to_string(),
        Lit::Text(i) => format!("\"{}\"", TEXTS[*i]),
        Lit::Bool(b) => b.to_string(),
    }
}

fn write(t: &T) -> String {
    let sp = |spaced: bool| if spaced { " " } else { "" };
    match t {
        T::Cmp {
            signal,
            op,
            lit,
            literal_left,
            spaced,
        } => {
            let (l, r) = if *literal_left {
                (write_lit(lit), NAMES[*signal].to_string())
            } else {
                (NAMES[*signal].to_string(), write_lit(lit))
            };
            format!("{l}{s}{}{s}{r}", OPS[*op], s = sp(*spaced))
        }
        T::Bare(s) => NAMES[*s].to_string(),
        T::Const(b) => b.to_string(),
        T::Not(inner) => match **inner {
            T::Bare(_) | T::Const(_) | T::Not(_) | T::Group(_) => format!("!{}", write(inner)),
            _ => format!("!({})", write(inner)),
        },
        T::And(a, b, spaced) => {
            let w = |x: &T| match x {
                T::Or(..) => format!("({})", write(x)),
                _ => write(x),
            };
            format!("{}{s}&&{s}{}", w(a), w(b), s = sp(*spaced))
        }
        T::Or(a, b, spaced) => format!("{}{s}||{s}{}", write(a), write(b), s = sp(*spaced)),
        T::Group(inner) => format!("( {} )", write(inner)),
    }
}

#[derive(Debug, PartialEq)]
enum Verdict {
    Met(bool),
    Missing(String),
    Type(String),
}

fn reference(t: &T, signals: &[Signal]) -> Result<bool, Verdict> {
    let value = |i: usize| {
        signals
            .iter()
            .find(|s| s.name == NAMES[i])
            .map(|s| &s.value)
            .ok_or_else(|| Verdict::Missing(NAMES[i].to_string()))
    };
    let type_err = |i: usize| Verdict::Type(NAMES[i].to_string());
    match t {
        T::Cmp {
            signal,
            op,
            lit,
            literal_left,
            ..
        } => {
            let v = value(*signal)?;
            let ord: Ordering = match (v, lit) {
                (SignalValue::Int(a), Lit::Num(i)) => {
                    (*a as f64).partial_cmp(&NUMBERS[*i].0).expect("finite")
                }
                (SignalValue::Float(a), Lit::Num(i)) if a.is_finite() => {
                    a.partial_cmp(&NUMBERS[*i].0).expect("finite")
                }
                (SignalValue::Text(a), Lit::Text(i)) => a.as_str().cmp(TEXTS[*i]),
                (SignalValue::Bool(a), Lit::Bool(b)) => a.cmp(b),
                _ => return Err(type_err(*signal)),
            };
            // As written: `literal op signal` when the literal is on the left.
            let ord = if *literal_left { ord.reverse() } else { ord };
            Ok(match OPS[*op] {
                "==" => ord.is_eq(),
                "!=" => ord.is_ne(),
                "<" => ord.is_lt(),
                "<=" => ord.is_le(),
                ">" => ord.is_gt(),
                _ => ord.is_ge(),
            })
        }
        T::Bare(i) => match value(*i)? {
            SignalValue::Bool(b) => Ok(*b),
            _ => Err(type_err(*i)),
        },
        T::Const(b) => Ok(*b),
        T::Not(x) => Ok(!reference(x, signals)?),
        T::Group(x) => reference(x, signals),
        T::And(a, b, _) => {
            let a = reference(a, signals)?;
            Ok(reference(b, signals)? && a)
        }
        T::Or(a, b, _) => {
            let a = reference(a, signals)?;
            Ok(reference(b, signals)? || a)
        }
    }
}

fn verdict(r: Result<bool, EvalError>) -> Verdict {
    match r {
        Ok(b) => Verdict::Met(b),
        Err(EvalError::MissingSignal(s)) => Verdict::Missing(s),
        Err(EvalError::Type { signal, .. }) => Verdict::Type(signal),
        Err(e) => panic!("unknown evaluation error {e:?}"),
    }
}

fn leaf() -> impl Strategy<Value = T> {
    let lit = prop_oneof![
        3 => (0..NUMBERS.len()).prop_map(Lit::Num),
        1 => (0..TEXTS.len()).prop_map(Lit::Text),
        1 => any::<bool>().prop_map(Lit::Bool),
    ];
    let cmp = (
        0..NAMES.len(),
        0..OPS.len(),
        lit,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(signal, op, lit, literal_left, spaced)| {
            // Ordering operators take numbers only (a parse error otherwise).
            let op = if matches!(lit, Lit::Num(_)) {
                op
            } else {
                op % 2
            };
            T::Cmp {
                signal,
                op,
                lit,
                literal_left,
                spaced,
            }
        });
    prop_oneof![
        6 => cmp,
        2 => (0..NAMES.len()).prop_map(T::Bare),
        1 => any::<bool>().prop_map(T::Const),
    ]
}

fn expr() -> impl Strategy<Value = T> {
    leaf().prop_recursive(4, 24, 2, |inner| {
        prop_oneof![
            inner.clone().prop_map(|t| T::Not(Box::new(t))),
            inner.clone().prop_map(|t| T::Group(Box::new(t))),
            (inner.clone(), inner.clone(), any::<bool>()).prop_map(|(a, b, s)| T::And(
                Box::new(a),
                Box::new(b),
                s
            )),
            (inner.clone(), inner, any::<bool>()).prop_map(|(a, b, s)| T::Or(
                Box::new(a),
                Box::new(b),
                s
            )),
        ]
    })
}

fn value_of(name: usize) -> BoxedStrategy<SignalValue> {
    let natural = match NAMES[name] {
        "gear" => (0..TEXTS.len())
            .prop_map(|i| SignalValue::Text(TEXTS[i].into()))
            .boxed(),
        "ignition" | "Vehicle.IsMoving" => any::<bool>().prop_map(SignalValue::Bool).boxed(),
        _ => prop_oneof![
            (-6i64..120).prop_map(SignalValue::Int),
            (0..NUMBERS.len()).prop_map(|i| SignalValue::Float(NUMBERS[i].0)),
            (-10.0f64..120.0).prop_map(SignalValue::Float),
        ]
        .boxed(),
    };
    prop_oneof![
        8 => natural,
        1 => Just(SignalValue::Float(f64::NAN)),
        1 => Just(SignalValue::Bytes(vec![0])),
        1 => Just(SignalValue::Text("P".into())),
        1 => any::<bool>().prop_map(SignalValue::Bool),
        1 => Just(SignalValue::Int(40)),
    ]
    .boxed()
}

fn signals() -> impl Strategy<Value = Vec<Signal>> {
    let per_name: Vec<_> = (0..NAMES.len())
        .map(|i| {
            prop_oneof![
                9 => value_of(i).prop_map(Some),
                1 => Just(None),
            ]
            .prop_map(move |v| {
                v.map(|value| Signal {
                    name: NAMES[i].into(),
                    value,
                })
            })
        })
        .collect();
    per_name.prop_map(|v| v.into_iter().flatten().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn display_parse_round_trip_and_meaning(t in expr(), sigs in signals()) {
        let src = write(&t);
        let p = match Precondition::parse(&src) {
            Ok(p) => p,
            Err(PreconditionError::TooLong { .. } | PreconditionError::TooManyTokens) => {
                return Err(TestCaseError::reject("over a limit"));
            }
            Err(e) => return Err(TestCaseError::fail(format!("{src:?}: {e}"))),
        };
        let q = Precondition::parse(p.as_str()).expect("the canonical text parses");
        prop_assert_eq!(&q, &p);
        prop_assert_eq!(q.as_str(), p.as_str());
        prop_assert_eq!(q.to_string(), p.to_string());
        let expected = match reference(&t, &sigs) {
            Ok(b) => Verdict::Met(b),
            Err(v) => v,
        };
        prop_assert_eq!(verdict(p.eval(&sigs)), expected, "{} / {}", src, p);
        prop_assert_eq!(verdict(q.eval(&sigs)), verdict(p.eval(&sigs)));
        let wire = postcard::to_allocvec(&p).expect("encodes");
        prop_assert_eq!(postcard::from_bytes::<Precondition>(&wire).expect("decodes"), p);
    }

    #[test]
    fn token_soup_never_panics_and_canonical_text_is_stable(
        toks in proptest::collection::vec(
            prop_oneof![
                Just("a"), Just("Vehicle.Speed"), Just("gear"), Just("=="), Just("<"),
                Just(">="), Just("!="), Just("&&"), Just("||"), Just("!"), Just("("),
                Just(")"), Just("1"), Just("-2.5"), Just("\"P\""), Just("true"), Just("x."),
                Just("="), Just("&"), Just("\""), Just(".5"), Just("1e3"),
            ],
            0..40,
        ),
        spaces in proptest::collection::vec(any::<bool>(), 40),
    ) {
        let mut src = String::new();
        for (t, s) in toks.iter().zip(&spaces) {
            src.push_str(t);
            if *s {
                src.push(' ');
            }
        }
        if let Ok(p) = Precondition::parse(&src) {
            let q = Precondition::parse(p.as_str()).expect("the canonical text parses");
            prop_assert_eq!(q.as_str(), p.as_str());
        }
    }

    #[test]
    fn any_text_never_panics(src in "[a-zA-Z0-9_.()!&|=<> \"-]{0,200}") {
        if let Ok(p) = Precondition::parse(&src) {
            let q = Precondition::parse(p.as_str()).expect("the canonical text parses");
            prop_assert_eq!(q, p);
        }
    }
}
