//! Grading expressions: a small, safe language over call facts.
//!
//! ```text
//! expr    := or
//! or      := and (("or" | "||") and)*
//! and     := unary (("and" | "&&") unary)*
//! unary   := ("not" | "!") unary | compare
//! compare := primary (("==" | "!=" | "<" | "<=" | ">" | ">=" | "≤" | "≥") primary)?
//! primary := INTEGER | 'text' | "text" | true | false | FACT | FUNC '(' 'name' ')' | '(' expr ')'
//! ```
//! Facts: `rounds`, `duration` (seconds), `score`, `refusals`, `no_inputs`, `no_matches`,
//! `customer_turns`, `knowledge` (knowledge answers given), `end` (end reason, text),
//! `transferred`. Functions: `hit('intent')`, `hits('intent')` (a count), `tag('tag')`,
//! `visited('node')`, `captured('variable')`.
//!
//! Expressions are parsed and type-checked when a script is compiled; evaluation cannot fail:
//! no arithmetic, no loops, no allocation beyond the tree, depth and length bounded.

use std::fmt;

use super::grading::CallFacts;
use super::script::EndReason;

/// Longest expression text accepted.
pub const MAX_EXPR_CHARS: usize = 1000;
/// Deepest nesting accepted.
const MAX_DEPTH: usize = 32;

/// A numeric fact of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntFact {
    /// Customer turns handled (speech, key presses, silences).
    Rounds,
    /// Seconds from answer to end.
    Duration,
    /// Sum of node and branch scores.
    Score,
    /// Turns whose intent is marked `refusal`.
    Refusals,
    /// Silences.
    NoInputs,
    /// Turns not understood.
    NoMatches,
    /// Turns in which the customer spoke or pressed a key.
    CustomerTurns,
    /// Knowledge answers given.
    Knowledge,
}

/// A fact of any type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fact {
    /// A number.
    Int(IntFact),
    /// The end reason (text).
    End,
    /// Whether the call was transferred.
    Transferred,
}

/// A function over a named script element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    /// The intent was recognised at least once (bool).
    Hit,
    /// How often the intent was recognised (number).
    Hits,
    /// The call carries the tag (bool).
    Tag,
    /// The call passed through the node (bool).
    Visited,
    /// The variable was filled during the call (bool).
    Captured,
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    fn symbol(self) -> &'static str {
        match self {
            Self::Eq => "=",
            Self::Ne => "≠",
            Self::Lt => "<",
            Self::Le => "≤",
            Self::Gt => ">",
            Self::Ge => "≥",
        }
    }

    fn holds(self, a: i64, b: i64) -> bool {
        match self {
            Self::Eq => a == b,
            Self::Ne => a != b,
            Self::Lt => a < b,
            Self::Le => a <= b,
            Self::Gt => a > b,
            Self::Ge => a >= b,
        }
    }

    /// The operator with its operands swapped (`3 < x` is `x > 3`).
    fn flipped(self) -> Self {
        match self {
            Self::Lt => Self::Gt,
            Self::Le => Self::Ge,
            Self::Gt => Self::Lt,
            Self::Ge => Self::Le,
            other => other,
        }
    }
}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// `true` / `false`.
    Bool(bool),
    /// An integer literal.
    Int(i64),
    /// A text literal.
    Str(String),
    /// A fact.
    Fact(Fact),
    /// A function call with its argument.
    Call(Func, String),
    /// `not e`.
    Not(Box<Expr>),
    /// `a and b`.
    And(Box<Expr>, Box<Expr>),
    /// `a or b`.
    Or(Box<Expr>, Box<Expr>),
    /// `a op b`.
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
}

/// The type of an expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    /// true/false.
    Bool,
    /// A number.
    Int,
    /// Text.
    Str,
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Bool => "a condition",
            Self::Int => "a number",
            Self::Str => "text",
        })
    }
}

/// Why an expression was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (at character {at})")]
pub struct ExprError {
    /// 1-based character position (0 for the whole expression).
    pub at: usize,
    /// What is wrong.
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Int(i64),
    Str(String),
    Ident(String),
    Op(&'static str),
    LParen,
    RParen,
}

fn lex(src: &str) -> Result<Vec<(usize, Tok)>, ExprError> {
    let chars: Vec<char> = src.chars().collect();
    let err = |at: usize, m: &str| ExprError {
        at: at + 1,
        message: m.to_owned(),
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c.is_ascii_digit() {
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            let text: String = chars[start..i].iter().collect();
            let v = text
                .parse::<i64>()
                .map_err(|_| err(start, "number too large"))?;
            out.push((start, Tok::Int(v)));
            continue;
        }
        if c == '\'' || c == '"' {
            i += 1;
            let s = i;
            while i < chars.len() && chars[i] != c {
                i += 1;
            }
            if i == chars.len() {
                return Err(err(start, "unterminated text literal"));
            }
            out.push((start, Tok::Str(chars[s..i].iter().collect())));
            i += 1;
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push((start, Tok::Ident(chars[start..i].iter().collect())));
            continue;
        }
        let two: String = chars[i..chars.len().min(i + 2)].iter().collect();
        let op = match two.as_str() {
            "==" => Some("=="),
            "!=" => Some("!="),
            "<=" => Some("<="),
            ">=" => Some(">="),
            "&&" => Some("and"),
            "||" => Some("or"),
            _ => None,
        };
        if let Some(op) = op {
            out.push((start, Tok::Op(op)));
            i += 2;
            continue;
        }
        let tok = match c {
            '<' => Tok::Op("<"),
            '>' => Tok::Op(">"),
            '≤' => Tok::Op("<="),
            '≥' => Tok::Op(">="),
            '!' => Tok::Op("not"),
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            _ => return Err(err(start, &format!("unexpected character '{c}'"))),
        };
        out.push((start, tok));
        i += 1;
    }
    Ok(out)
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    depth: usize,
    len: usize,
}

impl Parser {
    fn at(&self) -> usize {
        self.toks.get(self.pos).map_or(self.len, |(p, _)| *p) + 1
    }

    fn err<T>(&self, m: impl Into<String>) -> Result<T, ExprError> {
        Err(ExprError {
            at: self.at(),
            message: m.into(),
        })
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(_, t)| t)
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Tok::Op(o)) if *o == w)
            || matches!(self.peek(), Some(Tok::Ident(i)) if i == w)
    }

    fn enter(&mut self) -> Result<(), ExprError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.err("expression nested too deeply");
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Expr, ExprError> {
        self.enter()?;
        let mut e = self.and()?;
        while self.is_word("or") {
            self.pos += 1;
            let r = self.and()?;
            e = Expr::Or(Box::new(e), Box::new(r));
        }
        self.depth -= 1;
        Ok(e)
    }

    fn and(&mut self) -> Result<Expr, ExprError> {
        let mut e = self.unary()?;
        while self.is_word("and") {
            self.pos += 1;
            let r = self.unary()?;
            e = Expr::And(Box::new(e), Box::new(r));
        }
        Ok(e)
    }

    fn unary(&mut self) -> Result<Expr, ExprError> {
        if self.is_word("not") {
            self.pos += 1;
            self.enter()?;
            let e = self.unary()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(e)));
        }
        self.compare()
    }

    fn compare(&mut self) -> Result<Expr, ExprError> {
        let l = self.primary()?;
        let op = match self.peek() {
            Some(Tok::Op("==")) => CmpOp::Eq,
            Some(Tok::Op("!=")) => CmpOp::Ne,
            Some(Tok::Op("<")) => CmpOp::Lt,
            Some(Tok::Op("<=")) => CmpOp::Le,
            Some(Tok::Op(">")) => CmpOp::Gt,
            Some(Tok::Op(">=")) => CmpOp::Ge,
            _ => return Ok(l),
        };
        self.pos += 1;
        let r = self.primary()?;
        Ok(Expr::Cmp(op, Box::new(l), Box::new(r)))
    }

    fn primary(&mut self) -> Result<Expr, ExprError> {
        let Some(tok) = self.peek().cloned() else {
            return self.err("expression ends too early");
        };
        self.pos += 1;
        match tok {
            Tok::Int(v) => Ok(Expr::Int(v)),
            Tok::Str(s) => Ok(Expr::Str(s)),
            Tok::LParen => {
                let e = self.or()?;
                if self.peek() != Some(&Tok::RParen) {
                    return self.err("expected ')'");
                }
                self.pos += 1;
                Ok(e)
            }
            Tok::Ident(name) => self.ident(&name),
            Tok::RParen | Tok::Op(_) => {
                self.pos -= 1;
                self.err("expected a value")
            }
        }
    }

    fn ident(&mut self, name: &str) -> Result<Expr, ExprError> {
        let fact = |f| Ok(Expr::Fact(f));
        match name {
            "true" => Ok(Expr::Bool(true)),
            "false" => Ok(Expr::Bool(false)),
            "rounds" => fact(Fact::Int(IntFact::Rounds)),
            "duration" => fact(Fact::Int(IntFact::Duration)),
            "score" => fact(Fact::Int(IntFact::Score)),
            "refusals" => fact(Fact::Int(IntFact::Refusals)),
            "no_inputs" => fact(Fact::Int(IntFact::NoInputs)),
            "no_matches" => fact(Fact::Int(IntFact::NoMatches)),
            "customer_turns" => fact(Fact::Int(IntFact::CustomerTurns)),
            "knowledge" => fact(Fact::Int(IntFact::Knowledge)),
            "end" => fact(Fact::End),
            "transferred" => fact(Fact::Transferred),
            "hit" | "hits" | "tag" | "visited" | "captured" => {
                let func = match name {
                    "hit" => Func::Hit,
                    "hits" => Func::Hits,
                    "tag" => Func::Tag,
                    "visited" => Func::Visited,
                    _ => Func::Captured,
                };
                if self.peek() != Some(&Tok::LParen) {
                    return self.err(format!("{name} needs an argument: {name}('name')"));
                }
                self.pos += 1;
                let Some(Tok::Str(arg)) = self.peek().cloned() else {
                    return self.err(format!("{name}(…) takes a quoted name"));
                };
                self.pos += 1;
                if self.peek() != Some(&Tok::RParen) {
                    return self.err("expected ')'");
                }
                self.pos += 1;
                Ok(Expr::Call(func, arg))
            }
            other => {
                self.pos -= 1;
                self.err(format!(
                    "unknown name '{other}' (facts: rounds, duration, score, refusals, no_inputs, no_matches, customer_turns, knowledge, end, transferred; functions: hit, hits, tag, visited, captured)"
                ))
            }
        }
    }
}

/// Parses and type-checks a condition.
pub fn parse(src: &str) -> Result<Expr, ExprError> {
    if src.chars().count() > MAX_EXPR_CHARS {
        return Err(ExprError {
            at: 0,
            message: format!("longer than {MAX_EXPR_CHARS} characters"),
        });
    }
    let toks = lex(src)?;
    let mut p = Parser {
        toks,
        pos: 0,
        depth: 0,
        len: src.chars().count(),
    };
    let e = p.or()?;
    if p.pos != p.toks.len() {
        return p.err("unexpected text after the expression");
    }
    let t = type_of(&e)?;
    if t != Type::Bool {
        return Err(ExprError {
            at: 0,
            message: format!("a rule must be a condition, this is {t}"),
        });
    }
    Ok(e)
}

fn type_of(e: &Expr) -> Result<Type, ExprError> {
    let bad = |m: String| ExprError { at: 0, message: m };
    Ok(match e {
        Expr::Bool(_) => Type::Bool,
        Expr::Int(_) => Type::Int,
        Expr::Str(_) => Type::Str,
        Expr::Fact(Fact::Int(_)) | Expr::Call(Func::Hits, _) => Type::Int,
        Expr::Fact(Fact::End) => Type::Str,
        Expr::Fact(Fact::Transferred) | Expr::Call(_, _) => Type::Bool,
        Expr::Not(x) => {
            let t = type_of(x)?;
            if t != Type::Bool {
                return Err(bad(format!("'not' needs a condition, got {t}")));
            }
            Type::Bool
        }
        Expr::And(a, b) | Expr::Or(a, b) => {
            for x in [a, b] {
                let t = type_of(x)?;
                if t != Type::Bool {
                    return Err(bad(format!("'and'/'or' join conditions, got {t}")));
                }
            }
            Type::Bool
        }
        Expr::Cmp(op, a, b) => {
            let (ta, tb) = (type_of(a)?, type_of(b)?);
            if ta != tb {
                return Err(bad(format!("cannot compare {ta} with {tb}")));
            }
            if ta != Type::Int && !matches!(op, CmpOp::Eq | CmpOp::Ne) {
                return Err(bad(format!("'{}' compares numbers only", op.symbol())));
            }
            if let (Expr::Fact(Fact::End), Expr::Str(s)) | (Expr::Str(s), Expr::Fact(Fact::End)) =
                (a.as_ref(), b.as_ref())
                && !EndReason::ALL.iter().any(|r| r.as_str() == s)
            {
                return Err(bad(format!(
                    "'{s}' is not an end reason (one of: {})",
                    EndReason::ALL.map(EndReason::as_str).join(", ")
                )));
            }
            Type::Bool
        }
    })
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Bool(bool),
    Int(i64),
    Str(String),
}

/// Evaluates a type-checked condition on the facts of a call.
pub fn eval(e: &Expr, f: &CallFacts) -> bool {
    matches!(value(e, f), Value::Bool(true))
}

fn int_fact(k: IntFact, f: &CallFacts) -> i64 {
    i64::from(match k {
        IntFact::Rounds => f.rounds,
        IntFact::Duration => f.duration_secs,
        IntFact::Score => return i64::from(f.score),
        IntFact::Refusals => f.refusals,
        IntFact::NoInputs => f.no_inputs,
        IntFact::NoMatches => f.no_matches,
        IntFact::CustomerTurns => f.customer_turns,
        IntFact::Knowledge => f.knowledge,
    })
}

fn value(e: &Expr, f: &CallFacts) -> Value {
    match e {
        Expr::Bool(b) => Value::Bool(*b),
        Expr::Int(i) => Value::Int(*i),
        Expr::Str(s) => Value::Str(s.clone()),
        Expr::Fact(Fact::Int(k)) => Value::Int(int_fact(*k, f)),
        Expr::Fact(Fact::End) => Value::Str(f.end.as_str().to_owned()),
        Expr::Fact(Fact::Transferred) => Value::Bool(f.end == EndReason::Transferred),
        Expr::Call(func, arg) => match func {
            Func::Hit => Value::Bool(f.intents.get(arg).is_some_and(|n| *n > 0)),
            Func::Hits => Value::Int(i64::from(f.intents.get(arg).copied().unwrap_or(0))),
            Func::Tag => Value::Bool(f.tags.contains(arg)),
            Func::Visited => Value::Bool(f.visited.contains(arg)),
            Func::Captured => Value::Bool(f.captured.contains(arg)),
        },
        Expr::Not(x) => Value::Bool(!eval(x, f)),
        Expr::And(a, b) => Value::Bool(eval(a, f) && eval(b, f)),
        Expr::Or(a, b) => Value::Bool(eval(a, f) || eval(b, f)),
        Expr::Cmp(op, a, b) => {
            let ok = match (value(a, f), value(b, f)) {
                (Value::Int(x), Value::Int(y)) => op.holds(x, y),
                (x, y) => match op {
                    CmpOp::Eq => x == y,
                    CmpOp::Ne => x != y,
                    _ => false,
                },
            };
            Value::Bool(ok)
        }
    }
}

/// Every `func('name')` in the expression, for checks against the script.
pub fn references(e: &Expr, out: &mut Vec<(Func, String)>) {
    match e {
        Expr::Call(f, a) => out.push((*f, a.clone())),
        Expr::Not(x) => references(x, out),
        Expr::And(a, b) | Expr::Or(a, b) | Expr::Cmp(_, a, b) => {
            references(a, out);
            references(b, out);
        }
        Expr::Bool(_) | Expr::Int(_) | Expr::Str(_) | Expr::Fact(_) => {}
    }
}

/// The range each numeric fact can take in a call of this script.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// `max_rounds`.
    pub max_rounds: i64,
    /// `max_duration_secs`.
    pub max_duration_secs: i64,
}

impl Bounds {
    fn range(&self, k: IntFact) -> (i64, i64) {
        match k {
            IntFact::Duration => (0, self.max_duration_secs),
            IntFact::Score => (i64::MIN, i64::MAX),
            IntFact::Rounds
            | IntFact::Refusals
            | IntFact::NoInputs
            | IntFact::NoMatches
            | IntFact::CustomerTurns => (0, self.max_rounds),
            // Knowledge answers are robot turns after customer turns: bounded by rounds.
            IntFact::Knowledge => (0, self.max_rounds),
        }
    }
}

/// What an interval constrains: a fact, or the hit count of one intent.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    Fact(IntFact),
    Hits(String),
}

/// A number compared with a constant, as the interval of values that satisfy it.
fn interval(e: &Expr, b: &Bounds) -> Option<(Key, i64, i64)> {
    let Expr::Cmp(op, l, r) = e else { return None };
    let (key, op, v) = match (l.as_ref(), r.as_ref()) {
        (Expr::Fact(Fact::Int(k)), Expr::Int(v)) => (Key::Fact(*k), *op, *v),
        (Expr::Int(v), Expr::Fact(Fact::Int(k))) => (Key::Fact(*k), op.flipped(), *v),
        (Expr::Call(Func::Hits, i), Expr::Int(v)) => (Key::Hits(i.clone()), *op, *v),
        (Expr::Int(v), Expr::Call(Func::Hits, i)) => (Key::Hits(i.clone()), op.flipped(), *v),
        _ => return None,
    };
    let (lo, hi) = match &key {
        Key::Fact(k) => b.range(*k),
        // An intent is recognised at most once per customer turn.
        Key::Hits(_) => (0, b.max_rounds),
    };
    let (lo, hi) = match op {
        CmpOp::Eq => (lo.max(v), hi.min(v)),
        CmpOp::Lt => (lo, hi.min(v.saturating_sub(1))),
        CmpOp::Le => (lo, hi.min(v)),
        CmpOp::Gt => (lo.max(v.saturating_add(1)), hi),
        CmpOp::Ge => (lo.max(v), hi),
        CmpOp::Ne => (lo, hi),
    };
    Some((key, lo, hi))
}

/// Whether the condition can be true in some call within the bounds. Conservative: `false`
/// means it certainly never holds; `true` means it may.
pub fn satisfiable(e: &Expr, b: &Bounds) -> bool {
    match e {
        Expr::Bool(v) => *v,
        Expr::Or(x, y) => satisfiable(x, b) || satisfiable(y, b),
        Expr::And(..) => {
            let mut conj = Vec::new();
            conjuncts(e, &mut conj);
            if !conj.iter().all(|c| satisfiable(c, b)) {
                return false;
            }
            // Intersect the intervals of each number over the conjunction.
            let mut acc: Vec<(Key, i64, i64)> = Vec::new();
            for (k, lo, hi) in conj.iter().filter_map(|c| interval(c, b)) {
                match acc.iter_mut().find(|(f, _, _)| *f == k) {
                    Some(slot) => {
                        slot.1 = slot.1.max(lo);
                        slot.2 = slot.2.min(hi);
                    }
                    None => acc.push((k, lo, hi)),
                }
            }
            acc.iter().all(|(_, lo, hi)| lo <= hi)
        }
        Expr::Not(x) => !always(x),
        Expr::Cmp(op, l, r) => match interval(e, b) {
            Some((_, lo, hi)) => lo <= hi,
            None => match (l.as_ref(), r.as_ref()) {
                (Expr::Int(x), Expr::Int(y)) => op.holds(*x, *y),
                (Expr::Str(x), Expr::Str(y)) => (x == y) == (*op == CmpOp::Eq),
                (Expr::Bool(x), Expr::Bool(y)) => (x == y) == (*op == CmpOp::Eq),
                _ => true,
            },
        },
        Expr::Int(_) | Expr::Str(_) | Expr::Fact(_) | Expr::Call(..) => true,
    }
}

/// Whether the condition holds in every call (`true`, `not false`, …).
pub fn always(e: &Expr) -> bool {
    match e {
        Expr::Bool(v) => *v,
        Expr::Or(a, b) => always(a) || always(b),
        Expr::And(a, b) => always(a) && always(b),
        Expr::Not(x) => !satisfiable_const(x),
        _ => false,
    }
}

/// `false` only for conditions that are false whatever the facts (`false`, `not true`).
fn satisfiable_const(e: &Expr) -> bool {
    match e {
        Expr::Bool(v) => *v,
        Expr::Not(x) => !always(x),
        Expr::And(a, b) => satisfiable_const(a) && satisfiable_const(b),
        Expr::Or(a, b) => satisfiable_const(a) || satisfiable_const(b),
        _ => true,
    }
}

fn conjuncts<'a>(e: &'a Expr, out: &mut Vec<&'a Expr>) {
    match e {
        Expr::And(a, b) => {
            conjuncts(a, out);
            conjuncts(b, out);
        }
        other => out.push(other),
    }
}

/// Names used when describing a rule in words.
pub trait Labels {
    /// The label of an intent ("同意办理").
    fn intent(&self, name: &str) -> String;
    /// The title of a node.
    fn node(&self, id: &str) -> String;
    /// What a variable holds ("还款日期").
    fn variable(&self, name: &str) -> String;
}

fn end_reason_words(r: &str) -> &'static str {
    match r {
        "completed" => "正常结束",
        "refused" => "客户拒绝",
        "do_not_call" => "要求勿扰",
        "wrong_person" => "非本人",
        "no_response" => "无应答",
        "max_rounds" => "超过最大轮次",
        "max_duration" => "超过最长时长",
        "error" => "流程异常",
        "transferred" => "转人工",
        "customer_hangup" => "客户挂机",
        _ => "未知",
    }
}

fn int_fact_words(k: IntFact) -> (&'static str, &'static str) {
    match k {
        IntFact::Rounds => ("对话", "轮"),
        IntFact::Duration => ("通话", "秒"),
        IntFact::Score => ("得分", ""),
        IntFact::Refusals => ("拒绝", "次"),
        IntFact::NoInputs => ("无应答", "次"),
        IntFact::NoMatches => ("未识别", "次"),
        IntFact::CustomerTurns => ("客户应答", "次"),
        IntFact::Knowledge => ("咨询", "次"),
    }
}

/// The condition in Simplified Chinese, for the stored reason: `hit('agree') and
/// duration >= 30` → "命中'同意办理'且通话≥30秒".
pub fn describe(e: &Expr, l: &dyn Labels) -> String {
    match e {
        Expr::Bool(true) => "其他情况".to_owned(),
        Expr::Bool(false) => "从不".to_owned(),
        Expr::Int(v) => v.to_string(),
        Expr::Str(s) => s.clone(),
        Expr::Fact(Fact::Transferred) => "已转人工".to_owned(),
        Expr::Fact(Fact::End) => "结束原因".to_owned(),
        Expr::Fact(Fact::Int(k)) => int_fact_words(*k).0.to_owned(),
        Expr::Call(f, a) => match f {
            Func::Hit => format!("命中'{}'", l.intent(a)),
            Func::Hits => format!("命中'{}'次数", l.intent(a)),
            Func::Tag => format!("标签'{a}'"),
            Func::Visited => format!("到达'{}'", l.node(a)),
            Func::Captured => format!("已记录{}", l.variable(a)),
        },
        Expr::Not(x) => match x.as_ref() {
            Expr::Call(Func::Hit, a) => format!("未命中'{}'", l.intent(a)),
            Expr::Call(Func::Tag, a) => format!("无标签'{a}'"),
            Expr::Call(Func::Visited, a) => format!("未到达'{}'", l.node(a)),
            Expr::Call(Func::Captured, a) => format!("未记录{}", l.variable(a)),
            Expr::Fact(Fact::Transferred) => "未转人工".to_owned(),
            other => format!("并非（{}）", describe(other, l)),
        },
        Expr::And(a, b) => format!("{}且{}", part(a, l), part(b, l)),
        Expr::Or(a, b) => format!("{}或{}", describe(a, l), describe(b, l)),
        Expr::Cmp(op, a, b) => describe_cmp(*op, a, b, l),
    }
}

fn part(e: &Expr, l: &dyn Labels) -> String {
    match e {
        Expr::Or(..) => format!("（{}）", describe(e, l)),
        _ => describe(e, l),
    }
}

fn describe_cmp(op: CmpOp, a: &Expr, b: &Expr, l: &dyn Labels) -> String {
    match (a, b) {
        (Expr::Fact(Fact::End), Expr::Str(s)) | (Expr::Str(s), Expr::Fact(Fact::End)) => {
            let w = end_reason_words(s);
            if op == CmpOp::Eq {
                format!("结束原因为{w}")
            } else {
                format!("结束原因不是{w}")
            }
        }
        (Expr::Fact(Fact::Int(k)), Expr::Int(v)) => {
            let (name, unit) = int_fact_words(*k);
            format!("{name}{}{v}{unit}", op.symbol())
        }
        (Expr::Int(v), Expr::Fact(Fact::Int(_))) => {
            describe_cmp(op.flipped(), b, &Expr::Int(*v), l)
        }
        (Expr::Call(Func::Hits, i), Expr::Int(v)) => {
            format!("命中'{}'{}{v}次", l.intent(i), op.symbol())
        }
        _ => format!("{}{}{}", describe(a, l), op.symbol(), describe(b, l)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    struct L;
    impl Labels for L {
        fn intent(&self, name: &str) -> String {
            match name {
                "agree" => "同意办理".into(),
                other => other.into(),
            }
        }
        fn node(&self, id: &str) -> String {
            id.into()
        }
        fn variable(&self, name: &str) -> String {
            name.into()
        }
    }

    fn facts() -> CallFacts {
        CallFacts {
            rounds: 4,
            duration_secs: 45,
            score: 20,
            refusals: 0,
            no_inputs: 1,
            no_matches: 0,
            customer_turns: 3,
            knowledge: 1,
            end: EndReason::Completed,
            intents: BTreeMap::from([("agree".to_owned(), 1)]),
            tags: BTreeSet::from(["有意向".to_owned()]),
            visited: BTreeSet::from(["opening".to_owned()]),
            captured: BTreeSet::new(),
        }
    }

    #[test]
    fn parses_and_evaluates() {
        let f = facts();
        let t = |s: &str| eval(&parse(s).unwrap(), &f);
        assert!(t("hit('agree') and duration >= 30"));
        assert!(!t("hit('agree') && duration >= 60"));
        assert!(t("not hit('refuse') || false"));
        assert!(t("end == 'completed' and !transferred"));
        assert!(t(
            "hits('agree') == 1 and tag('有意向') and visited('opening')"
        ));
        assert!(!t("captured('promise_date')"));
        assert!(t("(rounds > 3 or score < 0) and knowledge ≥ 1"));
        assert!(t("30 <= duration"));
        assert!(t("true"));
    }

    #[test]
    fn describes_in_chinese() {
        let d = |s: &str| describe(&parse(s).unwrap(), &L);
        assert_eq!(
            d("hit('agree') and duration >= 30"),
            "命中'同意办理'且通话≥30秒"
        );
        assert_eq!(
            d("end == 'refused' or refusals >= 2"),
            "结束原因为客户拒绝或拒绝≥2次"
        );
        assert_eq!(
            d("not hit('agree') and (tag('a') or rounds < 2)"),
            "未命中'同意办理'且（标签'a'或对话<2轮）"
        );
        assert_eq!(d("30 <= duration"), "通话≥30秒");
        assert_eq!(d("true"), "其他情况");
    }

    #[test]
    fn rejects_bad_expressions_with_position() {
        for (src, needle) in [
            ("hit(agree)", "quoted"),
            ("duration >= 'x'", "cannot compare"),
            ("end > 'refused'", "numbers only"),
            ("end == 'sleepy'", "not an end reason"),
            ("rounds", "must be a condition"),
            ("bogus > 1", "unknown name"),
            ("hit('a') and", "ends too early"),
            ("(rounds > 1", "expected ')'"),
            ("rounds > 1 rounds", "after the expression"),
            ("'abc", "unterminated"),
            ("rounds # 1", "unexpected character"),
        ] {
            let e = parse(src).unwrap_err();
            assert!(e.message.contains(needle), "{src}: {e}");
        }
        let deep = format!("{}true{}", "(".repeat(100), ")".repeat(100));
        assert!(parse(&deep).unwrap_err().message.contains("deeply"));
        let e = parse("rounds > 1 and bogus").unwrap_err();
        assert_eq!(e.at, 16);
    }

    #[test]
    fn finds_conditions_that_never_hold() {
        let b = Bounds {
            max_rounds: 10,
            max_duration_secs: 300,
        };
        let s = |src: &str| satisfiable(&parse(src).unwrap(), &b);
        assert!(s("duration >= 30"));
        assert!(!s("duration > 300"));
        assert!(!s("rounds > 10"));
        assert!(!s("duration >= 60 and duration < 30"));
        assert!(s("duration >= 60 or duration < 30"));
        assert!(!s("false"));
        assert!(!s("1 > 2"));
        assert!(!s("hits('x') > 10"));
        assert!(s("hits('x') >= 2 and rounds < 3"));
        assert!(s("score > 1000"));
        assert!(always(&parse("true or hit('x')").unwrap()));
        assert!(!always(&parse("hit('x')").unwrap()));
    }
}
