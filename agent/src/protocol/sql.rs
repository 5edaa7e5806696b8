//! SQL sanitising shared by the PostgreSQL and MySQL parsers: literals
//! become `?`, comments go, whitespace collapses, and the statement's verb
//! and main table are picked out for `db.operation.name` and
//! `db.collection.name`.
//!
//! One pass over the bytes, no backtracking (dollar-quote ends are found with
//! the standard library's linear substring search), so the cost is linear in
//! the input whatever it holds. Text is only ever cut at ASCII bytes, which
//! keeps every slice on a char boundary.

use super::db::{MAX_QUERY_TEXT, truncate_text};

/// What a SQL text tells about the command, safe to export.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SqlSummary {
    /// The statement's verb, upper case (`SELECT`, `INSERT`, `BEGIN`...); for
    /// `WITH ...` the verb of the main statement after the CTEs when found.
    pub operation: Option<String>,
    /// The table a simple statement works on (`schema.table` when qualified,
    /// quotes stripped); `None` when unclear.
    pub collection: Option<String>,
    /// The text with literals as `?`, comments removed, whitespace collapsed,
    /// at most `MAX_QUERY_TEXT` bytes.
    pub text: String,
}

/// The SQL dialect's lexical rules that change what a literal is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    /// `"..."` is an identifier, `$tag$..$tag$` a string, backslashes are
    /// plain characters except in `E'...'`, block comments nest.
    Postgres,
    /// `"..."` is a string, backslashes escape in every string, `#` starts a
    /// comment, `` `...` `` is an identifier.
    Mysql,
}

/// Sanitises PostgreSQL text (`"..."` stays: it is an identifier).
pub fn summarize(sql: &str) -> SqlSummary {
    summarize_dialect(sql, Dialect::Postgres)
}

/// Sanitises MySQL text: like [`summarize`], but `"..."` is a string literal,
/// backslash escapes apply in all strings and `#` starts a comment.
pub fn summarize_mysql(sql: &str) -> SqlSummary {
    summarize_dialect(sql, Dialect::Mysql)
}

/// A lexical unit handed to the analyser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    /// Unquoted identifier or keyword.
    Word(&'a str),
    /// Quoted identifier, quotes included.
    Quoted(&'a str),
    /// A literal (already replaced by `?` in the text).
    Literal,
    /// One ASCII punctuation byte, or a `$n` placeholder as `b'$'`.
    Punct(u8),
}

fn summarize_dialect(sql: &str, dialect: Dialect) -> SqlSummary {
    let mut lexer = Lexer { src: sql, bytes: sql.as_bytes(), pos: 0, dialect };
    let mut out = Output { text: String::with_capacity(sql.len().min(MAX_QUERY_TEXT + 8)), space: false };
    let mut analyzer = Analyzer::default();
    while let Some(step) = lexer.next_token() {
        match step {
            Lexed::Space => out.space = !out.text.is_empty(),
            Lexed::Token(tok, raw) => {
                analyzer.feed(tok);
                match tok {
                    Token::Literal => out.push("?"),
                    _ => out.push(raw),
                }
            }
        }
        // Past the cut nothing more is exported, and the analyser only
        // looks at the statement's head.
        if out.text.len() > MAX_QUERY_TEXT && analyzer.is_done() {
            break;
        }
    }
    let (operation, collection) = analyzer.finish();
    SqlSummary { operation, collection, text: truncate_text(out.text, MAX_QUERY_TEXT) }
}

struct Output {
    text: String,
    /// Whitespace or a comment came since the last token.
    space: bool,
}

impl Output {
    fn push(&mut self, s: &str) {
        if self.text.len() > MAX_QUERY_TEXT {
            return;
        }
        if self.space {
            self.text.push(' ');
            self.space = false;
        }
        self.text.push_str(s);
    }
}

enum Lexed<'a> {
    Space,
    /// The token and the text it contributes (raw source unless a literal).
    Token(Token<'a>, &'a str),
}

struct Lexer<'a> {
    src: &'a str,
    bytes: &'a [u8],
    pos: usize,
    dialect: Dialect,
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_ident_continue(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

impl<'a> Lexer<'a> {
    fn at(&self, i: usize) -> Option<u8> {
        self.bytes.get(i).copied()
    }

    /// The source between two positions that sit on ASCII bytes (or the end).
    fn slice(&self, from: usize, to: usize) -> &'a str {
        self.src.get(from..to).unwrap_or_default()
    }

    fn next_token(&mut self) -> Option<Lexed<'a>> {
        let start = self.pos;
        let b = self.at(start)?;
        let next = self.at(start + 1);
        let pg = self.dialect == Dialect::Postgres;
        if is_space(b) {
            self.pos = self.skip_while(start, is_space);
            return Some(Lexed::Space);
        }
        // MySQL wants whitespace after `--`; without it `--` is two minuses.
        if b == b'-' && next == Some(b'-') && (pg || self.at(start + 2).is_none_or(|c| is_space(c) || c < 0x20)) {
            self.pos = self.line_end(start);
            return Some(Lexed::Space);
        }
        if b == b'#' && !pg {
            self.pos = self.line_end(start);
            return Some(Lexed::Space);
        }
        if b == b'/' && next == Some(b'*') {
            self.pos = self.block_comment_end(start + 2);
            return Some(Lexed::Space);
        }
        let tok = match b {
            b'\'' => {
                self.pos = self.quoted_end(start + 1, b'\'', !pg);
                Token::Literal
            }
            b'"' if pg => {
                self.pos = self.quoted_end(start + 1, b'"', false);
                Token::Quoted(self.slice(start, self.pos))
            }
            b'"' => {
                self.pos = self.quoted_end(start + 1, b'"', true);
                Token::Literal
            }
            b'`' if !pg => {
                self.pos = self.quoted_end(start + 1, b'`', false);
                Token::Quoted(self.slice(start, self.pos))
            }
            b'$' if pg && next.is_some_and(|c| c.is_ascii_digit()) => {
                self.pos = self.skip_while(start + 1, |c| c.is_ascii_digit());
                Token::Punct(b'$')
            }
            b'$' if pg => match self.dollar_quote(start) {
                Some(end) => {
                    self.pos = end;
                    Token::Literal
                }
                None => {
                    self.pos = start + 1;
                    Token::Punct(b'$')
                }
            },
            b'0'..=b'9' => {
                self.pos = self.number_end(start);
                Token::Literal
            }
            b'.' if next.is_some_and(|c| c.is_ascii_digit()) => {
                self.pos = self.number_end(start);
                Token::Literal
            }
            _ if is_ident_start(b) => return Some(self.word(start)),
            _ => {
                self.pos = start + 1;
                Token::Punct(b)
            }
        };
        Some(Lexed::Token(tok, self.slice(start, self.pos)))
    }

    /// An identifier, keyword, or a prefixed string (`E'..'`, `X'..'`,
    /// `B'..'`, `N'..'`, `U&'..'`, MySQL `_charset'..'`).
    fn word(&mut self, start: usize) -> Lexed<'a> {
        let end = self.skip_while(start, is_ident_continue);
        let word = self.slice(start, end);
        let pg = self.dialect == Dialect::Postgres;
        let prefix_string =
            |w: &str| matches!(w, "e" | "E" | "x" | "X" | "b" | "B" | "n" | "N") || (!pg && w.starts_with('_'));
        if self.at(end) == Some(b'\'') && prefix_string(word) {
            let escapes = !pg || word.eq_ignore_ascii_case("e");
            self.pos = self.quoted_end(end + 1, b'\'', escapes);
            return Lexed::Token(Token::Literal, "?");
        }
        if pg && word.eq_ignore_ascii_case("u") && self.at(end) == Some(b'&') {
            match self.at(end + 1) {
                Some(b'\'') => {
                    self.pos = self.quoted_end(end + 2, b'\'', false);
                    return Lexed::Token(Token::Literal, "?");
                }
                Some(b'"') => {
                    self.pos = self.quoted_end(end + 2, b'"', false);
                    return Lexed::Token(Token::Quoted(self.slice(end + 1, self.pos)), self.slice(start, self.pos));
                }
                _ => {}
            }
        }
        self.pos = end;
        Lexed::Token(Token::Word(word), word)
    }

    fn skip_while(&self, mut i: usize, pred: impl Fn(u8) -> bool) -> usize {
        while self.at(i).is_some_and(&pred) {
            i += 1;
        }
        i
    }

    fn line_end(&self, from: usize) -> usize {
        self.skip_while(from, |c| c != b'\n')
    }

    /// End of a block comment whose body starts at `i` (PostgreSQL nests them).
    fn block_comment_end(&self, mut i: usize) -> usize {
        let mut depth = 1u32;
        while let Some(b) = self.at(i) {
            let next = self.at(i + 1);
            if b == b'*' && next == Some(b'/') {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return i;
                }
            } else if b == b'/' && next == Some(b'*') && self.dialect == Dialect::Postgres {
                depth = depth.saturating_add(1);
                i += 2;
            } else {
                i += 1;
            }
        }
        i
    }

    /// Position after the closing `quote` of a quoted run whose body starts
    /// at `i`; a doubled quote is part of the body. Unterminated: the end.
    fn quoted_end(&self, mut i: usize, quote: u8, backslash: bool) -> usize {
        while let Some(b) = self.at(i) {
            if b == quote {
                if self.at(i + 1) == Some(quote) {
                    i += 2;
                    continue;
                }
                return i + 1;
            }
            // Skipping one byte is enough: escapes that matter are ASCII,
            // and a skipped lead byte leaves continuation bytes, never quotes.
            i += if backslash && b == b'\\' { 2 } else { 1 };
        }
        self.bytes.len()
    }

    /// `$tag$...$tag$` starting at `start`: the position after it, or `None`
    /// when the `$` does not open a dollar quote.
    fn dollar_quote(&self, start: usize) -> Option<usize> {
        let tag_end = self.skip_while(start + 1, |c| is_ident_continue(c) && c != b'$');
        if self.at(tag_end) != Some(b'$') || self.at(start + 1).is_some_and(|c| c.is_ascii_digit()) {
            return None;
        }
        let delim = self.slice(start, tag_end + 1);
        let body = self.src.get(tag_end + 1..).unwrap_or_default();
        Some(match body.find(delim) {
            Some(at) => tag_end + 1 + at + delim.len(),
            None => self.bytes.len(),
        })
    }

    /// End of a numeric literal: decimal with fraction and exponent, `0x`,
    /// `0b`, `0o` forms, `_` separators. Trailing letters are swallowed too
    /// so no part of a malformed number leaks as an identifier.
    fn number_end(&self, start: usize) -> usize {
        let digits = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
        if self.at(start) == Some(b'0')
            && self.at(start + 1).is_some_and(|c| matches!(c, b'x' | b'X' | b'b' | b'B' | b'o' | b'O'))
        {
            return self.skip_while(start, digits);
        }
        let mut i = self.skip_while(start, |c| c.is_ascii_digit() || c == b'_');
        if self.at(i) == Some(b'.') {
            i = self.skip_while(i + 1, |c| c.is_ascii_digit() || c == b'_');
        }
        if self.at(i).is_some_and(|c| c == b'e' || c == b'E') {
            let sign = usize::from(self.at(i + 1).is_some_and(|c| c == b'+' || c == b'-'));
            if self.at(i + 1 + sign).is_some_and(|c| c.is_ascii_digit()) {
                i += 1 + sign;
            }
        }
        self.skip_while(i, digits)
    }
}

/// Picks the operation and main table out of the first statement's tokens.
#[derive(Debug, Default)]
struct Analyzer {
    depth: u32,
    /// Paren depth of the statement's verb: `FROM` counts only there.
    base: u32,
    operation: Option<String>,
    state: State,
    /// Parts of the table name read so far, joined by `.`.
    name: String,
    /// The table name, once complete.
    collection: Option<String>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Start,
    /// After `WITH`: the main statement's verb follows the CTEs.
    SeekVerb,
    /// `SELECT`/`DELETE`: the table follows the first `FROM` at the base depth.
    SeekFrom,
    /// `CREATE`/`ALTER`/`DROP`: only `... TABLE name` names a collection.
    SeekTable,
    /// A name part is due; `from` marks a `FROM` list (where `name(` is a
    /// function, not a table), `dotted` that a `.` came just before.
    Name {
        from: bool,
        dotted: bool,
    },
    /// A name part was read; `.` continues it.
    AfterPart {
        from: bool,
    },
    Done,
}

/// Longest collection name kept.
const MAX_COLLECTION: usize = 256;

/// Words that may stand between a verb (or `FROM`) and the table name.
fn is_name_modifier(w: &str) -> bool {
    const WORDS: [&str; 11] =
        ["INTO", "ONLY", "IGNORE", "LOW_PRIORITY", "DELAYED", "HIGH_PRIORITY", "QUICK", "TABLE", "IF", "NOT", "EXISTS"];
    WORDS.iter().any(|k| k.eq_ignore_ascii_case(w))
}

/// Words that may stand between `CREATE`/`ALTER`/`DROP` and `TABLE`.
fn is_table_modifier(w: &str) -> bool {
    const WORDS: [&str; 8] = ["OR", "REPLACE", "TEMP", "TEMPORARY", "UNLOGGED", "GLOBAL", "LOCAL", "FOREIGN"];
    WORDS.iter().any(|k| k.eq_ignore_ascii_case(w))
}

/// The body of a quoted identifier, doubled quotes undone.
fn unquote(raw: &str) -> String {
    let mut chars = raw.chars();
    let Some(q) = chars.next() else {
        return String::new();
    };
    let inner = chars.as_str();
    let inner = inner.strip_suffix(q).unwrap_or(inner);
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == q && chars.peek() == Some(&q) {
            chars.next();
        }
    }
    out
}

impl Analyzer {
    fn is_done(&self) -> bool {
        self.state == State::Done
    }

    fn feed(&mut self, tok: Token<'_>) {
        let at_base = self.depth == self.base;
        match tok {
            Token::Punct(b'(') => self.depth = self.depth.saturating_add(1),
            Token::Punct(b')') => self.depth = self.depth.saturating_sub(1),
            _ => {}
        }
        self.state = match (self.state, tok) {
            (State::Done, _) => State::Done,
            (State::Start, Token::Punct(b'(')) => State::Start,
            (State::Start, Token::Word(w)) => self.verb(w, true),
            (State::Start, _) => State::Done,
            (State::SeekVerb, Token::Word(w)) if at_base && is_dml(w) => self.verb(w, false),
            (State::SeekFrom, Token::Word(w)) if at_base && w.eq_ignore_ascii_case("FROM") => {
                State::Name { from: true, dotted: false }
            }
            (State::SeekVerb | State::SeekFrom, Token::Punct(b';')) if at_base => State::Done,
            (s @ (State::SeekVerb | State::SeekFrom), _) => s,
            (State::SeekTable, Token::Word(w)) if w.eq_ignore_ascii_case("TABLE") => {
                State::Name { from: false, dotted: false }
            }
            (State::SeekTable, Token::Word(w)) if is_table_modifier(w) => State::SeekTable,
            (State::SeekTable, _) => State::Done,
            (State::Name { from, dotted: false }, Token::Word(w)) if is_name_modifier(w) => {
                State::Name { from, dotted: false }
            }
            (State::Name { from, .. }, Token::Word(w)) if from && w.eq_ignore_ascii_case("LATERAL") => State::Done,
            (State::Name { from, .. }, Token::Word(w)) => self.part(w, from),
            (State::Name { from, .. }, Token::Quoted(q)) => self.part(&unquote(q), from),
            (State::Name { .. }, _) => State::Done,
            (State::AfterPart { from }, Token::Punct(b'.')) => {
                self.name.push('.');
                State::Name { from, dotted: true }
            }
            (State::AfterPart { from: true }, Token::Punct(b'(')) => {
                self.name.clear();
                State::Done
            }
            (State::AfterPart { .. }, _) => {
                self.collection = Some(std::mem::take(&mut self.name));
                State::Done
            }
        };
    }

    /// The statement's verb: records it and picks where its table is named.
    fn verb(&mut self, w: &str, first: bool) -> State {
        let valid = !w.is_empty() && w.len() <= 32 && w.bytes().all(|c| c.is_ascii_alphabetic() || c == b'_');
        if !valid {
            return State::Done;
        }
        let up = w.to_ascii_uppercase();
        let next = match up.as_str() {
            "WITH" if first => State::SeekVerb,
            "SELECT" | "DELETE" => State::SeekFrom,
            "INSERT" | "REPLACE" | "UPDATE" | "MERGE" | "TRUNCATE" | "COPY" | "TABLE" => {
                State::Name { from: false, dotted: false }
            }
            "CREATE" | "ALTER" | "DROP" => State::SeekTable,
            _ => State::Done,
        };
        self.base = self.depth;
        self.operation = Some(up);
        next
    }

    fn part(&mut self, w: &str, from: bool) -> State {
        if self.name.len() + w.len() > MAX_COLLECTION {
            self.name.clear();
            return State::Done;
        }
        self.name.push_str(w);
        State::AfterPart { from }
    }

    fn finish(self) -> (Option<String>, Option<String>) {
        let collection = match self.state {
            State::AfterPart { .. } => Some(self.name),
            _ => self.collection,
        };
        (self.operation, collection.filter(|c| !c.is_empty()))
    }
}

/// Verbs that may follow a `WITH` clause.
fn is_dml(w: &str) -> bool {
    ["SELECT", "INSERT", "UPDATE", "DELETE", "MERGE"].iter().any(|k| k.eq_ignore_ascii_case(w))
}

#[cfg(test)]
#[path = "sql_tests.rs"]
mod tests;
