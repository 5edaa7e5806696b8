//! One command as its arguments arrive: the operation name, the sanitised
//! query text, and the few arguments the session acts on. Arguments are
//! handed over one at a time, cut to what [`Command::capture_limit`] asked
//! for, so a masked argument (a value, a password) is never copied at all.

use super::table::{self, PubKind, Shape, Special};
use crate::protocol::db::{MAX_QUERY_TEXT, truncate_text};

/// Longest command or subcommand name taken as one; longer is not a name.
const MAX_NAME: usize = 32;
/// Longest username kept from `AUTH` / `HELLO AUTH`.
const MAX_USER: usize = 256;
/// Bytes enough for a number argument (`SELECT`, `EVAL`'s numkeys) or a
/// keyword (`ON`, `AUTH`, `SETNAME`).
const MAX_WORD: usize = 20;

/// `CLIENT REPLY` modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReplyMode {
    On,
    Off,
    Skip,
}

/// What the session must know about a command beyond its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Action {
    None,
    /// `SELECT n`, with `n` when it is a valid index.
    Select(Option<u32>),
    /// `AUTH` or `HELLO .. AUTH`: the user it logs in as, when known.
    Auth(Option<String>),
    /// A Pub/Sub (un)subscription naming `channels` channels.
    Pub {
        kind: PubKind,
        channels: u64,
    },
    Monitor,
    Reset,
    /// `CLIENT REPLY` with its mode, when valid.
    ClientReply(Option<ReplyMode>),
    /// `PSYNC` / `SYNC`: what follows is an RDB file and a command stream.
    Replication,
}

/// A command read whole (or as whole as the capture allowed).
#[derive(Debug)]
pub(super) struct Finished {
    pub operation: Option<String>,
    pub query_text: Option<String>,
    pub action: Action,
    /// A gap hid bytes the command's text or action needed.
    pub truncated: bool,
}

/// What becomes of one argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Name,
    Sub,
    Keep,
    Mask,
    /// Not shown, not even as `?` (the tail of a collapsed `AUTH ?`).
    Hidden,
    /// The first argument of a collapsed list: shown as one `?`.
    FirstHidden,
    Numkeys,
    Db,
    Mode,
    /// `AUTH user pass` / `HELLO .. AUTH user pass`: the user, shown as `?`.
    User,
    /// A `HELLO` option keyword, shown as `?`.
    HelloWord,
}

/// Where `HELLO`'s option parsing stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hello {
    Option,
    User,
    Password,
    Name,
}

/// A command being read.
#[derive(Debug)]
pub(super) struct Command {
    argc: u64,
    /// Arguments before the operands: the name, and a container's subcommand.
    lead: u64,
    shape: Shape,
    special: Special,
    named: bool,
    operation: Option<String>,
    text: String,
    numkeys: u64,
    hello: Hello,
    action: Action,
    truncated: bool,
}

impl Command {
    /// A command of `argc` arguments, its name included.
    pub(super) fn new(argc: u64) -> Command {
        Command {
            argc,
            lead: 1,
            shape: Shape::Masked,
            special: Special::None,
            named: false,
            operation: None,
            text: String::new(),
            numkeys: 0,
            hello: Hello::Option,
            action: Action::None,
            truncated: false,
        }
    }

    fn role(&self, index: u64) -> Role {
        if index == 0 {
            return Role::Name;
        }
        if index == 1 && self.special == Special::Container && self.named {
            return Role::Sub;
        }
        let j = index.saturating_sub(self.lead);
        let operands = self.argc.saturating_sub(self.lead);
        match self.shape {
            Shape::Masked => Role::Mask,
            Shape::Key1 if j == 0 => Role::Keep,
            Shape::Key2 if j < 2 => Role::Keep,
            Shape::Key1 | Shape::Key2 => Role::Mask,
            Shape::AllKeys => Role::Keep,
            Shape::KeysThenOne if j + 1 < operands => Role::Keep,
            Shape::KeysThenOne => Role::Mask,
            Shape::KeyValue | Shape::NameValue if j.is_multiple_of(2) => Role::Keep,
            Shape::KeyValue | Shape::NameValue => Role::Mask,
            Shape::Script | Shape::Function => match j {
                0 if self.shape == Shape::Function => Role::Keep,
                0 => Role::Mask,
                1 => Role::Numkeys,
                _ if j - 2 < self.numkeys => Role::Keep,
                _ => Role::Mask,
            },
            Shape::Plain => match (self.special, j) {
                (Special::Select, 0) => Role::Db,
                (Special::ClientReply, 0) => Role::Mode,
                _ => Role::Keep,
            },
            Shape::Secret => match j {
                0 if self.special == Special::Auth && operands == 2 => Role::User,
                0 => Role::FirstHidden,
                _ => Role::Hidden,
            },
            Shape::Hello => match (j, self.hello) {
                (0, _) => Role::Keep,
                (_, Hello::Option) => Role::HelloWord,
                (_, Hello::User) => Role::User,
                (_, Hello::Password) => Role::Mask,
                (_, Hello::Name) => Role::Mask,
            },
        }
    }

    /// How many leading bytes of argument `index` the command needs; the
    /// rest need not be copied.
    pub(super) fn capture_limit(&self, index: u64) -> usize {
        match self.role(index) {
            Role::Name | Role::Sub => MAX_NAME + 1,
            Role::Keep => MAX_QUERY_TEXT.saturating_sub(self.text.len()).saturating_add(1),
            Role::Numkeys | Role::Db | Role::Mode | Role::HelloWord => MAX_WORD,
            Role::User => MAX_USER + 1,
            Role::Mask | Role::Hidden | Role::FirstHidden => 0,
        }
    }

    /// Argument `index`, of which `bytes` (at most the capture limit) were
    /// kept out of `len`; `hidden` when a gap hid some of the kept part.
    pub(super) fn push_arg(&mut self, index: u64, bytes: &[u8], len: u64, hidden: bool) {
        let role = self.role(index);
        let whole = !hidden && bytes.len() as u64 == len;
        if hidden && self.capture_limit(index) > 0 {
            self.truncated = true;
        }
        match role {
            Role::Name => self.set_name(bytes, whole),
            Role::Sub => self.set_sub(bytes, whole),
            Role::Keep => {
                let shown = String::from_utf8_lossy(bytes);
                self.push_text(&shown);
            }
            Role::Mask | Role::HelloWord | Role::FirstHidden => self.push_text("?"),
            Role::Hidden => {}
            Role::Numkeys => {
                let n = whole.then(|| parse_u64(bytes)).flatten();
                self.numkeys = n.unwrap_or(0);
                match n {
                    Some(n) => self.push_text(&n.to_string()),
                    None => self.push_text("?"),
                }
            }
            Role::Db => {
                let db = whole.then(|| parse_u64(bytes)).flatten().and_then(|n| u32::try_from(n).ok());
                self.action = Action::Select(db);
                match db {
                    Some(db) => self.push_text(&db.to_string()),
                    None => self.push_text("?"),
                }
            }
            Role::Mode => {
                let mode = match upper_word(bytes, whole).as_deref() {
                    Some("ON") => Some(ReplyMode::On),
                    Some("OFF") => Some(ReplyMode::Off),
                    Some("SKIP") => Some(ReplyMode::Skip),
                    _ => None,
                };
                self.action = Action::ClientReply(mode);
                self.push_text(match mode {
                    Some(ReplyMode::On) => "ON",
                    Some(ReplyMode::Off) => "OFF",
                    Some(ReplyMode::Skip) => "SKIP",
                    None => "?",
                });
            }
            Role::User => {
                let user = (whole && bytes.len() <= MAX_USER).then(|| String::from_utf8_lossy(bytes).into_owned());
                self.action = Action::Auth(user);
                self.push_text("?");
            }
        }
        if self.shape == Shape::Hello && index > self.lead {
            self.hello = match (self.hello, role) {
                (Hello::Option, _) => match upper_word(bytes, whole).as_deref() {
                    Some("AUTH") => Hello::User,
                    Some("SETNAME") => Hello::Name,
                    _ => Hello::Option,
                },
                (Hello::User, _) => Hello::Password,
                (Hello::Password | Hello::Name, _) => Hello::Option,
            };
        }
    }

    fn set_name(&mut self, bytes: &[u8], whole: bool) {
        let Some(name) = upper_word(bytes, whole).filter(|n| is_name(n)) else {
            // Not a command name (binary, too long, hidden by a gap): nothing
            // of it is shown, and its arguments are masked.
            return;
        };
        self.named = true;
        let (shape, special) = table::lookup(&name).unwrap_or((Shape::Masked, Special::None));
        self.shape = shape;
        self.special = special;
        if special == Special::Container && self.argc > 1 {
            self.lead = 2;
        }
        self.action = match special {
            Special::Select => Action::Select(None),
            // `AUTH password` logs in as the default user.
            Special::Auth if self.argc == 2 => Action::Auth(Some("default".to_owned())),
            Special::Pub(kind) => Action::Pub { kind, channels: self.argc.saturating_sub(1) },
            Special::Monitor => Action::Monitor,
            Special::Reset => Action::Reset,
            Special::Replication => Action::Replication,
            _ => Action::None,
        };
        self.text.push_str(&name);
        self.operation = Some(name);
    }

    fn set_sub(&mut self, bytes: &[u8], whole: bool) {
        let container = self.operation.clone().unwrap_or_default();
        match upper_word(bytes, whole).filter(|s| is_name(s)) {
            Some(sub) => {
                let (shape, special) = table::lookup_sub(&container, &sub);
                self.shape = shape;
                self.special = special;
                self.push_text(&sub);
                self.operation = Some(format!("{container} {sub}"));
            }
            None => {
                self.shape = Shape::Masked;
                self.special = Special::None;
                self.push_text("?");
            }
        }
    }

    fn push_text(&mut self, piece: &str) {
        // Past the limit the text is cut anyway; stop growing it.
        if self.text.len() <= MAX_QUERY_TEXT {
            self.text.push(' ');
            self.text.push_str(piece);
        }
    }

    /// Marks the command as cut short by a gap or a protocol error.
    pub(super) fn set_truncated(&mut self) {
        self.truncated = true;
    }

    /// The command's exported form.
    pub(super) fn finish(self) -> Finished {
        let named = self.named;
        Finished {
            operation: self.operation,
            query_text: named.then(|| truncate_text(self.text, MAX_QUERY_TEXT)),
            action: self.action,
            truncated: self.truncated,
        }
    }
}

/// `bytes` upper-cased as a word, if it is whole and short enough.
fn upper_word(bytes: &[u8], whole: bool) -> Option<String> {
    if !whole || bytes.is_empty() || bytes.len() > MAX_NAME {
        return None;
    }
    let word = std::str::from_utf8(bytes).ok()?;
    Some(word.to_ascii_uppercase())
}

/// Command names: a letter, then letters, digits and the separators module
/// commands use (`JSON.SET`, `FT._LIST`, `ACL|LOG`-style).
fn is_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'|'))
}

fn parse_u64(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || bytes.len() > 19 {
        return None;
    }
    bytes.iter().try_fold(0u64, |n, &b| {
        let digit = b.checked_sub(b'0').filter(|d| *d < 10)?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}
