use super::*;

fn text(sql: &str) -> String {
    summarize(sql).text
}

fn op_coll(sql: &str) -> (Option<String>, Option<String>) {
    let s = summarize(sql);
    (s.operation, s.collection)
}

fn oc(op: &str, coll: Option<&str>) -> (Option<String>, Option<String>) {
    (Some(op.to_string()), coll.map(str::to_string))
}

#[test]
fn literals_become_placeholders() {
    assert_eq!(text("SELECT * FROM t WHERE a = 'x' AND b = 42"), "SELECT * FROM t WHERE a = ? AND b = ?");
    assert_eq!(text("SELECT 'it''s', 'a' 'b'"), "SELECT ?, ? ?");
    assert_eq!(text("SELECT E'it\\'s \\\\', 1"), "SELECT ?, ?");
    assert_eq!(text("SELECT e'\\''"), "SELECT ?");
    assert_eq!(text("SELECT 3.14, .5, 1e10, 2.5E-3, 1_000, 0x1F, 0b101, 0o17"), "SELECT ?, ?, ?, ?, ?, ?, ?, ?");
    assert_eq!(text("SELECT X'1F', B'0101', N'name', U&'d\\0061t'"), "SELECT ?, ?, ?, ?");
    assert_eq!(text("SELECT $$it's a 'body'$$, $fn$ $$ nested $$ $fn$ , 7"), "SELECT ?, ? , ?");
    assert_eq!(text("SELECT 1-2, -5, a+3"), "SELECT ?-?, -?, a+?");
    assert_eq!(text("SELECT '2024-01-01'::date"), "SELECT ?::date");
}

#[test]
fn identifiers_and_placeholders_stay() {
    assert_eq!(
        text("SELECT t1.c2 FROM t1 WHERE id = $1 AND x = $12"),
        "SELECT t1.c2 FROM t1 WHERE id = $1 AND x = $12"
    );
    assert_eq!(
        text("SELECT \"Col 1\", \"a\"\"b\" FROM \"My Table\""),
        "SELECT \"Col 1\", \"a\"\"b\" FROM \"My Table\""
    );
    assert_eq!(text("SELECT foo$bar, ? , :name FROM t"), "SELECT foo$bar, ? , :name FROM t");
    assert_eq!(text("SELECT café, naïve FROM données"), "SELECT café, naïve FROM données");
    assert_eq!(text("SELECT U&\"d\\0061t\" FROM x"), "SELECT U&\"d\\0061t\" FROM x");
}

#[test]
fn comments_go_and_whitespace_collapses() {
    assert_eq!(text("  SELECT -- secret 'x'\n  a /* c1 /* nested */ still */ FROM\tt  \n"), "SELECT a FROM t");
    assert_eq!(text("SELECT/**/a"), "SELECT a");
    assert_eq!(text("/* only */"), "");
    assert_eq!(text(""), "");
    assert_eq!(text("SELECT a # not a comment in pg"), "SELECT a # not a comment in pg");
}

#[test]
fn unterminated_constructs_hide_the_rest() {
    assert_eq!(text("SELECT 'abc"), "SELECT ?");
    assert_eq!(text("SELECT $$abc"), "SELECT ?");
    assert_eq!(text("SELECT E'abc\\"), "SELECT ?");
    assert_eq!(text("SELECT 1 /* abc"), "SELECT ?");
    assert_eq!(text("SELECT \"abc"), "SELECT \"abc");
}

#[test]
fn mysql_dialect() {
    let s =
        summarize_mysql("SELECT \"secret\", 'it\\'s', `col` FROM `db`.`t` # trailing\nWHERE x = _utf8mb4'y' -- c\n");
    assert_eq!(s.text, "SELECT ?, ?, `col` FROM `db`.`t` WHERE x = ?");
    assert_eq!(s.collection.as_deref(), Some("db.t"));
    assert_eq!(summarize_mysql("SELECT 1--2").text, "SELECT ?--?");
    assert_eq!(summarize_mysql("SELECT $$a$$").text, "SELECT $$a$$");
    assert_eq!(summarize_mysql("INSERT IGNORE INTO t VALUES (1)").collection.as_deref(), Some("t"));
    assert_eq!(summarize_mysql("SELECT x'4142', b'01'").text, "SELECT ?, ?");
}

#[test]
fn operation_and_collection() {
    assert_eq!(op_coll("select * from users where id = 1"), oc("SELECT", Some("users")));
    assert_eq!(op_coll("SELECT a FROM public.users u JOIN orders o ON true"), oc("SELECT", Some("public.users")));
    assert_eq!(op_coll("SELECT a FROM \"Public\".\"Users\""), oc("SELECT", Some("Public.Users")));
    assert_eq!(op_coll("SELECT * FROM (SELECT 1 FROM t) s"), oc("SELECT", None));
    assert_eq!(op_coll("SELECT extract(year from now()), x FROM t"), oc("SELECT", Some("t")));
    assert_eq!(op_coll("SELECT * FROM generate_series(1, 10)"), oc("SELECT", None));
    assert_eq!(op_coll("SELECT 1"), oc("SELECT", None));
    assert_eq!(op_coll("SELECT 1; SELECT * FROM t"), oc("SELECT", None));
    assert_eq!(op_coll("SELECT * FROM t; SELECT * FROM u"), oc("SELECT", Some("t")));
    assert_eq!(op_coll("SELECT * FROM ONLY t"), oc("SELECT", Some("t")));
    assert_eq!(op_coll("insert into t (a, b) values (1, 2)"), oc("INSERT", Some("t")));
    assert_eq!(op_coll("INSERT INTO s.t(a) VALUES ($1)"), oc("INSERT", Some("s.t")));
    assert_eq!(op_coll("UPDATE ONLY accounts SET x = 1"), oc("UPDATE", Some("accounts")));
    assert_eq!(op_coll("DELETE FROM t WHERE a = 1"), oc("DELETE", Some("t")));
    assert_eq!(op_coll("MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE"), oc("MERGE", Some("t")));
    assert_eq!(op_coll("CREATE TABLE IF NOT EXISTS items (id int)"), oc("CREATE", Some("items")));
    assert_eq!(op_coll("CREATE UNLOGGED TABLE x (id int)"), oc("CREATE", Some("x")));
    assert_eq!(op_coll("CREATE INDEX i ON t (a)"), oc("CREATE", None));
    assert_eq!(op_coll("DROP TABLE IF EXISTS t"), oc("DROP", Some("t")));
    assert_eq!(op_coll("TRUNCATE TABLE t"), oc("TRUNCATE", Some("t")));
    assert_eq!(op_coll("COPY t (a) FROM STDIN"), oc("COPY", Some("t")));
    assert_eq!(op_coll("COPY (SELECT 1) TO STDOUT"), oc("COPY", None));
    assert_eq!(op_coll("TABLE t"), oc("TABLE", Some("t")));
    assert_eq!(op_coll("begin"), oc("BEGIN", None));
    assert_eq!(op_coll("COMMIT"), oc("COMMIT", None));
    assert_eq!(op_coll("(SELECT a FROM t)"), oc("SELECT", Some("t")));
    assert_eq!(op_coll("(SELECT a FROM t) UNION (SELECT b FROM u)"), oc("SELECT", Some("t")));
    assert_eq!(op_coll("SELECT * FROM t."), oc("SELECT", None));
    assert_eq!(op_coll("'x'"), (None, None));
    assert_eq!(op_coll("SELECT 1 FROM 'x'"), oc("SELECT", None));
    assert_eq!(op_coll(""), (None, None));
}

#[test]
fn with_uses_the_main_verb() {
    let sql = "WITH a AS (SELECT * FROM x), b(n) AS MATERIALIZED (SELECT 1) INSERT INTO target SELECT * FROM a";
    assert_eq!(op_coll(sql), oc("INSERT", Some("target")));
    assert_eq!(op_coll("WITH RECURSIVE r AS (SELECT 1) SELECT * FROM r"), oc("SELECT", Some("r")));
    assert_eq!(op_coll("WITH a AS (SELECT 1)"), oc("WITH", None));
    assert_eq!(op_coll("with x as (delete from t returning *) select * from x"), oc("SELECT", Some("x")));
}

#[test]
fn long_text_is_cut_on_a_char_boundary() {
    let sql = format!("SELECT {} FROM t", "é,".repeat(3000));
    let s = summarize(&sql);
    assert!(s.text.len() <= MAX_QUERY_TEXT);
    assert!(s.text.starts_with("SELECT é,é,"));
    assert_eq!(s.operation.as_deref(), Some("SELECT"));
    // A long table name is not a collection.
    let s = summarize(&format!("SELECT * FROM {}", "a".repeat(1000)));
    assert_eq!(s.collection, None);
}

#[test]
fn no_literal_leaks_whatever_the_input() {
    // Every secret sits in a literal; none may survive.
    let cases = [
        "SELECT 'SECRET1'",
        "SELECT E'x\\'SECRET1'",
        "SELECT $q$SECRET1$q$",
        "SELECT 'a''SECRET1'",
        "SELECT $$SECRET1",
        "SELECT 1 -- SECRET1",
        "SELECT /* SECRET1 */ 1",
        "SELECT X'5EC2E71'",
    ];
    for c in cases {
        assert!(!summarize(c).text.contains("SECRET1") && !summarize(c).text.contains("5EC2E71"), "{c}");
        // MySQL has no dollar quoting.
        if !c.contains('$') {
            assert!(!summarize_mysql(c).text.contains("SECRET1"), "{c}");
        }
    }
    assert!(!summarize_mysql("SELECT \"SECRET1\"").text.contains("SECRET1"));
    assert!(!summarize_mysql("SELECT 'a\\'SECRET1'").text.contains("SECRET1"));
}

#[test]
fn never_panics_on_odd_input() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let alphabet: Vec<char> = "'\"$`\\/*-#eEuU&xXbB01.9_ ;(),é€\u{10348}\n\0abc".chars().collect();
    for len in 0..200 {
        for _ in 0..20 {
            let s: String = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    alphabet[(state % alphabet.len() as u64) as usize]
                })
                .collect();
            let a = summarize(&s);
            let b = summarize_mysql(&s);
            assert!(a.text.len() <= MAX_QUERY_TEXT && b.text.len() <= MAX_QUERY_TEXT);
        }
    }
}

#[test]
fn linear_time_on_adversarial_input() {
    // Long dollar tags, many open quotes and nested comments: all linear.
    let tag = format!("${}$", "t".repeat(50_000));
    let inputs = [
        format!("SELECT {tag} {}", "$t".repeat(100_000)),
        "/*".repeat(200_000),
        "'".repeat(300_001),
        "$".repeat(300_000),
        format!("SELECT {}", "((".repeat(200_000)),
    ];
    let start = std::time::Instant::now();
    for i in &inputs {
        let _ = summarize(i);
        let _ = summarize_mysql(i);
    }
    assert!(start.elapsed() < std::time::Duration::from_secs(5), "{:?}", start.elapsed());
}
