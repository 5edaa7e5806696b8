//! Database spans, after the OpenTelemetry database conventions: name
//! `{db.operation.name} {db.collection.name}`, `db.*` attributes, error
//! status from the server's error reply or a connection that died first.

use crate::{
    conntrack::Connection,
    protocol::db::{DbExchange, DbFailure, DbSystem},
    span::model::{Attr, SpanKind, SpanStatus},
};

use super::network_attrs;

pub fn describe(conn: &Connection, kind: SpanKind, system: DbSystem, ex: &DbExchange) -> (String, Vec<Attr>, SpanStatus) {
    let name = match (&ex.operation, &ex.collection) {
        (Some(op), Some(table)) => format!("{op} {table}"),
        (Some(op), None) => op.clone(),
        // Nothing to name the command by: the convention's fallback.
        (None, _) => system.as_str().to_owned(),
    };
    let mut attrs = vec![Attr::new("db.system.name", system.as_str())];
    if let Some(ns) = &ex.namespace {
        attrs.push(Attr::new("db.namespace", ns.clone()));
    }
    if let Some(op) = &ex.operation {
        attrs.push(Attr::new("db.operation.name", op.clone()));
    }
    if let Some(table) = &ex.collection {
        attrs.push(Attr::new("db.collection.name", table.clone()));
    }
    if let Some(text) = &ex.query_text {
        attrs.push(Attr::new("db.query.text", text.clone()));
    }
    if ex.batch_size > 1 {
        attrs.push(Attr::new("db.operation.batch.size", i64::from(ex.batch_size)));
    }
    if let Some(rows) = ex.rows {
        attrs.push(Attr::new("db.response.returned_rows", i64::try_from(rows).unwrap_or(i64::MAX)));
    }
    attrs.push(Attr::new("network.transport", "tcp"));
    network_attrs(&mut attrs, conn, kind, None);

    let mut status = SpanStatus::Unset;
    if let Some(err) = &ex.error {
        attrs.push(Attr::new("db.response.status_code", err.code.clone()));
        attrs.push(Attr::new("error.type", err.code.clone()));
        status = SpanStatus::Error { message: err.message.clone() };
    } else if let Some(failure) = ex.failure.filter(|f| *f != DbFailure::Truncated) {
        // The connection died before the reply: an error for both ends.
        let kind = match failure {
            DbFailure::ConnectionReset => "connection_reset",
            _ => "connection_closed",
        };
        attrs.push(Attr::new("error.type", kind));
        status = SpanStatus::Error { message: failure.to_string() };
    }
    if ex.failure == Some(DbFailure::Truncated) {
        // A capture artefact, not a database failure: said, not an error.
        attrs.push(Attr::new("kspan.capture.truncated", true));
    }
    (name, attrs, status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::db::DbError;
    use kspan_common::Role;

    fn conn() -> Connection {
        Connection {
            id: 1,
            pid: 10,
            fd: 3,
            role: Role::Client,
            local: Some("127.0.0.1:40000".parse().unwrap()),
            remote: Some("127.0.0.1:5432".parse().unwrap()),
            netns: 0,
            mid_stream: false,
            opened_ns: 0,
            tls: false,
            kspan_export: false,
        }
    }

    fn get<'a>(attrs: &'a [Attr], key: &str) -> Option<&'a crate::span::model::AttrValue> {
        attrs.iter().find(|a| a.key == key).map(|a| &a.value)
    }

    #[test]
    fn names_by_operation_and_table_and_reports_server_errors() {
        let ex = DbExchange {
            operation: Some("SELECT".into()),
            collection: Some("missing".into()),
            query_text: Some("SELECT * FROM missing WHERE id = ?".into()),
            namespace: Some("shop".into()),
            error: Some(DbError { code: "42P01".into(), message: "relation \"missing\" does not exist".into() }),
            batch_size: 1,
            ..Default::default()
        };
        let (name, attrs, status) = describe(&conn(), SpanKind::Client, DbSystem::Postgresql, &ex);
        assert_eq!(name, "SELECT missing");
        assert_eq!(get(&attrs, "db.system.name"), Some(&"postgresql".into()));
        assert_eq!(get(&attrs, "db.namespace"), Some(&"shop".into()));
        assert_eq!(get(&attrs, "db.response.status_code"), Some(&"42P01".into()));
        assert_eq!(get(&attrs, "server.port"), Some(&5432_i64.into()));
        assert!(matches!(status, SpanStatus::Error { .. }));
    }

    #[test]
    fn unnamed_command_falls_back_to_the_system_and_truncation_is_not_an_error() {
        let ex = DbExchange { failure: Some(DbFailure::Truncated), batch_size: 1, ..Default::default() };
        let (name, attrs, status) = describe(&conn(), SpanKind::Client, DbSystem::Redis, &ex);
        assert_eq!(name, "redis");
        assert_eq!(status, SpanStatus::Unset);
        assert_eq!(get(&attrs, "kspan.capture.truncated"), Some(&true.into()));
        let reset = DbExchange { failure: Some(DbFailure::ConnectionReset), ..Default::default() };
        let (_, attrs, status) = describe(&conn(), SpanKind::Client, DbSystem::Redis, &reset);
        assert_eq!(get(&attrs, "error.type"), Some(&"connection_reset".into()));
        assert!(matches!(status, SpanStatus::Error { .. }));
    }
}
