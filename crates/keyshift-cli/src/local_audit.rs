//! Changes made with the command line on a data directory (`keyshift principal create`,
//! `keyshift role assign`, `keyshift vault delete`, ...) are audit events, like the requests a
//! server answers: who holds access to a key is the first thing an audit is asked, and a grant
//! made beside the server must not be the one that leaves no trace.
//!
//! Each change is committed with the pending copy of its event (as a request's is), then the
//! event is chained on the data directory's command-line chain (`audit-chain-cli`) before the
//! command reports success. A refused change is an event too, with the status its error would
//! have over HTTPS. The event's principal is [`LOCAL_PRINCIPAL`]; its client names the
//! operating-system user that ran the command.

use crate::config::{CommonArgs, ServeArgs, Settings};
use crate::datadir;
use anyhow::{anyhow, Result};
use keyshift_vault::audit::{AuditEvent, Trace};
use keyshift_vault::{ApiError, Deployment, RequestContext};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// The principal of events of changes made with the command line.
pub const LOCAL_PRINCIPAL: &str = "local";

/// An opened data directory whose changes are audited.
pub(crate) struct Local {
    /// The deployment.
    pub(crate) d: Arc<Deployment>,
    /// Where the data directory is.
    pub(crate) path: PathBuf,
}

impl Local {
    /// Opens the data directory `common` names.
    pub(crate) async fn open(common: &CommonArgs) -> Result<Local> {
        let settings = Settings::resolve(common, &ServeArgs::default())?;
        let dir = datadir::open(&settings).await?;
        Ok(Local {
            d: dir.deployment,
            path: dir.path,
        })
    }

    /// The data directory `dir`, already open.
    pub(crate) fn from(dir: &datadir::DataDir) -> Local {
        Local {
            d: dir.deployment.clone(),
            path: dir.path.clone(),
        }
    }

    /// Starts the audit of one change: `operation` (as the admin API names it), on `vault`
    /// (empty for none), about `subject` (the principal, issuer or key it concerns, if known).
    /// The first change of a process starts its audit writer on the command-line chain.
    pub(crate) async fn change(
        &self,
        operation: &str,
        vault: &str,
        subject: Option<&str>,
    ) -> Result<Change> {
        if self.d.audit_chain().is_none() {
            datadir::use_cli_audit_chain(&self.path, &self.d)?;
            self.d
                .start_audit()
                .await
                .map_err(|e| anyhow!("cannot start the audit log: {}", e.message))?;
        }
        let mut draft = AuditEvent::draft(
            self.d.clock().now_millis(),
            request_id()?,
            client(),
            vault,
            operation,
        );
        draft.principal = Some(LOCAL_PRINCIPAL.to_owned());
        draft.key = subject.map(str::to_owned);
        let trace = Arc::new(Trace::local(draft));
        Ok(Change {
            ctx: RequestContext::local().with_trace(trace.clone()),
            trace,
            started: Instant::now(),
            d: self.d.clone(),
        })
    }
}

/// One audited change: do it with [`Change::ctx`], then hand its result to [`Change::finish`].
pub(crate) struct Change {
    /// The context to make the change with: its commits carry the event's pending copy.
    pub(crate) ctx: RequestContext,
    trace: Arc<Trace>,
    started: Instant,
    d: Arc<Deployment>,
}

impl Change {
    /// Names what the change is about once it is known (a principal it created).
    pub(crate) fn subject(&self, id: &str) {
        self.ctx.note_subject(id);
    }

    /// Chains the change's event, with `result`'s status, and returns once it is durable; then
    /// `result`, its error as the command's.
    pub(crate) async fn finish<T>(self, result: Result<T, ApiError>) -> Result<T> {
        self.record(result)
            .await?
            .map_err(|e| anyhow!("{}", e.message))
    }

    /// As [`Change::finish`], but hands back a refusal as it is, for a caller that goes on
    /// after one.
    pub(crate) async fn record<T>(
        self,
        result: Result<T, ApiError>,
    ) -> Result<Result<T, ApiError>> {
        let status = match &result {
            Ok(_) => 200,
            Err(e) => e.code.status(),
        };
        let latency = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        drop(self.ctx);
        self.d
            .finish_trace(self.trace, status, latency.max(1))
            .await
            .map_err(|e| anyhow!("the change's audit event was not written: {}", e.message))?;
        Ok(result)
    }
}

fn request_id() -> Result<String> {
    let bytes = keyshift_crypto::random_bytes(16).map_err(|e| anyhow!("{e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// `local uid=<n>`: the operating-system user the command ran as (the owner of `/proc/self`).
fn client() -> String {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata("/proc/self") {
        Ok(m) => format!("local uid={}", m.uid()),
        Err(_) => "local".to_owned(),
    }
}
