//! Unit tests of the precondition language. The first three groups are
//! ported from the two former languages (the Agent's `expr.rs` and
//! esync-package's `precondition.rs`); where those encoded semantics that
//! drifted between the two, the test asserts the unified meaning and says so.

use alloc::format;
use alloc::string::ToString;
use alloc::vec;

use super::*;

fn sig(name: &str, v: SignalValue) -> Signal {
    Signal {
        name: name.into(),
        value: v,
    }
}

fn parse(src: &str) -> Precondition {
    Precondition::parse(src).unwrap_or_else(|e| panic!("{src:?}: {e}"))
}

fn parked() -> Vec<Signal> {
    vec![
        sig("speed", SignalValue::Int(0)),
        sig("gear", SignalValue::Text("P".into())),
        sig("battery_soc", SignalValue::Float(40.0)),
        sig("ignition", SignalValue::Bool(false)),
    ]
}

fn syntax_reason(src: &str) -> &'static str {
    match Precondition::parse(src) {
        Err(PreconditionError::Syntax { reason, .. }) => reason,
        other => panic!("{src:?}: expected a syntax error, got {other:?}"),
    }
}

// --- Ported from esync-agent/src/expr.rs ------------------------------------

#[test]
fn operators_and_precedence() {
    let s = parked();
    let t = |src: &str| parse(src).eval(&s).unwrap();
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
    let e = parse("speed == 0 || odometer > 5");
    assert_eq!(e.eval(&s), Err(EvalError::MissingSignal("odometer".into())));
    // Unified: the Agent refused `gear < "P"` when evaluating it, the package
    // language ordered text. Ordering needs a number now, checked at parse.
    assert_eq!(
        syntax_reason(r#"gear < "P""#),
        "`<`, `<=`, `>` and `>=` compare with a number"
    );
    assert!(matches!(
        parse("speed").eval(&s),
        Err(EvalError::Type { signal, .. }) if signal == "speed"
    ));
    assert!(matches!(
        parse(r#"speed == "0""#).eval(&s),
        Err(EvalError::Type { .. })
    ));
}

#[test]
fn bounded_input() {
    assert!(matches!(
        Precondition::parse(&"(".repeat(40)),
        Err(PreconditionError::TooDeep { .. })
    ));
    assert!(matches!(
        Precondition::parse(&"!".repeat(40)),
        Err(PreconditionError::TooDeep { .. })
    ));
    assert!(matches!(
        Precondition::parse(&"a".repeat(2000)),
        Err(PreconditionError::TooLong { len: 2000 })
    ));
    let many = vec!["speed == 0"; 100].join(" && ");
    assert!(matches!(
        Precondition::parse(&many),
        Err(PreconditionError::TooLong { .. })
    ));
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
        assert!(Precondition::parse(bad).is_err(), "{bad}");
    }
}

// --- Ported from esync-package/src/package/precondition.rs ------------------

#[test]
fn parse_evaluate_roundtrip() {
    let p = parse(r#"speed == 0 && gear == "P" && battery_soc >= 40"#);
    let state = vec![
        sig("speed", SignalValue::Int(0)),
        sig("gear", SignalValue::Text("P".into())),
        sig("battery_soc", SignalValue::Float(55.0)),
    ];
    assert_eq!(p.eval(&state), Ok(true));
    let mut low = state.clone();
    low[2] = sig("battery_soc", SignalValue::Int(39));
    assert_eq!(p.eval(&low), Ok(false));
    assert_eq!(parse(&p.to_string()), p);
    // Unified: the package language took the bare words `off` and `P` as
    // text. An identifier is always a signal now, and two signals do not
    // compare: the unquoted form is refused, the quoted one is canonical.
    assert_eq!(
        syntax_reason("(ignition == off || speed < 1.5) && gear == P"),
        "both sides are signals: quote text (`gear == \"P\"`)"
    );
    let q = parse(r#"(ignition == "off" || speed < 1.5) && gear == "P""#);
    assert_eq!(
        q.to_string(),
        r#"(ignition == "off" || speed < 1.5) && gear == "P""#
    );
    assert_eq!(parse(&q.to_string()), q);
    // No signals: not met (an error, which callers treat as not met).
    assert_eq!(
        q.eval(&[]),
        Err(EvalError::MissingSignal("ignition".into()))
    );
}

#[test]
fn refuses_bad_input() {
    for bad in [
        "",
        "speed ==",
        "== 0",
        "speed = 0",
        "speed == 0 &&",
        "(speed == 0",
        "speed == 0)",
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

    // Unified: the package language refused a bare `speed`; a bare operand
    // is a boolean signal now (as in the Agent's language), so it parses and
    // an integer `speed` is a type error at evaluation.
    let bare = parse("speed");
    assert!(matches!(bare.eval(&parked()), Err(EvalError::Type { .. })));
    assert_eq!(
        bare.eval(&[sig("speed", SignalValue::Bool(true))]),
        Ok(true)
    );
    // Unified: the package language refused upper case (`Speed == 0`);
    // names are case-sensitive VSS paths now, so `Speed` is another signal.
    let upper = parse("Speed == 0");
    assert_eq!(
        upper.eval(&parked()),
        Err(EvalError::MissingSignal("Speed".into()))
    );
    assert_eq!(upper.eval(&[sig("Speed", SignalValue::Int(0))]), Ok(true));
}

// --- Limits -------------------------------------------------------------------

#[test]
fn depth_limit_is_exact_for_groups_and_negations() {
    let groups = |n: usize| format!("{}a == 1{}", "(".repeat(n), ")".repeat(n));
    assert_eq!(parse(&groups(MAX_DEPTH)).as_str(), "a == 1");
    assert!(matches!(
        Precondition::parse(&groups(MAX_DEPTH + 1)),
        Err(PreconditionError::TooDeep { position }) if position == MAX_DEPTH
    ));
    let nots = |n: usize| format!("{}a", "!".repeat(n));
    assert_eq!(parse(&nots(MAX_DEPTH)).as_str(), nots(MAX_DEPTH));
    assert!(matches!(
        Precondition::parse(&nots(MAX_DEPTH + 1)),
        Err(PreconditionError::TooDeep { .. })
    ));
    // Both count together.
    let mixed = |n: usize| format!("{}a{}", "!(".repeat(n / 2), ")".repeat(n / 2));
    assert!(Precondition::parse(&mixed(MAX_DEPTH)).is_ok());
    assert!(matches!(
        Precondition::parse(&mixed(MAX_DEPTH + 2)),
        Err(PreconditionError::TooDeep { .. })
    ));
}

#[test]
fn deep_nesting_never_overflows_the_stack() {
    // Far past the limit, at the length limit, in every nesting form: each is
    // refused at the 17th level, long before the stack could matter.
    for unit in ["(", "!", "!(", "(!", "a == 1 && (", "a || !("] {
        let src = unit.repeat(MAX_LEN / unit.len());
        assert!(
            matches!(
                Precondition::parse(&src),
                Err(PreconditionError::TooDeep { .. } | PreconditionError::TooManyTokens)
            ),
            "{unit:?}"
        );
    }
}

#[test]
fn token_limit() {
    // 399 tokens in 598 bytes: within the byte limit, over the token limit.
    let many = vec!["a==1"; 100].join("&&");
    assert!(many.len() <= MAX_LEN);
    assert_eq!(
        Precondition::parse(&many),
        Err(PreconditionError::TooManyTokens)
    );
    // 64 comparisons of 3 tokens and 63 `&&`: 255 tokens, then one `!`.
    let most = vec!["a==1"; 64].join("&&");
    assert!(Precondition::parse(&most).is_ok());
    assert!(Precondition::parse(&format!("!({most})")).is_err());
    assert_eq!(
        Precondition::parse(&format!("true&&{most}")),
        Err(PreconditionError::TooManyTokens)
    );
}

#[test]
fn canonical_text_is_bounded_too() {
    // Compact source under the byte limit whose canonical text (spaces
    // around each operator) is over it: refused, so every accepted
    // expression serialises to text that parses again.
    let clause = "Vehicle.Abcdef==1";
    let src = vec![clause; 50].join("&&");
    assert!(src.len() <= MAX_LEN, "{}", src.len());
    match Precondition::parse(&src) {
        Err(PreconditionError::TooLong { len }) => assert!(len > MAX_LEN),
        other => panic!("{other:?}"),
    }
    let fits = vec![clause; 44].join("&&");
    assert!(parse(&fits).as_str().len() <= MAX_LEN);
}

// --- VSS signal names -----------------------------------------------------------

#[test]
fn vss_paths() {
    let soc = "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current";
    let p = parse(&format!(
        "Vehicle.Speed == 0 && {soc} >= 40 && Vehicle.Cabin.Seat.Row1.DriverSide.IsBelted"
    ));
    let signals = vec![
        sig("Vehicle.Speed", SignalValue::Float(0.0)),
        sig(soc, SignalValue::Float(72.5)),
        sig(
            "Vehicle.Cabin.Seat.Row1.DriverSide.IsBelted",
            SignalValue::Bool(true),
        ),
    ];
    assert_eq!(p.eval(&signals), Ok(true));
    // Case-sensitive, exact match: a lower-case or shorter name is another signal.
    assert_eq!(
        parse("vehicle.speed == 0").eval(&signals),
        Err(EvalError::MissingSignal("vehicle.speed".into()))
    );
    assert_eq!(
        parse("Vehicle == 0").eval(&signals),
        Err(EvalError::MissingSignal("Vehicle".into()))
    );
    // Legacy one-segment names are paths too.
    assert_eq!(parse("battery_soc >= 40").eval(&parked()), Ok(true));
    for bad in [
        "Vehicle..Speed == 0",
        "Vehicle. == 0",
        "Vehicle.Speed. == 0",
        ".Vehicle == 0",
        "Vehicle.1Row == 0",
        "Vehicle.Spe-ed == 0",
    ] {
        assert!(
            matches!(
                Precondition::parse(bad),
                Err(PreconditionError::Syntax { .. })
            ),
            "{bad}"
        );
    }
}

#[test]
fn signal_name_length_is_bounded() {
    let name = |n: usize| {
        let mut s = String::from("Vehicle.");
        s.push_str(&"x".repeat(n - s.len()));
        s
    };
    assert_eq!(name(MAX_SIGNAL_NAME_LEN).len(), MAX_SIGNAL_NAME_LEN);
    assert!(Precondition::parse(&format!("{} == 1", name(MAX_SIGNAL_NAME_LEN))).is_ok());
    assert_eq!(
        Precondition::parse(&format!("x == 1 && {} == 1", name(MAX_SIGNAL_NAME_LEN + 1))),
        Err(PreconditionError::SignalNameTooLong { position: 10 })
    );
}

// --- Rules of the unified language --------------------------------------------

#[test]
fn a_comparison_has_exactly_one_signal() {
    assert_eq!(
        syntax_reason("gear == P"),
        "both sides are signals: quote text (`gear == \"P\"`)"
    );
    assert_eq!(
        syntax_reason("Vehicle.Speed < Vehicle.SpeedLimit"),
        "both sides are signals: quote text (`gear == \"P\"`)"
    );
    assert_eq!(
        syntax_reason("1 == 1"),
        "a comparison needs a signal on one side"
    );
    assert_eq!(
        syntax_reason("true != \"x\""),
        "a comparison needs a signal on one side"
    );
    // A literal on the left is fine, and canonical with the signal left.
    assert_eq!(parse("40 <= battery_soc").as_str(), "battery_soc >= 40");
    assert_eq!(parse("\"P\" == gear").as_str(), "gear == \"P\"");
}

#[test]
fn negation_applies_to_one_operand_or_a_group() {
    assert_eq!(
        syntax_reason("!speed == 0"),
        "`!` negates one operand or a group: write `!(a == b)`"
    );
    assert_eq!(
        syntax_reason("a && !!b < 1"),
        "`!` negates one operand or a group: write `!(a == b)`"
    );
    let s = parked();
    assert_eq!(parse("!(speed == 0)").eval(&s), Ok(false));
    assert_eq!(parse("!!ignition").eval(&s), Ok(false));
    assert_eq!(parse("!false && !ignition").eval(&s), Ok(true));
}

#[test]
fn bare_operands_are_booleans() {
    assert_eq!(parse("true").eval(&[]), Ok(true));
    assert_eq!(parse("!true || false").eval(&[]), Ok(false));
    for bad in ["5", "\"P\"", "speed == 0 && 1", "-1 || a"] {
        assert_eq!(
            syntax_reason(bad),
            "a condition is a comparison, a boolean signal, `true` or `false`",
            "{bad}"
        );
    }
}

#[test]
fn literals() {
    for bad in [
        "a == 1e5",
        "a == .5",
        "a == 5.",
        "a == 1.2.3",
        "a == 5x",
        "a == - 5",
        "a == +5",
        "a == \"a\\\"b\"",
        "a == \"line\nbreak\"",
        "a == \"tab\there\"",
        &format!("a == {}", "9".repeat(400)),
    ] {
        assert!(
            matches!(
                Precondition::parse(bad),
                Err(PreconditionError::Syntax { .. })
            ),
            "{bad:?}"
        );
    }
    let s = [
        sig("a", SignalValue::Float(-0.25)),
        sig("t", SignalValue::Text("Ünïcode".into())),
    ];
    assert_eq!(parse("a == -0.250").eval(&s), Ok(true));
    assert_eq!(parse("a == -0.250").as_str(), "a == -0.25");
    assert_eq!(parse("a < -0").as_str(), "a < 0");
    assert_eq!(parse("t == \"Ünïcode\"").eval(&s), Ok(true));
    assert_eq!(parse("t != \"\"").eval(&s), Ok(true));
    assert_eq!(parse("a == 0.0000001").as_str(), "a == 0.0000001");
}

#[test]
fn signal_types() {
    let s = [
        sig("i", SignalValue::Int(-3)),
        sig("f", SignalValue::Float(2.5)),
        sig("nan", SignalValue::Float(f64::NAN)),
        sig("inf", SignalValue::Float(f64::INFINITY)),
        sig("b", SignalValue::Bool(true)),
        sig("t", SignalValue::Text("D".into())),
        sig("raw", SignalValue::Bytes(vec![1])),
        // Duplicate name: the first counts.
        sig("i", SignalValue::Int(100)),
    ];
    let v = |src: &str| parse(src).eval(&s);
    assert_eq!(v("i == -3 && i < -2.5 && f > 2 && f <= 2.5"), Ok(true));
    assert_eq!(v("b == true && b != false && b"), Ok(true));
    assert_eq!(v("t == \"D\" && t != \"P\""), Ok(true));
    let type_err = |src: &str| match v(src) {
        Err(EvalError::Type { signal, .. }) => signal,
        other => panic!("{src}: {other:?}"),
    };
    assert_eq!(type_err("nan == 1"), "nan");
    assert_eq!(type_err("inf > 1"), "inf");
    assert_eq!(type_err("raw == 1"), "raw");
    assert_eq!(type_err("raw"), "raw");
    assert_eq!(type_err("t == 1"), "t");
    assert_eq!(type_err("i == \"1\""), "i");
    assert_eq!(type_err("i == true"), "i");
    assert_eq!(type_err("b == 1"), "b");
    assert_eq!(type_err("t"), "t");
}

#[test]
fn errors_are_never_hidden_by_the_other_operand() {
    let s = parked();
    // The left side decides `&&` / `||` already; the right side still counts.
    assert_eq!(
        parse("speed == 1 && odometer > 5").eval(&s),
        Err(EvalError::MissingSignal("odometer".into()))
    );
    assert!(matches!(
        parse("true || gear").eval(&s),
        Err(EvalError::Type { .. })
    ));
    // The first error from the left is reported.
    assert_eq!(
        parse("x == 1 || y == 1").eval(&s),
        Err(EvalError::MissingSignal("x".into()))
    );
}

#[test]
fn canonical_text() {
    for (src, canonical) in [
        ("speed==0&&gear==\"P\"", "speed == 0 && gear == \"P\""),
        ("  ( ( a ) )  ", "a"),
        ("a && (b && c) && ((d))", "a && b && c && d"),
        ("(a || b) || (c || (d))", "a || b || c || d"),
        ("(a || b) && c", "(a || b) && c"),
        ("a && b || c && d", "a && b || c && d"),
        ("(a && b) || c", "a && b || c"),
        ("!(!(a))", "!!a"),
        ("!(a && b)", "!(a && b)"),
        ("!(a || b) && c", "!(a || b) && c"),
        ("!((a == 1))", "!(a == 1)"),
        ("-5 < x", "x > -5"),
        ("1 >= x", "x <= 1"),
        ("2 != x", "x != 2"),
        ("x == 1.500", "x == 1.5"),
        ("x == 007", "x == 7"),
    ] {
        let p = parse(src);
        assert_eq!(p.as_str(), canonical, "{src}");
        assert_eq!(p.to_string(), canonical);
        assert_eq!(parse(canonical), p, "{src}");
        assert_eq!(parse(canonical).as_str(), canonical);
    }
    // Equality is that of the canonical text.
    assert_eq!(parse("a&&b"), parse("a && (b)"));
    assert_ne!(parse("a && b"), parse("b && a"));
    assert_eq!(format!("{:?}", parse("a&&b")), "Precondition(\"a && b\")");
    assert_eq!("a&&b".parse::<Precondition>(), Ok(parse("a && b")));
}

#[test]
fn serde_is_the_canonical_text_parsed_on_the_way_in() {
    let p = parse("speed==0&&gear==\"P\"");
    let bytes = postcard::to_allocvec(&p).unwrap();
    // Wire form: the canonical text as a string.
    assert_eq!(
        bytes,
        postcard::to_allocvec("speed == 0 && gear == \"P\"").unwrap()
    );
    assert_eq!(postcard::from_bytes::<Precondition>(&bytes).unwrap(), p);
    // A malformed expression does not decode.
    for bad in [
        "gear == P",
        "speed ==",
        "((((((((((((((((((a))))))))))))))))))",
    ] {
        let bytes = postcard::to_allocvec(bad).unwrap();
        assert!(
            postcard::from_bytes::<Precondition>(&bytes).is_err(),
            "{bad}"
        );
    }
    let long = postcard::to_allocvec(&"a".repeat(MAX_LEN + 1)).unwrap();
    assert!(postcard::from_bytes::<Precondition>(&long).is_err());
}
