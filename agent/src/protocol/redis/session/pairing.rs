//! Pairing commands with replies: the FIFO, what a reply does to the
//! connection's state (database, user, Pub/Sub, MONITOR), and the
//! exchanges that come out.

use std::collections::VecDeque;

use super::super::command::{Action, ReplyMode};
use super::super::reply::{Reply, ReplySink};
use super::super::request::Done;
use super::super::table::PubKind;
use crate::protocol::db::{DbError, DbEvent, DbExchange, DbFailure, MAX_ERROR_MESSAGE, MAX_IN_FLIGHT, truncate_text};
use crate::protocol::http1::Ts;

/// Longest error code kept (`WRONGTYPE`, `NOSCRIPT`...).
const MAX_ERROR_CODE: usize = 64;

/// A command read, waiting for its reply.
#[derive(Debug)]
pub(in super::super) struct Pending {
    seq: u64,
    operation: Option<String>,
    query_text: Option<String>,
    action: Action,
    first: Ts,
    last: Ts,
    truncated: bool,
    expects_reply: bool,
}

/// How an exchange ends.
#[derive(Default)]
struct Outcome<'a> {
    reply: Option<&'a Reply>,
    /// First reply byte when the reply itself is incomplete.
    partial_first: Option<Ts>,
    failure: Option<DbFailure>,
    closed_ns: Option<u64>,
    /// The reply is a Pub/Sub confirmation: no rows.
    pubsub: bool,
}

/// The connection's pairing state; receives both parsers' output.
#[derive(Debug)]
pub(in super::super) struct Core {
    events: Vec<DbEvent>,
    pending: VecDeque<Pending>,
    /// Number of the next command to start.
    pub(in super::super) next_seq: u64,
    /// The command being read: its number and first syscall.
    reading: Option<(u64, Ts)>,
    /// Commands numbered below this lost their replies to a server gap.
    reply_lost_before: u64,
    /// Evicted commands whose replies are still to come (and be skipped).
    evicted: u64,
    db: Option<String>,
    user: Option<String>,
    reply_mode: ReplyMode,
    /// RESP2 subscribed mode, as the confirmations tell.
    subscribed: bool,
    /// Joined mid-stream and not yet shown to be outside subscribed mode.
    maybe_subscribed: bool,
    /// A RESP3 push was seen: Pub/Sub traffic comes as pushes, arrays are replies.
    pushes: bool,
    monitor: bool,
    /// Confirmations still due for the last (un)subscription answered.
    swallow: Option<(PubKind, u64)>,
    /// A reply has been paired with a command: this is Redis.
    pub(in super::super) confirmed: bool,
    /// A replica's `PSYNC` was read: the rest is no client conversation.
    pub(in super::super) replication: bool,
}

impl Core {
    pub(in super::super) fn new(mid_stream: bool) -> Core {
        Core {
            events: Vec::new(),
            pending: VecDeque::new(),
            next_seq: 0,
            reading: None,
            reply_lost_before: 0,
            evicted: 0,
            db: (!mid_stream).then(|| "0".to_owned()),
            user: None,
            reply_mode: ReplyMode::On,
            subscribed: false,
            maybe_subscribed: mid_stream,
            pushes: false,
            monitor: false,
            swallow: None,
            confirmed: false,
            replication: false,
        }
    }

    pub(in super::super) fn take_events(&mut self) -> Vec<DbEvent> {
        std::mem::take(&mut self.events)
    }

    pub(in super::super) fn start(&mut self, first: Ts) {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.saturating_add(1);
        self.reading = Some((seq, first));
        self.events.push(DbEvent::Started { seq, first });
    }

    fn pending_of(&mut self, done: Done) -> Pending {
        let (seq, first) = self.reading.take().unwrap_or_else(|| {
            // Every command is started before it completes; should one not
            // be, it still gets its Started first.
            self.start(done.last);
            self.reading.take().unwrap_or((0, done.last))
        });
        let command = done.command;
        self.replication |= command.action == Action::Replication;
        let lost = seq < self.reply_lost_before;
        let expects_reply = expects_reply(&mut self.reply_mode, &command.action) && !lost;
        Pending {
            seq,
            operation: command.operation,
            query_text: command.query_text,
            action: command.action,
            first,
            last: done.last,
            truncated: command.truncated || lost,
            expects_reply,
        }
    }

    pub(in super::super) fn finish_command(&mut self, done: Done) {
        let pending = self.pending_of(done);
        if self.pending.len() >= MAX_IN_FLIGHT
            && let Some(oldest) = self.pending.pop_front()
        {
            // Its reply, when it comes, belongs to no exchange.
            self.evicted = self.evicted.saturating_add(1);
            self.emit(oldest, Outcome { failure: Some(DbFailure::Truncated), ..Outcome::default() });
        }
        self.pending.push_back(pending);
        self.drain();
    }

    /// Emits the commands at the head that get no reply.
    fn drain(&mut self) {
        while self.pending.front().is_some_and(|p| !p.expects_reply) {
            if let Some(p) = self.pending.pop_front() {
                self.emit(p, Outcome::default());
            }
        }
    }

    /// The replies in flight were lost (server gap or error): every waiting
    /// command ends truncated, and so will the one being read.
    pub(in super::super) fn lose_replies(&mut self, first: Option<Ts>) {
        self.reply_lost_before = self.next_seq;
        self.evicted = 0;
        self.swallow = None;
        let mut first = first;
        while let Some(p) = self.pending.pop_front() {
            let outcome =
                Outcome { partial_first: first.take(), failure: Some(DbFailure::Truncated), ..Outcome::default() };
            self.emit(p, outcome);
        }
    }

    /// Ends every command still open: those waiting (the first with the
    /// reply begun at `first`, if any), then the one being read.
    pub(in super::super) fn close(
        &mut self,
        first: Option<Ts>,
        partial: Option<Done>,
        failure: DbFailure,
        closed_ns: Option<u64>,
    ) {
        let mut first = first;
        while let Some(p) = self.pending.pop_front() {
            let outcome =
                Outcome { partial_first: first.take(), failure: Some(failure), closed_ns, ..Outcome::default() };
            self.emit(p, outcome);
        }
        if let Some(done) = partial {
            let p = self.pending_of(done);
            self.emit(p, Outcome { failure: Some(failure), closed_ns, ..Outcome::default() });
        }
        self.reading = None;
    }

    fn emit(&mut self, p: Pending, outcome: Outcome) {
        let reply = outcome.reply;
        let error = reply.and_then(error_of);
        if reply.is_some() && error.is_none() {
            self.apply(&p);
        }
        let rows = match reply {
            Some(r) if !outcome.pubsub && matches!(r.kind, b'*' | b'~' | b'%') => r.count,
            _ => None,
        };
        let hidden = reply.is_some_and(|r| r.hidden);
        let failure = outcome.failure.or((p.truncated || hidden).then_some(DbFailure::Truncated));
        self.events.push(DbEvent::Exchange(DbExchange {
            seq: p.seq,
            operation: p.operation,
            collection: None,
            query_text: p.query_text,
            namespace: self.db.clone(),
            user: self.user.clone(),
            rows,
            error,
            failure,
            batch_size: 1,
            request_first: p.first,
            request_last: p.last,
            response_first: reply.map(|r| r.first).or(outcome.partial_first),
            response_last: reply.map(|r| r.last),
            closed_ns: outcome.closed_ns,
        }));
    }

    /// What a successful reply to `p` changes.
    fn apply(&mut self, p: &Pending) {
        match &p.action {
            Action::Select(Some(db)) => self.db = Some(db.to_string()),
            Action::Auth(Some(user)) => self.user = Some(user.clone()),
            Action::Monitor => self.monitor = true,
            Action::Reset => {
                self.db = Some("0".to_owned());
                self.user = None;
                self.subscribed = false;
                self.monitor = false;
                self.swallow = None;
            }
            _ => {}
        }
        // A RESP2 connection answers other commands only when not subscribed.
        if !allowed_subscribed(&p.action, p.operation.as_deref()) {
            self.maybe_subscribed = false;
        }
    }

    /// A Pub/Sub confirmation of `kind`: the reply of the matching command
    /// at the head of the queue, or one more for a command already answered.
    fn confirmation(&mut self, kind: PubKind, reply: &Reply) {
        if kind.subscribes() {
            self.subscribed = true;
        } else if reply.last_int == Some(0) {
            self.subscribed = false;
        }
        if let Some((swallowed, left)) = self.swallow.as_mut()
            && *swallowed == kind
            && *left > 0
        {
            *left -= 1;
            return;
        }
        if self.evicted > 0 || self.pending.front().and_then(pub_kind) != Some(kind) {
            return;
        }
        if let Some(p) = self.pending.pop_front() {
            let channels = match p.action {
                Action::Pub { channels, .. } => channels,
                _ => 0,
            };
            self.swallow = Some((kind, channels.saturating_sub(1)));
            self.confirmed = true;
            self.emit(p, Outcome { reply: Some(reply), pubsub: true, ..Outcome::default() });
            self.drain();
        }
    }

    /// Whether `reply` is Pub/Sub traffic rather than a command's reply:
    /// returns the confirmation kind, or `Some(None)` for a message.
    fn pubsub(&self, reply: &Reply) -> Option<Option<PubKind>> {
        let kind = PubKind::from_reply(&reply.head);
        if reply.kind == b'>' {
            return Some(kind);
        }
        if reply.kind != b'*' || self.pushes {
            return None;
        }
        let context = self.subscribed || self.maybe_subscribed;
        match (reply.head.as_slice(), reply.count) {
            (b"message" | b"smessage", Some(3)) | (b"pmessage", Some(4)) if context => Some(None),
            (_, Some(3)) if kind.is_some() && (context || self.pending.front().and_then(pub_kind) == kind) => {
                Some(kind)
            }
            _ => None,
        }
    }
}

impl ReplySink for Core {
    fn reply(&mut self, reply: &Reply) {
        if reply.kind == b'>' {
            self.pushes = true;
        }
        match self.pubsub(reply) {
            Some(Some(kind)) => return self.confirmation(kind, reply),
            Some(None) => return,
            None => {}
        }
        if self.monitor && reply.kind == b'+' && reply.text.first().is_some_and(u8::is_ascii_digit) {
            // A MONITOR feed line (`+1712345678.123456 [0 ...] "get" "k"`).
            return;
        }
        if self.evicted > 0 {
            self.evicted -= 1;
            return;
        }
        // With nothing waiting, the reply's command was not seen (mid-stream
        // start, lost client bytes): no exchange.
        let Some(p) = self.pending.pop_front() else { return };
        self.confirmed = true;
        self.emit(p, Outcome { reply: Some(reply), ..Outcome::default() });
        self.drain();
    }
}

/// The error a reply carries: the first word is the code.
fn error_of(reply: &Reply) -> Option<DbError> {
    if !matches!(reply.kind, b'-' | b'!') {
        return None;
    }
    let text = reply.text.as_slice();
    let (code, message) = match text.iter().position(|&b| b == b' ') {
        Some(at) => (text.get(..at).unwrap_or(text), text.get(at + 1..).unwrap_or_default()),
        None => (text, &[][..]),
    };
    Some(DbError {
        code: truncate_text(String::from_utf8_lossy(code).into_owned(), MAX_ERROR_CODE),
        message: truncate_text(String::from_utf8_lossy(message).into_owned(), MAX_ERROR_MESSAGE),
    })
}

/// Whether a command's reply is expected, given `CLIENT REPLY` so far.
fn expects_reply(mode: &mut ReplyMode, action: &Action) -> bool {
    match action {
        // ON is answered; OFF and SKIP are not.
        Action::ClientReply(Some(ReplyMode::On)) => {
            *mode = ReplyMode::On;
            true
        }
        Action::ClientReply(Some(ReplyMode::Off)) => {
            *mode = ReplyMode::Off;
            false
        }
        Action::ClientReply(Some(ReplyMode::Skip)) => {
            if *mode == ReplyMode::On {
                *mode = ReplyMode::Skip;
            }
            false
        }
        // The replication stream that answers is not followed.
        Action::Replication => false,
        // RESET turns replies back on before answering.
        Action::Reset => {
            *mode = ReplyMode::On;
            true
        }
        _ => match *mode {
            ReplyMode::On => true,
            ReplyMode::Off => false,
            ReplyMode::Skip => {
                *mode = ReplyMode::On;
                false
            }
        },
    }
}

/// The Pub/Sub kind a pending command waits confirmation for.
fn pub_kind(pending: &Pending) -> Option<PubKind> {
    match pending.action {
        Action::Pub { kind, .. } => Some(kind),
        _ => None,
    }
}

/// Commands Redis accepts while a RESP2 connection is subscribed.
fn allowed_subscribed(action: &Action, operation: Option<&str>) -> bool {
    matches!(action, Action::Pub { .. } | Action::Reset) || matches!(operation, Some("PING" | "QUIT"))
}
