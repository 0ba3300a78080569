//! Executing runs: a bounded number at once, one per flow, each streaming batches from its
//! source through the mapping into its destination, recording counts, timings and log lines,
//! and stoppable at any batch boundary.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use etl_model::{
    Batch, ConnectorError, Incremental, RunContext, RunLogger, SinkRequest, SourceRequest, Value,
    WriteMode,
};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::entity::*;
use crate::error::{EngineError, EngineResult};
use crate::mapping::CompiledMapping;
use crate::service::{Engine, new_id};

/// How often a run in progress proves it is alive (and checks whether it was asked to stop).
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);
/// A run whose heartbeat is older than this belongs to a process that died.
pub const LIVE_WINDOW: Duration = Duration::from_secs(60);

/// The heartbeat bound: runs that beat after this instant are alive.
pub(crate) fn live_after() -> Timestamp {
    Utc::now() - chrono::Duration::from_std(LIVE_WINDOW).expect("small duration")
}

pub(crate) struct Runtime {
    permits: Arc<Semaphore>,
    active: Mutex<HashMap<String, Active>>,
    /// Wakes the scheduler when a schedule is created, changed or removed.
    pub schedules_changed: tokio::sync::Notify,
}

struct Active {
    run_id: String,
    cancel: CancellationToken,
    done: watch::Receiver<Option<Run>>,
}

impl Runtime {
    pub fn new(max_concurrent: usize) -> Runtime {
        Runtime {
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
            active: Mutex::new(HashMap::new()),
            schedules_changed: tokio::sync::Notify::new(),
        }
    }

    /// The id of the flow's run in progress, if any.
    pub fn running_run_of(&self, flow_id: &str) -> Option<String> {
        self.active
            .lock()
            .expect("runtime lock")
            .get(flow_id)
            .map(|a| a.run_id.clone())
    }

    fn waiter(&self, run_id: &str) -> Option<watch::Receiver<Option<Run>>> {
        self.active
            .lock()
            .expect("runtime lock")
            .values()
            .find(|a| a.run_id == run_id)
            .map(|a| a.done.clone())
    }
}

/// Collects a run's log lines; flushed to the store after every batch and at the end.
struct RunLog {
    run_id: String,
    seq: AtomicU64,
    pending: Mutex<Vec<LogLine>>,
}

impl RunLogger for RunLog {
    fn log(&self, level: &str, message: &str) {
        tracing::info!(run = %self.run_id, level, "{message}");
        let line = LogLine {
            run_id: self.run_id.clone(),
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            at: Utc::now(),
            level: level.to_string(),
            message: message.to_string(),
        };
        self.pending.lock().expect("log lock").push(line);
    }
}

impl RunLog {
    fn take(&self) -> Vec<LogLine> {
        std::mem::take(&mut *self.pending.lock().expect("log lock"))
    }
}

impl Engine {
    /// Queues a run of the flow and answers it at once (status `queued`); it executes in the
    /// background. A flow that is already running is refused: a flow never overlaps itself.
    pub async fn start_run(
        &self,
        tenant: &str,
        flow: &str,
        trigger: RunTrigger,
        attempt: u32,
    ) -> EngineResult<Run> {
        let flow = self.flow(tenant, flow).await?;
        let now = Utc::now();
        let run = Run {
            id: new_id(),
            tenant: tenant.to_string(),
            flow_id: flow.id.clone(),
            flow_name: flow.name.clone(),
            trigger,
            status: RunStatus::Queued,
            attempt,
            rows_read: 0,
            rows_written: 0,
            batches: 0,
            error: None,
            created_at: now,
            started_at: None,
            finished_at: None,
        };
        let cancel = CancellationToken::new();
        let (done_tx, done_rx) = watch::channel(None);
        {
            let mut active = self.inner.runtime.active.lock().expect("runtime lock");
            if let Some(a) = active.get(&flow.id) {
                return Err(EngineError::busy(format!(
                    "flow '{}' is already running (run {}); wait for it with 'status flow {}' or stop it with 'stop flow {}'",
                    flow.name, a.run_id, flow.name, flow.name
                )));
            }
            active.insert(
                flow.id.clone(),
                Active {
                    run_id: run.id.clone(),
                    cancel: cancel.clone(),
                    done: done_rx,
                },
            );
        }
        // Other processes sharing the store (a server, the scheduler, the CLI) may run it too.
        let refused = match self
            .inner
            .store
            .insert_run_exclusive(&run, live_after())
            .await
        {
            Ok(None) => None,
            Ok(Some(live)) => Some(EngineError::busy(format!(
                "flow '{}' is already running in another process (run {}, {}); wait for it with 'status flow {}' or stop it with 'stop flow {}'",
                flow.name,
                live.id,
                live.status.as_str(),
                flow.name,
                flow.name
            ))),
            Err(e) => Some(e.into()),
        };
        if let Some(e) = refused {
            self.inner
                .runtime
                .active
                .lock()
                .expect("runtime lock")
                .remove(&flow.id);
            return Err(e);
        }
        let engine = self.clone();
        let queued = run.clone();
        tokio::spawn(async move {
            let flow_id = flow.id.clone();
            let finished = engine.execute(queued, flow, cancel).await;
            engine
                .inner
                .runtime
                .active
                .lock()
                .expect("runtime lock")
                .remove(&flow_id);
            let _ = done_tx.send(Some(finished));
        });
        Ok(run)
    }

    /// Waits until the run finishes (or `timeout` passes) and answers its latest state.
    pub async fn wait_run(
        &self,
        tenant: &str,
        run_id: &str,
        timeout: Option<Duration>,
    ) -> EngineResult<Run> {
        if let Some(mut rx) = self.inner.runtime.waiter(run_id) {
            let wait = rx.wait_for(|r| r.is_some());
            match timeout {
                Some(t) => {
                    let _ = tokio::time::timeout(t, wait).await;
                }
                None => {
                    let _ = wait.await;
                }
            }
        }
        self.get_run(tenant, run_id).await
    }

    /// Stops the flow's run in progress; answers its id and whether it runs in this process
    /// (stopped now) or another (asked to stop: it notices within [`HEARTBEAT_EVERY`]), or
    /// `None` when nothing is running.
    pub async fn stop_flow(
        &self,
        tenant: &str,
        flow: &str,
    ) -> EngineResult<Option<(String, bool)>> {
        let flow = self.flow(tenant, flow).await?;
        let local = {
            let active = self.inner.runtime.active.lock().expect("runtime lock");
            active.get(&flow.id).map(|a| {
                a.cancel.cancel();
                a.run_id.clone()
            })
        };
        if let Some(id) = local {
            return Ok(Some((id, true)));
        }
        match self
            .inner
            .store
            .live_run_of_flow(tenant, &flow.id, live_after())
            .await?
        {
            Some(run) if self.inner.store.request_run_cancel(tenant, &run.id).await? => {
                Ok(Some((run.id, false)))
            }
            _ => Ok(None),
        }
    }

    /// The flow's run in progress in any process sharing the store, if any.
    pub async fn live_run(&self, tenant: &str, flow: &Flow) -> EngineResult<Option<Run>> {
        if self.running_run_of(&flow.id).is_some() {
            return Ok(self
                .last_run(tenant, flow)
                .await?
                .filter(|r| !r.status.is_finished()));
        }
        Ok(self
            .inner
            .store
            .live_run_of_flow(tenant, &flow.id, live_after())
            .await?)
    }

    pub fn running_run_of(&self, flow_id: &str) -> Option<String> {
        self.inner.runtime.running_run_of(flow_id)
    }

    pub fn has_active_runs(&self) -> bool {
        !self
            .inner
            .runtime
            .active
            .lock()
            .expect("runtime lock")
            .is_empty()
    }

    /// Waits until no run is in progress (runs started meanwhile included).
    pub async fn wait_idle(&self) {
        loop {
            let waiters: Vec<_> = self
                .inner
                .runtime
                .active
                .lock()
                .expect("runtime lock")
                .values()
                .map(|a| a.done.clone())
                .collect();
            if waiters.is_empty() {
                return;
            }
            for mut rx in waiters {
                let _ = rx.wait_for(|r| r.is_some()).await;
            }
        }
    }

    /// Stops every run and waits up to `grace` for them to record their end.
    pub async fn shutdown(&self, grace: Duration) {
        let waiters: Vec<_> = {
            let active = self.inner.runtime.active.lock().expect("runtime lock");
            active
                .values()
                .map(|a| {
                    a.cancel.cancel();
                    a.done.clone()
                })
                .collect()
        };
        let all = futures::future::join_all(waiters.into_iter().map(|mut rx| async move {
            let _ = rx.wait_for(|r| r.is_some()).await;
        }));
        let _ = tokio::time::timeout(grace, all).await;
    }

    async fn execute(&self, mut run: Run, flow: Flow, cancel: CancellationToken) -> Run {
        let log = Arc::new(RunLog {
            run_id: run.id.clone(),
            seq: AtomicU64::new(0),
            pending: Mutex::new(Vec::new()),
        });
        let ctx = RunContext {
            cancel: cancel.clone(),
            logger: log.clone(),
        };
        let heartbeat = tokio::spawn({
            let store = self.inner.store.clone();
            let (tenant, id, cancel) = (run.tenant.clone(), run.id.clone(), cancel.clone());
            async move {
                let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    match store.heartbeat_run(&tenant, &id, Utc::now()).await {
                        Ok(true) => {
                            tracing::info!(run = %id, "stop requested from another process");
                            cancel.cancel();
                        }
                        Ok(false) => {}
                        Err(e) => {
                            tracing::warn!(run = %id, error = %e, "could not record the run's heartbeat")
                        }
                    }
                }
            }
        });
        let permit = tokio::select! {
            p = self.inner.runtime.permits.clone().acquire_owned() => p.ok(),
            _ = cancel.cancelled() => None,
        };
        let result = match permit {
            None => Err(EngineError::new(
                "canceled",
                "the run was stopped before it started",
            )),
            Some(_permit) => {
                run.status = RunStatus::Running;
                run.started_at = Some(Utc::now());
                self.save_progress(&run, &log).await;
                self.pipeline(&mut run, &flow, &ctx, &log).await
            }
        };
        run.finished_at = Some(Utc::now());
        if run.started_at.is_none() {
            run.started_at = run.finished_at;
        }
        match result {
            Ok(()) => {
                run.status = RunStatus::Success;
                ctx.info(&format!(
                    "finished: {} rows read, {} written in {} batches, {} ms",
                    run.rows_read,
                    run.rows_written,
                    run.batches,
                    run.duration_ms().unwrap_or(0)
                ));
            }
            Err(e) if e.code == "canceled" || cancel.is_cancelled() => {
                run.status = RunStatus::Canceled;
                run.error = Some(e.message.clone());
                ctx.warn(&format!("stopped: {}", e.message));
            }
            Err(e) => {
                run.status = RunStatus::Error;
                ctx.logger.log("error", &e.message);
                run.error = Some(e.message);
            }
        }
        heartbeat.abort();
        self.save_progress(&run, &log).await;
        run
    }

    async fn save_progress(&self, run: &Run, log: &RunLog) {
        if let Err(e) = self.inner.store.update_run(run).await {
            tracing::error!(run = %run.id, error = %e, "could not record run progress");
        }
        let lines = log.take();
        if !lines.is_empty()
            && let Err(e) = self.inner.store.append_logs(&run.tenant, &lines).await
        {
            tracing::error!(run = %run.id, error = %e, "could not record run log");
        }
    }

    async fn pipeline(
        &self,
        run: &mut Run,
        flow: &Flow,
        ctx: &RunContext,
        log: &RunLog,
    ) -> EngineResult<()> {
        let spec = &flow.spec;
        let tenant = run.tenant.clone();
        let (src_cfg, src) = self.resolve(&tenant, &spec.source.connection).await?;
        let (dst_cfg, dst) = self.resolve(&tenant, &spec.destination.connection).await?;
        let mapping = CompiledMapping::compile(&spec.mapping).map_err(EngineError::invalid)?;
        let batch_size = spec.batch_size.unwrap_or(etl_model::DEFAULT_BATCH_SIZE);

        let watermark = match &spec.incremental {
            Some(_) => self
                .inner
                .store
                .get_watermark(&tenant, &flow.id)
                .await?
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .map(|j| Value::from_json(&j))
                .filter(|v| !v.is_null()),
            None => None,
        };
        let object = &spec.source.object;
        ctx.info(&format!(
            "reading '{}' from {} ({}){}",
            if object.is_empty() { "query" } else { object },
            src_cfg.name,
            src_cfg.type_name,
            match (&spec.incremental, &watermark) {
                (Some(c), Some(w)) => format!(", incremental on {c} after {w}"),
                (Some(c), None) => format!(", incremental on {c}, first run: reading everything"),
                _ => String::new(),
            }
        ));
        let request = SourceRequest {
            object: object.clone(),
            options: spec.source.options.clone(),
            incremental: spec.incremental.as_ref().map(|c| Incremental {
                column: c.clone(),
                after: watermark.clone(),
            }),
            batch_size,
        };
        let mut source = src
            .open_source(&src_cfg, request, ctx)
            .await
            .map_err(|e| EngineError::from(e.context(format!("source '{}'", src_cfg.name))))?;
        ctx.info(&format!(
            "writing to '{}' in {} ({}), mode {}",
            spec.destination.object,
            dst_cfg.name,
            dst_cfg.type_name,
            spec.mode.as_str()
        ));
        let sink_request = SinkRequest {
            object: spec.destination.object.clone(),
            options: spec.destination.options.clone(),
            mode: spec.mode,
            keys: spec.keys.clone(),
            create: spec.create,
            run_id: run.id.clone(),
            column_types: spec.mapping.casts.clone(),
        };
        let mut sink = dst
            .open_sink(&dst_cfg, sink_request, ctx)
            .await
            .map_err(|e| EngineError::from(e.context(format!("destination '{}'", dst_cfg.name))))?;

        // Reading runs one batch ahead of writing, so source and destination work at once
        // while memory stays bounded by the channel's two batches.
        let (tx, mut rx) = mpsc::channel::<Result<Batch, ConnectorError>>(2);
        let reader = tokio::spawn(async move {
            loop {
                match source.next_batch().await {
                    Ok(Some(b)) => {
                        if tx.send(Ok(b)).await.is_err() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        break;
                    }
                }
            }
        });

        let mut mark = watermark.clone();
        let mut batch_no: u64 = 0;
        let result: EngineResult<()> = async {
            loop {
                let next = tokio::select! {
                    b = rx.recv() => b,
                    _ = ctx.cancel.cancelled() => return Err(EngineError::new("canceled", "the run was stopped")),
                };
                let Some(batch) = next else { break };
                let mut batch = batch.map_err(|e| EngineError::from(e.context(format!("reading batch {}", batch_no + 1))))?;
                batch_no += 1;
                run.rows_read += batch.len() as u64;
                if let Some(col) = &spec.incremental {
                    advance_watermark(&mut batch, col, watermark.as_ref(), &mut mark, batch_no)?;
                }
                let batch = mapping.apply(batch).map_err(|e| EngineError::invalid(format!("batch {batch_no}: {e}")))?;
                if spec.mode == WriteMode::Merge {
                    check_keys(&batch, &spec.keys, batch_no)?;
                }
                if !batch.is_empty() {
                    let written = tokio::select! {
                        r = sink.write(batch) => r,
                        _ = ctx.cancel.cancelled() => Err(ConnectorError::canceled()),
                    };
                    let written = written.map_err(|e| write_failure(e, batch_no, run, spec.mode))?;
                    run.rows_written += written;
                }
                run.batches = batch_no;
                self.save_progress(run, log).await;
            }
            run.rows_written += sink.finish().await.map_err(|e| EngineError::from(e.context("finishing the destination")))?;
            Ok(())
        }
        .await;

        if let Err(e) = &result {
            reader.abort();
            if let Err(abort_err) = sink.abort().await {
                ctx.warn(&format!(
                    "cleaning up the destination after the failure also failed: {abort_err}"
                ));
            }
            if e.code != "canceled" {
                return result;
            }
        }
        if result.is_ok()
            && spec.incremental.is_some()
            && mark != watermark
            && let Some(m) = &mark
        {
            self.inner
                .store
                .set_watermark(&tenant, &flow.id, Some(&m.to_json().to_string()))
                .await?;
            ctx.info(&format!("high-water mark is now {m}"));
        }
        result
    }
}

/// Drops rows at or below the previous high-water mark and raises the new one.
fn advance_watermark(
    batch: &mut Batch,
    col: &str,
    previous: Option<&Value>,
    mark: &mut Option<Value>,
    batch_no: u64,
) -> EngineResult<()> {
    let Some(i) = batch.column_index(col) else {
        if batch.is_empty() {
            return Ok(());
        }
        return Err(EngineError::invalid(format!(
            "batch {batch_no}: the incremental column '{col}' is not in the source data (columns: {}); fix incremental= on the flow",
            batch.columns.join(", ")
        )));
    };
    if let Some(prev) = previous {
        batch
            .rows
            .retain(|r| r[i].compare(prev) == std::cmp::Ordering::Greater);
    }
    for row in &batch.rows {
        let v = &row[i];
        if !v.is_null()
            && mark
                .as_ref()
                .is_none_or(|m| v.compare(m) == std::cmp::Ordering::Greater)
        {
            *mark = Some(v.clone());
        }
    }
    Ok(())
}

/// Merge matches rows on their keys, so every row needs every key column with a value; a
/// destination would otherwise insert a duplicate or invent a key.
fn check_keys(batch: &Batch, keys: &[String], batch_no: u64) -> EngineResult<()> {
    if batch.is_empty() {
        return Ok(());
    }
    for key in keys {
        let Some(i) = batch.column_index(key) else {
            return Err(EngineError::invalid(format!(
                "batch {batch_no}: the key column '{key}' is not in the data (columns: {}); fix keys= on the flow, or rename= the source column to it",
                batch.columns.join(", ")
            )));
        };
        if let Some(n) = batch.rows.iter().position(|r| r[i].is_null()) {
            return Err(EngineError::invalid(format!(
                "batch {batch_no}, row {}: the key column '{key}' is empty; merge needs a value in every key column, so fix the source or skip such rows with filter='{key} is not null'",
                n + 1
            )));
        }
    }
    Ok(())
}

fn write_failure(e: ConnectorError, batch_no: u64, run: &Run, mode: WriteMode) -> EngineError {
    if e.kind == etl_model::ErrorKind::Canceled {
        return e.into();
    }
    let kept = match (mode, run.rows_written) {
        (WriteMode::Replace, _) => "the destination was left as it was".to_string(),
        (_, 0) => "nothing was written".to_string(),
        (_, n) => format!("the {n} rows committed before it stay in the destination"),
    };
    EngineError::new(
        e.kind.code(),
        format!("writing batch {batch_no} failed: {}; {kept}", e.message),
    )
}
