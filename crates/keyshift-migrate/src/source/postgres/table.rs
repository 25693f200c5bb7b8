//! A PostgreSQL source's table: names checked and quoted, the columns checked in the catalog, the
//! statements that read a page and switch its rows, and what a row holds.

use crate::plan::{DataSource, PgLayout};
use crate::rewrap::same_version;
use anyhow::{anyhow, bail, Context, Result};
use keyshift_client::Kid;
use keyshift_envelope::{Header, Mode, WrappedKey};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow, PgSslMode};
use sqlx::Row;

/// Bytes read from the start of an envelope column: a 2-level header is at most 4,313 bytes (a
/// 2,048-byte kid and a 2,048-byte wrapped key), so the header is always in them.
pub const HEADER_PREFIX: i32 = 8192;

/// PostgreSQL's longest identifier (NAMEDATALEN - 1).
const MAX_IDENTIFIER: usize = 63;

/// A table or column name: as given, and quoted for SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Ident {
    pub(super) name: String,
    pub(super) quoted: String,
}

/// Checks that `name` is a plain SQL identifier (letters, digits, underscore; not starting with a
/// digit) and quotes it. Quoted, it is matched exactly: give names as PostgreSQL stores them
/// (lower case unless they were created quoted).
pub fn quote_identifier(name: &str) -> Result<String> {
    let mut chars = name.chars();
    let plain = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !plain || name.len() > MAX_IDENTIFIER {
        bail!(
            "{name:?} is not a plain SQL identifier (letters, digits and underscores, not \
             starting with a digit, at most {MAX_IDENTIFIER} characters)"
        );
    }
    Ok(format!("\"{name}\""))
}

fn ident(name: &str) -> Result<Ident> {
    Ok(Ident {
        name: name.to_owned(),
        quoted: quote_identifier(name)?,
    })
}

/// Quotes `name` or `schema.name`.
fn table_ident(name: &str) -> Result<Ident> {
    let parts: Vec<&str> = name.split('.').collect();
    if parts.is_empty() || parts.len() > 2 {
        bail!("{name:?} is not a table name (`name` or `schema.name`)");
    }
    let quoted = parts
        .iter()
        .map(|p| quote_identifier(p))
        .collect::<Result<Vec<_>>>()?
        .join(".");
    Ok(Ident {
        name: name.to_owned(),
        quoted,
    })
}

/// The columns of a layout.
#[derive(Debug, Clone)]
pub(super) enum Columns {
    WrappedKey {
        kid: Ident,
        wrapped: Ident,
        alg: Option<Ident>,
    },
    Envelope {
        data: Ident,
    },
}

/// A PostgreSQL source of a plan, its names checked and quoted.
#[derive(Debug, Clone)]
pub struct Table {
    url_env: String,
    pub(super) table: Ident,
    id: Ident,
    pub(super) columns: Columns,
}

/// The type of the id column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    /// `smallint`, `integer`, `bigint`.
    Integer,
    /// `text`, `varchar`.
    Text,
}

/// A row's id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Id {
    Int(i64),
    Text(String),
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Id::Int(i) => write!(f, "{i}"),
            Id::Text(s) => f.write_str(s),
        }
    }
}

/// Where a walk of the table is: which pass (0: the walk, 1...: sweeps) and after which id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Cursor {
    pub(super) pass: u32,
    pub(super) after: Option<Id>,
}

impl Cursor {
    pub(super) fn start(pass: u32) -> Cursor {
        Cursor { pass, after: None }
    }

    /// `"<pass>"` or `"<pass> <id>"`, as kept in the journal.
    pub(super) fn encode(&self) -> String {
        match &self.after {
            None => self.pass.to_string(),
            Some(id) => format!("{} {id}", self.pass),
        }
    }

    pub(super) fn parse(text: &str, kind: IdKind) -> Result<Cursor> {
        let bad = || anyhow!("the journal's cursor {text:?} is not one of this source's");
        let (pass, after) = match text.split_once(' ') {
            Some((pass, id)) => (pass, Some(id)),
            None => (text, None),
        };
        let pass = pass.parse().map_err(|_| bad())?;
        let after = match (after, kind) {
            (None, _) => None,
            (Some(id), IdKind::Integer) => Some(Id::Int(id.parse().map_err(|_| bad())?)),
            (Some(id), IdKind::Text) => Some(Id::Text(id.to_owned())),
        };
        Ok(Cursor { pass, after })
    }
}

/// What a row holds, as far as the campaign is concerned.
pub(super) enum State {
    /// Under the source key: to be moved.
    Source(Move),
    /// Under the target key.
    Target(Candidate),
    /// Under another key, empty, or not an envelope.
    Other,
}

/// A row under the source key, and what it was when read (the `UPDATE` holds it to that).
pub(super) struct Move {
    /// The wrap algorithm under the source (`None`: no alg column, or it is empty).
    pub(super) alg: Option<String>,
    /// The wrapped data key.
    pub(super) wrapped: Vec<u8>,
    /// `wrapped-key`: the kid as read.
    pub(super) kid: String,
    /// `envelope`: the header as read.
    pub(super) header: Option<Header>,
    /// Bytes the item protects (the wrapped key's, or the envelope's).
    pub(super) bytes: u64,
}

/// A row under the target key, as `verify` checks it.
pub(super) enum Candidate {
    Wrapped(Vec<u8>),
    Envelope(Header),
}

/// Rows read in one `SELECT`, in id order.
pub(super) struct Page {
    pub(super) rows: Vec<(Id, State)>,
}

impl Page {
    pub(super) fn last(&self) -> Option<&Id> {
        self.rows.last().map(|(id, _)| id)
    }
}

impl Table {
    /// Checks a plan's `postgres` source: identifiers, the columns its layout needs, the name of
    /// the URL's environment variable.
    pub fn from_plan(source: &DataSource) -> Result<Table> {
        let DataSource::Postgres {
            url_env,
            table,
            id_column,
            layout,
            kid_column,
            wrapped_column,
            alg_column,
            data_column,
        } = source
        else {
            bail!("not a postgres source");
        };
        let env_ok = url_env
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && url_env
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !env_ok {
            bail!("url_env {url_env:?} is not an environment variable name");
        }
        let columns = match layout {
            PgLayout::WrappedKey => {
                if data_column.is_some() {
                    bail!("data_column is for layout = \"envelope\"");
                }
                let kid = kid_column
                    .as_deref()
                    .ok_or_else(|| anyhow!("layout = \"wrapped-key\" needs kid_column"))?;
                let wrapped = wrapped_column
                    .as_deref()
                    .ok_or_else(|| anyhow!("layout = \"wrapped-key\" needs wrapped_column"))?;
                Columns::WrappedKey {
                    kid: ident(kid).context("kid_column")?,
                    wrapped: ident(wrapped).context("wrapped_column")?,
                    alg: alg_column
                        .as_deref()
                        .map(ident)
                        .transpose()
                        .context("alg_column")?,
                }
            }
            PgLayout::Envelope => {
                if kid_column.is_some() || wrapped_column.is_some() || alg_column.is_some() {
                    bail!(
                        "kid_column, wrapped_column and alg_column are for \
                         layout = \"wrapped-key\""
                    );
                }
                let data = data_column
                    .as_deref()
                    .ok_or_else(|| anyhow!("layout = \"envelope\" needs data_column"))?;
                Columns::Envelope {
                    data: ident(data).context("data_column")?,
                }
            }
        };
        Ok(Table {
            url_env: url_env.clone(),
            table: table_ident(table).context("table")?,
            id: ident(id_column).context("id_column")?,
            columns,
        })
    }

    /// Connects with the URL in the source's environment variable.
    pub async fn connect(&self) -> Result<PgPool> {
        let url = std::env::var(&self.url_env).map_err(|_| {
            anyhow!(
                "the environment variable {} is not set: it must hold the PostgreSQL URL of \
                 {} (postgres://user:password@host:port/database; the plan keeps no password)",
                self.url_env,
                self.table.name
            )
        })?;
        // The URL's own text is never in an error: it holds the password.
        let options: PgConnectOptions = url.parse().map_err(|_| {
            anyhow!(
                "{} does not hold a PostgreSQL URL (postgres://user:password@host:port/database)",
                self.url_env
            )
        })?;
        if matches!(
            options.get_ssl_mode(),
            PgSslMode::Require | PgSslMode::VerifyCa | PgSslMode::VerifyFull
        ) {
            bail!(
                "{}: TLS to PostgreSQL is not supported yet; connect to a server on this host \
                 (or through a tunnel) without sslmode=require",
                self.url_env
            );
        }
        let host = options.get_host();
        let local = host.starts_with('/')
            || host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !local {
            tracing::warn!(
                host,
                "the connection to PostgreSQL is not encrypted (TLS is not supported yet)"
            );
        }
        PgPoolOptions::new()
            // No idle or lifetime reaping: sqlx 0.8.6's reaper can spin forever once its idle
            // count underflows (launchbadge/sqlx#3645), hanging the runtime's shutdown.
            .idle_timeout(None)
            .max_lifetime(None)
            .max_connections(2)
            .acquire_timeout(std::time::Duration::from_secs(30))
            .connect_with(options)
            .await
            .with_context(|| {
                format!(
                    "cannot connect to PostgreSQL (the URL in {}) for {}",
                    self.url_env, self.table.name
                )
            })
    }

    /// Checks the table and its columns are there with usable types, and says how ids compare.
    pub async fn describe(&self, pool: &PgPool) -> Result<IdKind> {
        let rows = sqlx::query(
            "SELECT a.attname::text, t.typname::text, a.attnotnull, \
                    EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = a.attrelid \
                            AND i.indisunique AND i.indnatts = 1 AND i.indkey[0] = a.attnum \
                            AND i.indpred IS NULL) \
             FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
             WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
        )
        .bind(&self.table.quoted)
        .fetch_all(pool)
        .await
        .with_context(|| format!("cannot read the columns of {}", self.table.name))?;
        if rows.is_empty() {
            bail!(
                "the table {} does not exist (or this role cannot see it)",
                self.table.name
            );
        }
        let column = |c: &Ident| -> Result<(String, bool, bool)> {
            rows.iter()
                .find(|r| r.get::<String, _>(0) == c.name)
                .map(|r| (r.get(1), r.get(2), r.get(3)))
                .ok_or_else(|| anyhow!("{} has no column {}", self.table.name, c.name))
        };
        let typed = |c: &Ident, want: &[&str], what: &str| -> Result<()> {
            let (ty, _, _) = column(c)?;
            if !want.contains(&ty.as_str()) {
                bail!("{}.{} is {ty}, not {what}", self.table.name, c.name);
            }
            Ok(())
        };
        let (id_type, not_null, unique) = column(&self.id)?;
        let kind = match id_type.as_str() {
            "int2" | "int4" | "int8" => IdKind::Integer,
            "text" | "varchar" => IdKind::Text,
            other => bail!(
                "{}.{} is {other}: the id column must be an integer or text",
                self.table.name,
                self.id.name
            ),
        };
        if !not_null || !unique {
            bail!(
                "{}.{} must be the primary key (or unique and not null): the table is walked \
                 in its order",
                self.table.name,
                self.id.name
            );
        }
        let text = ["text", "varchar"];
        match &self.columns {
            Columns::WrappedKey { kid, wrapped, alg } => {
                typed(kid, &text, "text")?;
                typed(wrapped, &["bytea"], "bytea")?;
                if let Some(alg) = alg {
                    typed(alg, &text, "text")?;
                }
            }
            Columns::Envelope { data } => typed(data, &["bytea"], "bytea")?,
        }
        Ok(kind)
    }

    /// `SELECT` of a page: `$1` the limit, `$2` the id to read after (when `after`).
    fn page_sql(&self, kind: IdKind, after: bool) -> String {
        let id = &self.id.quoted;
        let id_expr = match kind {
            IdKind::Integer => format!("{id}::int8"),
            IdKind::Text => format!("{id}::text"),
        };
        let values = match &self.columns {
            Columns::WrappedKey { kid, wrapped, alg } => format!(
                "{}::text, {}, {}",
                kid.quoted,
                wrapped.quoted,
                alg.as_ref()
                    .map_or("NULL::text".to_owned(), |a| format!("{}::text", a.quoted))
            ),
            Columns::Envelope { data } => format!(
                "substring({d} from 1 for {HEADER_PREFIX}), octet_length({d})::int8",
                d = data.quoted
            ),
        };
        let filter = if after {
            format!(" WHERE {id} > $2")
        } else {
            String::new()
        };
        format!(
            "SELECT {id_expr}, {values} FROM {}{filter} ORDER BY {id} LIMIT $1",
            self.table.quoted
        )
    }

    /// The guarded `UPDATE` of a page's moved rows; it returns the ids it switched.
    ///
    /// `wrapped-key`: `$1` the target kid, then (with an alg column) `$2` the target algorithm,
    /// then the arrays: ids, new wrapped keys, kids as read, wrapped keys as read.
    /// `envelope`: the arrays: ids, new headers, headers as read.
    pub(super) fn update_sql(&self, kind: IdKind) -> String {
        let id = &self.id.quoted;
        let ids = match kind {
            IdKind::Integer => "int8[]",
            IdKind::Text => "text[]",
        };
        match &self.columns {
            Columns::WrappedKey { kid, wrapped, alg } => {
                let (set_alg, first) = match alg {
                    Some(a) => (format!(", {} = $2", a.quoted), 3),
                    None => (String::new(), 2),
                };
                format!(
                    "UPDATE {table} AS t SET {kid} = $1, {wrapped} = u.new_wrapped{set_alg} \
                     FROM unnest(${a}::{ids}, ${b}::bytea[], ${c}::text[], ${d}::bytea[]) \
                     AS u(id, new_wrapped, old_kid, old_wrapped) \
                     WHERE t.{id} = u.id AND t.{kid} = u.old_kid AND t.{wrapped} = u.old_wrapped \
                     RETURNING u.id",
                    table = self.table.quoted,
                    kid = kid.quoted,
                    wrapped = wrapped.quoted,
                    a = first,
                    b = first + 1,
                    c = first + 2,
                    d = first + 3,
                )
            }
            Columns::Envelope { data } => format!(
                "UPDATE {table} AS t \
                 SET {data} = u.new_header \
                 || substring(t.{data} from octet_length(u.old_header) + 1) \
                 FROM unnest($1::{ids}, $2::bytea[], $3::bytea[]) AS u(id, new_header, old_header) \
                 WHERE t.{id} = u.id \
                 AND substring(t.{data} from 1 for octet_length(u.old_header)) = u.old_header \
                 RETURNING u.id",
                table = self.table.quoted,
                data = data.quoted,
            ),
        }
    }

    pub(super) async fn fetch_page(
        &self,
        pool: &PgPool,
        kind: IdKind,
        after: Option<&Id>,
        limit: usize,
        source: &Kid,
        target: Option<&Kid>,
    ) -> Result<Page> {
        let sql = self.page_sql(kind, after.is_some());
        let mut query = sqlx::query(&sql).bind(limit as i64);
        query = match after {
            None => query,
            Some(Id::Int(i)) => query.bind(*i),
            Some(Id::Text(s)) => query.bind(s.as_str()),
        };
        let rows = query
            .fetch_all(pool)
            .await
            .with_context(|| format!("cannot read {}", self.table.name))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let id = match kind {
                IdKind::Integer => Id::Int(row.try_get(0)?),
                IdKind::Text => Id::Text(row.try_get(0)?),
            };
            out.push((id, self.classify(row, source, target)?));
        }
        Ok(Page { rows: out })
    }

    fn classify(&self, row: &PgRow, source: &Kid, target: Option<&Kid>) -> Result<State> {
        let under_target = |kid: &str| target.is_some_and(|t| same_version(kid, t));
        Ok(match &self.columns {
            Columns::WrappedKey { .. } => {
                let kid: Option<String> = row.try_get(1)?;
                let wrapped: Option<Vec<u8>> = row.try_get(2)?;
                let alg: Option<String> = row.try_get(3)?;
                match (kid, wrapped) {
                    (Some(kid), Some(wrapped)) if same_version(&kid, source) => {
                        State::Source(Move {
                            alg: alg.filter(|a| !a.is_empty()),
                            bytes: wrapped.len() as u64,
                            wrapped,
                            kid,
                            header: None,
                        })
                    }
                    (Some(kid), Some(wrapped)) if under_target(&kid) => {
                        State::Target(Candidate::Wrapped(wrapped))
                    }
                    _ => State::Other,
                }
            }
            Columns::Envelope { .. } => {
                let prefix: Option<Vec<u8>> = row.try_get(1)?;
                let size: Option<i64> = row.try_get(2)?;
                let header = prefix.and_then(|p| Header::parse(&p).ok());
                match header {
                    Some(h) if h.mode() == Mode::TwoLevel => {
                        let kid = h.kek_kid().unwrap_or_default().to_owned();
                        if same_version(&kid, source) {
                            let w = h.wrapped_key().cloned().unwrap_or(WrappedKey {
                                kid: String::new(),
                                alg: String::new(),
                                bytes: Vec::new(),
                            });
                            State::Source(Move {
                                alg: Some(w.alg),
                                wrapped: w.bytes,
                                kid,
                                header: Some(h),
                                bytes: size.unwrap_or(0).max(0) as u64,
                            })
                        } else if under_target(&kid) {
                            State::Target(Candidate::Envelope(h))
                        } else {
                            State::Other
                        }
                    }
                    // 3-level envelopes move with their keyring; anything else is not ours.
                    _ => State::Other,
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(layout: PgLayout) -> DataSource {
        DataSource::Postgres {
            url_env: crate::plan::DEFAULT_URL_ENV.into(),
            table: "app.secrets".into(),
            id_column: "id".into(),
            layout,
            kid_column: (layout == PgLayout::WrappedKey).then(|| "kek_kid".into()),
            wrapped_column: (layout == PgLayout::WrappedKey).then(|| "wrapped_dek".into()),
            alg_column: None,
            data_column: (layout == PgLayout::Envelope).then(|| "blob".into()),
        }
    }

    #[test]
    fn identifiers_are_checked_and_quoted() {
        assert_eq!(
            quote_identifier("wrapped_dek2").unwrap(),
            "\"wrapped_dek2\""
        );
        assert_eq!(quote_identifier("_x").unwrap(), "\"_x\"");
        for bad in [
            "",
            "2x",
            "a-b",
            "a b",
            "a\"b",
            "a;drop table t",
            "é",
            &"x".repeat(64),
        ] {
            assert!(quote_identifier(bad).is_err(), "{bad:?}");
        }
        assert_eq!(table_ident("app.t").unwrap().quoted, "\"app\".\"t\"");
        assert_eq!(table_ident("t").unwrap().quoted, "\"t\"");
        for bad in ["a.b.c", ".t", "t.", "a.\"b\""] {
            assert!(table_ident(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn layouts_need_their_columns() {
        Table::from_plan(&source(PgLayout::WrappedKey)).unwrap();
        Table::from_plan(&source(PgLayout::Envelope)).unwrap();
        let mut s = source(PgLayout::WrappedKey);
        if let DataSource::Postgres { kid_column, .. } = &mut s {
            *kid_column = None;
        }
        assert!(Table::from_plan(&s)
            .unwrap_err()
            .to_string()
            .contains("kid_column"));
        let mut s = source(PgLayout::Envelope);
        if let DataSource::Postgres { alg_column, .. } = &mut s {
            *alg_column = Some("alg".into());
        }
        assert!(Table::from_plan(&s).is_err());
        let mut s = source(PgLayout::Envelope);
        if let DataSource::Postgres { url_env, .. } = &mut s {
            *url_env = "NOT-A-NAME".into();
        }
        assert!(Table::from_plan(&s).is_err());
        let mut s = source(PgLayout::Envelope);
        if let DataSource::Postgres { table, .. } = &mut s {
            *table = "secrets; DELETE FROM secrets".into();
        }
        assert!(Table::from_plan(&s).is_err());
    }

    #[test]
    fn statements_use_quoted_names_and_bound_values() {
        let t = Table::from_plan(&source(PgLayout::WrappedKey)).unwrap();
        assert_eq!(
            t.page_sql(IdKind::Integer, true),
            "SELECT \"id\"::int8, \"kek_kid\"::text, \"wrapped_dek\", NULL::text \
             FROM \"app\".\"secrets\" WHERE \"id\" > $2 ORDER BY \"id\" LIMIT $1"
        );
        let update = t.update_sql(IdKind::Text);
        assert!(update.contains("unnest($2::text[], $3::bytea[], $4::text[], $5::bytea[])"));
        assert!(update.contains("t.\"kek_kid\" = u.old_kid AND t.\"wrapped_dek\" = u.old_wrapped"));
        let e = Table::from_plan(&source(PgLayout::Envelope)).unwrap();
        assert!(e
            .page_sql(IdKind::Text, false)
            .starts_with("SELECT \"id\"::text, substring(\"blob\" from 1 for 8192)"));
        assert!(e.update_sql(IdKind::Integer).contains(
            "substring(t.\"blob\" from 1 for octet_length(u.old_header)) = u.old_header"
        ));
    }

    #[test]
    fn cursors_round_trip() {
        for (c, kind) in [
            (Cursor::start(0), IdKind::Integer),
            (
                Cursor {
                    pass: 2,
                    after: Some(Id::Int(-5)),
                },
                IdKind::Integer,
            ),
            (
                Cursor {
                    pass: 0,
                    after: Some(Id::Text("a b ".into())),
                },
                IdKind::Text,
            ),
        ] {
            assert_eq!(Cursor::parse(&c.encode(), kind).unwrap(), c);
        }
        assert!(Cursor::parse("", IdKind::Integer).is_err());
        assert!(Cursor::parse("0 x", IdKind::Integer).is_err());
    }
}
