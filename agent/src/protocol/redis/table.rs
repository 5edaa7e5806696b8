//! Which arguments of which command are shown: a static table of the
//! commands kspan knows, sorted for binary search. A command not in it
//! keeps its name and has every argument masked.

/// How a command's arguments (after the name, and the subcommand of a
/// container command) appear in the query text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    /// Every argument `?`: values, patterns, unknown commands.
    Masked,
    /// The first argument is a key, the rest `?`.
    Key1,
    /// The first two arguments are keys (`RENAME src dst`).
    Key2,
    /// Every argument is a key or a channel (`MGET`, `DEL`, `SUBSCRIBE`).
    AllKeys,
    /// Keys then one last `?` (`BLPOP k1 k2 timeout`).
    KeysThenOne,
    /// Alternating keys and values (`MSET k1 ? k2 ?`).
    KeyValue,
    /// Alternating server-defined names and values (`CONFIG SET name ?`).
    NameValue,
    /// `EVAL script numkeys key.. arg..`: script and args `?`, numkeys and keys kept.
    Script,
    /// `FCALL function numkeys key.. arg..`: the function name kept too.
    Function,
    /// Every argument kept: numbers and names the server defines
    /// (`SELECT 1`, `INFO memory`, `CONFIG GET maxmemory`).
    Plain,
    /// Credentials: the whole argument list is one `?` (`AUTH ?`).
    Secret,
    /// `HELLO protover [AUTH user pass] [SETNAME name]`: protover kept.
    Hello,
}

/// A Pub/Sub command, also the kind of its confirmations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PubKind {
    Subscribe,
    Psubscribe,
    Ssubscribe,
    Unsubscribe,
    Punsubscribe,
    Sunsubscribe,
}

impl PubKind {
    /// The kind named by the first element of a confirmation.
    pub(super) fn from_reply(word: &[u8]) -> Option<PubKind> {
        Some(match word {
            b"subscribe" => PubKind::Subscribe,
            b"psubscribe" => PubKind::Psubscribe,
            b"ssubscribe" => PubKind::Ssubscribe,
            b"unsubscribe" => PubKind::Unsubscribe,
            b"punsubscribe" => PubKind::Punsubscribe,
            b"sunsubscribe" => PubKind::Sunsubscribe,
            _ => return None,
        })
    }

    /// Whether confirmations of this kind leave the connection subscribed.
    pub(super) fn subscribes(self) -> bool {
        matches!(self, PubKind::Subscribe | PubKind::Psubscribe | PubKind::Ssubscribe)
    }
}

/// Commands whose reply or arguments change the session's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Special {
    None,
    /// The name is followed by a subcommand (`CONFIG GET`).
    Container,
    Select,
    Auth,
    Hello,
    Pub(PubKind),
    Monitor,
    Reset,
    /// `CLIENT REPLY ON|OFF|SKIP`.
    ClientReply,
    /// `PSYNC` / `SYNC`: the connection becomes a replication stream.
    Replication,
}

/// Known commands by upper-case name, sorted.
pub(super) static COMMANDS: &[(&str, Shape, Special)] = &[
    ("ACL", Shape::Masked, Special::Container),
    ("APPEND", Shape::Key1, Special::None),
    ("AUTH", Shape::Secret, Special::Auth),
    ("BGREWRITEAOF", Shape::Plain, Special::None),
    ("BGSAVE", Shape::Plain, Special::None),
    ("BITCOUNT", Shape::Key1, Special::None),
    ("BITFIELD", Shape::Key1, Special::None),
    ("BITFIELD_RO", Shape::Key1, Special::None),
    ("BITPOS", Shape::Key1, Special::None),
    ("BLMOVE", Shape::Key2, Special::None),
    ("BLPOP", Shape::KeysThenOne, Special::None),
    ("BRPOP", Shape::KeysThenOne, Special::None),
    ("BRPOPLPUSH", Shape::Key2, Special::None),
    ("BZPOPMAX", Shape::KeysThenOne, Special::None),
    ("BZPOPMIN", Shape::KeysThenOne, Special::None),
    ("CLIENT", Shape::Masked, Special::Container),
    ("CLUSTER", Shape::Masked, Special::Container),
    ("COMMAND", Shape::Masked, Special::Container),
    ("CONFIG", Shape::Masked, Special::Container),
    ("COPY", Shape::Key2, Special::None),
    ("DBSIZE", Shape::Plain, Special::None),
    ("DEBUG", Shape::Masked, Special::Container),
    ("DECR", Shape::Key1, Special::None),
    ("DECRBY", Shape::Key1, Special::None),
    ("DEL", Shape::AllKeys, Special::None),
    ("DISCARD", Shape::Plain, Special::None),
    ("DUMP", Shape::Key1, Special::None),
    ("ECHO", Shape::Masked, Special::None),
    ("EVAL", Shape::Script, Special::None),
    ("EVALSHA", Shape::Script, Special::None),
    ("EVALSHA_RO", Shape::Script, Special::None),
    ("EVAL_RO", Shape::Script, Special::None),
    ("EXEC", Shape::Plain, Special::None),
    ("EXISTS", Shape::AllKeys, Special::None),
    ("EXPIRE", Shape::Key1, Special::None),
    ("EXPIREAT", Shape::Key1, Special::None),
    ("EXPIRETIME", Shape::Key1, Special::None),
    ("FAILOVER", Shape::Masked, Special::None),
    ("FCALL", Shape::Function, Special::None),
    ("FCALL_RO", Shape::Function, Special::None),
    ("FLUSHALL", Shape::Plain, Special::None),
    ("FLUSHDB", Shape::Plain, Special::None),
    ("FUNCTION", Shape::Masked, Special::Container),
    ("GEOADD", Shape::Key1, Special::None),
    ("GEODIST", Shape::Key1, Special::None),
    ("GEOHASH", Shape::Key1, Special::None),
    ("GEOPOS", Shape::Key1, Special::None),
    ("GEORADIUS", Shape::Key1, Special::None),
    ("GEORADIUSBYMEMBER", Shape::Key1, Special::None),
    ("GEORADIUSBYMEMBER_RO", Shape::Key1, Special::None),
    ("GEORADIUS_RO", Shape::Key1, Special::None),
    ("GEOSEARCH", Shape::Key1, Special::None),
    ("GEOSEARCHSTORE", Shape::Key2, Special::None),
    ("GET", Shape::Key1, Special::None),
    ("GETBIT", Shape::Key1, Special::None),
    ("GETDEL", Shape::Key1, Special::None),
    ("GETEX", Shape::Key1, Special::None),
    ("GETRANGE", Shape::Key1, Special::None),
    ("GETSET", Shape::Key1, Special::None),
    ("HDEL", Shape::Key1, Special::None),
    ("HELLO", Shape::Hello, Special::Hello),
    ("HEXISTS", Shape::Key1, Special::None),
    ("HEXPIRE", Shape::Key1, Special::None),
    ("HEXPIREAT", Shape::Key1, Special::None),
    ("HEXPIRETIME", Shape::Key1, Special::None),
    ("HGET", Shape::Key1, Special::None),
    ("HGETALL", Shape::Key1, Special::None),
    ("HGETDEL", Shape::Key1, Special::None),
    ("HGETEX", Shape::Key1, Special::None),
    ("HINCRBY", Shape::Key1, Special::None),
    ("HINCRBYFLOAT", Shape::Key1, Special::None),
    ("HKEYS", Shape::Key1, Special::None),
    ("HLEN", Shape::Key1, Special::None),
    ("HMGET", Shape::Key1, Special::None),
    ("HMSET", Shape::Key1, Special::None),
    ("HPERSIST", Shape::Key1, Special::None),
    ("HPEXPIRE", Shape::Key1, Special::None),
    ("HPEXPIREAT", Shape::Key1, Special::None),
    ("HPEXPIRETIME", Shape::Key1, Special::None),
    ("HPTTL", Shape::Key1, Special::None),
    ("HRANDFIELD", Shape::Key1, Special::None),
    ("HSCAN", Shape::Key1, Special::None),
    ("HSET", Shape::Key1, Special::None),
    ("HSETEX", Shape::Key1, Special::None),
    ("HSETNX", Shape::Key1, Special::None),
    ("HSTRLEN", Shape::Key1, Special::None),
    ("HTTL", Shape::Key1, Special::None),
    ("HVALS", Shape::Key1, Special::None),
    ("INCR", Shape::Key1, Special::None),
    ("INCRBY", Shape::Key1, Special::None),
    ("INCRBYFLOAT", Shape::Key1, Special::None),
    ("INFO", Shape::Plain, Special::None),
    ("KEYS", Shape::Masked, Special::None),
    ("LASTSAVE", Shape::Plain, Special::None),
    ("LATENCY", Shape::Masked, Special::Container),
    ("LCS", Shape::Key2, Special::None),
    ("LINDEX", Shape::Key1, Special::None),
    ("LINSERT", Shape::Key1, Special::None),
    ("LLEN", Shape::Key1, Special::None),
    ("LMOVE", Shape::Key2, Special::None),
    ("LPOP", Shape::Key1, Special::None),
    ("LPOS", Shape::Key1, Special::None),
    ("LPUSH", Shape::Key1, Special::None),
    ("LPUSHX", Shape::Key1, Special::None),
    ("LRANGE", Shape::Key1, Special::None),
    ("LREM", Shape::Key1, Special::None),
    ("LSET", Shape::Key1, Special::None),
    ("LTRIM", Shape::Key1, Special::None),
    ("MEMORY", Shape::Masked, Special::Container),
    ("MGET", Shape::AllKeys, Special::None),
    ("MIGRATE", Shape::Masked, Special::None),
    ("MODULE", Shape::Masked, Special::Container),
    ("MONITOR", Shape::Plain, Special::Monitor),
    ("MOVE", Shape::Key1, Special::None),
    ("MSET", Shape::KeyValue, Special::None),
    ("MSETNX", Shape::KeyValue, Special::None),
    ("MULTI", Shape::Plain, Special::None),
    ("OBJECT", Shape::Masked, Special::Container),
    ("PERSIST", Shape::Key1, Special::None),
    ("PEXPIRE", Shape::Key1, Special::None),
    ("PEXPIREAT", Shape::Key1, Special::None),
    ("PEXPIRETIME", Shape::Key1, Special::None),
    ("PFADD", Shape::Key1, Special::None),
    ("PFCOUNT", Shape::AllKeys, Special::None),
    ("PFMERGE", Shape::AllKeys, Special::None),
    ("PING", Shape::Plain, Special::None),
    ("PSETEX", Shape::Key1, Special::None),
    ("PSUBSCRIBE", Shape::AllKeys, Special::Pub(PubKind::Psubscribe)),
    ("PSYNC", Shape::Masked, Special::Replication),
    ("PTTL", Shape::Key1, Special::None),
    ("PUBLISH", Shape::Key1, Special::None),
    ("PUBSUB", Shape::Masked, Special::Container),
    ("PUNSUBSCRIBE", Shape::AllKeys, Special::Pub(PubKind::Punsubscribe)),
    ("QUIT", Shape::Plain, Special::None),
    ("RANDOMKEY", Shape::Plain, Special::None),
    ("READONLY", Shape::Plain, Special::None),
    ("READWRITE", Shape::Plain, Special::None),
    ("RENAME", Shape::Key2, Special::None),
    ("RENAMENX", Shape::Key2, Special::None),
    ("REPLICAOF", Shape::Masked, Special::None),
    ("RESET", Shape::Plain, Special::Reset),
    ("RESTORE", Shape::Key1, Special::None),
    ("ROLE", Shape::Plain, Special::None),
    ("RPOP", Shape::Key1, Special::None),
    ("RPOPLPUSH", Shape::Key2, Special::None),
    ("RPUSH", Shape::Key1, Special::None),
    ("RPUSHX", Shape::Key1, Special::None),
    ("SADD", Shape::Key1, Special::None),
    ("SAVE", Shape::Plain, Special::None),
    ("SCAN", Shape::Masked, Special::None),
    ("SCARD", Shape::Key1, Special::None),
    ("SCRIPT", Shape::Masked, Special::Container),
    ("SDIFF", Shape::AllKeys, Special::None),
    ("SDIFFSTORE", Shape::AllKeys, Special::None),
    ("SELECT", Shape::Plain, Special::Select),
    ("SET", Shape::Key1, Special::None),
    ("SETBIT", Shape::Key1, Special::None),
    ("SETEX", Shape::Key1, Special::None),
    ("SETNX", Shape::Key1, Special::None),
    ("SETRANGE", Shape::Key1, Special::None),
    ("SHUTDOWN", Shape::Masked, Special::None),
    ("SINTER", Shape::AllKeys, Special::None),
    ("SINTERSTORE", Shape::AllKeys, Special::None),
    ("SISMEMBER", Shape::Key1, Special::None),
    ("SLAVEOF", Shape::Masked, Special::None),
    ("SLOWLOG", Shape::Masked, Special::Container),
    ("SMEMBERS", Shape::Key1, Special::None),
    ("SMISMEMBER", Shape::Key1, Special::None),
    ("SMOVE", Shape::Key2, Special::None),
    ("SORT", Shape::Key1, Special::None),
    ("SORT_RO", Shape::Key1, Special::None),
    ("SPOP", Shape::Key1, Special::None),
    ("SPUBLISH", Shape::Key1, Special::None),
    ("SRANDMEMBER", Shape::Key1, Special::None),
    ("SREM", Shape::Key1, Special::None),
    ("SSCAN", Shape::Key1, Special::None),
    ("SSUBSCRIBE", Shape::AllKeys, Special::Pub(PubKind::Ssubscribe)),
    ("STRLEN", Shape::Key1, Special::None),
    ("SUBSCRIBE", Shape::AllKeys, Special::Pub(PubKind::Subscribe)),
    ("SUBSTR", Shape::Key1, Special::None),
    ("SUNION", Shape::AllKeys, Special::None),
    ("SUNIONSTORE", Shape::AllKeys, Special::None),
    ("SUNSUBSCRIBE", Shape::AllKeys, Special::Pub(PubKind::Sunsubscribe)),
    ("SWAPDB", Shape::Plain, Special::None),
    ("SYNC", Shape::Masked, Special::Replication),
    ("TIME", Shape::Plain, Special::None),
    ("TOUCH", Shape::AllKeys, Special::None),
    ("TTL", Shape::Key1, Special::None),
    ("TYPE", Shape::Key1, Special::None),
    ("UNLINK", Shape::AllKeys, Special::None),
    ("UNSUBSCRIBE", Shape::AllKeys, Special::Pub(PubKind::Unsubscribe)),
    ("UNWATCH", Shape::Plain, Special::None),
    ("WAIT", Shape::Plain, Special::None),
    ("WAITAOF", Shape::Plain, Special::None),
    ("WATCH", Shape::AllKeys, Special::None),
    ("XACK", Shape::Key1, Special::None),
    ("XADD", Shape::Key1, Special::None),
    ("XAUTOCLAIM", Shape::Key1, Special::None),
    ("XCLAIM", Shape::Key1, Special::None),
    ("XDEL", Shape::Key1, Special::None),
    ("XGROUP", Shape::Masked, Special::Container),
    ("XINFO", Shape::Masked, Special::Container),
    ("XLEN", Shape::Key1, Special::None),
    ("XPENDING", Shape::Key1, Special::None),
    ("XRANGE", Shape::Key1, Special::None),
    ("XREVRANGE", Shape::Key1, Special::None),
    ("XSETID", Shape::Key1, Special::None),
    ("XTRIM", Shape::Key1, Special::None),
    ("ZADD", Shape::Key1, Special::None),
    ("ZCARD", Shape::Key1, Special::None),
    ("ZCOUNT", Shape::Key1, Special::None),
    ("ZINCRBY", Shape::Key1, Special::None),
    ("ZLEXCOUNT", Shape::Key1, Special::None),
    ("ZMSCORE", Shape::Key1, Special::None),
    ("ZPOPMAX", Shape::Key1, Special::None),
    ("ZPOPMIN", Shape::Key1, Special::None),
    ("ZRANDMEMBER", Shape::Key1, Special::None),
    ("ZRANGE", Shape::Key1, Special::None),
    ("ZRANGEBYLEX", Shape::Key1, Special::None),
    ("ZRANGEBYSCORE", Shape::Key1, Special::None),
    ("ZRANGESTORE", Shape::Key2, Special::None),
    ("ZRANK", Shape::Key1, Special::None),
    ("ZREM", Shape::Key1, Special::None),
    ("ZREMRANGEBYLEX", Shape::Key1, Special::None),
    ("ZREMRANGEBYRANK", Shape::Key1, Special::None),
    ("ZREMRANGEBYSCORE", Shape::Key1, Special::None),
    ("ZREVRANGE", Shape::Key1, Special::None),
    ("ZREVRANGEBYLEX", Shape::Key1, Special::None),
    ("ZREVRANGEBYSCORE", Shape::Key1, Special::None),
    ("ZREVRANK", Shape::Key1, Special::None),
    ("ZSCAN", Shape::Key1, Special::None),
    ("ZSCORE", Shape::Key1, Special::None),
];

/// Shape and special role of a command named `upper` (already upper case).
pub(super) fn lookup(upper: &str) -> Option<(Shape, Special)> {
    let at = COMMANDS.binary_search_by(|(name, _, _)| (*name).cmp(upper)).ok()?;
    COMMANDS.get(at).map(|&(_, shape, special)| (shape, special))
}

/// Shape and role of a container command's subcommand (`container` and
/// `sub` upper case). Subcommands not listed are masked.
pub(super) fn lookup_sub(container: &str, sub: &str) -> (Shape, Special) {
    let shape = match (container, sub) {
        ("OBJECT" | "XINFO" | "XGROUP", _) | ("MEMORY", "USAGE") | ("CLUSTER", "KEYSLOT") => Shape::Key1,
        ("CONFIG", "GET")
        | ("COMMAND", "INFO" | "DOCS")
        | ("PUBSUB", "CHANNELS" | "NUMSUB" | "SHARDCHANNELS" | "SHARDNUMSUB") => Shape::AllKeys,
        ("CONFIG", "SET") => Shape::NameValue,
        ("CLIENT", "REPLY") => return (Shape::Plain, Special::ClientReply),
        ("SLOWLOG" | "LATENCY", _) => Shape::Plain,
        _ => Shape::Masked,
    };
    (shape, Special::None)
}
