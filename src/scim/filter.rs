//! SCIM filter expressions (RFC 7644 §3.4.2.2) and PATCH paths (§3.5.2).
//!
//! Filters arrive from the network, so the parser is written to fail fast and
//! predictably on hostile input: the input length is capped before anything is
//! tokenised, and every construct that nests (parentheses, `not (...)` and
//! value filters `attr[...]`) counts against [`MAX_FILTER_DEPTH`], which bounds
//! the recursion of the descent parser.

use std::cmp::Ordering;
use std::fmt;

use serde_json::{Number, Value};

/// Longest filter or PATCH path accepted, in bytes. Real IdP filters are a few
/// hundred bytes at most; anything near this size is a mistake or an attack.
pub const MAX_FILTER_LEN: usize = 16 * 1024;

/// Deepest nesting of parentheses, `not (...)` and value filters accepted.
pub const MAX_FILTER_DEPTH: usize = 64;

/// Most attribute expressions (`attr op value`, `attr pr`) in one filter. `and`/`or`
/// chains build a tree as deep as they are long, which every later walk (the SQL
/// translation, rendering, SQLite's own parser with its depth limit of 1000) recurses
/// through; real IdP filters use one or two.
pub const MAX_FILTER_TERMS: usize = 100;

const CORE_SCHEMA_PREFIX: &str = "urn:ietf:params:scim:schemas:core:";

/// A parsed SCIM filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    Present(AttrPath),
    Compare {
        path: AttrPath,
        op: CompareOp,
        value: CompValue,
    },
    /// `emails[type eq "work" and value co "@example.com"]`: `filter` is
    /// evaluated on each element of the multi-valued attribute `path`.
    ValuePath {
        path: AttrPath,
        filter: Box<Filter>,
    },
}

/// `[urn ":"] attr ["." sub_attr]`, with names spelled as the client sent them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrPath {
    pub urn: Option<String>,
    pub attr: String,
    pub sub_attr: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CompValue {
    Str(String),
    Num(Number),
    Bool(bool),
    Null,
}

/// A PATCH `path` (RFC 7644 §3.5.2): `attrPath / valuePath ["." subAttr]`.
///
/// `name.givenName` puts `givenName` in `attr.sub_attr`; only the form
/// `emails[type eq "work"].value` uses the outer `sub_attr`.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchPath {
    pub attr: AttrPath,
    pub filter: Option<Filter>,
    pub sub_attr: Option<String>,
}

/// Why a filter or path was rejected, and the byte offset in the input where
/// the problem was found.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{message} (at byte {position})")]
pub struct FilterError {
    pub message: String,
    pub position: usize,
}

impl FilterError {
    fn new(message: impl Into<String>, position: usize) -> Self {
        FilterError {
            message: message.into(),
            position,
        }
    }
}

/// Parses a complete filter such as `userName eq "bjensen" and active eq true`.
pub fn parse_filter(input: &str) -> Result<Filter, FilterError> {
    let mut parser = Parser::new(input)?;
    if let Tok::End = parser.peek().tok {
        return Err(FilterError::new(
            "empty filter: expected an expression such as userName eq \"bjensen\"",
            parser.peek().pos,
        ));
    }
    let filter = parser.parse_or(0, false)?;
    parser.expect_end()?;
    Ok(filter)
}

/// Parses a PATCH `path` such as `members[value eq "abc"]` or
/// `emails[type eq "work"].value`.
pub fn parse_patch_path(input: &str) -> Result<PatchPath, FilterError> {
    let mut parser = Parser::new(input)?;
    let token = parser.peek();
    let (word, pos) = match &token.tok {
        Tok::Word(word) => (*word, token.pos),
        Tok::End => return Err(FilterError::new("empty path", token.pos)),
        _ => {
            return Err(FilterError::new(
                format!("expected an attribute path, found {}", token.describe()),
                token.pos,
            ))
        }
    };
    parser.bump();
    let attr = parse_attr_path(word, pos)?;
    let mut filter = None;
    let mut sub_attr = None;
    if let Tok::LBracket = parser.peek().tok {
        filter = Some(parser.parse_value_filter(&attr, 0)?);
        let token = parser.peek();
        if let Tok::Word(word) = token.tok {
            if let Some(name) = word.strip_prefix('.') {
                validate_name(name, token.pos + 1)?;
                sub_attr = Some(name.to_string());
                parser.bump();
            }
        }
    }
    parser.expect_end()?;
    Ok(PatchPath {
        attr,
        filter,
        sub_attr,
    })
}

impl AttrPath {
    /// A plain attribute path without schema URN or sub-attribute.
    pub fn new(attr: impl Into<String>) -> Self {
        AttrPath {
            urn: None,
            attr: attr.into(),
            sub_attr: None,
        }
    }

    /// Whether this path names attribute `name`, ignoring case and any URN
    /// (SCIM attribute names are case-insensitive, RFC 7643 §2.1).
    pub fn is(&self, name: &str) -> bool {
        self.attr.eq_ignore_ascii_case(name)
    }
}

impl CompareOp {
    pub fn as_str(self) -> &'static str {
        match self {
            CompareOp::Eq => "eq",
            CompareOp::Ne => "ne",
            CompareOp::Co => "co",
            CompareOp::Sw => "sw",
            CompareOp::Ew => "ew",
            CompareOp::Gt => "gt",
            CompareOp::Ge => "ge",
            CompareOp::Lt => "lt",
            CompareOp::Le => "le",
        }
    }

    fn from_keyword(word: &str) -> Option<Self> {
        const OPS: [CompareOp; 9] = [
            CompareOp::Eq,
            CompareOp::Ne,
            CompareOp::Co,
            CompareOp::Sw,
            CompareOp::Ew,
            CompareOp::Gt,
            CompareOp::Ge,
            CompareOp::Lt,
            CompareOp::Le,
        ];
        OPS.into_iter()
            .find(|op| op.as_str().eq_ignore_ascii_case(word))
    }

    fn is_ordering(self) -> bool {
        matches!(
            self,
            CompareOp::Gt | CompareOp::Ge | CompareOp::Lt | CompareOp::Le
        )
    }
}

impl CompValue {
    /// The JSON value this literal denotes.
    pub fn to_json(&self) -> Value {
        match self {
            CompValue::Str(s) => Value::String(s.clone()),
            CompValue::Num(n) => Value::Number(n.clone()),
            CompValue::Bool(b) => Value::Bool(*b),
            CompValue::Null => Value::Null,
        }
    }
}

// ---------------------------------------------------------------------------
// Tokens

#[derive(Debug, Clone, PartialEq)]
enum Tok<'a> {
    LParen,
    RParen,
    LBracket,
    RBracket,
    /// Any run of characters up to whitespace, a bracket or a quote: attribute
    /// paths, keywords, operators and unquoted literals. What a word means
    /// depends on where it appears, so classifying it is the parser's job.
    Word(&'a str),
    Str(String),
    End,
}

#[derive(Debug, Clone)]
struct Token<'a> {
    tok: Tok<'a>,
    pos: usize,
}

impl Token<'_> {
    fn describe(&self) -> String {
        match &self.tok {
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
            Tok::LBracket => "'['".into(),
            Tok::RBracket => "']'".into(),
            Tok::Word(w) => format!("'{}'", abbreviate(w)),
            Tok::Str(s) => format!("string \"{}\"", abbreviate(s)),
            Tok::End => "end of input".into(),
        }
    }

    fn is_word(&self, keyword: &str) -> bool {
        matches!(self.tok, Tok::Word(w) if w.eq_ignore_ascii_case(keyword))
    }
}

/// Keeps error messages short when the offending text is long.
fn abbreviate(text: &str) -> String {
    const LIMIT: usize = 40;
    match text.char_indices().nth(LIMIT) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}

fn is_delimiter(byte: u8) -> bool {
    matches!(
        byte,
        b' ' | b'\t' | b'\n' | b'\r' | b'(' | b')' | b'[' | b']' | b'"'
    )
}

fn lex(input: &str) -> Result<Vec<Token<'_>>, FilterError> {
    let bytes = input.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        let single = match byte {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'(' => Some(Tok::LParen),
            b')' => Some(Tok::RParen),
            b'[' => Some(Tok::LBracket),
            b']' => Some(Tok::RBracket),
            _ => None,
        };
        if let Some(tok) = single {
            tokens.push(Token { tok, pos: i });
            i += 1;
        } else if byte == b'"' {
            let (text, next) = lex_string(input, i)?;
            tokens.push(Token {
                tok: Tok::Str(text),
                pos: i,
            });
            i = next;
        } else {
            let start = i;
            while bytes.get(i).is_some_and(|&b| !is_delimiter(b)) {
                i += 1;
            }
            // Delimiters are ASCII, so `start..i` lies on char boundaries.
            tokens.push(Token {
                tok: Tok::Word(&input[start..i]),
                pos: start,
            });
        }
    }
    tokens.push(Token {
        tok: Tok::End,
        pos: input.len(),
    });
    Ok(tokens)
}

/// Decodes the JSON string literal whose opening quote is at `open`; returns
/// the text and the byte offset just past the closing quote.
fn lex_string(input: &str, open: usize) -> Result<(String, usize), FilterError> {
    let body_start = open + 1;
    let mut chars = input[body_start..]
        .char_indices()
        .map(|(i, c)| (i + body_start, c));
    let mut out = String::new();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, i + 1)),
            '\\' => {
                let Some((_, escape)) = chars.next() else {
                    break;
                };
                match escape {
                    '"' => out.push('"'),
                    '\\' => out.push('\\'),
                    '/' => out.push('/'),
                    'b' => out.push('\u{8}'),
                    'f' => out.push('\u{c}'),
                    'n' => out.push('\n'),
                    'r' => out.push('\r'),
                    't' => out.push('\t'),
                    'u' => out.push(lex_unicode_escape(&mut chars, i)?),
                    other => {
                        return Err(FilterError::new(
                            format!(
                                "invalid escape '\\{other}' in string; expected one of \
                                 \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX"
                            ),
                            i,
                        ))
                    }
                }
            }
            c => out.push(c),
        }
    }
    Err(FilterError::new(
        "unterminated string: no closing '\"'",
        open,
    ))
}

/// Decodes the `XXXX` of a `\uXXXX` escape whose backslash is at `at`,
/// combining a UTF-16 surrogate pair when the first unit is a high surrogate.
fn lex_unicode_escape(
    chars: &mut impl Iterator<Item = (usize, char)>,
    at: usize,
) -> Result<char, FilterError> {
    let high = hex4(chars, at)?;
    let code = match high {
        0xD800..=0xDBFF => {
            let pair_error = || {
                FilterError::new(
                    "unpaired UTF-16 high surrogate in \\u escape; expected a following \
                     \\uDC00-\\uDFFF",
                    at,
                )
            };
            if !matches!(chars.next(), Some((_, '\\'))) || !matches!(chars.next(), Some((_, 'u'))) {
                return Err(pair_error());
            }
            let low = hex4(chars, at)?;
            if !(0xDC00..=0xDFFF).contains(&low) {
                return Err(pair_error());
            }
            0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
        }
        0xDC00..=0xDFFF => {
            return Err(FilterError::new(
                "unpaired UTF-16 low surrogate in \\u escape",
                at,
            ))
        }
        other => other,
    };
    char::from_u32(code).ok_or_else(|| FilterError::new("invalid \\u escape", at))
}

fn hex4(chars: &mut impl Iterator<Item = (usize, char)>, at: usize) -> Result<u32, FilterError> {
    let mut code = 0;
    for _ in 0..4 {
        let digit = chars
            .next()
            .and_then(|(_, c)| c.to_digit(16))
            .ok_or_else(|| FilterError::new("expected four hex digits after \\u in string", at))?;
        code = code * 16 + digit;
    }
    Ok(code)
}

// ---------------------------------------------------------------------------
// Attribute paths

/// Splits `[urn ":"] attr ["." sub]`. A URN such as
/// `urn:ietf:params:scim:schemas:core:2.0:User` contains dots of its own, so
/// the URN ends at the last ':' and only the rest may hold a sub-attribute.
fn parse_attr_path(word: &str, pos: usize) -> Result<AttrPath, FilterError> {
    let (urn, rest, rest_pos) = match word.rfind(':') {
        Some(colon) => {
            let urn = &word[..colon];
            if !urn
                .get(..4)
                .is_some_and(|scheme| scheme.eq_ignore_ascii_case("urn:"))
            {
                return Err(FilterError::new(
                    format!(
                        "'{}' is not an attribute path: a schema prefix must be a URN \
                         (urn:...)",
                        abbreviate(word)
                    ),
                    pos,
                ));
            }
            (Some(urn.to_string()), &word[colon + 1..], pos + colon + 1)
        }
        None => (None, word, pos),
    };
    let (attr, sub_attr) = match rest.split_once('.') {
        Some((attr, sub)) => {
            validate_name(sub, rest_pos + attr.len() + 1)?;
            (attr, Some(sub.to_string()))
        }
        None => (rest, None),
    };
    validate_name(attr, rest_pos)?;
    Ok(AttrPath {
        urn,
        attr: attr.to_string(),
        sub_attr,
    })
}

/// ATTRNAME = ALPHA *(nameChar), plus a leading '$' for `$ref`.
fn validate_name(name: &str, pos: usize) -> Result<(), FilterError> {
    let mut chars = name.char_indices();
    let valid_start = matches!(chars.next(), Some((_, c)) if c.is_ascii_alphabetic() || c == '$');
    if !valid_start {
        return Err(FilterError::new(
            format!(
                "expected an attribute name (a letter followed by letters, digits, '-' or \
                 '_'), found '{}'",
                abbreviate(name)
            ),
            pos,
        ));
    }
    if let Some((offset, c)) =
        chars.find(|&(_, c)| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
    {
        return Err(FilterError::new(
            format!(
                "unexpected character '{c}' in attribute name '{}'",
                abbreviate(name)
            ),
            pos + offset,
        ));
    }
    Ok(())
}

fn parse_literal(word: &str) -> Option<CompValue> {
    if word.eq_ignore_ascii_case("true") {
        Some(CompValue::Bool(true))
    } else if word.eq_ignore_ascii_case("false") {
        Some(CompValue::Bool(false))
    } else if word.eq_ignore_ascii_case("null") {
        Some(CompValue::Null)
    } else if is_json_number(word) {
        parse_number(word).map(CompValue::Num)
    } else {
        None
    }
}

/// Integers stay exact where they fit 64 bits; everything else becomes an
/// f64 through the standard library's correctly rounded parser, so that a
/// rendered number reads back bit-for-bit.
fn parse_number(word: &str) -> Option<Number> {
    let integral = !word.contains(['.', 'e', 'E']);
    if integral {
        if let Ok(n) = word.parse::<i64>() {
            return Some(n.into());
        }
        if let Ok(n) = word.parse::<u64>() {
            return Some(n.into());
        }
    }
    word.parse::<f64>().ok().and_then(Number::from_f64)
}

/// JSON's number grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
fn is_json_number(word: &str) -> bool {
    fn digits(bytes: &[u8], mut i: usize) -> usize {
        while bytes.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        i
    }
    let bytes = word.as_bytes();
    let mut i = usize::from(bytes.first() == Some(&b'-'));
    match bytes.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i = digits(bytes, i),
        _ => return false,
    }
    if bytes.get(i) == Some(&b'.') {
        let end = digits(bytes, i + 1);
        if end == i + 1 {
            return false;
        }
        i = end;
    }
    if matches!(bytes.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(bytes.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let end = digits(bytes, i);
        if end == i {
            return false;
        }
        i = end;
    }
    i == bytes.len()
}

// ---------------------------------------------------------------------------
// Parser

struct Parser<'a> {
    tokens: Vec<Token<'a>>,
    pos: usize,
    terms: usize,
}

impl<'a> Parser<'a> {
    fn new(input: &'a str) -> Result<Self, FilterError> {
        if input.len() > MAX_FILTER_LEN {
            return Err(FilterError::new(
                format!(
                    "input is {} bytes long; at most {MAX_FILTER_LEN} are accepted",
                    input.len()
                ),
                MAX_FILTER_LEN,
            ));
        }
        Ok(Parser {
            tokens: lex(input)?,
            pos: 0,
            terms: 0,
        })
    }

    fn token(&self, index: usize) -> &Token<'a> {
        // `lex` always ends the list with `End`, which the parser never passes.
        let last = self.tokens.len().saturating_sub(1);
        &self.tokens[index.min(last)]
    }

    fn peek(&self) -> &Token<'a> {
        self.token(self.pos)
    }

    fn peek_second(&self) -> &Token<'a> {
        self.token(self.pos + 1)
    }

    fn bump(&mut self) {
        if self.pos + 1 < self.tokens.len() {
            self.pos += 1;
        }
    }

    fn expect_end(&self) -> Result<(), FilterError> {
        let token = self.peek();
        let message = match &token.tok {
            Tok::End => return Ok(()),
            Tok::RParen => "unbalanced ')': it has no matching '('".to_string(),
            Tok::RBracket => "unbalanced ']': it has no matching '['".to_string(),
            Tok::Word(w) if w.starts_with('.') => format!(
                "unexpected '{}': a sub-attribute after ']' is only allowed in a PATCH path",
                abbreviate(w)
            ),
            _ => format!(
                "unexpected {} after a complete expression; expected 'and', 'or' or end of input",
                token.describe()
            ),
        };
        Err(FilterError::new(message, token.pos))
    }

    fn expect_close(&mut self, close: Tok<'static>, open_pos: usize) -> Result<(), FilterError> {
        let token = self.peek();
        if token.tok == close {
            self.bump();
            return Ok(());
        }
        let (close, open) = match close {
            Tok::RBracket => ("]", "["),
            _ => (")", "("),
        };
        Err(FilterError::new(
            format!(
                "expected '{close}' to close the '{open}' at byte {open_pos}, found {}",
                token.describe()
            ),
            token.pos,
        ))
    }

    fn nest(depth: usize, pos: usize) -> Result<usize, FilterError> {
        if depth >= MAX_FILTER_DEPTH {
            return Err(FilterError::new(
                format!(
                    "filter nests deeper than {MAX_FILTER_DEPTH} levels of parentheses, 'not' \
                     or value filters"
                ),
                pos,
            ));
        }
        Ok(depth + 1)
    }

    /// `or` binds loosest and associates to the left.
    fn parse_or(&mut self, depth: usize, in_value_path: bool) -> Result<Filter, FilterError> {
        let mut left = self.parse_and(depth, in_value_path)?;
        while self.peek().is_word("or") {
            self.bump();
            let right = self.parse_and(depth, in_value_path)?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn parse_and(&mut self, depth: usize, in_value_path: bool) -> Result<Filter, FilterError> {
        let mut left = self.parse_unary(depth, in_value_path)?;
        while self.peek().is_word("and") {
            self.bump();
            let right = self.parse_unary(depth, in_value_path)?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn parse_unary(&mut self, depth: usize, in_value_path: bool) -> Result<Filter, FilterError> {
        let token = self.peek().clone();
        match token.tok {
            Tok::LParen => {
                let depth = Self::nest(depth, token.pos)?;
                self.bump();
                let inner = self.parse_or(depth, in_value_path)?;
                self.expect_close(Tok::RParen, token.pos)?;
                Ok(inner)
            }
            Tok::Word(word) if word.eq_ignore_ascii_case("not") => {
                let next = self.peek_second();
                match next.tok {
                    Tok::LParen => {
                        let depth = Self::nest(depth, token.pos)?;
                        let open = next.pos;
                        self.bump();
                        self.bump();
                        let inner = self.parse_or(depth, in_value_path)?;
                        self.expect_close(Tok::RParen, open)?;
                        Ok(Filter::Not(Box::new(inner)))
                    }
                    // `not pr` / `not eq "x"` compare an attribute that
                    // happens to be called "not".
                    Tok::Word(w)
                        if w.eq_ignore_ascii_case("pr") || CompareOp::from_keyword(w).is_some() =>
                    {
                        self.parse_attr_expr(word, token.pos, depth, in_value_path)
                    }
                    Tok::LBracket => self.parse_attr_expr(word, token.pos, depth, in_value_path),
                    _ => Err(FilterError::new(
                        format!(
                            "'not' must be followed by a parenthesised filter, found {}",
                            next.describe()
                        ),
                        next.pos,
                    )),
                }
            }
            Tok::Word(word) => self.parse_attr_expr(word, token.pos, depth, in_value_path),
            _ => Err(FilterError::new(
                format!(
                    "expected an attribute path, '(' or 'not', found {}",
                    token.describe()
                ),
                token.pos,
            )),
        }
    }

    /// `attrPath pr`, `attrPath op value` or `attrPath "[" valFilter "]"`,
    /// with the attribute word at the current position.
    fn parse_attr_expr(
        &mut self,
        word: &str,
        word_pos: usize,
        depth: usize,
        in_value_path: bool,
    ) -> Result<Filter, FilterError> {
        self.terms += 1;
        if self.terms > MAX_FILTER_TERMS {
            return Err(FilterError::new(
                format!("filter has more than {MAX_FILTER_TERMS} conditions"),
                word_pos,
            ));
        }
        let path = parse_attr_path(word, word_pos)?;
        self.bump();
        let token = self.peek().clone();
        match token.tok {
            Tok::LBracket => {
                if in_value_path {
                    return Err(FilterError::new(
                        "a value filter '[...]' cannot be nested inside another one",
                        token.pos,
                    ));
                }
                let filter = self.parse_value_filter(&path, depth)?;
                Ok(Filter::ValuePath {
                    path,
                    filter: Box::new(filter),
                })
            }
            Tok::Word(op_word) if op_word.eq_ignore_ascii_case("pr") => {
                self.bump();
                let next = self.peek();
                let has_value = match &next.tok {
                    Tok::Str(_) => true,
                    Tok::Word(w) => parse_literal(w).is_some(),
                    _ => false,
                };
                if has_value {
                    return Err(FilterError::new(
                        format!("'pr' takes no value, found {}", next.describe()),
                        next.pos,
                    ));
                }
                Ok(Filter::Present(path))
            }
            Tok::Word(op_word) => {
                let op = CompareOp::from_keyword(op_word).ok_or_else(|| {
                    FilterError::new(
                        format!(
                            "unknown operator '{}'; expected one of eq, ne, co, sw, ew, gt, ge, \
                             lt, le, pr",
                            abbreviate(op_word)
                        ),
                        token.pos,
                    )
                })?;
                self.bump();
                let value = self.parse_comp_value(op)?;
                Ok(Filter::Compare { path, op, value })
            }
            _ => Err(FilterError::new(
                format!(
                    "expected an operator (eq, ne, co, sw, ew, gt, ge, lt, le, pr) after '{}', \
                     found {}",
                    abbreviate(word),
                    token.describe()
                ),
                token.pos,
            )),
        }
    }

    /// Parses `"[" valFilter "]"` with the '[' at the current position.
    fn parse_value_filter(&mut self, path: &AttrPath, depth: usize) -> Result<Filter, FilterError> {
        let open = self.peek().pos;
        if path.sub_attr.is_some() {
            return Err(FilterError::new(
                "a value filter '[...]' must follow an attribute, not a sub-attribute",
                open,
            ));
        }
        let depth = Self::nest(depth, open)?;
        self.bump();
        let filter = self.parse_or(depth, true)?;
        self.expect_close(Tok::RBracket, open)?;
        Ok(filter)
    }

    fn parse_comp_value(&mut self, op: CompareOp) -> Result<CompValue, FilterError> {
        let token = self.peek().clone();
        let value = match &token.tok {
            Tok::Str(s) => CompValue::Str(s.clone()),
            Tok::Word(w) => parse_literal(w).ok_or_else(|| {
                let hint = if is_json_number(w) {
                    "the number is out of range"
                } else {
                    "expected a quoted string, a number, true, false or null"
                };
                FilterError::new(
                    format!("invalid comparison value '{}': {hint}", abbreviate(w)),
                    token.pos,
                )
            })?,
            Tok::End => {
                return Err(FilterError::new(
                    format!("missing value after '{}'", op.as_str()),
                    token.pos,
                ))
            }
            _ => {
                return Err(FilterError::new(
                    format!(
                        "expected a value after '{}', found {}",
                        op.as_str(),
                        token.describe()
                    ),
                    token.pos,
                ))
            }
        };
        // RFC 7644 §3.4.2.2: ordering comparisons of booleans or null are an error.
        if op.is_ordering() && matches!(value, CompValue::Bool(_) | CompValue::Null) {
            return Err(FilterError::new(
                format!(
                    "'{}' compares strings, numbers or dates, not {}",
                    op.as_str(),
                    value
                ),
                token.pos,
            ));
        }
        self.bump();
        Ok(value)
    }
}

// ---------------------------------------------------------------------------
// Evaluation

impl Filter {
    /// Evaluates the filter against one JSON value, typically an element of a
    /// multi-valued attribute such as `emails` or `members`.
    ///
    /// Attribute names match case-insensitively, and strings compare
    /// case-insensitively (RFC 7643 `caseExact=false`, right for `type`,
    /// `value` and `display`). A primitive element (from a multi-valued simple
    /// attribute) is treated as `{"value": element}`, as RFC 7644 §3.4.2.2
    /// prescribes for filters on such attributes.
    pub fn matches(&self, element: &Value) -> bool {
        match self {
            Filter::And(a, b) => a.matches(element) && b.matches(element),
            Filter::Or(a, b) => a.matches(element) || b.matches(element),
            Filter::Not(inner) => !inner.matches(element),
            Filter::Present(path) => lookup(element, path).into_iter().any(is_present),
            Filter::Compare { path, op, value } => {
                let found = lookup(element, path);
                match op {
                    CompareOp::Ne => !found.iter().any(|v| compare(v, CompareOp::Eq, value)),
                    CompareOp::Eq if *value == CompValue::Null => found.iter().all(|v| v.is_null()),
                    _ => found.iter().any(|v| compare(v, *op, value)),
                }
            }
            Filter::ValuePath { path, filter } => {
                lookup(element, path).into_iter().any(|v| filter.matches(v))
            }
        }
    }
}

fn get_ci<'v>(object: &'v serde_json::Map<String, Value>, name: &str) -> Option<&'v Value> {
    object.get(name).or_else(|| {
        object
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    })
}

/// The values `path` denotes in `element`, with multi-valued attributes
/// flattened so that a comparison matches if any of their values does.
fn lookup<'v>(element: &'v Value, path: &AttrPath) -> Vec<&'v Value> {
    let Value::Object(root) = element else {
        let denotes_self = path.urn.is_none() && path.sub_attr.is_none() && path.is("value");
        return if denotes_self {
            vec![element]
        } else {
            Vec::new()
        };
    };
    let container = match &path.urn {
        None => Some(root),
        Some(urn) => match get_ci(root, urn) {
            Some(Value::Object(extension)) => Some(extension),
            _ if starts_with_ci(urn, CORE_SCHEMA_PREFIX) => Some(root),
            _ => None,
        },
    };
    let Some(value) = container.and_then(|c| get_ci(c, &path.attr)) else {
        return Vec::new();
    };
    let values: Vec<&Value> = match value {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    match &path.sub_attr {
        None => values,
        Some(sub) => values
            .into_iter()
            .filter_map(|v| v.as_object().and_then(|o| get_ci(o, sub)))
            .flat_map(|v| match v {
                Value::Array(items) => items.iter().collect(),
                other => vec![other],
            })
            .collect(),
    }
}

fn starts_with_ci(text: &str, prefix: &str) -> bool {
    text.get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

/// RFC 7644: `pr` matches a non-empty value; null, "", [] and {} are empty.
fn is_present(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => items.iter().any(is_present),
        Value::Object(fields) => fields.values().any(is_present),
        Value::Bool(_) | Value::Number(_) => true,
    }
}

fn compare(actual: &Value, op: CompareOp, expected: &CompValue) -> bool {
    match (actual, expected) {
        (Value::String(a), CompValue::Str(e)) => {
            // Emails (`emails[value eq "..."]`) are matched the way userNames are, so a
            // decomposed or fullwidth spelling finds the element; other text attributes
            // are caseExact=false too, and folding is what that means for them as well.
            let (a, e) = (
                crate::domain::fold_identifier(a),
                crate::domain::fold_identifier(e),
            );
            match op {
                CompareOp::Eq => a == e,
                CompareOp::Ne => a != e,
                CompareOp::Co => a.contains(&e),
                CompareOp::Sw => a.starts_with(&e),
                CompareOp::Ew => a.ends_with(&e),
                _ => ordering_holds(op, Some(a.cmp(&e))),
            }
        }
        (Value::Number(a), CompValue::Num(e)) => ordering_holds(op, compare_numbers(a, e)),
        (Value::Bool(a), CompValue::Bool(e)) => match op {
            CompareOp::Eq => a == e,
            CompareOp::Ne => a != e,
            _ => false,
        },
        // Some IdPs quote booleans ("True"); comparing them as booleans is
        // what the sender meant.
        (Value::Bool(a), CompValue::Str(e)) => {
            let e = match e.trim().to_ascii_lowercase().as_str() {
                "true" => true,
                "false" => false,
                _ => return false,
            };
            match op {
                CompareOp::Eq => *a == e,
                CompareOp::Ne => *a != e,
                _ => false,
            }
        }
        (Value::Null, CompValue::Null) => op == CompareOp::Eq,
        _ => false,
    }
}

fn ordering_holds(op: CompareOp, ordering: Option<Ordering>) -> bool {
    let Some(ordering) = ordering else {
        return false;
    };
    match op {
        CompareOp::Eq => ordering == Ordering::Equal,
        CompareOp::Ne => ordering != Ordering::Equal,
        CompareOp::Gt => ordering == Ordering::Greater,
        CompareOp::Ge => ordering != Ordering::Less,
        CompareOp::Lt => ordering == Ordering::Less,
        CompareOp::Le => ordering != Ordering::Greater,
        CompareOp::Co | CompareOp::Sw | CompareOp::Ew => false,
    }
}

fn compare_numbers(a: &Number, b: &Number) -> Option<Ordering> {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return Some(x.cmp(&y));
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return Some(x.cmp(&y));
    }
    a.as_f64()?.partial_cmp(&b.as_f64()?)
}

// ---------------------------------------------------------------------------
// Canonical rendering

impl fmt::Display for AttrPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(urn) = &self.urn {
            write!(f, "{urn}:")?;
        }
        f.write_str(&self.attr)?;
        if let Some(sub) = &self.sub_attr {
            write!(f, ".{sub}")?;
        }
        Ok(())
    }
}

impl fmt::Display for CompareOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for CompValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompValue::Str(s) => write_json_string(f, s),
            CompValue::Num(n) => write!(f, "{n}"),
            CompValue::Bool(b) => write!(f, "{b}"),
            CompValue::Null => f.write_str("null"),
        }
    }
}

fn write_json_string(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if u32::from(c) < 0x20 => write!(f, "\\u{:04x}", u32::from(c))?,
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"")
}

/// Renders canonical filter syntax that [`parse_filter`] reads back to an
/// equal AST: lower-case keywords, JSON literals, and parentheses only where
/// precedence or left-associativity needs them.
impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_filter(self, f, Precedence::Or)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Precedence {
    Or,
    And,
    Atom,
}

fn write_filter(filter: &Filter, f: &mut fmt::Formatter<'_>, min: Precedence) -> fmt::Result {
    let own = match filter {
        Filter::Or(..) => Precedence::Or,
        Filter::And(..) => Precedence::And,
        _ => Precedence::Atom,
    };
    if own < min {
        f.write_str("(")?;
        write_filter(filter, f, Precedence::Or)?;
        return f.write_str(")");
    }
    match filter {
        Filter::Or(a, b) => {
            write_filter(a, f, Precedence::Or)?;
            f.write_str(" or ")?;
            write_filter(b, f, Precedence::And)
        }
        Filter::And(a, b) => {
            write_filter(a, f, Precedence::And)?;
            f.write_str(" and ")?;
            write_filter(b, f, Precedence::Atom)
        }
        Filter::Not(inner) => {
            f.write_str("not (")?;
            write_filter(inner, f, Precedence::Or)?;
            f.write_str(")")
        }
        Filter::Present(path) => write!(f, "{path} pr"),
        Filter::Compare { path, op, value } => write!(f, "{path} {op} {value}"),
        Filter::ValuePath { path, filter } => {
            write!(f, "{path}[")?;
            write_filter(filter, f, Precedence::Or)?;
            f.write_str("]")
        }
    }
}

impl fmt::Display for PatchPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.attr)?;
        if let Some(filter) = &self.filter {
            write!(f, "[{filter}]")?;
        }
        if let Some(sub) = &self.sub_attr {
            write!(f, ".{sub}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod term_limit_tests {
    use super::*;

    #[test]
    fn a_filter_with_more_conditions_than_the_limit_is_refused() {
        let at_limit = vec!["id pr"; MAX_FILTER_TERMS].join(" or ");
        assert!(parse_filter(&at_limit).is_ok());
        let over = vec!["id pr"; MAX_FILTER_TERMS + 1].join(" or ");
        let err = parse_filter(&over).unwrap_err();
        assert!(err.message.contains("conditions"), "{err}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn parse(input: &str) -> Filter {
        match parse_filter(input) {
            Ok(filter) => filter,
            Err(err) => panic!("{input:?} should parse, got: {err}"),
        }
    }

    fn parse_err(input: &str) -> FilterError {
        match parse_filter(input) {
            Ok(filter) => panic!("{input:?} should be rejected, parsed as {filter:?}"),
            Err(err) => err,
        }
    }

    fn path(attr: &str) -> AttrPath {
        AttrPath::new(attr)
    }

    fn sub(attr: &str, sub_attr: &str) -> AttrPath {
        AttrPath {
            sub_attr: Some(sub_attr.into()),
            ..AttrPath::new(attr)
        }
    }

    fn cmp(path: AttrPath, op: CompareOp, value: CompValue) -> Filter {
        Filter::Compare { path, op, value }
    }

    fn eq_str(attr: &str, value: &str) -> Filter {
        cmp(path(attr), CompareOp::Eq, CompValue::Str(value.into()))
    }

    fn eq_num(attr: &str, value: i64) -> Filter {
        cmp(path(attr), CompareOp::Eq, CompValue::Num(value.into()))
    }

    fn and(a: Filter, b: Filter) -> Filter {
        Filter::And(Box::new(a), Box::new(b))
    }

    fn or(a: Filter, b: Filter) -> Filter {
        Filter::Or(Box::new(a), Box::new(b))
    }

    fn not(a: Filter) -> Filter {
        Filter::Not(Box::new(a))
    }

    // --- comparisons ---------------------------------------------------------

    #[test]
    fn username_eq_is_parsed_into_a_comparison() {
        assert_eq!(
            parse(r#"userName eq "bjensen""#),
            eq_str("userName", "bjensen")
        );
    }

    #[test]
    fn every_comparison_operator_is_recognised() {
        let cases = [
            ("eq", CompareOp::Eq),
            ("ne", CompareOp::Ne),
            ("co", CompareOp::Co),
            ("sw", CompareOp::Sw),
            ("ew", CompareOp::Ew),
            ("gt", CompareOp::Gt),
            ("ge", CompareOp::Ge),
            ("lt", CompareOp::Lt),
            ("le", CompareOp::Le),
        ];
        for (keyword, op) in cases {
            let expected = cmp(path("title"), op, CompValue::Str("x".into()));
            assert_eq!(parse(&format!(r#"title {keyword} "x""#)), expected);
            let upper = keyword.to_ascii_uppercase();
            assert_eq!(parse(&format!(r#"title {upper} "x""#)), expected);
        }
    }

    #[test]
    fn pr_is_parsed_into_a_presence_test() {
        assert_eq!(parse("title pr"), Filter::Present(path("title")));
        assert_eq!(parse("title PR"), Filter::Present(path("title")));
    }

    #[test]
    fn literals_true_false_and_null_are_case_insensitive() {
        assert_eq!(
            parse("active eq true"),
            cmp(path("active"), CompareOp::Eq, CompValue::Bool(true))
        );
        assert_eq!(
            parse("active eq False"),
            cmp(path("active"), CompareOp::Eq, CompValue::Bool(false))
        );
        assert_eq!(
            parse("manager eq NULL"),
            cmp(path("manager"), CompareOp::Eq, CompValue::Null)
        );
    }

    #[test]
    fn numbers_may_be_negative_decimal_or_exponential() {
        for (text, expected) in [
            ("42", json!(42)),
            ("-7", json!(-7)),
            ("0", json!(0)),
            ("2.5", json!(2.5)),
            ("-0.125", json!(-0.125)),
            ("1e3", json!(1000.0)),
            ("6.02E+23", json!(6.02e23)),
            ("5e-1", json!(0.5)),
        ] {
            let filter = parse(&format!("age ge {text}"));
            let Filter::Compare {
                value: CompValue::Num(n),
                ..
            } = filter
            else {
                panic!("{text} should parse as a number");
            };
            assert_eq!(Value::Number(n), expected, "{text}");
        }
    }

    #[test]
    fn malformed_numbers_are_rejected() {
        for text in ["01", "1.", ".5", "+1", "1e", "--1", "1x", "0x10"] {
            let err = parse_err(&format!("age eq {text}"));
            assert_eq!(err.position, 7, "{text}: {err}");
        }
        assert!(parse_err("age eq 1e999").message.contains("out of range"));
    }

    #[test]
    fn string_escapes_are_decoded() {
        let filter = parse(r#"displayName eq "a\"b\\c\/d\b\f\n\r\t\u00e9\ud83d\ude00""#);
        assert_eq!(
            filter,
            eq_str("displayName", "a\"b\\c/d\u{8}\u{c}\n\r\té😀")
        );
    }

    #[test]
    fn strings_may_hold_raw_unicode_and_delimiters() {
        assert_eq!(
            parse(r#"displayName eq "Zoë (ops) [x] and or""#),
            eq_str("displayName", "Zoë (ops) [x] and or")
        );
    }

    #[test]
    fn bad_escapes_and_lone_surrogates_are_rejected() {
        assert!(parse_err(r#"a eq "\x""#).message.contains("invalid escape"));
        assert!(parse_err(r#"a eq "\u12""#).message.contains("hex"));
        assert!(parse_err(r#"a eq "\ud83d""#).message.contains("surrogate"));
        assert!(parse_err(r#"a eq "\ud83dx""#).message.contains("surrogate"));
        assert!(parse_err(r#"a eq "\ude00""#).message.contains("surrogate"));
        assert_eq!(parse_err(r#"a eq "\x""#).position, 6);
    }

    #[test]
    fn whitespace_is_free_around_tokens() {
        assert_eq!(
            parse("  \t userName   eq\t\"x\"   "),
            eq_str("userName", "x")
        );
        assert_eq!(
            parse(r#"( a eq 1 )and(b eq 2)"#),
            and(eq_num("a", 1), eq_num("b", 2))
        );
    }

    // --- attribute paths -----------------------------------------------------

    #[test]
    fn sub_attributes_are_split_from_the_attribute() {
        assert_eq!(
            parse(r#"name.givenName sw "Bar""#),
            cmp(
                sub("name", "givenName"),
                CompareOp::Sw,
                CompValue::Str("Bar".into())
            )
        );
        assert_eq!(
            parse(r#"meta.lastModified gt "2011-05-13T04:42:34Z""#),
            cmp(
                sub("meta", "lastModified"),
                CompareOp::Gt,
                CompValue::Str("2011-05-13T04:42:34Z".into())
            )
        );
    }

    #[test]
    fn urn_qualified_paths_keep_the_urn_up_to_the_last_colon() {
        let filter = parse(
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "Sales""#,
        );
        let expected = AttrPath {
            urn: Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User".into()),
            attr: "department".into(),
            sub_attr: None,
        };
        assert_eq!(
            filter,
            cmp(expected, CompareOp::Eq, CompValue::Str("Sales".into()))
        );

        let filter = parse(r#"urn:ietf:params:scim:schemas:core:2.0:User:name.familyName co "x""#);
        let Filter::Compare { path, .. } = filter else {
            panic!("expected a comparison");
        };
        assert_eq!(
            path.urn.as_deref(),
            Some("urn:ietf:params:scim:schemas:core:2.0:User")
        );
        assert_eq!(path.attr, "name");
        assert_eq!(path.sub_attr.as_deref(), Some("familyName"));
    }

    #[test]
    fn ref_is_a_valid_attribute_name() {
        assert_eq!(
            parse(r#"members.$ref eq "x""#),
            cmp(
                sub("members", "$ref"),
                CompareOp::Eq,
                CompValue::Str("x".into())
            )
        );
    }

    #[test]
    fn attribute_names_keep_their_spelling_and_compare_case_insensitively() {
        let Filter::Present(path) = parse("UserName pr") else {
            panic!("expected pr");
        };
        assert_eq!(path.attr, "UserName");
        assert!(path.is("username"));
        assert!(!path.is("user"));
    }

    #[test]
    fn invalid_attribute_paths_are_rejected() {
        for input in [
            "1abc eq 1",
            "a.b.c eq 1",
            "name. eq 1",
            "http://x:a eq 1",
            "urn:x: eq 1",
            "a*b eq 1",
        ] {
            parse_err(input);
        }
        assert_eq!(parse_err("a.b.c eq 1").position, 3);
    }

    // --- logic -----------------------------------------------------------

    #[test]
    fn and_binds_tighter_than_or() {
        assert_eq!(
            parse("a eq 1 or b eq 2 and c eq 3"),
            or(eq_num("a", 1), and(eq_num("b", 2), eq_num("c", 3)))
        );
        assert_eq!(
            parse("a eq 1 and b eq 2 or c eq 3"),
            or(and(eq_num("a", 1), eq_num("b", 2)), eq_num("c", 3))
        );
    }

    #[test]
    fn logical_operators_associate_to_the_left_and_ignore_case() {
        assert_eq!(
            parse("a eq 1 OR b eq 2 Or c eq 3"),
            or(or(eq_num("a", 1), eq_num("b", 2)), eq_num("c", 3))
        );
        assert_eq!(
            parse("a eq 1 AND b eq 2 and c eq 3"),
            and(and(eq_num("a", 1), eq_num("b", 2)), eq_num("c", 3))
        );
    }

    #[test]
    fn parentheses_override_precedence() {
        assert_eq!(
            parse("(a eq 1 or b eq 2) and c eq 3"),
            and(or(eq_num("a", 1), eq_num("b", 2)), eq_num("c", 3))
        );
        assert_eq!(parse("((a eq 1))"), eq_num("a", 1));
    }

    #[test]
    fn not_negates_a_parenthesised_filter_and_binds_tightest() {
        assert_eq!(parse("not (a eq 1)"), not(eq_num("a", 1)));
        assert_eq!(
            parse("NOT(a eq 1) and b eq 2"),
            and(not(eq_num("a", 1)), eq_num("b", 2))
        );
        assert_eq!(
            parse("a eq 1 or not (b eq 2 or c eq 3)"),
            or(eq_num("a", 1), not(or(eq_num("b", 2), eq_num("c", 3))))
        );
    }

    #[test]
    fn not_without_parentheses_is_rejected() {
        let err = parse_err(r#"not userName eq "x""#);
        assert!(err.message.contains("'not' must be followed"), "{err}");
        assert_eq!(err.position, 4);
    }

    #[test]
    fn keywords_can_still_be_attribute_names() {
        assert_eq!(parse("not pr"), Filter::Present(path("not")));
        assert_eq!(
            parse("and eq 1 or or eq 2"),
            or(eq_num("and", 1), eq_num("or", 2))
        );
    }

    // --- value paths -------------------------------------------------------

    #[test]
    fn value_path_applies_a_filter_to_elements() {
        assert_eq!(
            parse(r#"emails[type eq "work" and value co "@example.com"]"#),
            Filter::ValuePath {
                path: path("emails"),
                filter: Box::new(and(
                    eq_str("type", "work"),
                    cmp(
                        path("value"),
                        CompareOp::Co,
                        CompValue::Str("@example.com".into())
                    )
                )),
            }
        );
    }

    #[test]
    fn value_paths_combine_with_and_or() {
        let filter = parse(
            r#"emails[type eq "work" and value co "@example.com"] or ims[type eq "xmpp" and value co "@foo.com"]"#,
        );
        let Filter::Or(left, right) = filter else {
            panic!("expected or");
        };
        assert!(matches!(*left, Filter::ValuePath { ref path, .. } if path.is("emails")));
        assert!(matches!(*right, Filter::ValuePath { ref path, .. } if path.is("ims")));
        assert!(matches!(
            parse(r#"userType eq "Employee" and emails[type eq "work"]"#),
            Filter::And(..)
        ));
    }

    #[test]
    fn nested_value_paths_are_rejected() {
        let err = parse_err(r#"emails[x[y eq 1]]"#);
        assert!(err.message.contains("nested"), "{err}");
        assert_eq!(err.position, 8);
    }

    #[test]
    fn sub_attribute_after_a_value_path_is_only_for_patch_paths() {
        let err = parse_err(r#"emails[type eq "work"].value eq "x""#);
        assert!(err.message.contains("PATCH"), "{err}");
    }

    #[test]
    fn value_path_on_a_sub_attribute_is_rejected() {
        parse_err(r#"name.x[a eq 1]"#);
    }

    // --- errors ----------------------------------------------------------

    #[test]
    fn empty_filters_are_rejected() {
        for input in ["", "   ", "\t"] {
            assert!(parse_err(input).message.contains("empty"));
        }
        parse_err("()");
    }

    #[test]
    fn unknown_operators_are_rejected_with_the_operator_position() {
        let err = parse_err(r#"userName like "x""#);
        assert_eq!(err.position, 9);
        assert!(err.message.contains("unknown operator 'like'"), "{err}");
    }

    #[test]
    fn missing_operator_or_value_is_rejected() {
        let err = parse_err("userName");
        assert!(err.message.contains("expected an operator"), "{err}");
        assert_eq!(err.position, 8);
        let err = parse_err("userName eq");
        assert!(err.message.contains("missing value"), "{err}");
        let err = parse_err("userName eq )");
        assert!(err.message.contains("expected a value"), "{err}");
    }

    #[test]
    fn unquoted_strings_are_rejected() {
        let err = parse_err("userName eq bjensen");
        assert!(err.message.contains("quoted string"), "{err}");
        assert_eq!(err.position, 12);
    }

    #[test]
    fn unterminated_strings_are_rejected_at_the_opening_quote() {
        let err = parse_err(r#"userName eq "bjensen"#);
        assert!(err.message.contains("unterminated"), "{err}");
        assert_eq!(err.position, 12);
        parse_err(r#"userName eq "bjensen\""#);
    }

    #[test]
    fn unbalanced_parentheses_and_brackets_are_rejected() {
        let err = parse_err("(a eq 1");
        assert!(err.message.contains("expected ')'"), "{err}");
        let err = parse_err("a eq 1)");
        assert!(err.message.contains("unbalanced ')'"), "{err}");
        assert_eq!(err.position, 6);
        let err = parse_err(r#"emails[type eq "work""#);
        assert!(err.message.contains("expected ']'"), "{err}");
        let err = parse_err(r#"emails[type eq "work")"#);
        assert!(err.message.contains("expected ']'"), "{err}");
        let err = parse_err("a eq 1]");
        assert!(err.message.contains("unbalanced ']'"), "{err}");
        parse_err("not (a eq 1");
    }

    #[test]
    fn trailing_garbage_is_rejected() {
        let err = parse_err(r#"a eq "x" b"#);
        assert!(err.message.contains("after a complete expression"), "{err}");
        assert_eq!(err.position, 9);
        parse_err(r#"a eq "x" and"#);
        parse_err(r#"a eq "x" or ("#);
    }

    #[test]
    fn pr_with_a_value_is_rejected() {
        for input in [
            r#"title pr "x""#,
            "title pr true",
            "title pr 3",
            "title pr null",
        ] {
            let err = parse_err(input);
            assert!(
                err.message.contains("'pr' takes no value"),
                "{input}: {err}"
            );
            assert_eq!(err.position, 9);
        }
    }

    #[test]
    fn ordering_comparisons_with_booleans_or_null_are_rejected() {
        for op in ["gt", "ge", "lt", "le"] {
            for value in ["true", "false", "null"] {
                let err = parse_err(&format!("age {op} {value}"));
                assert_eq!(err.position, 7, "{err}");
            }
        }
        parse("age gt 3");
        parse(r#"meta.created lt "2020-01-01T00:00:00Z""#);
    }

    #[test]
    fn errors_render_the_message_and_position() {
        let err = parse_err("a eq");
        assert_eq!(err.to_string(), "missing value after 'eq' (at byte 4)");
    }

    // --- hostile input -----------------------------------------------------

    #[test]
    fn nesting_up_to_the_limit_is_accepted() {
        let depth = MAX_FILTER_DEPTH;
        let input = format!("{}a pr{}", "(".repeat(depth), ")".repeat(depth));
        assert_eq!(parse(&input), Filter::Present(path("a")));
        let input = format!("{}a pr{}", "not (".repeat(depth), ")".repeat(depth));
        parse(&input);
    }

    #[test]
    fn nesting_beyond_the_limit_is_rejected() {
        let depth = MAX_FILTER_DEPTH + 1;
        let err = parse_err(&format!("{}a pr{}", "(".repeat(depth), ")".repeat(depth)));
        assert!(err.message.contains("nests deeper"), "{err}");
        assert_eq!(err.position, MAX_FILTER_DEPTH);
        let err = parse_err(&format!(
            "{}a pr{}",
            "not (".repeat(depth),
            ")".repeat(depth)
        ));
        assert!(err.message.contains("nests deeper"), "{err}");
        let inner = format!(
            "{}a pr{}",
            "(".repeat(MAX_FILTER_DEPTH),
            ")".repeat(MAX_FILTER_DEPTH)
        );
        let err = parse_err(&format!("emails[{inner}]"));
        assert!(err.message.contains("nests deeper"), "{err}");
    }

    #[test]
    fn a_megabyte_of_parentheses_is_refused_quickly() {
        let input = "(".repeat(1 << 20);
        let started = std::time::Instant::now();
        let err = parse_err(&input);
        assert!(started.elapsed() < std::time::Duration::from_millis(50));
        assert!(err.message.contains("at most"), "{err}");
        assert_eq!(err.position, MAX_FILTER_LEN);
    }

    #[test]
    fn inputs_at_the_length_limit_are_refused_or_parsed_without_deep_recursion() {
        // The longest `and` chain that fits is refused by the term limit, cheaply.
        let term = "a pr and ";
        let mut input = term.repeat(MAX_FILTER_LEN / term.len());
        input.push_str("a pr");
        while input.len() > MAX_FILTER_LEN {
            input.drain(..term.len());
        }
        assert!(parse_err(&input).message.contains("conditions"));

        // The longest chain allowed builds a left spine; evaluation, rendering,
        // cloning and dropping all cope with it.
        let input = vec!["a pr"; MAX_FILTER_TERMS].join(" and ");
        let filter = parse(&input);
        assert!(filter.matches(&json!({"a": 1})));
        assert!(!filter.matches(&json!({"b": 1})));
        assert_eq!(parse(&filter.to_string()), filter.clone());

        // Deep open parentheses within the length limit stop at the depth limit.
        let parens = "(".repeat(MAX_FILTER_LEN);
        assert!(parse_err(&parens).message.contains("nests deeper"));
        let brackets = format!("a{}", "[".repeat(MAX_FILTER_LEN - 1));
        parse_err(&brackets);
    }

    // --- evaluation --------------------------------------------------------

    #[test]
    fn matches_compares_strings_case_insensitively() {
        let email = json!({"type": "Work", "value": "Bjensen@Example.com", "primary": true});
        assert!(parse(r#"type eq "work""#).matches(&email));
        assert!(parse(r#"TYPE eq "WORK""#).matches(&email));
        assert!(parse(r#"value co "@example""#).matches(&email));
        assert!(parse(r#"value sw "bjensen""#).matches(&email));
        assert!(parse(r#"value ew ".COM""#).matches(&email));
        assert!(parse(r#"type ne "home""#).matches(&email));
        assert!(!parse(r#"type ne "work""#).matches(&email));
        assert!(!parse(r#"type eq "home""#).matches(&email));
        assert!(parse(r#"type gt "home" and type lt "zzz""#).matches(&email));
        assert!(parse(r#"type ge "work" and type le "work""#).matches(&email));
    }

    #[test]
    fn matches_compares_numbers_and_booleans_by_value() {
        let element = json!({"n": 10, "f": 2.5, "primary": true});
        assert!(parse("n eq 10").matches(&element));
        assert!(parse("n eq 10.0").matches(&element));
        assert!(parse("n gt 9 and n ge 10 and n lt 11 and n le 10").matches(&element));
        assert!(parse("f gt 2 and f lt 3").matches(&element));
        assert!(!parse(r#"n eq "10""#).matches(&element));
        assert!(parse("primary eq true").matches(&element));
        assert!(parse(r#"primary eq "True""#).matches(&element));
        assert!(!parse("primary eq false").matches(&element));
        assert!(!parse("primary co true").matches(&element));
    }

    #[test]
    fn matches_handles_presence_and_null() {
        let element = json!({"value": "x", "display": "", "ref": null, "list": []});
        assert!(parse("value pr").matches(&element));
        assert!(!parse("display pr").matches(&element));
        assert!(!parse("ref pr").matches(&element));
        assert!(!parse("list pr").matches(&element));
        assert!(!parse("missing pr").matches(&element));
        assert!(parse("ref eq null").matches(&element));
        assert!(parse("missing eq null").matches(&element));
        assert!(!parse("value eq null").matches(&element));
        assert!(parse("value ne null").matches(&element));
        assert!(parse(r#"missing ne "x""#).matches(&element));
    }

    #[test]
    fn matches_evaluates_logic_sub_attributes_and_value_paths() {
        let user = json!({
            "userName": "bjensen",
            "name": {"givenName": "Barbara"},
            "emails": [
                {"type": "home", "value": "b@home.example"},
                {"type": "work", "value": "b@corp.example"}
            ],
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Sales"}
        });
        assert!(parse(r#"name.givenName eq "barbara""#).matches(&user));
        assert!(parse(r#"emails.value co "corp""#).matches(&user));
        assert!(parse(r#"emails[type eq "work" and value co "corp"]"#).matches(&user));
        assert!(!parse(r#"emails[type eq "home" and value co "corp"]"#).matches(&user));
        assert!(parse(r#"not (userName eq "x") and (name pr or id pr)"#).matches(&user));
        assert!(parse(
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "sales""#
        )
        .matches(&user));
        assert!(
            parse(r#"urn:ietf:params:scim:schemas:core:2.0:User:userName eq "BJENSEN""#)
                .matches(&user)
        );
        assert!(!parse(r#"urn:example:Other:department eq "sales""#).matches(&user));
    }

    #[test]
    fn matches_treats_a_primitive_element_as_its_value() {
        assert!(parse(r#"value eq "admin""#).matches(&json!("Admin")));
        assert!(!parse(r#"type eq "admin""#).matches(&json!("admin")));
    }

    // --- display -----------------------------------------------------------

    #[test]
    fn display_renders_canonical_syntax() {
        let filter = parse(
            r#"(A EQ 1 OR b Pr) AND NOT (c.d SW "x\"y") and emails[type eq "work"] or e eq null"#,
        );
        assert_eq!(
            filter.to_string(),
            r#"(A eq 1 or b pr) and not (c.d sw "x\"y") and emails[type eq "work"] or e eq null"#
        );
        assert_eq!(
            or(eq_num("a", 1), or(eq_num("b", 2), eq_num("c", 3))).to_string(),
            "a eq 1 or (b eq 2 or c eq 3)"
        );
    }

    // --- PATCH paths -------------------------------------------------------

    fn patch_path(input: &str) -> PatchPath {
        match parse_patch_path(input) {
            Ok(path) => path,
            Err(err) => panic!("{input:?} should parse, got: {err}"),
        }
    }

    #[test]
    fn patch_path_may_be_a_plain_attribute() {
        assert_eq!(
            patch_path("members"),
            PatchPath {
                attr: path("members"),
                filter: None,
                sub_attr: None
            }
        );
    }

    #[test]
    fn patch_path_may_select_elements_with_a_filter() {
        assert_eq!(
            patch_path(r#"members[value eq "abc"]"#),
            PatchPath {
                attr: path("members"),
                filter: Some(eq_str("value", "abc")),
                sub_attr: None
            }
        );
    }

    #[test]
    fn patch_path_may_name_a_sub_attribute_of_selected_elements() {
        assert_eq!(
            patch_path(r#"emails[type eq "work"].value"#),
            PatchPath {
                attr: path("emails"),
                filter: Some(eq_str("type", "work")),
                sub_attr: Some("value".into())
            }
        );
    }

    #[test]
    fn patch_path_may_name_a_sub_attribute_of_a_complex_attribute() {
        assert_eq!(
            patch_path("name.givenName"),
            PatchPath {
                attr: sub("name", "givenName"),
                filter: None,
                sub_attr: None
            }
        );
    }

    #[test]
    fn patch_path_may_be_urn_qualified() {
        let enterprise = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
        let parsed = patch_path(&format!("{enterprise}:manager"));
        assert_eq!(parsed.attr.urn.as_deref(), Some(enterprise));
        assert_eq!(parsed.attr.attr, "manager");
        assert_eq!(parsed.attr.sub_attr, None);
        let parsed = patch_path(&format!("{enterprise}:manager.value"));
        assert_eq!(parsed.attr.attr, "manager");
        assert_eq!(parsed.attr.sub_attr.as_deref(), Some("value"));
        let parsed =
            patch_path(r#"urn:ietf:params:scim:schemas:core:2.0:Group:members[value eq "x"]"#);
        assert_eq!(
            parsed.attr.urn.as_deref(),
            Some("urn:ietf:params:scim:schemas:core:2.0:Group")
        );
        assert!(parsed.filter.is_some());
    }

    #[test]
    fn patch_path_rejects_empty_input_and_trailing_garbage() {
        for input in ["", "  "] {
            let err = parse_patch_path(input).expect_err("empty path");
            assert!(err.message.contains("empty path"));
        }
        for input in [
            "members x",
            r#"members[value eq "x"] y"#,
            r#"members[value eq "x"]]"#,
            r#"members[value eq "x""#,
            r#"members[value eq "x"].1"#,
            r#"members[a[b eq 1]]"#,
            "(members)",
            r#""members""#,
            "name.given.name",
        ] {
            assert!(
                parse_patch_path(input).is_err(),
                "{input:?} should be rejected"
            );
        }
        let err = parse_patch_path("members x").expect_err("trailing");
        assert_eq!(err.position, 8);
    }

    #[test]
    fn patch_path_display_round_trips() {
        for input in [
            "members",
            r#"emails[type eq "work"].value"#,
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
        ] {
            assert_eq!(patch_path(input).to_string(), input);
        }
    }

    // --- properties --------------------------------------------------------

    fn arb_name() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z][a-zA-Z0-9_-]{0,6}",
            Just("$ref".to_string()),
            Just("and".to_string()),
            Just("not".to_string()),
            Just("pr".to_string()),
        ]
    }

    fn arb_attr_path() -> impl Strategy<Value = AttrPath> {
        let urn = prop_oneof![
            3 => Just(None),
            1 => Just(Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User".to_string())),
            1 => Just(Some("urn:ietf:params:scim:schemas:core:2.0:User".to_string())),
        ];
        (urn, arb_name(), proptest::option::of(arb_name())).prop_map(|(urn, attr, sub_attr)| {
            AttrPath {
                urn,
                attr,
                sub_attr,
            }
        })
    }

    fn arb_comparison() -> impl Strategy<Value = Filter> {
        let op = prop_oneof![
            Just(CompareOp::Eq),
            Just(CompareOp::Ne),
            Just(CompareOp::Co),
            Just(CompareOp::Sw),
            Just(CompareOp::Ew),
            Just(CompareOp::Gt),
            Just(CompareOp::Ge),
            Just(CompareOp::Lt),
            Just(CompareOp::Le),
        ];
        let value = prop_oneof![
            any::<String>().prop_map(CompValue::Str),
            any::<i64>().prop_map(|n| CompValue::Num(n.into())),
            any::<u64>().prop_map(|n| CompValue::Num(n.into())),
            any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(CompValue::Num)),
            any::<bool>().prop_map(CompValue::Bool),
            Just(CompValue::Null),
        ];
        (arb_attr_path(), op, value)
            .prop_filter("ordering needs a string or number", |(_, op, value)| {
                !(op.is_ordering() && matches!(value, CompValue::Bool(_) | CompValue::Null))
            })
            .prop_map(|(path, op, value)| Filter::Compare { path, op, value })
    }

    fn arb_simple_filter() -> impl Strategy<Value = Filter> {
        let leaf = prop_oneof![arb_attr_path().prop_map(Filter::Present), arb_comparison(),];
        leaf.prop_recursive(4, 24, 2, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone()).prop_map(|(a, b)| and(a, b)),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| or(a, b)),
                inner.prop_map(not),
            ]
        })
    }

    fn arb_filter() -> impl Strategy<Value = Filter> {
        let value_path =
            (arb_name(), arb_simple_filter()).prop_map(|(name, filter)| Filter::ValuePath {
                path: AttrPath::new(name),
                filter: Box::new(filter),
            });
        let leaf = prop_oneof![3 => arb_simple_filter(), 1 => value_path];
        leaf.prop_recursive(3, 12, 2, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone()).prop_map(|(a, b)| and(a, b)),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| or(a, b)),
                inner.prop_map(not),
            ]
        })
    }

    proptest! {
        #[test]
        fn parsing_arbitrary_strings_never_panics(input in any::<String>()) {
            let _ = parse_filter(&input);
            let _ = parse_patch_path(&input);
        }

        #[test]
        fn parsing_filter_like_strings_never_panics(
            input in r#"[a-z.:\[\]() "\\]{0,12}( (eq|pr|and|or|not) [a-z"()\[\]0-9.\\u-]{0,12}){0,4}"#
        ) {
            if let Ok(filter) = parse_filter(&input) {
                let _ = filter.matches(&serde_json::json!({"a": [1, "x", {"b": null}]}));
            }
            let _ = parse_patch_path(&input);
        }

        #[test]
        fn rendering_a_filter_parses_back_to_the_same_ast(filter in arb_filter()) {
            let rendered = filter.to_string();
            prop_assert_eq!(parse_filter(&rendered), Ok(filter), "rendered as {}", rendered);
        }
    }
}
